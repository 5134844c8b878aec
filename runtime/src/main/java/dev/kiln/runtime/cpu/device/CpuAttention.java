package dev.kiln.runtime.cpu.device;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.spi.Device;
import dev.kiln.runtime.cpu.Gemm;
import dev.kiln.runtime.cpu.Gemm.Transpose;
import dev.kiln.runtime.cpu.Parallel;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;

/**
 * Scaled dot-product attention on the CPU, forward and backward, blocked over query rows so that no head ever holds
 * its full {@code s × t} score matrix: for each block of {@link #BLOCK} query rows, the scores against the keys the
 * block may see are one GEMM into a {@code BLOCK × t} scratch block, the max-shifted softmax runs over its rows in
 * double, and the weighted sum of values is a second GEMM straight into the output rows. Only the row log-sum-exp is
 * kept. The backward recomputes each block's probabilities from that log-sum-exp (as FlashAttention does) and forms
 * the four gradient products as GEMMs, accumulating key and value gradients across blocks with {@code beta = 1}.
 *
 * <p>GEMMs are OpenBLAS ({@link Gemm#gemm}) on views of the operands with transposes as flags, in the tensors' own
 * dtype; softmax statistics are double. Each block is taken for all heads at once (batched GEMMs over the head
 * dim, the softmax rows split over cores by {@link Parallel}); blocks run one after another in a fixed order, so
 * every head accumulates its gradients in the same order as head by head and results never depend on the thread
 * count.
 *
 * <p>Measured on the 2-core development machine, float32, b=8, h=8, s=t=256, d=64, causal: see docs/eager.md.
 */
final class CpuAttention {
  /** Query rows per block: a 64 × t score block stays in L2 for the context lengths CS336 trains on. */
  static final int BLOCK = 64;

  /** Score rows per {@link Parallel} chunk: fixed, so the split never depends on the thread count. */
  private static final long ROW_GRAIN = 16;

  private CpuAttention() {}

  /** Leading dims, {@code s}, {@code t}, {@code d}, {@code e} of one attention call, after checking them. */
  private record Dims(long[] lead, int heads, int s, int t, int d, int e) {}

  private static Dims dims(String op, NdArray q, NdArray k, NdArray v) {
    if (q.rank() < 2 || k.rank() != q.rank() || v.rank() != q.rank()) {
      throw new IllegalArgumentException(
          op + ": q, k, v must be [..., s, d], [..., t, d], [..., t, e] of one rank >= 2; got "
              + Arrays.toString(q.shape()) + ", " + Arrays.toString(k.shape()) + ", " + Arrays.toString(v.shape()));
    }
    long[] lead = Arrays.copyOf(q.shape(), q.rank() - 2);
    if (!Arrays.equals(lead, Arrays.copyOf(k.shape(), k.rank() - 2))
        || !Arrays.equals(lead, Arrays.copyOf(v.shape(), v.rank() - 2))) {
      throw new IllegalArgumentException(
          op + ": the leading dims of q " + Arrays.toString(q.shape()) + ", k " + Arrays.toString(k.shape())
              + " and v " + Arrays.toString(v.shape()) + " must be equal");
    }
    if (k.shape(-1) != q.shape(-1)) {
      throw new IllegalArgumentException(
          op + ": 'd' is " + q.shape(-1) + " in q " + Arrays.toString(q.shape()) + " but " + k.shape(-1) + " in k "
              + Arrays.toString(k.shape()));
    }
    if (v.shape(-2) != k.shape(-2)) {
      throw new IllegalArgumentException(
          op + ": 't' is " + k.shape(-2) + " in k " + Arrays.toString(k.shape()) + " but " + v.shape(-2) + " in v "
              + Arrays.toString(v.shape()));
    }
    if (k.shape(-2) == 0) {
      throw new IllegalArgumentException(op + ": attention over zero keys has no softmax");
    }
    return new Dims(lead, Math.toIntExact(NdArray.numel(lead)), Math.toIntExact(q.shape(-2)),
        Math.toIntExact(k.shape(-2)), Math.toIntExact(q.shape(-1)), Math.toIntExact(v.shape(-1)));
  }

  /** Keys query {@code i} may see. */
  private static int visible(Mask mask, int i, int t) {
    return mask == Mask.CAUSAL ? Math.min(t, i + 1) : t;
  }

  /** {@code x} as {@code [heads, rows, cols]}, contiguous (a view when it already is). */
  private static NdArray heads(NdArray x, int heads) {
    return x.contiguous().reshape(heads, x.shape(-2), x.shape(-1));
  }

