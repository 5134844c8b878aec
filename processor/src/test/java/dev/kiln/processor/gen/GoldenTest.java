package dev.kiln.processor.gen;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A few generated files compared word for word with reviewed copies, to catch output that is correct but strange
 * (a lost comment, a copy where a view would do, a changed kernel). Behaviour is tested by running the code; these
 * only guard the text. After an intended change, run with {@code -Dkiln.updateGolden=true} and review the diff.
 */
class GoldenTest {
  @ParameterizedTest
  @ValueSource(strings = {"CompiledLinear.java", "CompiledSwiGlu.java", "CompiledSwiGluKernels.java",
      "cs336.RmsNorm.cu"})
  void matchesReviewedCopy(String file) throws IOException {
    Generated g = Generated.cs336();
    String actual = file.endsWith(".cu") ? g.resource("META-INF/kiln/cuda/" + file) : g.source(file);
    if (Boolean.getBoolean("kiln.updateGolden")) {
      Files.writeString(Path.of("src/test/resources/golden", file + ".txt"), actual);
      return;
    }
    String expected;
    try (InputStream in = GoldenTest.class.getResourceAsStream("/golden/" + file + ".txt")) {
      if (in == null) {
        throw new AssertionError("no golden copy of " + file + "; run with -Dkiln.updateGolden=true and review it");
      }
      expected = new String(in.readAllBytes(), StandardCharsets.UTF_8);
    }
    assertEquals(expected, actual, file + " changed; if intended, run with -Dkiln.updateGolden=true and review the diff");
  }
}
