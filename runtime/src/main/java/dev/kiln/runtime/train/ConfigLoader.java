package dev.kiln.runtime.train;

import dev.kiln.runtime.io.AtomicFiles;
import dev.kiln.runtime.io.Json;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Reads a training config: a JSON file ({@code .json}) or a YAML file ({@code .yaml}/{@code .yml}, the block-mapping
 * subset {@link YamlSubset} reads), then {@code key.path=value} overrides (what {@code kiln train --set} passes),
 * then the defaults of every key left out. Unknown keys, wrong types and missing required keys fail here, all at
 * once, each named; {@link TrainConfig#validate} adds the rules between keys.
 *
 * <p>Relative paths in the config are resolved against the working directory, as on the command line.
 */
public final class ConfigLoader {
  private ConfigLoader() {}

  /** Reads {@code file}, applies {@code overrides}, fills defaults and validates. */
  public static TrainConfig load(Path file, List<String> overrides) throws IOException {
    if (!Files.isRegularFile(file)) {
      throw new NoSuchFileException(file.toString(), null, "config file not found");
    }
    String source = file.toString();
    String text = Files.readString(file);
    Map<String, Object> tree;
    String name = file.getFileName().toString().toLowerCase(Locale.ROOT);
    try {
      if (name.endsWith(".yaml") || name.endsWith(".yml")) {
        tree = YamlSubset.parse(text);
      } else if (name.endsWith(".json")) {
        tree = Json.parseObject(text);
      } else {
        throw new ConfigException(source, "config files end in .json, .yaml or .yml");
      }
    } catch (YamlSubset.YamlException | Json.ParseException e) {
      throw new ConfigException(source, e.getMessage());
    }
    return fromTree(tree, overrides, source).validate(source);
  }

  /**
   * Binds a parsed tree plus overrides, without the checks of {@link TrainConfig#validate} (which the caller runs
   * when the files the config names should exist).
   */
  public static TrainConfig fromTree(Map<String, Object> tree, List<String> overrides, String source) {
    Map<String, Object> merged = deepCopy(tree);
    Map<String, String> origins = new HashMap<>();
    List<String> problems = new ArrayList<>();
    for (String o : overrides) {
      applyOverride(merged, o, origins, problems);
    }
    TrainConfig c = ConfigTree.bind(TrainConfig.class, merged, origins::get, problems);
    if (!problems.isEmpty()) {
      throw new ConfigException(source, problems);
    }
    return c;
  }

  /**
   * Binds a model section on its own (the keys of {@link ModelConfig}; a CS336/PyTorch {@code config.json} holds them
   * at the top level), with defaults for keys left out; wrong types and missing required keys fail, each named.
   */
  public static ModelConfig modelFromTree(Map<String, Object> tree, String source) {
    List<String> problems = new ArrayList<>();
    ModelConfig m = ConfigTree.bind(ModelConfig.class, tree, k -> null, problems);
    if (!problems.isEmpty()) {
      throw new ConfigException(source, problems);
    }
    return m;
  }

  /** The resolved config as JSON (every key, defaults included): what a run writes as {@code config.json}. */
  public static String toJson(TrainConfig config) {
    return Json.writePretty(ConfigTree.toTree(config));
  }

  /** Writes {@link #toJson} to {@code file}, atomically. */
  public static void write(TrainConfig config, Path file) throws IOException {
    AtomicFiles.writeString(file, toJson(config));
  }

  @SuppressWarnings("unchecked")
  private static void applyOverride(
      Map<String, Object> tree, String override, Map<String, String> origins, List<String> problems) {
    int eq = override.indexOf('=');
    if (eq <= 0) {
      problems.add("override '" + override + "' is not key.path=value (e.g. training.steps=2000)");
      return;
    }
    String path = override.substring(0, eq).strip();
    String value = override.substring(eq + 1);
    String[] parts = path.split("\\.", -1);
    Map<String, Object> at = tree;
    for (int i = 0; i < parts.length - 1; i++) {
      if (parts[i].isEmpty()) {
        problems.add("override '" + override + "' has an empty key segment");
        return;
      }
      Object next = at.get(parts[i]);
      if (next == null) {
        next = new LinkedHashMap<String, Object>();
        at.put(parts[i], next);
      } else if (!(next instanceof Map)) {
        problems.add("override '" + override + "': " + String.join(".", List.of(parts).subList(0, i + 1))
            + " is a value, not a section");
        return;
      }
      at = (Map<String, Object>) next;
    }
    String leaf = parts[parts.length - 1];
    if (leaf.isEmpty()) {
      problems.add("override '" + override + "' has an empty key segment");
      return;
    }
    at.put(leaf, new ConfigTree.Plain(value.strip()));
    origins.put(path, "from --set " + override);
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> deepCopy(Map<String, Object> m) {
    LinkedHashMap<String, Object> out = new LinkedHashMap<>();
    m.forEach((k, v) -> out.put(k, v instanceof Map<?, ?> sub ? deepCopy((Map<String, Object>) sub) : v));
    return out;
  }
}