  static Device.AttentionOut forward(NdArray q, NdArray k, NdArray v, Mask mask, double scale) {
    Dims g = dims("attention", q, k, v);
    DType dt = q.dtype();
    NdArray qh = heads(q, g.heads);
    NdArray kh = heads(k, g.heads);
    NdArray vh = heads(v, g.heads);
    NdArray out = NdArray.empty(dt, g.heads, g.s, g.e);
    double[] lse = new double[g.heads * g.s];
    for (int i0 = 0; i0 < g.s; i0 += BLOCK) {
      int rows = Math.min(BLOCK, g.s - i0);
      int n = visible(mask, i0 + rows - 1, g.t);
      int first = i0;
      // One block of query rows for every head at once: batched GEMMs, and the softmax rows split over cores.
      NdArray scores = NdArray.empty(dt, g.heads, rows, n);
      Gemm.gemm(Transpose.NONE, Transpose.TRANSPOSED, scale, qh.narrow(1, i0, rows), kh.narrow(1, 0, n), 0, scores);
      MemorySegment seg = scores.segment();
      long all = (long) g.heads * rows;
      Parallel.forChunks(all, ROW_GRAIN, all * n, (chunk, lo, hi) -> {
        double[] row = new double[n];
        for (long hr = lo; hr < hi; hr++) {
          int h = (int) (hr / rows);
          int r = (int) (hr % rows);
          int m = visible(mask, first + r, g.t);
          read(seg, dt, hr * n, row, n);
          double max = Double.NEGATIVE_INFINITY;
          for (int j = 0; j < m; j++) {
            max = Math.max(max, row[j]);
          }
          double sum = 0;
          for (int j = 0; j < m; j++) {
            row[j] = Math.exp(row[j] - max);
            sum += row[j];
          }
          double inv = 1 / sum;
          for (int j = 0; j < n; j++) {
            row[j] = j < m ? row[j] * inv : 0;
          }
          write(seg, dt, hr * n, row, n);
          lse[h * g.s + first + r] = max + Math.log(sum);
        }
      });
      Gemm.gemm(Transpose.NONE, Transpose.NONE, 1, scores, vh.narrow(1, 0, n), 0, out.narrow(1, i0, rows));
    }
    long[] outShape = Arrays.copyOf(g.lead, g.lead.length + 2);
    outShape[g.lead.length] = g.s;
    outShape[g.lead.length + 1] = g.e;
    long[] lseShape = Arrays.copyOf(outShape, outShape.length - 1);
    NdArray lseArray = NdArray.fromDoubles(lse).reshape(lseShape);
    return new Device.AttentionOut(out.reshape(outShape), dt == DType.F64 ? lseArray : lseArray.to(dt));
  }

