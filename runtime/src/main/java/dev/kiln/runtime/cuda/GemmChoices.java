package dev.kiln.runtime.cuda;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * {@link CublasLt}'s timed algorithm choices kept in a file ({@code KILN_GEMM_CHOICES}), one per line: the key (device
 * name, cuBLASLt library, problem), a tab, and the index of the chosen candidate in the heuristic's order.
 *
 * <p>Why: the choice is made by timing, so two processes may choose differently near the margin, and a process run
 * under a profiler (Nsight Compute serialises every launch and adds its own overhead to each) times noise. Reading the
 * choices of an earlier run makes the second process run the first one's kernels. The library is part of the key
 * because the index means something only in one cuBLASLt's heuristic order; a stale line is never read for another.
 *
 * <p>Every new choice rewrites the whole file through a temporary file and a rename, so a crash leaves the old file or
 * the new one, never half of one.
 */
final class GemmChoices {
  private final Path file;
  private final Map<String, Integer> choices = new LinkedHashMap<>();

  GemmChoices(Path file) {
    this.file = file;
    if (!Files.exists(file)) {
      return;
    }
    List<String> lines;
    try {
      lines = Files.readAllLines(file, StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read the GEMM choices file " + file + " (KILN_GEMM_CHOICES)", e);
    }
    for (int i = 0; i < lines.size(); i++) {
      String line = lines.get(i);
      if (line.isBlank()) {
        continue;
      }
      int tab = line.lastIndexOf('\t');
      Integer index = null;
      if (tab > 0) {
        try {
          index = Integer.valueOf(line.substring(tab + 1).trim());
        } catch (NumberFormatException e) {
          index = null;
        }
      }
      if (index == null || index < 0) {
        throw new IllegalArgumentException("GEMM choices file " + file + ", line " + (i + 1)
            + ": expected '<problem key><TAB><candidate index>', found '" + line
            + "'; delete the file (KILN_GEMM_CHOICES) to time the GEMMs again");
      }
      choices.put(line.substring(0, tab), index);
    }
  }

  /** The file named by {@code KILN_GEMM_CHOICES}, or null where the variable is unset or empty. */
  static GemmChoices fromEnvironment() {
    String path = System.getenv("KILN_GEMM_CHOICES");
    return path == null || path.isBlank() ? null : new GemmChoices(Path.of(path));
  }

  /** One problem's key; tabs and line breaks in the parts (none are expected) become spaces. */
  static String key(String device, String library, String problem) {
    return String.join(" | ", List.of(device, library, problem)).replaceAll("[\\t\\r\\n]", " ");
  }

  synchronized Integer get(String key) {
    return choices.get(key);
  }

  /** Records a choice and rewrites the file (temporary file, then rename). */
  synchronized void put(String key, int index) {
    choices.put(key, index);
    List<String> lines = new ArrayList<>();
    choices.forEach((k, v) -> lines.add(k + "\t" + v));
    try {
      Path dir = file.toAbsolutePath().getParent();
      Files.createDirectories(dir);
      Path tmp = Files.createTempFile(dir, file.getFileName().toString(), ".tmp");
      Files.write(tmp, lines, StandardCharsets.UTF_8);
      Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    } catch (IOException e) {
      throw new UncheckedIOException("cannot write the GEMM choices file " + file + " (KILN_GEMM_CHOICES)", e);
    }
  }
}
