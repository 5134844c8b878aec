package dev.kiln.runtime.bench;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Blas;
import dev.kiln.runtime.cpu.Gemm;
import dev.kiln.runtime.tensor.Flops;
import dev.kiln.runtime.tensor.NdArray;
import java.io.PrintStream;
import java.util.Random;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_nolapack;

/**
 * {@code kiln bench gemm}: Kiln's {@link Gemm#matmul} on {@link NdArray}s against OpenBLAS called directly through
 * JavaCPP's own binding ({@code cblas_sgemm} on {@code FloatPointer}s), float32, in the same run on the same data.
 *
 * <p>The peer is {@code openblas_nolapack.cblas_sgemm}, which runs in the very OpenBLAS instance Kiln calls
 * through FFM (see {@link Blas}): same kernels, same thread pool, so the ratio measures Kiln's overhead and nothing
 * else. Kiln is timed twice: {@link Gemm#gemm} into an existing result, like for like with the direct call (the FFM
 * downcall and layout checks are the only difference; this is the ratio Kiln is held to), and {@link Gemm#matmul},
 * which also allocates and zero-fills a fresh result each call (what a plain {@code matmul} costs). The three are
 * interleaved and the best of several repetitions is kept, because on a shared machine the slow runs measure the
 * neighbours.
 */
public final class GemmBenchmark {
  private final int[] sizes;
  private final int repetitions;

  /** The default: 1024³ and 2048³. */
  public GemmBenchmark() {
    this(new int[] {1024, 2048}, 10);
  }

  public GemmBenchmark(int[] sizes, int repetitions) {
    if (repetitions < 1) {
      throw new IllegalArgumentException("repetitions must be at least 1, got " + repetitions);
    }
    this.sizes = sizes.clone();
    this.repetitions = repetitions;
  }

  /**
   * One result line per size: Kiln's {@code gemm} into an existing result, the direct call, and Kiln's allocating
   * {@code matmul}.
   */
  public record Result(int size, double kilnGflops, double directGflops, double matmulGflops) {
    /** Kiln's {@code gemm} over the direct call (like for like). */
    public double ratio() {
      return kilnGflops / directGflops;
    }

    @Override
    public String toString() {
      return String.format(
          "%dx%dx%d f32  kiln %.1f GFLOP/s  direct %.1f GFLOP/s  %.0f%% of direct OpenBLAS"
              + "  (allocating matmul %.1f GFLOP/s, %.0f%%)",
          size, size, size, kilnGflops, directGflops, 100 * ratio(), matmulGflops,
          100 * matmulGflops / directGflops);
    }
  }

  /** Runs every size and prints a header and one line per size to {@code out}. */
  public Result[] run(PrintStream out) {
    out.printf(
        "%s, core %s, %d threads; best of %d, interleaved%n",
        Blas.config(), Blas.corename(), Blas.threads(), repetitions);
    Result[] results = new Result[sizes.length];
    for (int i = 0; i < sizes.length; i++) {
      results[i] = measure(sizes[i]);
      out.println(results[i]);
    }
    return results;
  }

  private Result measure(int n) {
    Random rnd = new Random(n);
    float[] av = new float[n * n];
    float[] bv = new float[n * n];
    for (int i = 0; i < av.length; i++) {
      av[i] = rnd.nextFloat() * 2 - 1;
      bv[i] = rnd.nextFloat() * 2 - 1;
    }
    NdArray a = NdArray.fromFloats(av, n, n);
    NdArray b = NdArray.fromFloats(bv, n, n);
    try (FloatPointer pa = new FloatPointer(av);
        FloatPointer pb = new FloatPointer(bv);
        FloatPointer pc = new FloatPointer((long) n * n)) {
      for (int w = 0; w < 2; w++) {
        Gemm.matmul(a, b);
        direct(n, pa, pb, pc);
      }
      checkAgree(Gemm.matmul(a, b), pc, n);
      NdArray c = NdArray.zeros(DType.F32, n, n);
      Gemm.gemm(Gemm.Transpose.NONE, Gemm.Transpose.NONE, 1, a, b, 0, c);
      checkAgree(c, pc, n);
      long bestKiln = Long.MAX_VALUE;
      long bestDirect = Long.MAX_VALUE;
      long bestMatmul = Long.MAX_VALUE;
      for (int r = 0; r < repetitions; r++) {
        long t0 = System.nanoTime();
        Gemm.gemm(Gemm.Transpose.NONE, Gemm.Transpose.NONE, 1, a, b, 0, c);
        long t1 = System.nanoTime();
        direct(n, pa, pb, pc);
        long t2 = System.nanoTime();
        NdArray fresh = Gemm.matmul(a, b);
        long t3 = System.nanoTime();
        bestKiln = Math.min(bestKiln, t1 - t0);
        bestDirect = Math.min(bestDirect, t2 - t1);
        bestMatmul = Math.min(bestMatmul, t3 - t2);
        if (fresh.numel() != (long) n * n) {
          throw new IllegalStateException("matmul returned " + fresh);
        }
      }
      double flops = Flops.gemm(n, n, n);
      return new Result(n, flops / bestKiln, flops / bestDirect, flops / bestMatmul);
    }
  }

  private static void direct(int n, FloatPointer a, FloatPointer b, FloatPointer c) {
    openblas_nolapack.cblas_sgemm(
        openblas_nolapack.CblasRowMajor, openblas_nolapack.CblasNoTrans, openblas_nolapack.CblasNoTrans, n, n, n,
        1f, a, n, b, n, 0f, c, n);
  }

  /** Both paths ran the same kernels on the same data: the results must be bit-identical. */
  private static void checkAgree(NdArray kiln, FloatPointer direct, int n) {
    float[] d = new float[n * n];
    direct.get(d);
    float[] k = kiln.toFloatArray();
    for (int i = 0; i < d.length; i++) {
      if (Float.floatToIntBits(d[i]) != Float.floatToIntBits(k[i])) {
        throw new IllegalStateException(
            "Kiln and direct OpenBLAS disagree at element " + i + ": " + k[i] + " vs " + d[i]);
      }
    }
  }

  /** Runs the default benchmark: {@code java ... dev.kiln.runtime.bench.GemmBenchmark}. */
  public static void main(String[] args) {
    new GemmBenchmark().run(System.out);
  }
}
