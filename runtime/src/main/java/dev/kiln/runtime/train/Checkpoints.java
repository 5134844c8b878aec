package dev.kiln.runtime.train;

import dev.kiln.runtime.io.AtomicFiles;
import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.io.Safetensors;
import dev.kiln.runtime.io.SafetensorsFile;
import dev.kiln.runtime.optim.Optimizer;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tokenizer.TokenizerFiles;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * A run's checkpoints: folders {@code step-000123/} under one directory, each holding
 *
 * <ul>
 *   <li>{@code config.json} — the resolved training config;
 *   <li>{@code model.safetensors} — the parameters by state-dict name;
 *   <li>{@code optimizer.safetensors} — the optimizer state ({@code <param>.exp_avg}, ..., step in the metadata);
 *   <li>{@code trainer.json} — {@link TrainerState} (step, data RNG state, best validation loss, wall time);
 *   <li>the tokenizer's files ({@code vocab.json}, {@code merges.txt}, {@code tokenizer.json}) when the run has one.
 * </ul>
 *
 * <p><b>Atomic as a whole.</b> A checkpoint is written into {@code step-000123.tmp/}, every file forced to disk, the
 * folder forced, and only then renamed to {@code step-000123/}; then the {@code latest} file (the folder's name)
 * is replaced atomically. A crash at any moment leaves either the previous checkpoints or the new one complete,
 * never a half-written folder under a real name. Older checkpoints beyond the last {@code keep} are then deleted.
 */
public final class Checkpoints {
  public static final String CONFIG = "config.json";
  public static final String MODEL = "model.safetensors";
  public static final String OPTIMIZER = "optimizer.safetensors";
  public static final String TRAINER = "trainer.json";
  public static final String LATEST = "latest";
  private static final Pattern NAME = Pattern.compile("step-(\\d+)");

  private final Path dir;
  private final int keep;

  public Checkpoints(Path dir, int keep) {
    if (keep < 1) {
      throw new IllegalArgumentException("checkpoint.keep must be >= 1, got " + keep);
    }
    this.dir = dir;
    this.keep = keep;
  }

  public Path dir() {
    return dir;
  }

  /** The folder name of the checkpoint after {@code step} updates. */
  public static String name(long step) {
    return String.format("step-%06d", step);
  }

  /** Writes a complete checkpoint atomically, points {@code latest} at it, prunes old ones; returns its folder. */
  public Path write(
      TrainConfig config, ParameterSet params, Optimizer optimizer, TrainerState state, Path tokenizerDir)
      throws IOException {
    Files.createDirectories(dir);
    String name = name(state.step());
    Path tmp = dir.resolve(name + ".tmp");
    Path target = dir.resolve(name);
    deleteTree(tmp);
    Files.createDirectories(tmp);
    ConfigLoader.write(config, tmp.resolve(CONFIG));
    Safetensors.write(tmp.resolve(MODEL), params.asMap(), Map.of("format", "pt"));
    optimizer.save(tmp.resolve(OPTIMIZER));
    AtomicFiles.writeString(tmp.resolve(TRAINER), state.toJson());
    if (tokenizerDir != null) {
      for (String f : List.of(TokenizerFiles.VOCAB, TokenizerFiles.MERGES, TokenizerFiles.HF)) {
        Path src = tokenizerDir.resolve(f);
        if (Files.isRegularFile(src)) {
          AtomicFiles.write(tmp.resolve(f), out -> Files.copy(src, out));
        }
      }
    }
    forceDir(tmp);
    Path old = null;
    if (Files.exists(target)) {
      // Re-writing a step (a resumed run interrupted at the same step): move the old one aside, never delete first.
      old = dir.resolve(name + ".old");
      deleteTree(old);
      move(target, old);
    }
    move(tmp, target);
    forceDir(dir);
    AtomicFiles.writeString(dir.resolve(LATEST), name + "\n");
    if (old != null) {
      deleteTree(old);
    }
    prune(target);
    return target;
  }

  /** The checkpoint {@code latest} names, if any. */
  public Optional<Path> latest() throws IOException {
    Path l = dir.resolve(LATEST);
    if (!Files.isRegularFile(l)) {
      return Optional.empty();
    }
    Path p = dir.resolve(Files.readString(l).strip());
    return Files.isDirectory(p) ? Optional.of(p) : Optional.empty();
  }

  /** Complete checkpoint folders, oldest first. */
  public List<Path> list() throws IOException {
    List<Path> out = new ArrayList<>();
    if (!Files.isDirectory(dir)) {
      return out;
    }
    try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
      for (Path p : ds) {
        if (Files.isDirectory(p) && NAME.matcher(p.getFileName().toString()).matches()) {
          out.add(p);
        }
      }
    }
    out.sort(Comparator.comparingLong(Checkpoints::stepOf));
    return out;
  }

  private static long stepOf(Path p) {
    Matcher m = NAME.matcher(p.getFileName().toString());
    return m.matches() ? Long.parseLong(m.group(1)) : -1;
  }

  private void prune(Path keepAlways) throws IOException {
    List<Path> all = list();
    int excess = all.size() - keep;
    for (int i = 0; i < all.size() && excess > 0; i++) {
      if (!all.get(i).equals(keepAlways)) {
        deleteTree(all.get(i));
        excess--;
      }
    }
  }

  /**
   * The checkpoint folder {@code path} means: a checkpoint itself (it holds {@code trainer.json}), or a folder whose
   * {@code latest} file names one (a run's {@code checkpoints/} folder), or a run folder holding {@code
   * checkpoints/latest}.
   */
  public static Path resolve(Path path) throws IOException {
    if (Files.isRegularFile(path.resolve(TRAINER))) {
      return path;
    }
    for (Path d : List.of(path, path.resolve("checkpoints"))) {
      Path l = d.resolve(LATEST);
      if (Files.isRegularFile(l)) {
        Path p = d.resolve(Files.readString(l).strip());
        if (Files.isRegularFile(p.resolve(TRAINER))) {
          return p;
        }
        throw new NoSuchFileException(p.toString(), null, "named by " + l + " but not a complete checkpoint");
      }
    }
    throw new NoSuchFileException(path.toString(), null,
        "not a checkpoint (no " + TRAINER + ") and no " + LATEST + " file pointing to one");
  }

  /** The trainer state saved in checkpoint {@code ckpt}. */
  public static TrainerState readState(Path ckpt) throws IOException {
    Path f = ckpt.resolve(TRAINER);
    return TrainerState.fromJson(Files.readString(f), f.toString());
  }

  /** Copies the saved parameters into {@code params}, after checking that names, shapes and dtypes agree. */
  public static void loadModel(Path ckpt, ParameterSet params) throws IOException {
    Path f = ckpt.resolve(MODEL);
    try (SafetensorsFile st = SafetensorsFile.open(f)) {
      Map<String, NdArray> saved = new LinkedHashMap<>();
      for (String n : st.names()) {
        saved.put(n, st.get(n));
      }
      try {
        params.requireSameLayout(saved, f.toString());
      } catch (IllegalArgumentException e) {
        throw new IOException(e.getMessage() + " (was the checkpoint made with another model config?)", e);
      }
      params.forEach((n, a) -> a.copyFrom(saved.get(n)));
    }
  }

  private static void move(Path from, Path to) throws IOException {
    try {
      Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
    } catch (AtomicMoveNotSupportedException e) {
      Files.move(from, to);
    }
  }

  /** Forces a directory's entries to disk (POSIX); where directories cannot be opened, the rename must do. */
  private static void forceDir(Path d) {
    try (FileChannel ch = FileChannel.open(d, StandardOpenOption.READ)) {
      ch.force(true);
    } catch (IOException | UnsupportedOperationException e) {
      // Windows cannot open a directory as a channel; its renames are durable on their own.
    }
  }

  private static void deleteTree(Path p) throws IOException {
    if (!Files.exists(p)) {
      return;
    }
    try (Stream<Path> s = Files.walk(p)) {
      for (Path q : s.sorted(Comparator.reverseOrder()).toList()) {
        Files.delete(q);
      }
    }
  }
}
