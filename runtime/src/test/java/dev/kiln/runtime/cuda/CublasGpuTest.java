package dev.kiln.runtime.cuda;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** cuBLAS GEMMs against a float64 loop over the same (dtype-rounded) inputs. */
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
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(3);
    try (Cublas blas = new Cublas(dev.defaultStream())) {
      System.out.println("  cuBLAS from " + Cublas.librarySource());
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
    CudaDevice dev = GpuTesting.device();
    Random rnd = new Random(4);
    try (Cublas blas = new Cublas(dev.defaultStream())) {
      // Inputs are exactly representable; products are exact in fp32 and summed in fp32: 1e-5 of sum |a b|.
      check("bf16 -> f32 96x256 @ 256x80", blas, dev, GpuTesting.randn(rnd, DType.BF16, 1, 96, 256),
          GpuTesting.randn(rnd, DType.BF16, 1, 256, 80), false, false, DType.F32, 1e-5);
      check("bf16 -> bf16 batched, A^T", blas, dev, GpuTesting.randn(rnd, DType.BF16, 1, 3, 64, 48),
          GpuTesting.randn(rnd, DType.BF16, 1, 3, 48, 40), true, false, DType.BF16, 1e-5);
      check("f16 -> f16 50x70 @ 70x30", blas, dev, GpuTesting.randn(rnd, DType.F16, 1, 50, 70),
          GpuTesting.randn(rnd, DType.F16, 1, 70, 30), false, true, DType.F16, 1e-5);
    }
  }
}
