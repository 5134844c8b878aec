package dev.kiln.runtime.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Gemm.Transpose;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

class GemmTest {
  private final Random rnd = new Random(1234);

  /** A random array of the dtype with values in [-1, 1). */
  private NdArray random(DType t, long... shape) {
    NdArray a = NdArray.zeros(DType.F64, shape);
    double[] v = new double[(int) a.numel()];
    for (int i = 0; i < v.length; i++) {
      v[i] = rnd.nextDouble() * 2 - 1;
    }
    NdArray d = NdArray.fromDoubles(v, shape);
    return t == DType.F64 ? d : d.to(t);
  }

  /**
   * The numpy matmul of two rank >= 2 arrays in float64 by the naive triple loop, plus for each element the
   * scale {@code sum_k |a_ik b_kj|} that bounds its rounding error.
   */
  private static NdArray[] naive(NdArray a, NdArray b) {
    long[] batch =
        NdArray.broadcastShapes(
            Arrays.copyOf(a.shape(), a.rank() - 2), Arrays.copyOf(b.shape(), b.rank() - 2));
    long m = a.shape(-2);
    long k = a.shape(-1);
    long n = b.shape(-1);
    long[] outShape = Arrays.copyOf(batch, batch.length + 2);
    outShape[batch.length] = m;
    outShape[batch.length + 1] = n;
    long[] aShape = Arrays.copyOf(batch, batch.length + 2);
    aShape[batch.length] = m;
    aShape[batch.length + 1] = k;
    long[] bShape = Arrays.copyOf(batch, batch.length + 2);
    bShape[batch.length] = k;
    bShape[batch.length + 1] = n;
    NdArray ae = a.expand(aShape);
    NdArray be = b.expand(bShape);
    NdArray out = NdArray.zeros(DType.F64, outShape);
    NdArray scale = NdArray.zeros(DType.F64, outShape);
    long count = NdArray.numel(batch);
    long[] idx = new long[batch.length + 2];
    long[] ia = new long[batch.length + 2];
    long[] ib = new long[batch.length + 2];
    for (long bi = 0; bi < count; bi++) {
      long rem = bi;
      for (int d = batch.length - 1; d >= 0; d--) {
        idx[d] = rem % batch[d];
        rem /= batch[d];
      }
      System.arraycopy(idx, 0, ia, 0, batch.length);
      System.arraycopy(idx, 0, ib, 0, batch.length);
      for (long i = 0; i < m; i++) {
        for (long j = 0; j < n; j++) {
          double s = 0;
          double abs = 0;
          for (long p = 0; p < k; p++) {
            ia[batch.length] = i;
            ia[batch.length + 1] = p;
            ib[batch.length] = p;
            ib[batch.length + 1] = j;
            double x = ae.getDouble(ia) * be.getDouble(ib);
            s += x;
            abs += Math.abs(x);
          }
          idx[batch.length] = i;
          idx[batch.length + 1] = j;
          out.setDouble(s, idx);
          scale.setDouble(abs, idx);
        }
      }
    }
    return new NdArray[] {out, scale};
  }

  /**
   * Tolerance per element: the rounding error of a k-term dot product grows like sqrt(k)·eps·sum|a_i b_i| for
   * random data (k·eps in the worst case); 1e-5·sqrt(k) for F32 (eps 6e-8) and 1e-13·sqrt(k) for F64 leave a
   * margin of ~100x for blocking order. BF16/F16 results are also rounded once to the narrow type: add half an
   * ulp of the result (2^-8 relative for bf16, 2^-11 for f16).
   */
  private static void assertClose(NdArray expected, NdArray scale, NdArray actual, long k, DType t, String what) {
    assertArrayEquals(expected.shape(), actual.shape(), what + ": shape");
    double[] e = expected.toDoubleArray();
    double[] s = scale.toDoubleArray();
    double[] got = actual.toDoubleArray();
    double base = (t == DType.F64 ? 1e-13 : 1e-5) * Math.sqrt(Math.max(k, 1));
    double narrow = t == DType.BF16 ? 0x1p-8 : t == DType.F16 ? 0x1p-11 : 0;
    for (int i = 0; i < e.length; i++) {
      double tol = base * s[i] + narrow * Math.abs(e[i]) + 1e-300;
      if (!(Math.abs(e[i] - got[i]) <= tol)) {
        throw new AssertionError(
            what + ": element " + i + " expected " + e[i] + " got " + got[i] + " (tolerance " + tol + ")");
      }
    }
  }