  static Device.AttentionGrads backward(
      NdArray q, NdArray k, NdArray v, NdArray out, NdArray lse, NdArray dOut, Mask mask, double scale) {
    Dims g = dims("attentionBackward", q, k, v);
    long[] outShape = Arrays.copyOf(g.lead, g.lead.length + 2);
    outShape[g.lead.length] = g.s;
    outShape[g.lead.length + 1] = g.e;
    long[] lseShape = Arrays.copyOf(outShape, outShape.length - 1);
    if (!Arrays.equals(out.shape(), outShape) || !Arrays.equals(dOut.shape(), outShape)
        || !Arrays.equals(lse.shape(), lseShape)) {
      throw new IllegalArgumentException(
          "attentionBackward: out and dOut must be " + Arrays.toString(outShape) + " and lse "
              + Arrays.toString(lseShape) + "; got out " + Arrays.toString(out.shape()) + ", dOut "
              + Arrays.toString(dOut.shape()) + ", lse " + Arrays.toString(lse.shape()));
    }
    DType dt = q.dtype();
    NdArray qh = heads(q, g.heads);
    NdArray kh = heads(k, g.heads);
    NdArray vh = heads(v, g.heads);
    NdArray doh = heads(dOut, g.heads);
    double[] ls = lse.toDoubleArray();
    // delta_i = sum_j P_ij dP_ij = dO_i . O_i, one per query row (rows read in bulk, not element by element).
    NdArray oh = heads(out, g.heads);
    double[] delta = new double[g.heads * g.s];
    double[] oRow = new double[g.e];
    double[] doRow = new double[g.e];
    for (int r = 0; r < delta.length; r++) {
      read(oh.segment(), oh.dtype(), oh.offset() + (long) r * g.e, oRow, g.e);
      read(doh.segment(), doh.dtype(), doh.offset() + (long) r * g.e, doRow, g.e);
      double acc = 0;
      for (int x = 0; x < g.e; x++) {
        acc += doRow[x] * oRow[x];
      }
      delta[r] = acc;
    }
    NdArray dq = NdArray.zeros(dt, g.heads, g.s, g.d);
    NdArray dk = NdArray.zeros(dt, g.heads, g.t, g.d);
    NdArray dv = NdArray.zeros(dt, g.heads, g.t, g.e);
    for (int i0 = 0; i0 < g.s; i0 += BLOCK) {
      int rows = Math.min(BLOCK, g.s - i0);
      int n = visible(mask, i0 + rows - 1, g.t);
      int first = i0;
      // Every head's block at once, as in forward; per head, key and value gradients still accumulate over the
      // blocks in the same order, so the sums are the same as head by head.
      NdArray qb = qh.narrow(1, i0, rows);
      NdArray dob = doh.narrow(1, i0, rows);
      NdArray kn = kh.narrow(1, 0, n);
      NdArray vn = vh.narrow(1, 0, n);
      NdArray p = NdArray.empty(dt, g.heads, rows, n);
      NdArray dp = NdArray.empty(dt, g.heads, rows, n);
      Gemm.gemm(Transpose.NONE, Transpose.TRANSPOSED, scale, qb, kn, 0, p);
      Gemm.gemm(Transpose.NONE, Transpose.TRANSPOSED, 1, dob, vn, 0, dp);
      MemorySegment ps = p.segment();
      MemorySegment dps = dp.segment();
      long all = (long) g.heads * rows;
      Parallel.forChunks(all, ROW_GRAIN, all * n, (chunk, lo, hi) -> {
        double[] pRow = new double[n];
        double[] dpRow = new double[n];
        for (long hr = lo; hr < hi; hr++) {
          int h = (int) (hr / rows);
          int r = (int) (hr % rows);
          int m = visible(mask, first + r, g.t);
          int at = h * g.s + first + r;
          read(ps, dt, hr * n, pRow, n);
          read(dps, dt, hr * n, dpRow, n);
          for (int j = 0; j < n; j++) {
            double pj = j < m ? Math.exp(pRow[j] - ls[at]) : 0;
            pRow[j] = pj;
            dpRow[j] = pj * (dpRow[j] - delta[at]) * scale; // dS, with the score's scale folded in
          }
          write(ps, dt, hr * n, pRow, n);
          write(dps, dt, hr * n, dpRow, n);
        }
      });
      // p now holds P and dp holds dS for this block.
      Gemm.gemm(Transpose.TRANSPOSED, Transpose.NONE, 1, p, dob, 1, dv.narrow(1, 0, n));
      Gemm.gemm(Transpose.NONE, Transpose.NONE, 1, dp, kn, 0, dq.narrow(1, i0, rows));
      Gemm.gemm(Transpose.TRANSPOSED, Transpose.NONE, 1, dp, qb, 1, dk.narrow(1, 0, n));
    }
    return new Device.AttentionGrads(dq.reshape(q.shape()), dk.reshape(k.shape()), dv.reshape(v.shape()));
  }

  /**
   * {@code n} elements of a contiguous F32 or F64 array from element {@code first}, as doubles: one bulk copy
   * (through the thread's float scratch for F32) rather than an access per element.
   */
  private static void read(MemorySegment s, DType t, long first, double[] into, int n) {
    if (t == DType.F64) {
      MemorySegment.copy(s, Layouts.F64, first * 8, into, 0, n);
    } else if (t == DType.F32) {
      float[] f = floatScratch(n);
      MemorySegment.copy(s, Layouts.F32, first * 4, f, 0, n);
      for (int j = 0; j < n; j++) {
        into[j] = f[j];
      }
    } else {
      for (int j = 0; j < n; j++) {
        into[j] = Layouts.getDouble(s, t, (first + j) * t.byteSize());
      }
    }
  }

  private static void write(MemorySegment s, DType t, long first, double[] from, int n) {
    if (t == DType.F64) {
      MemorySegment.copy(from, 0, s, Layouts.F64, first * 8, n);
    } else if (t == DType.F32) {
      float[] f = floatScratch(n);
      for (int j = 0; j < n; j++) {
        f[j] = (float) from[j];
      }
      MemorySegment.copy(f, 0, s, Layouts.F32, first * 4, n);
    } else {
      for (int j = 0; j < n; j++) {
        Layouts.setDouble(s, t, (first + j) * t.byteSize(), from[j]);
      }
    }
  }

  private static final ThreadLocal<float[]> FLOAT_SCRATCH = ThreadLocal.withInitial(() -> new float[0]);

  private static float[] floatScratch(int n) {
    float[] f = FLOAT_SCRATCH.get();
    if (f.length < n) {
      f = new float[n];
      FLOAT_SCRATCH.set(f);
    }
    return f;
  }
}
