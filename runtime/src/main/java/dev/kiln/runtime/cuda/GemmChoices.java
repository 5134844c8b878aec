package dev.kiln.runtime.cuda;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * {@link CublasLt}'s timed algorithm choices kept in a file ({@code KILN_GEMM_CHOICES}), one per line: the key (device
 * name, cuBLASLt library, problem), a tab, and the choice: the index of the chosen candidate in the heuristic's order,
 * or {@code algo:} and the 64 bytes of the algorithm in hex where the wide search ({@code KILN_GEMM_SEARCH=1}) chose
 * a configuration the heuristic does not offer ({@code cublasLtMatmulAlgo_t} is meant to be stored so, for the same
 * cuBLASLt).
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
  private final Map<String, Choice> choices = new LinkedHashMap<>();

  /** One problem's choice: {@code index} of a heuristic answer, or (index -1) an algorithm's bytes written out whole. */
  record Choice(int index, byte[] algo) {
    private static final String ALGO = "algo:";

    static Choice of(int index) {
      return new Choice(index, null);
    }

    static Choice of(byte[] algo) {
      return new Choice(-1, algo.clone());
    }

    /** As the file writes it. */
    String token() {
      return algo == null ? Integer.toString(index) : ALGO + HexFormat.of().formatHex(algo);
    }

    /** The choice a line's token names, or null where it names none. */
    static Choice parse(String token) {
      try {
        if (token.startsWith(ALGO)) {
          byte[] bytes = HexFormat.of().parseHex(token.substring(ALGO.length()));
          return bytes.length == CublasLt.ALGO_BYTES ? of(bytes) : null;
        }
        int index = Integer.parseInt(token);
        return index >= 0 ? of(index) : null;
      } catch (IllegalArgumentException e) { // NumberFormatException too
        return null;
      }
    }

    @Override
    public boolean equals(Object o) {
      return o instanceof Choice c && c.index == index && Arrays.equals(c.algo, algo);
    }

    @Override
    public int hashCode() {
      return 31 * index + Arrays.hashCode(algo);
    }

    @Override
    public String toString() {
      return token();
    }
  }

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
      Choice choice = tab > 0 ? Choice.parse(line.substring(tab + 1).trim()) : null;
      if (choice == null) {
        throw new IllegalArgumentException("GEMM choices file " + file + ", line " + (i + 1)
            + ": expected '<problem key><TAB><candidate index or algo:<128 hex digits>>', found '" + line
            + "'; delete the file (KILN_GEMM_CHOICES) to time the GEMMs again");
      }
      choices.put(line.substring(0, tab), choice);
    }
  }

  /** The file named by {@code KILN_GEMM_CHOICES}, or null where the variable is unset or empty. */
  static GemmChoices fromEnvironment() {
    String path = System.getenv("KILN_GEMM_CHOICES");
    return path == null || path.isBlank() ? null : new GemmChoices(Path.of(path));
  }

  /** The file the choices are kept in. */
  Path file() {
    return file;
  }

  /** One problem's key; tabs and line breaks in the parts (none are expected) become spaces. */
  static String key(String device, String library, String problem) {
    return String.join(" | ", List.of(device, library, problem)).replaceAll("[\\t\\r\\n]", " ");
  }

  synchronized Choice get(String key) {
    return choices.get(key);
  }

  /** Records a choice and rewrites the file (temporary file, then rename). */
  synchronized void put(String key, Choice choice) {
    choices.put(key, choice);
    List<String> lines = new ArrayList<>();
    choices.forEach((k, v) -> lines.add(k + "\t" + v.token()));
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
