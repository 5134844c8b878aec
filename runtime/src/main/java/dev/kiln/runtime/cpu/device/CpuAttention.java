package dev.kiln.runtime.cpu.device;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.spi.Device;
import dev.kiln.runtime.cpu.Parallel;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Arrays;

/**
 * Scaled dot-product attention on the CPU, forward and backward, without a score matrix: each query row computes
 * its scores against the keys it may see into a scratch row of length {@code t}, takes the max-shifted softmax, and
 * keeps only its log-sum-exp; the backward recomputes each probability from the saved log-sum-exp (as
 * FlashAttention does). Memory beyond inputs and outputs is one row of scores per thread.
 *
 * <p>Arithmetic is in double whatever the dtype (inputs are read once into double arrays, results rounded once), so
 * float32 attention is as accurate as float32 storage allows. The forward splits work over query rows, the backward
 * over heads (key gradients of one head accumulate over its query rows in a fixed order), so results never depend
 * on the thread count.
 */
final class CpuAttention {
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

  private static int visible(Mask mask, int i, int t) {
    return mask == Mask.CAUSAL ? Math.min(t, i + 1) : t;
  }

  static Device.AttentionOut forward(NdArray q, NdArray k, NdArray v, Mask mask, double scale) {
    Dims g = dims("attention", q, k, v);
    double[] qs = q.toDoubleArray();
    double[] ks = k.toDoubleArray();
    double[] vs = v.toDoubleArray();
    int s = g.s;
    int t = g.t;
    int d = g.d;
    int e = g.e;
    double[] out = new double[g.heads * s * e];
    double[] lse = new double[g.heads * s];
    long rows = (long) g.heads * s;
    long grain = Math.max(1, (1 << 16) / ((long) t * (d + e)));
    Parallel.forChunks(rows, grain, rows * t * (d + e), (c, start, end) -> {
      double[] p = new double[t];
      for (long r = start; r < end; r++) {
        int h = (int) (r / s);
        int i = (int) (r % s);
        int qo = (h * s + i) * d;
        int kBase = h * t * d;
        int vBase = h * t * e;
        int oo = (h * s + i) * e;
        int n = visible(mask, i, t);
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < n; j++) {
          double acc = 0;
          int ko = kBase + j * d;
          for (int x = 0; x < d; x++) {
            acc += qs[qo + x] * ks[ko + x];
          }
          p[j] = acc * scale;
          max = Math.max(max, p[j]);
        }
        double sum = 0;
        for (int j = 0; j < n; j++) {
          p[j] = Math.exp(p[j] - max);
          sum += p[j];
        }
        double inv = 1 / sum;
        for (int j = 0; j < n; j++) {
          double w = p[j] * inv;
          int vo = vBase + j * e;
          for (int x = 0; x < e; x++) {
            out[oo + x] += w * vs[vo + x];
          }
        }
        lse[(int) r] = max + Math.log(sum);
      }
    });
    long[] outShape = Arrays.copyOf(g.lead, g.lead.length + 2);
    outShape[g.lead.length] = s;
    outShape[g.lead.length + 1] = e;
    long[] lseShape = Arrays.copyOf(g.lead, g.lead.length + 1);
    lseShape[g.lead.length] = s;
    return new Device.AttentionOut(back(out, outShape, q.dtype()), back(lse, lseShape, q.dtype()));
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
    double[] qs = q.toDoubleArray();
    double[] ks = k.toDoubleArray();
    double[] vs = v.toDoubleArray();
    double[] os = out.toDoubleArray();
    double[] ls = lse.toDoubleArray();
    double[] dos = dOut.toDoubleArray();
    int s = g.s;
    int t = g.t;
    int d = g.d;
    int e = g.e;
    double[] dq = new double[qs.length];
    double[] dk = new double[ks.length];
    double[] dv = new double[vs.length];
    Parallel.forChunks(g.heads, 1, (long) g.heads * s * t * (d + e), (c, start, end) -> {
      for (int h = (int) start; h < end; h++) {
        int kBase = h * t * d;
        int vBase = h * t * e;
        for (int i = 0; i < s; i++) {
          int qo = (h * s + i) * d;
          int oo = (h * s + i) * e;
          double rowLse = ls[h * s + i];
          double delta = 0; // sum_j P_ij dP_ij = dO_i . O_i
          for (int x = 0; x < e; x++) {
            delta += dos[oo + x] * os[oo + x];
          }
          int n = visible(mask, i, t);
          for (int j = 0; j < n; j++) {
            int ko = kBase + j * d;
            int vo = vBase + j * e;
            double score = 0;
            for (int x = 0; x < d; x++) {
              score += qs[qo + x] * ks[ko + x];
            }
            double p = Math.exp(score * scale - rowLse);
            double dp = 0;
            for (int x = 0; x < e; x++) {
              dp += dos[oo + x] * vs[vo + x];
              dv[vo + x] += p * dos[oo + x];
            }
            double ds = p * (dp - delta) * scale;
            for (int x = 0; x < d; x++) {
              dq[qo + x] += ds * ks[ko + x];
              dk[ko + x] += ds * qs[qo + x];
            }
          }
        }
      }
    });
    return new Device.AttentionGrads(
        back(dq, q.shape(), q.dtype()), back(dk, k.shape(), q.dtype()), back(dv, v.shape(), q.dtype()));
  }

  private static NdArray back(double[] values, long[] shape, DType dtype) {
    NdArray a = NdArray.fromDoubles(values).reshape(shape);
    return dtype == DType.F64 ? a : a.to(dtype);
  }
}
