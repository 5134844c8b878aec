package dev.kiln.runtime.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class GemmBenchmarkTest {
  /** Small sizes: checks the plumbing, the bit-identical agreement check and the output format, not the speed. */
  @Test
  void smallRunPrintsOneLinePerSize() {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    GemmBenchmark.Result[] results =
        new GemmBenchmark(new int[] {64, 96}, 2).run(new PrintStream(bytes, true, StandardCharsets.UTF_8));
    String[] lines = bytes.toString(StandardCharsets.UTF_8).split("\n");
    assertEquals(3, lines.length, String.join("\n", lines));
    assertTrue(lines[0].contains("OpenBLAS 0.3.31"), lines[0]);
    assertTrue(
        lines[1].matches(
            "64x64x64 f32  kiln \\d+\\.\\d GFLOP/s  direct \\d+\\.\\d GFLOP/s  \\d+% of direct OpenBLAS"
                + "  \\(allocating matmul \\d+\\.\\d GFLOP/s, \\d+%\\)"),
        lines[1]);
    assertTrue(lines[2].startsWith("96x96x96 f32  kiln "), lines[2]);
    for (GemmBenchmark.Result r : results) {
      assertTrue(r.kilnGflops() > 0 && r.directGflops() > 0 && r.matmulGflops() > 0, r.toString());
    }
  }
}
