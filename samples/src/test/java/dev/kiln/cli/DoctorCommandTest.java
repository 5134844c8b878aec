package dev.kiln.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class DoctorCommandTest {
  @Test
  void doctorReportsJavaCpuAndGpuAndSucceedsWithoutAGpu() {
    CliTestSupport.Result r = CliTestSupport.run("doctor");
    assertEquals(0, r.exitCode(), r.err());
    assertTrue(r.out().contains("version        " + Runtime.version()), r.out());
    assertTrue(r.out().contains("cores          " + Runtime.getRuntime().availableProcessors()), r.out());
    assertTrue(r.out().contains("OpenBLAS\n  core           "), r.out());
    // Either a device line or the reason there is none; never an exception.
    assertTrue(r.out().contains("GPU\n  none ") || r.out().contains("  device 0 "), r.out());
  }

  @Test
  void benchGemmPrintsBothSidesAndTheRatio() {
    CliTestSupport.Result r = CliTestSupport.run("bench", "gemm", "--sizes", "64", "--repetitions", "1", "--no-bandwidth");
    assertEquals(0, r.exitCode(), r.err());
    assertTrue(r.out().matches("(?s).*64x64x64 f32  kiln [0-9.]+ GFLOP/s  direct [0-9.]+ GFLOP/s  [0-9]+% of direct OpenBLAS  \\(allocating matmul.*"),
        r.out());
  }

  @Test
  void benchGemmRejectsNonsenseSizes() {
    CliTestSupport.Result r = CliTestSupport.run("bench", "gemm", "--sizes", "0");
    assertEquals(1, r.exitCode());
    assertTrue(r.err().contains("--sizes must be positive"), r.err());
  }

  @Test
  void versionNamesKilnAndJava() {
    CliTestSupport.Result r = CliTestSupport.run("--version");
    assertEquals(0, r.exitCode());
    assertTrue(r.out().startsWith("kiln "), r.out());
    assertTrue(r.out().contains("Java " + Runtime.version()), r.out());
  }

  @Test
  void unknownSubcommandIsAUsageErrorNotACrash() {
    CliTestSupport.Result r = CliTestSupport.run("no-such-command");
    assertEquals(2, r.exitCode());
    assertTrue(r.err().contains("no-such-command"), r.err());
  }
}