  private void checkMatmul(NdArray a, NdArray b, String what) {
    NdArray[] ref = naive(a, b);
    NdArray c = Gemm.matmul(a, b);
    assertEquals(a.dtype(), c.dtype(), what);
    assertClose(ref[0], ref[1], c, a.shape(-1), a.dtype(), what);
  }

  @Test
  void randomSizesIncludingOneAndOdd() {
    long[] sizes = {1, 2, 3, 7, 16, 33, 65};
    for (DType t : new DType[] {DType.F32, DType.F64}) {
      for (int trial = 0; trial < 40; trial++) {
        long m = sizes[rnd.nextInt(sizes.length)];
        long k = sizes[rnd.nextInt(sizes.length)];
        long n = sizes[rnd.nextInt(sizes.length)];
        checkMatmul(random(t, m, k), random(t, k, n), t + " " + m + "x" + k + "x" + n);
      }
    }
  }

  @Test
  void transposedAndSlicedViews() {
    for (DType t : new DType[] {DType.F32, DType.F64}) {
      for (int trial = 0; trial < 40; trial++) {
        long m = 1 + rnd.nextInt(40);
        long k = 1 + rnd.nextInt(40);
        long n = 1 + rnd.nextInt(40);
        NdArray a = view(t, m, k);
        NdArray b = view(t, k, n);
        checkMatmul(a, b, t + " views " + Arrays.toString(a.strides()) + " @ " + Arrays.toString(b.strides()));
      }
    }
  }

  /** A random {@code rows x cols} view: plain, transposed, narrowed out of a bigger array, or with a step. */
  private NdArray view(DType t, long rows, long cols) {
    return switch (rnd.nextInt(4)) {
      case 0 -> random(t, rows, cols);
      case 1 -> random(t, cols, rows).transpose(0, 1);
      case 2 -> random(t, rows + 3, cols + 5).narrow(0, 2, rows).narrow(1, 1, cols);
      default -> random(t, rows, 2 * cols).slice(1, 0, 2 * cols, 2); // column stride 2: must be copied
    };
  }

  @Test
  void batchedWithBroadcastingAndVectors() {
    for (DType t : new DType[] {DType.F32, DType.F64}) {
      checkMatmul(random(t, 3, 5, 4), random(t, 3, 4, 6), t + " batch");
      checkMatmul(random(t, 2, 1, 5, 4), random(t, 3, 4, 6), t + " broadcast batch");
      checkMatmul(random(t, 5, 4), random(t, 2, 3, 4, 6), t + " a broadcast");
      checkMatmul(random(t, 2, 3, 6, 4).transpose(-1, -2), random(t, 2, 3, 6, 5), t + " batched transposed");
      checkMatmul(random(t, 4, 2, 5, 3).permute(1, 0, 2, 3), random(t, 3, 7), t + " permuted batch");
      // Big enough (m·n·k > 100³) and batched enough to take cblas_?gemm_batch_strided, with a stride-0 operand.
      checkMatmul(random(t, 3, 128, 96), random(t, 96, 100), t + " batch_strided, b broadcast");
      checkMatmul(random(t, 2, 101, 101), random(t, 2, 101, 103), t + " batch_strided");
    }
    NdArray a = random(DType.F64, 4, 5);
    NdArray v = random(DType.F64, 5);
    NdArray av = Gemm.matmul(a, v);
    assertArrayEquals(new long[] {4}, av.shape());
    NdArray[] ref = naive(a, v.unsqueeze(1));
    assertClose(ref[0].squeeze(1), ref[1].squeeze(1), av, 5, DType.F64, "matrix @ vector");
    NdArray u = random(DType.F64, 4);
    NdArray ua = Gemm.matmul(u, a);
    assertArrayEquals(new long[] {5}, ua.shape());
    NdArray[] ref2 = naive(u.unsqueeze(0), a);
    assertClose(ref2[0].squeeze(0), ref2[1].squeeze(0), ua, 4, DType.F64, "vector @ matrix");
    assertEquals(0, Gemm.matmul(random(DType.F32, 5), random(DType.F32, 5)).rank());
  }

