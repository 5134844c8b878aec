package dev.kiln.runtime.cuda;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * cuBLAS GEMMs against a float64 loop over the same (dtype-rounded) inputs, through both entry points: cuBLASLt (the
 * default) and {@code cublasGemmEx}.
 */
class CublasGpuTest {
  /** Row-major reference {@code C[b] = A[b or 0] @ B[b or 0]} on [batch, rows, cols] doubles. */
  private static double[] reference(double[] a, double[] b, int batchA, int batchB, int batch, int m, int k, int n,
      double[] absBound) {
    double[] c = new double[batch * m * n];
    for (int q = 0; q < batch; q++) {
      int oa = (batchA == 1 ? 0 : q) * m * k;
      int ob = (batchB == 1 ? 0 : q) * k * n;
      for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
          double s = 0;
          double bound = 0;
          for (int p = 0; p < k; p++) {
            double x = a[oa + i * k + p] * b[ob + p * n + j];
            s += x;
            bound += Math.abs(x);
          }
          c[(q * m + i) * n + j] = s;
          absBound[(q * m + i) * n + j] = bound;
        }
      }
    }
    return c;
  }

  private static void check(String what, Cublas blas, CudaDevice dev, NdArray a, NdArray b, boolean transA,
      boolean transB, DType out, double rel) {
    int ra = a.rank();
    int batchA = ra == 3 ? (int) a.shape(0) : 1;
    int batchB = b.rank() == 3 ? (int) b.shape(0) : 1;
    int batch = Math.max(batchA, batchB);
    int m = (int) a.shape(ra - 2), k = (int) a.shape(ra - 1), n = (int) b.shape(b.rank() - 1);
    double[] bound = new double[batch * m * n];
    double[] ref = reference(GpuTesting.doubles(a), GpuTesting.doubles(b), batchA, batchB, batch, m, k, n, bound);
    // Upload transposed operands as the transpose of a contiguous array, so cuBLAS sees a column-major operand.
    try (CudaArray da = transA ? CudaArray.fromHost(dev, a.transpose(ra - 2, ra - 1)) : CudaArray.fromHost(dev, a);
        CudaArray db = transB ? CudaArray.fromHost(dev, b.transpose(b.rank() - 2, b.rank() - 1))
            : CudaArray.fromHost(dev, b);
        CudaArray dc = (ra == 3 || b.rank() == 3 ? CudaArray.empty(dev, out, batch, m, n)
            : CudaArray.empty(dev, out, m, n)).poison()) {
      CudaArray va = transA ? da.transpose(ra - 2, ra - 1) : da;
      CudaArray vb = transB ? db.transpose(b.rank() - 2, b.rank() - 1) : db;
      blas.matmul(va, vb, dc);
      double[] got = GpuTesting.doubles(dc.toHost());
      // Error bound of a float sum: rel * sum_k |a_ik b_kj| per element (atol), plus output rounding (rtol).
      double worst = 0;
      for (int i = 0; i < ref.length; i++) {
        worst = Math.max(worst, bound[i]);
      }
      double outRel = out == DType.F32 ? 0 : 1.0 / 128; // bf16/fp16 outputs round to 8/11 significant bits
      GpuTesting.assertClose(what, ref, got, outRel, rel * worst);
    }
  }

  @Test
  void fp32GemmsMatchFloat64WithTransposedAndBatchedOperands() {
    for (Cublas.GemmApi api : Cublas.GemmApi.values()) {
      fp32Gemms(api);
    }
  }

  private static void fp32Gemms(Cublas.GemmApi api) {
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(3);
    try (Cublas blas = new Cublas(dev.defaultStream(), api)) {
      System.out.println("  cuBLAS from " + Cublas.librarySource() + ", GEMMs via " + blas.gemmPath());
      // fp32 accumulation over k terms: error well under 1e-5 of sum |a b| for k in the hundreds.
      double rel = 1e-5;
      check("f32 67x129 @ 129x45", blas, dev, GpuTesting.randn(rnd, DType.F32, 1, 67, 129),
          GpuTesting.randn(rnd, DType.F32, 1, 129, 45), false, false, DType.F32, rel);
      check("f32 A^T view", blas, dev, GpuTesting.randn(rnd, DType.F32, 1, 31, 70),
          GpuTesting.randn(rnd, DType.F32, 1, 70, 19), true, false, DType.F32, rel);
      check("f32 B^T view", blas, dev, GpuTesting.randn(rnd, DType.F32, 1, 8, 300),
          GpuTesting.randn(rnd, DType.F32, 1, 300, 65), false, true, DType.F32, rel);
      check("f32 both transposed", blas, dev, GpuTesting.randn(rnd, DType.F32, 1, 13, 17),
          GpuTesting.randn(rnd, DType.F32, 1, 17, 11), true, true, DType.F32, rel);
      check("f32 batched 5x[9x33]@[33x21]", blas, dev, GpuTesting.randn(rnd, DType.F32, 1, 5, 9, 33),
          GpuTesting.randn(rnd, DType.F32, 1, 5, 33, 21), false, false, DType.F32, rel);
      check("f32 batched, B broadcast", blas, dev, GpuTesting.randn(rnd, DType.F32, 1, 4, 10, 24),
          GpuTesting.randn(rnd, DType.F32, 1, 1, 24, 6), false, false, DType.F32, rel);
      check("f32 matrix-vector (n = 1)", blas, dev, GpuTesting.randn(rnd, DType.F32, 1, 40, 50),
          GpuTesting.randn(rnd, DType.F32, 1, 50, 1), false, false, DType.F32, rel);
    }
  }

  @Test
  void bf16AndFp16GemmsAccumulateInFp32() {
    for (Cublas.GemmApi api : Cublas.GemmApi.values()) {
      lowPrecisionGemms(api);
    }
  }

  private static void lowPrecisionGemms(Cublas.GemmApi api) {
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(4);
    try (Cublas blas = new Cublas(dev.defaultStream(), api)) {
      // Inputs are exactly representable; products are exact in fp32 and summed in fp32: 1e-5 of sum |a b|.
      check("bf16 -> f32 96x256 @ 256x80", blas, dev, GpuTesting.randn(rnd, DType.BF16, 1, 96, 256),
          GpuTesting.randn(rnd, DType.BF16, 1, 256, 80), false, false, DType.F32, 1e-5);
      check("bf16 -> bf16 batched, A^T", blas, dev, GpuTesting.randn(rnd, DType.BF16, 1, 3, 64, 48),
          GpuTesting.randn(rnd, DType.BF16, 1, 3, 48, 40), true, false, DType.BF16, 1e-5);
      check("f16 -> f16 50x70 @ 70x30", blas, dev, GpuTesting.randn(rnd, DType.F16, 1, 50, 70),
          GpuTesting.randn(rnd, DType.F16, 1, 70, 30), false, true, DType.F16, 1e-5);
    }
  }

  /**
   * Lt picks an algorithm per problem, pointer alignment included: operands that start one element into their buffer
   * (4- and 2-byte aligned) must get a kernel that runs on them, not the one chosen for 256-byte aligned operands of
   * the same shape. Also checks accumulation (beta = 1) into an output that already holds values, as the device's
   * gradient sums use it, with the output shifted too.
   */
  @Test
  void ltRunsOnUnalignedViewsAndAccumulates() {
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(5);
    int m = 64, k = 96, n = 48;
    for (DType t : new DType[] {DType.F32, DType.BF16}) {
      NdArray a = GpuTesting.randn(rnd, t, 1, m * k + 1);
      NdArray b = GpuTesting.randn(rnd, t, 1, k * n + 1);
      NdArray c0 = GpuTesting.randn(rnd, DType.F32, 1, m * n + 1);
      double[] ha = GpuTesting.doubles(a);
      double[] hb = GpuTesting.doubles(b);
      double[] hc = GpuTesting.doubles(c0);
      try (Cublas blas = new Cublas(dev.defaultStream(), Cublas.GemmApi.LT);
          CudaArray da = CudaArray.fromHost(dev, a);
          CudaArray db = CudaArray.fromHost(dev, b)) {
        for (int shift = 0; shift <= 1; shift++) {
          double[] bound = new double[m * n];
          double[] ref = reference(java.util.Arrays.copyOfRange(ha, shift, shift + m * k),
              java.util.Arrays.copyOfRange(hb, shift, shift + k * n), 1, 1, 1, m, k, n, bound);
          double worst = 0;
          for (int i = 0; i < ref.length; i++) {
            ref[i] += hc[shift + i];
            worst = Math.max(worst, bound[i] + Math.abs(hc[shift + i]));
          }
          try (CudaArray dc = CudaArray.fromHost(dev, c0)) {
            blas.gemm(1f, da.narrow(0, shift, m * k).view(m, k), db.narrow(0, shift, k * n).view(k, n), 1f,
                dc.narrow(0, shift, m * n).view(m, n));
            double[] got = java.util.Arrays.copyOfRange(GpuTesting.doubles(dc.toHost()), shift, shift + m * n);
            // Exact products (bf16 inputs are exact in fp32) summed in fp32: 1e-5 of sum |a b| + |c|.
            GpuTesting.assertClose("cuBLASLt " + t + " operands shifted by " + shift + ", beta = 1", ref, got, 0,
                1e-5 * worst);
          }
        }
      }
    }
  }

  /**
   * A problem big enough to be timed (1024³ = 2^30 multiply-adds, {@link CublasLt#MIN_TUNED_MACS}): the algorithm
   * cuBLASLt keeps after timing its candidates gives cublasGemmEx's result up to summation order, twice in a row (the
   * second call runs the kept choice without timing). Bound: the two fp32 sums of k = 1024 exact bf16 products differ
   * by at most 2·k·2^-24·Σ|a b| in the worst case; 1e-4·Σ|a b| covers that and still catches any wrong kernel, whose
   * error is of the order of Σ|a b|.
   */
  @Test
  void ltTimedChoiceAgreesWithGemmEx() {
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(6);
    int n = 1024;
    NdArray a = GpuTesting.randn(rnd, DType.BF16, 1, n, n);
    NdArray b = GpuTesting.randn(rnd, DType.BF16, 1, n, n);
    NdArray absA = NdArray.fromDoubles(java.util.Arrays.stream(GpuTesting.doubles(a)).map(Math::abs).toArray(), n, n)
        .to(DType.BF16);
    NdArray absB = NdArray.fromDoubles(java.util.Arrays.stream(GpuTesting.doubles(b)).map(Math::abs).toArray(), n, n)
        .to(DType.BF16);
    try (Cublas lt = new Cublas(dev.defaultStream(), Cublas.GemmApi.LT);
        Cublas ex = new Cublas(dev.defaultStream(), Cublas.GemmApi.GEMMEX);
        CudaArray da = CudaArray.fromHost(dev, a);
        CudaArray db = CudaArray.fromHost(dev, b);
        CudaArray dAbsA = CudaArray.fromHost(dev, absA);
        CudaArray dAbsB = CudaArray.fromHost(dev, absB);
        CudaArray viaLt = CudaArray.empty(dev, DType.F32, n, n).poison();
        CudaArray viaEx = CudaArray.empty(dev, DType.F32, n, n).poison();
        CudaArray bound = CudaArray.empty(dev, DType.F32, n, n)) {
      ex.matmul(da, db, viaEx);
      ex.matmul(dAbsA, dAbsB, bound);
      double[] want = GpuTesting.doubles(viaEx.toHost());
      double[] sums = GpuTesting.doubles(bound.toHost());
      double worst = java.util.Arrays.stream(sums).max().orElseThrow();
      for (int call = 1; call <= 2; call++) {
        lt.matmul(da, db, viaLt);
        GpuTesting.assertClose("cuBLASLt's timed choice, call " + call, want, GpuTesting.doubles(viaLt.toHost()), 0,
            1e-4 * worst);
      }
    }
  }
}
