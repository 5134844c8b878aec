package dev.kiln.runtime.cuda.bench;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.runtime.cuda.Cublas;
import dev.kiln.runtime.cuda.CudaArray;
import dev.kiln.runtime.cuda.CudaEvent;
import dev.kiln.runtime.cuda.device.CudaModelDevice;
import dev.kiln.runtime.cuda.device.CudaTensor;

/**
 * How a mixed-precision GEMM of fp32 activations should reach the tensor cores, timed with CUDA events on the
 * training benchmark's shapes (xl and TinyStories, forward and both backward layouts):
 *
 * <ul>
 *   <li>{@code cast+bf16}: cast both operands to bf16 (one kernel each), then a bf16 GEMM — what the CUDA device does
 *       for an activation it has not cast before in the step;
 *   <li>{@code bf16}: the bf16 GEMM alone, operands already cast;
 *   <li>{@code fast16bf}: the fp32 operands given to cuBLAS with {@code CUBLAS_COMPUTE_32F_FAST_16BF}, which rounds
 *       them to bf16 inside the GEMM.
 * </ul>
 *
 * Output: {@code BENCH gemmprec m=.. n=.. k=.. layout=.. cast_bf16_ms=.. bf16_ms=.. fast16bf_ms=..
 * fast_vs_cast=..} plus the largest difference between the fast16bf and bf16 results, relative to the largest
 * result. Run: {@code java ... dev.kiln.runtime.cuda.bench.GemmPrecisionBench [reps]}.
 */
public final class GemmPrecisionBench {
  private GemmPrecisionBench() {}

  public static void main(String[] args) {
    int reps = args.length > 0 ? Integer.parseInt(args[0]) : 20;
    CudaModelDevice dev = new CudaModelDevice(0, CudaModelDevice.Precision.BF16);
    System.out.println("device " + dev.gpu());
    // {m, n, k, layout}: layout 0 = A[m,k] B[n,k]ᵀ (forward), 1 = A[m,k] B[k,n] (input gradient),
    // 2 = A[k,m]ᵀ B[k,n] (weight gradient).
    long[][] shapes = {
      {2048, 10240, 2560, 0}, {2048, 2560, 10240, 1}, {10240, 2560, 2048, 2}, {2048, 2560, 2560, 0},
      {32768, 1344, 512, 0}, {32768, 512, 1344, 1}, {1344, 512, 32768, 2}, {32768, 10000, 512, 0},
    };
    try (Cublas blas = new Cublas(dev.gpu().defaultStream());
        CudaEvent e0 = new CudaEvent(dev.gpu());
        CudaEvent e1 = new CudaEvent(dev.gpu())) {
      for (long[] s : shapes) {
        long m = s[0];
        long n = s[1];
        long k = s[2];
        int layout = (int) s[3];
        long[] aShape = layout == 2 ? new long[] {k, m} : new long[] {m, k};
        long[] bShape = layout == 0 ? new long[] {n, k} : new long[] {k, n};
        Tensor a32 = dev.empty(DType.F32, aShape);
        Tensor b32 = dev.empty(DType.F32, bShape);
        dev.fillTruncatedNormal(a32, 1, 3, 1, 1);
        dev.fillTruncatedNormal(b32, 1, 3, 2, 2);
        Tensor a16 = dev.empty(DType.BF16, aShape);
        Tensor b16 = dev.empty(DType.BF16, bShape);
        Tensor c1 = dev.empty(DType.F32, m, n);
        Tensor c2 = dev.empty(DType.F32, m, n);
        CudaArray[] ops32 = operands(a32, b32, layout);
        CudaArray[] ops16 = operands(a16, b16, layout);
        double[] ms = new double[3];
        for (int variant = 0; variant < 3; variant++) {
          for (int i = -3; i < reps; i++) {
            if (i == 0) {
              e0.record(dev.gpu().defaultStream());
            }
            switch (variant) {
              case 0 -> {
                dev.copy(a32, a16);
                dev.copy(b32, b16);
                blas.gemm(1, ops16[0], ops16[1], 0, arr(c1));
              }
              case 1 -> blas.gemm(1, ops16[0], ops16[1], 0, arr(c1));
              default -> {
                blas.setFp32InputsAsBf16(true);
                blas.gemm(1, ops32[0], ops32[1], 0, arr(c2));
                blas.setFp32InputsAsBf16(false);
              }
            }
          }
          e1.record(dev.gpu().defaultStream());
          dev.synchronize();
          ms[variant] = e1.elapsedMillisSince(e0) / reps;
        }
        double[] x = dev.download(c1);
        double[] y = dev.download(c2);
        double diff = 0;
        double max = 0;
        for (int i = 0; i < x.length; i++) {
          diff = Math.max(diff, Math.abs(x[i] - y[i]));
          max = Math.max(max, Math.abs(x[i]));
        }
        double flops = 2.0 * m * n * k;
        System.out.printf(java.util.Locale.ROOT,
            "BENCH gemmprec m=%d n=%d k=%d layout=%s cast_bf16_ms=%.4f bf16_ms=%.4f fast16bf_ms=%.4f"
                + " fast16bf_tflops=%.0f bf16_tflops=%.0f fast_vs_cast=%.2f max_rel_diff=%.2e%n",
            m, n, k, new String[] {"NT", "NN", "TN"}[layout], ms[0], ms[1], ms[2], flops / ms[2] / 1e9,
            flops / ms[1] / 1e9, ms[0] / ms[2], diff / max);
        for (Tensor t : new Tensor[] {a32, b32, a16, b16, c1, c2}) {
          dev.release(t);
        }
      }
    }
  }

  private static CudaArray arr(Tensor t) {
    return ((CudaTensor) t).array();
  }

  /** The two GEMM operands as row-major views: A [m, k] and B [k, n], transposed views where the layout says so. */
  private static CudaArray[] operands(Tensor a, Tensor b, int layout) {
    CudaArray x = arr(a);
    CudaArray y = arr(b);
    return new CudaArray[] {layout == 2 ? x.transpose(0, 1) : x, layout == 0 ? y.transpose(0, 1) : y};
  }
}
