package dev.kiln.runtime.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import org.junit.jupiter.api.Test;

class BandwidthBenchmarkTest {
  @Test
  void smallRunReportsBothKernelsAgainstTheCopy() {
    ByteArrayOutputStream buf = new ByteArrayOutputStream();
    List<BandwidthBenchmark.Result> rs =
        new BandwidthBenchmark(1 << 16, 32, 256, 1, 3).run(new PrintStream(buf, true, StandardCharsets.UTF_8));
    String text = buf.toString(StandardCharsets.UTF_8);
    assertEquals(2, rs.size());
    assertEquals(3L * (1 << 16) * 4, rs.get(0).bytes(), "add moves two reads and a write");
    assertEquals(2L * 32 * 256 * 4, rs.get(1).bytes(), "softmax moves one read and one write");
    for (BandwidthBenchmark.Result r : rs) {
      assertTrue(r.kernelGbPerSecond() > 0 && r.copyGbPerSecond() > 0, r.toString());
      assertEquals(100 * r.copySeconds() / r.kernelSeconds(), r.percentOfCopy(), 1e-9);
    }
    assertTrue(text.contains("add F32") && text.contains("softmax F32") && text.contains("%"), text);
    assertThrows(IllegalArgumentException.class, () -> new BandwidthBenchmark(0, 1, 1, 0, 1));
  }
}
