package dev.kiln.runtime.tokenizer;

import java.nio.file.Files;
import java.nio.file.Path;

/** Finds the shared data folder ({@code ../shared/data} from the project root, or {@code KILN_DATA}). */
final class TestData {
  private TestData() {}

  static Path dir() {
    String env = System.getenv("KILN_DATA");
    if (env != null) {
      return Path.of(env);
    }
    Path here = Path.of("").toAbsolutePath();
    for (Path p = here; p != null; p = p.getParent()) {
      Path cand = p.resolve("shared/data");
      if (Files.isDirectory(cand.resolve("tokenizer"))) {
        return cand;
      }
      Path sibling = p.resolve("../shared/data").normalize();
      if (Files.isDirectory(sibling.resolve("tokenizer"))) {
        return sibling;
      }
    }
    throw new IllegalStateException("test data not found: set KILN_DATA to the folder holding tokenizer/ and text/"
        + " (looked for shared/data above " + here + ")");
  }
}
