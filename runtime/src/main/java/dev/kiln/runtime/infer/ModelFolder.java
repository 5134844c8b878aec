package dev.kiln.runtime.infer;

import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.io.SafetensorsFile;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tokenizer.BpeTokenizer;
import dev.kiln.runtime.tokenizer.TokenizerFiles;
import dev.kiln.runtime.train.Checkpoints;
import dev.kiln.runtime.train.ConfigException;
import dev.kiln.runtime.train.ConfigLoader;
import dev.kiln.runtime.train.ModelConfig;
import java.io.IOException;
import java.lang.reflect.RecordComponent;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A folder holding a model to run:
 *
 * <ul>
 *   <li>a Kiln checkpoint ({@code step-000123/}), a run's {@code checkpoints/} folder or the run folder itself (both
 *       followed through {@code latest}, see {@link Checkpoints#resolve}): {@code config.json} is the training config,
 *       whose {@code model} section is read;
 *   <li>or a PyTorch/CS336 model folder: {@code config.json} holds the model keys at the top level ({@code
 *       vocab_size}, {@code context_length}, {@code d_model}, {@code num_layers}, {@code num_heads}, {@code d_ff},
 *       {@code rope_theta}, and optionally the variant keys of {@link ModelConfig}).
 * </ul>
 *
 * Either way the weights are {@code model.safetensors} (or a sharded {@code model.safetensors.index.json}) with the
 * state-dict names of {@link LmWeights}, and the tokenizer files ({@code tokenizer.json}, or {@code vocab.json} +
 * {@code merges.txt}) may sit beside them.
 */
public record ModelFolder(Path dir, ModelConfig config) {
  /** The special token that ends a text, as GPT-2 and CS336 spell it. */
  public static final String END_OF_TEXT = "<|endoftext|>";

  /** Finds the model folder {@code path} means and reads its config. */
  public static ModelFolder open(Path path) throws IOException {
    if (!Files.isDirectory(path)) {
      throw new NoSuchFileException(path.toString(), null, "model folder not found");
    }
    Path dir = path;
    if (Files.exists(path.resolve(Checkpoints.TRAINER)) || Files.exists(path.resolve(Checkpoints.LATEST))
        || Files.exists(path.resolve("checkpoints").resolve(Checkpoints.LATEST))) {
      dir = Checkpoints.resolve(path);
    }
    Path configFile = dir.resolve(Checkpoints.CONFIG);
    if (!Files.isRegularFile(configFile)) {
      throw new NoSuchFileException(configFile.toString(), null, "no " + Checkpoints.CONFIG + " in the model folder"
          + " (a model folder holds config.json and model.safetensors; a Kiln run or checkpoint folder works too)");
    }
    if (!Files.isRegularFile(dir.resolve(Checkpoints.MODEL))
        && !Files.isRegularFile(dir.resolve("model.safetensors.index.json"))) {
      throw new NoSuchFileException(dir.resolve(Checkpoints.MODEL).toString(), null,
          "no model weights in the model folder (expected model.safetensors or model.safetensors.index.json)");
    }
    ModelConfig config = readConfig(configFile);
    TransformerLmEngine.requireUsable(config, configFile.toString());
    return new ModelFolder(dir, config);
  }

  /**
   * Reads a model config from a {@code config.json}: a Kiln training config (its {@code model} section) or a
   * CS336/PyTorch one (model keys at the top level; any other key is refused, so a misspelt variant key cannot be
   * silently ignored).
   */
  public static ModelConfig readConfig(Path configFile) throws IOException {
    String source = configFile.toString();
    Map<String, Object> tree;
    try {
      tree = Json.parseObject(Files.readString(configFile));
    } catch (Json.ParseException e) {
      throw new ConfigException(source, e.getMessage());
    }
    return configFromTree(tree, source);
  }

  /** {@link #readConfig} on an already parsed {@code config.json}. */
  @SuppressWarnings("unchecked")
  public static ModelConfig configFromTree(Map<String, Object> tree, String source) {
    if (tree.get("model") instanceof Map<?, ?> section) {
      return ConfigLoader.modelFromTree((Map<String, Object>) section, source + " (section model)");
    }
    if (!tree.containsKey("vocab_size")) {
      throw new ConfigException(source, "neither a Kiln config (a model section) nor a CS336 model config (the keys "
          + String.join(", ", modelKeys().subList(0, 7)) + " at the top level)");
    }
    List<String> known = modelKeys();
    List<String> unknown = new ArrayList<>();
    for (String k : tree.keySet()) {
      if (!known.contains(k)) {
        unknown.add("unknown key " + k + "; a CS336 model config.json holds only the model keys "
            + String.join(", ", known));
      }
    }
    if (!unknown.isEmpty()) {
      throw new ConfigException(source, unknown);
    }
    return ConfigLoader.modelFromTree(tree, source);
  }

  /** The snake_case keys of {@link ModelConfig}, in declaration order. */
  static List<String> modelKeys() {
    List<String> keys = new ArrayList<>();
    for (RecordComponent rc : ModelConfig.class.getRecordComponents()) {
      StringBuilder b = new StringBuilder();
      for (char ch : rc.getName().toCharArray()) {
        if (Character.isUpperCase(ch)) {
          b.append('_').append(Character.toLowerCase(ch));
        } else {
          b.append(ch);
        }
      }
      keys.add(b.toString());
    }
    return keys;
  }

  /** Loads the weights (checked against the config, copied to float32) and builds an engine. */
  public TransformerLmEngine loadEngine() throws IOException {
    return new TransformerLmEngine(loadWeights());
  }

  /** The folder's weights, checked against its config (names, shapes, the config's own rules). */
  public LmWeights loadWeights() throws IOException {
    try (SafetensorsFile st = SafetensorsFile.open(dir)) {
      Map<String, NdArray> sd = new LinkedHashMap<>();
      for (String n : st.names()) {
        sd.put(n, st.get(n));
      }
      Path weights = Files.isRegularFile(dir.resolve(Checkpoints.MODEL)) ? dir.resolve(Checkpoints.MODEL)
          : dir.resolve("model.safetensors.index.json");
      TransformerLmEngine.requireUsable(config, weights.toString());
      return LmWeights.from(config, sd, weights.toString());
    }
  }

  /** Whether the folder holds tokenizer files. */
  public boolean hasTokenizer() {
    return hasTokenizer(dir);
  }

  private static boolean hasTokenizer(Path d) {
    return Files.isRegularFile(d.resolve(TokenizerFiles.HF))
        || (Files.isRegularFile(d.resolve(TokenizerFiles.VOCAB)) && Files.isRegularFile(d.resolve(TokenizerFiles.MERGES)));
  }

  /**
   * The tokenizer in {@code tokenizerDir}, or beside the model when it is null. A GPT-2 style folder ({@code
   * vocab.json} + {@code merges.txt}) names no special tokens; {@code <|endoftext|>} is made special when the
   * vocabulary already holds it (as GPT-2's does), never appended.
   */
  public BpeTokenizer loadTokenizer(Path tokenizerDir) throws IOException {
    Path d = tokenizerDir != null ? tokenizerDir : dir;
    if (tokenizerDir == null && !hasTokenizer(dir)) {
      throw new NoSuchFileException(dir.toString(), null, "no tokenizer files in the model folder (" + TokenizerFiles.HF
          + ", or " + TokenizerFiles.VOCAB + " + " + TokenizerFiles.MERGES + "); pass --tokenizer DIR");
    }
    BpeTokenizer tok = TokenizerFiles.load(d, List.of());
    if (tok.specialId(END_OF_TEXT) < 0 && !Files.isRegularFile(d.resolve(TokenizerFiles.HF))) {
      BpeTokenizer withEnd = TokenizerFiles.load(d, List.of(END_OF_TEXT));
      if (withEnd.vocabSize() == tok.vocabSize()) {
        tok = withEnd;
      }
    }
    return tok;
  }
}
