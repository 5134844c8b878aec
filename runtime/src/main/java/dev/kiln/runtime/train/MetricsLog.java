package dev.kiln.runtime.train;

import dev.kiln.runtime.io.AtomicFiles;
import dev.kiln.runtime.io.Json;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * {@code metrics.jsonl}: one JSON object per training step, appended as the run goes ({@code step},
 * {@code train_loss}, {@code lr}, {@code grad_norm}, {@code tokens_per_s}, {@code elapsed_s}, and {@code val_loss} on
 * steps that ran validation). Non-finite numbers are written as the strings {@code "NaN"}, {@code "Infinity"}.
 */
public final class MetricsLog {
  /** One step's numbers; {@code valLoss} is NaN when validation did not run at this step. */
  public record Entry(
      long step, double trainLoss, double valLoss, double lr, double gradNorm, double tokensPerSecond,
      double elapsedSeconds) {}

  private final Path file;

  public MetricsLog(Path file) {
    this.file = file;
  }

  public Path file() {
    return file;
  }

  public void append(Entry e) throws IOException {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("step", e.step());
    m.put("train_loss", e.trainLoss());
    if (!Double.isNaN(e.valLoss())) {
      m.put("val_loss", e.valLoss());
    }
    m.put("lr", e.lr());
    m.put("grad_norm", e.gradNorm());
    m.put("tokens_per_s", Math.round(e.tokensPerSecond() * 10) / 10.0);
    m.put("elapsed_s", Math.round(e.elapsedSeconds() * 1000) / 1000.0);
    Files.createDirectories(file.toAbsolutePath().getParent());
    Files.writeString(file, Json.write(m) + "\n", StandardCharsets.UTF_8, StandardOpenOption.CREATE,
        StandardOpenOption.APPEND);
  }

  /** Every entry in the file (an absent file has none); lines that do not parse are skipped. */
  public List<Entry> read() throws IOException {
    List<Entry> out = new ArrayList<>();
    if (!Files.isRegularFile(file)) {
      return out;
    }
    for (String line : Files.readAllLines(file)) {
      if (line.isBlank()) {
        continue;
      }
      try {
        Map<String, Object> m = Json.parseObject(line);
        out.add(new Entry(((Number) m.get("step")).longValue(), num(m.get("train_loss")), num(m.get("val_loss")),
            num(m.get("lr")), num(m.get("grad_norm")), num(m.get("tokens_per_s")), num(m.get("elapsed_s"))));
      } catch (RuntimeException e) {
        // a line cut short by a crash: the run continues from its checkpoint and re-writes later steps
      }
    }
    return out;
  }

  /**
   * Drops the lines of steps after {@code step} (written after the checkpoint a run resumes from, and about to be
   * written again), atomically.
   */
  public void truncateAfter(long step) throws IOException {
    if (!Files.isRegularFile(file)) {
      return;
    }
    StringBuilder kept = new StringBuilder();
    for (String line : Files.readAllLines(file)) {
      try {
        if (((Number) Json.parseObject(line).get("step")).longValue() <= step) {
          kept.append(line).append('\n');
        }
      } catch (RuntimeException e) {
        // drop unreadable lines
      }
    }
    AtomicFiles.writeString(file, kept.toString());
  }

  private static double num(Object o) {
    if (o instanceof Number n) {
      return n.doubleValue();
    }
    if (o instanceof String s) {
      return Double.parseDouble(s);
    }
    return Double.NaN;
  }
}