  @Test
  void narrowDtypesGoThroughF32() {
    for (DType t : new DType[] {DType.BF16, DType.F16}) {
      NdArray a = random(t, 2, 9, 17);
      NdArray b = random(t, 17, 5).transpose(0, 1).contiguous().transpose(0, 1);
      checkMatmul(a, b, t.toString());
    }
  }

  @Test
  void emptyAndZeroK() {
    assertArrayEquals(new long[] {0, 4}, Gemm.matmul(random(DType.F32, 0, 3), random(DType.F32, 3, 4)).shape());
    NdArray z = Gemm.matmul(random(DType.F32, 2, 0), random(DType.F32, 0, 3));
    assertArrayEquals(new double[6], z.toDoubleArray(), 0.0);
    NdArray c = NdArray.full(DType.F64, 2.0, 2, 3);
    Gemm.gemm(Transpose.NONE, Transpose.NONE, 1, random(DType.F64, 2, 0), random(DType.F64, 0, 3), 0.5, c);
    assertArrayEquals(new double[] {1, 1, 1, 1, 1, 1}, c.toDoubleArray(), 0.0);
  }

  @Test
  void gemmAccumulatesWithTransposeFlagsAndAnyOutputLayout() {
    for (DType t : new DType[] {DType.F32, DType.F64, DType.BF16}) {
      for (int trial = 0; trial < 24; trial++) {
        long m = 1 + rnd.nextInt(20);
        long k = 1 + rnd.nextInt(20);
        long n = 1 + rnd.nextInt(20);
        Transpose ta = rnd.nextBoolean() ? Transpose.TRANSPOSED : Transpose.NONE;
        Transpose tb = rnd.nextBoolean() ? Transpose.TRANSPOSED : Transpose.NONE;
        NdArray a = ta == Transpose.TRANSPOSED ? random(t, k, m) : random(t, m, k);
        NdArray b = tb == Transpose.TRANSPOSED ? random(t, n, k) : random(t, k, n);
        NdArray c =
            switch (trial % 3) {
              case 0 -> random(t, m, n);
              case 1 -> random(t, n, m).transpose(0, 1); // column-major output: computed as C^T = B^T A^T
              default -> random(t, m, 2 * n).slice(1, 0, 2 * n, 2); // not expressible: computed in a copy
            };
        NdArray c0 = c.to(DType.F64);
        double alpha = 1.5;
        double beta = trial % 2 == 0 ? 1.0 : -0.5;
        NdArray opA = ta == Transpose.TRANSPOSED ? a.transpose(0, 1) : a;
        NdArray opB = tb == Transpose.TRANSPOSED ? b.transpose(0, 1) : b;
        NdArray[] ref = naive(opA, opB);
        double[] e = ref[0].toDoubleArray();
        double[] s = ref[1].toDoubleArray();
        double[] old = c0.toDoubleArray();
        for (int i = 0; i < e.length; i++) {
          e[i] = alpha * e[i] + beta * old[i];
          s[i] = Math.abs(alpha) * s[i] + Math.abs(beta * old[i]);
        }
        Gemm.gemm(ta, tb, alpha, a, b, beta, c);
        assertClose(
            NdArray.fromDoubles(e, m, n), NdArray.fromDoubles(s, m, n), c, k, t,
            t + " gemm " + ta + " " + tb + " c strides " + Arrays.toString(c.strides()));
      }
    }
  }

