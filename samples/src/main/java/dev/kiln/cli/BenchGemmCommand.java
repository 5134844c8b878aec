package dev.kiln.cli;

import dev.kiln.runtime.bench.BandwidthBenchmark;
import dev.kiln.runtime.bench.GemmBenchmark;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code kiln bench gemm}: Kiln's GEMM next to OpenBLAS called directly, same run, same data. */
@Command(
    name = "gemm",
    description = {
      "GFLOP/s of Kiln's float32 GEMM (Gemm.matmul on NdArrays) next to cblas_sgemm called directly through"
          + " JavaCPP, interleaved, best of N, and the ratio as a percentage.",
      "Then GB/s of elementwise add and softmax next to a plain memory copy of the same bytes."
    })
public final class BenchGemmCommand implements Runnable {
  @Option(names = "--sizes", split = ",", description = "Square sizes n (n x n x n), default: ${DEFAULT-VALUE}.")
  int[] sizes = {1024, 2048};

  @Option(names = "--repetitions", description = "Timed repetitions per size and side, default: ${DEFAULT-VALUE}.")
  int repetitions = 10;

  @Option(
      names = "--bandwidth",
      negatable = true,
      defaultValue = "true",
      fallbackValue = "true",
      description = "Also measure add/softmax bandwidth against memory copy (default: ${DEFAULT-VALUE}).")
  boolean bandwidth;

  @Override
  public void run() {
    if (repetitions < 1) {
      throw new IllegalArgumentException("--repetitions must be at least 1, got " + repetitions);
    }
    for (int n : sizes) {
      if (n < 1) {
        throw new IllegalArgumentException("--sizes must be positive, got " + n);
      }
    }
    new GemmBenchmark(sizes, repetitions).run(System.out);
    if (bandwidth) {
      System.out.println();
      BandwidthBenchmark.defaults().run(System.out);
    }
  }
}