  @Test
  void betaZeroIgnoresNaNInOutput() {
    NdArray c = NdArray.full(DType.F32, Double.NaN, 3, 3);
    NdArray a = random(DType.F32, 3, 4);
    NdArray b = random(DType.F32, 4, 3);
    Gemm.gemm(Transpose.NONE, Transpose.NONE, 1, a, b, 0, c);
    NdArray[] ref = naive(a, b);
    assertClose(ref[0], ref[1], c, 4, DType.F32, "beta 0");
  }

  @Test
  void transposedViewsAreNotCopied() {
    // 1.6 M floats; a copy of the transposed view would show in the counter.
    NdArray big = random(DType.F32, 2000, 800);
    NdArray x = random(DType.F32, 3, 2000);
    long before = Gemm.operandCopies();
    NdArray y = Gemm.matmul(x, big); // [3, 800]
    NdArray z = Gemm.matmul(big.transpose(0, 1), x.transpose(0, 1)); // [800, 3] = y^T
    NdArray w = Gemm.matmul(big.narrow(0, 100, 50).transpose(0, 1), big.narrow(0, 7, 50)); // sliced + transposed
    NdArray q = random(DType.F32, 2, 4, 6, 5);
    Gemm.matmul(q, q.transpose(-1, -2)); // batched, transposed
    Gemm.gemm(Transpose.TRANSPOSED, Transpose.NONE, 1, x, x, 0, NdArray.zeros(DType.F32, 2000, 2000).transpose(0, 1));
    assertEquals(before, Gemm.operandCopies(), "copies made for views that BLAS can take as they are");
    assertArrayEquals(y.toFloatArray(), z.transpose(0, 1).toFloatArray(), 1e-4f);
    assertArrayEquals(new long[] {800, 800}, w.shape());
    // A column step of 2 cannot be expressed as (trans, ld): exactly one copy.
    Gemm.matmul(x.slice(1, 0, 2000, 2), big.narrow(0, 0, 1000));
    assertEquals(before + 1, Gemm.operandCopies());
  }

  @Test
  void errorsNameShapesAndDtypes() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class, () -> Gemm.matmul(random(DType.F32, 2, 3), random(DType.F32, 4, 5)));
    assertEquals(
        "matmul: a has shape [2, 3] and b has shape [4, 5]; a's last dim (3) must equal b's second-to-last dim (4)",
        e.getMessage());
    e =
        assertThrows(
            IllegalArgumentException.class, () -> Gemm.matmul(random(DType.F32, 2, 3), random(DType.F64, 3, 5)));
    assertEquals(
        "matmul: operands must share one dtype; a is F32, b is F64 (convert with .to(...))", e.getMessage());
    e =
        assertThrows(
            IllegalArgumentException.class,
            () -> Gemm.matmul(NdArray.zeros(DType.I32, 2, 2), NdArray.zeros(DType.I32, 2, 2)));
    assertTrue(e.getMessage().startsWith("matmul supports F32, F64, BF16 and F16; a is I32"), e.getMessage());
    e =
        assertThrows(
            IllegalArgumentException.class,
            () -> Gemm.matmul(random(DType.F32, 2, 2, 3), random(DType.F32, 3, 3, 4)));
    assertTrue(e.getMessage().contains("do not broadcast"), e.getMessage());
    NdArray broadcastC = NdArray.zeros(DType.F32, 1, 2, 2).expand(3, 2, 2);
    e =
        assertThrows(
            IllegalArgumentException.class,
            () ->
                Gemm.gemm(
                    Transpose.NONE, Transpose.NONE, 1, random(DType.F32, 3, 2, 2), random(DType.F32, 2, 2), 0,
                    broadcastC));
    assertTrue(e.getMessage().contains("broadcast view"), e.getMessage());
  }

  @Test
  void blasInfo() {
    assertTrue(Blas.config().contains("OpenBLAS"), Blas.config());
    assertTrue(!Blas.corename().isBlank());
    int threads = Blas.threads();
    try {
      Blas.setThreads(1);
      assertEquals(1, Blas.threads());
    } finally {
      Blas.setThreads(threads);
    }
    assertEquals(threads, Blas.threads());
    assertThrows(IllegalArgumentException.class, () -> Blas.setThreads(0));
  }
}
