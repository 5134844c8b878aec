package dev.kiln.runtime.cpu;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;

/**
 * Reductions over any set of dims, and argmax/argmin.
 *
 * <p><b>Accumulation.</b> Float inputs (F32, BF16, F16 and F64) accumulate sums and products in float64, integers
 * in int64. For float32 this is not a luxury: a float32 running sum of n terms loses about log2(n) bits (a sum of
 * 16M ones stops at 2^24 = 16777216), and losses, norms and means over whole tensors are exactly such sums. In
 * double the result is correctly rounded to float32 in practice, and the order in which chunk partials are combined
 * stops being visible at float32 precision. Reductions are memory-bound, so double costs nothing measurable.
 *
 * <p><b>Result dtypes.</b> SUM and PROD keep float dtypes and give I64 for integer and BOOL input (as PyTorch);
 * MEAN gives the input's float dtype, F32 for integers; MAX and MIN keep the dtype. An empty reduction gives 0 for
 * SUM, 1 for PROD, NaN for MEAN, and is an error for MAX and MIN. NaN propagates through MAX and MIN.
 *
 * <p><b>Determinism.</b> The reduced elements of each output are cut into fixed chunks of {@link #CHUNK} elements;
 * each chunk is reduced in a fixed order, possibly on different threads, and the chunk partials are combined in
 * chunk order. Results are therefore bit-identical for any thread count.
 */
public final class Reduce {
  /** Reduced elements per chunk: small enough to split one huge sum across cores, large enough to amortise. */
  static final long CHUNK = 1 << 14;

  private Reduce() {}

  /** Reduction operators. */
  public enum Op {
    SUM,
    MEAN,
    MAX,
    MIN,
    PROD
  }

  public static NdArray sum(NdArray x, int... dims) {
    return reduce(x, Op.SUM, dims, false);
  }

  public static NdArray mean(NdArray x, int... dims) {
    return reduce(x, Op.MEAN, dims, false);
  }

  public static NdArray max(NdArray x, int... dims) {
    return reduce(x, Op.MAX, dims, false);
  }

  public static NdArray min(NdArray x, int... dims) {
    return reduce(x, Op.MIN, dims, false);
  }

  public static NdArray prod(NdArray x, int... dims) {
    return reduce(x, Op.PROD, dims, false);
  }

  /**
   * Reduces {@code x} over {@code dims} (negative counts from the end; an empty array means every dim). With
   * {@code keepDims} the reduced dims stay as size 1, else they are removed.
   */
  public static NdArray reduce(NdArray x, Op op, int[] dims, boolean keepDims) {
    int r = x.rank();
    long[] shape = x.shape();
    boolean[] reduced = new boolean[r];
    if (dims.length == 0) {
      Arrays.fill(reduced, true);
    }
    for (int dim : dims) {
      int d = dim < 0 ? dim + r : dim;
      if (d < 0 || d >= r) {
        throw new IndexOutOfBoundsException(
            op + ": dim " + dim + " out of range for shape " + Arrays.toString(shape));
      }
      if (reduced[d] && dims.length > 0) {
        throw new IllegalArgumentException(op + ": dim " + d + " listed twice in " + Arrays.toString(dims));
      }
      reduced[d] = true;
    }
    DType in = x.dtype();
    DType rt = switch (op) {
      case SUM, PROD -> in.isFloating() ? in : DType.I64;
      case MEAN -> DTypes.floatOf(in);
      case MAX, MIN -> in;
    };
    // Kept dims first (in order), reduced dims last: each output owns one contiguous run of the walk.
    int kr = 0;
    for (boolean b : reduced) {
      kr += b ? 0 : 1;
    }
    long[] keptShape = new long[kr];
    long[] keptStrides = new long[kr];
    long[] redShape = new long[r - kr];
    long[] redStrides = new long[r - kr];
    for (int d = 0, i = 0, j = 0; d < r; d++) {
      if (reduced[d]) {
        redShape[j] = shape[d];
        redStrides[j++] = x.stride(d);
      } else {
        keptShape[i] = shape[d];
        keptStrides[i++] = x.stride(d);
      }
    }
    long[] outShape;
    if (keepDims) {
      outShape = shape.clone();
      for (int d = 0; d < r; d++) {
        if (reduced[d]) {
          outShape[d] = 1;
        }
      }
    } else {
      outShape = keptShape;
    }
    NdArray out = NdArray.zeros(rt, outShape);
    long outputs = NdArray.numel(keptShape);
    long rn = NdArray.numel(redShape);
    if (outputs == 0) {
      return out;
    }
    if (rn == 0 && (op == Op.MAX || op == Op.MIN)) {
      throw new IllegalArgumentException(
          op + " over dims " + Arrays.toString(dims) + " of shape " + Arrays.toString(shape)
              + " reduces an empty set, which has no " + (op == Op.MAX ? "maximum" : "minimum"));
    }
    boolean integral = !in.isFloating();
    long cpo = Math.max(1, Parallel.chunkCount(rn, CHUNK));
    double[] pd = integral ? null : new double[Math.toIntExact(outputs * cpo)];
    long[] pl = integral ? new long[Math.toIntExact(outputs * cpo)] : null;
    RowIter inner = RowIter.of(redShape, new long[][] {redStrides}, new long[] {0});
    long itemGrain = Math.max(1, (1 << 15) / Math.max(1, Math.min(rn, CHUNK)));
    long base = x.offset();
    Parallel.forChunks(
        outputs * cpo,
        itemGrain,
        x.numel(),
        (chunk, start, end) -> {
          double[] db = integral ? null : new double[Buffers.BLOCK];
          long[] lb = integral ? new long[Buffers.BLOCK] : null;
          double[] accD = new double[1];
          long[] accL = new long[1];
          for (long item = start; item < end; item++) {
            long o = item / cpo;
            long c = item % cpo;
            long xo = base + unravelOffset(o, keptShape, keptStrides);
            accD[0] = identityD(op);
            accL[0] = op == Op.PROD ? 1 : op == Op.MAX ? Long.MIN_VALUE : op == Op.MIN ? Long.MAX_VALUE : 0;
            inner.forRange(
                c * CHUNK,
                Math.min(rn, (c + 1) * CHUNK),
                (len, off, st) -> {
                  for (long b = 0; b < len; b += Buffers.BLOCK) {
                    int m = (int) Math.min(Buffers.BLOCK, len - b);
                    if (integral) {
                      Buffers.load(x, xo + off[0] + b * st[0], st[0], m, lb);
                      accL[0] = foldL(op, accL[0], lb, m);
                    } else {
                      Buffers.load(x, xo + off[0] + b * st[0], st[0], m, db);
                      accD[0] = foldD(op, accD[0], db, m);
                    }
                  }
                });
            if (integral) {
              pl[(int) item] = accL[0];
            } else {
              pd[(int) item] = accD[0];
            }
          }
        });
    // Combine partials in chunk order and store; `out` is contiguous in kept-dim order either way.
    MemorySegment os = out.segment();
    int es = rt.byteSize();
    for (long o = 0; o < outputs; o++) {
      int first = (int) (o * cpo);
      if (integral) {
        long acc = pl[first];
        for (int c = 1; c < cpo; c++) {
          acc = combineL(op, acc, pl[first + c]);
        }
        if (op == Op.MEAN) {
          Layouts.setDouble(os, rt, o * es, (double) acc / rn);
        } else {
          Layouts.setLong(os, rt, o * es, acc);
        }
      } else {
        double acc = pd[first];
        for (int c = 1; c < cpo; c++) {
          acc = combineD(op, acc, pd[first + c]);
        }
        if (op == Op.MEAN) {
          acc = acc / rn;
        }
        Layouts.setDouble(os, rt, o * es, acc);
      }
    }
    return out;
  }

  private static long unravelOffset(long flat, long[] shape, long[] strides) {
    long off = 0;
    for (int d = shape.length - 1; d >= 0; d--) {
      off += (flat % shape[d]) * strides[d];
      flat /= shape[d];
    }
    return off;
  }

  private static double identityD(Op op) {
    return switch (op) {
      case SUM, MEAN -> 0.0;
      case PROD -> 1.0;
      case MAX -> Double.NEGATIVE_INFINITY;
      case MIN -> Double.POSITIVE_INFINITY;
    };
  }

  /** Folds a block into the accumulator; sums use four interleaved partials (fixed pattern) for throughput. */
  private static double foldD(Op op, double acc, double[] v, int n) {
    switch (op) {
      case SUM, MEAN -> {
        double s0 = 0;
        double s1 = 0;
        double s2 = 0;
        double s3 = 0;
        int i = 0;
        for (; i + 3 < n; i += 4) {
          s0 += v[i];
          s1 += v[i + 1];
          s2 += v[i + 2];
          s3 += v[i + 3];
        }
        for (; i < n; i++) {
          s0 += v[i];
        }
        return acc + ((s0 + s1) + (s2 + s3));
      }
      case PROD -> {
        for (int i = 0; i < n; i++) {
          acc *= v[i];
        }
        return acc;
      }
      case MAX -> {
        for (int i = 0; i < n; i++) {
          acc = Math.max(acc, v[i]);
        }
        return acc;
      }
      case MIN -> {
        for (int i = 0; i < n; i++) {
          acc = Math.min(acc, v[i]);
        }
        return acc;
      }
    }
    throw new AssertionError(op);
  }

  private static double combineD(Op op, double a, double b) {
    return switch (op) {
      case SUM, MEAN -> a + b;
      case PROD -> a * b;
      case MAX -> Math.max(a, b);
      case MIN -> Math.min(a, b);
    };
  }

  private static long foldL(Op op, long acc, long[] v, int n) {
    for (int i = 0; i < n; i++) {
      acc = combineL(op, acc, v[i]);
    }
    return acc;
  }

  private static long combineL(Op op, long a, long b) {
    return switch (op) {
      case SUM, MEAN -> a + b;
      case PROD -> a * b;
      case MAX -> Math.max(a, b);
      case MIN -> Math.min(a, b);
    };
  }

  // ---------------------------------------------------------------- argmax / argmin

  /** Index (I64) of the largest element along {@code dim}; the first on ties; a NaN counts as largest. */
  public static NdArray argmax(NdArray x, int dim, boolean keepDims) {
    return arg(x, dim, keepDims, true);
  }

  /** Index (I64) of the smallest element along {@code dim}; the first on ties; a NaN counts as smallest. */
  public static NdArray argmin(NdArray x, int dim, boolean keepDims) {
    return arg(x, dim, keepDims, false);
  }

  private static NdArray arg(NdArray x, int dim, boolean keepDims, boolean max) {
    int r = x.rank();
    String name = max ? "argmax" : "argmin";
    if (r == 0) {
      throw new IllegalArgumentException(name + " needs at least one dim; got a 0-d array");
    }
    int d = dim < 0 ? dim + r : dim;
    if (d < 0 || d >= r) {
      throw new IndexOutOfBoundsException(name + ": dim " + dim + " out of range for shape "
          + Arrays.toString(x.shape()));
    }
    long n = x.shape(d);
    long[] outShape = x.shape();
    outShape[d] = 1;
    NdArray out = NdArray.empty(DType.I64, outShape);
    if (out.numel() == 0) {
      return keepDims ? out : out.squeeze(d);
    }
    if (n == 0) {
      throw new IllegalArgumentException(name + " along dim " + d + " of shape " + Arrays.toString(x.shape())
          + ": the dim is empty, so there is no index to return");
    }
    NdArray xs = x.select(d, 0);
    NdArray os = out.select(d, 0);
    RowIter rows = RowIter.of(xs.shape(), os, xs);
    long sx = x.stride(d);
    boolean integral = !x.dtype().isFloating();
    MemorySegment seg = x.segment();
    DType t = x.dtype();
    int es = t.byteSize();
    MemorySegment oseg = out.segment();
    Parallel.forChunks(
        rows.numel(),
        Math.max(1, (1 << 15) / n),
        x.numel(),
        (chunk, start, end) ->
            rows.forRange(
                start,
                end,
                (cnt, off, st) -> {
                  for (long i = 0; i < cnt; i++) {
                    long at = off[1] + i * st[1];
                    long best = 0;
                    if (integral) {
                      long bv = Layouts.getLong(seg, t, at * es);
                      for (long k = 1; k < n; k++) {
                        long v = Layouts.getLong(seg, t, (at + k * sx) * es);
                        if (max ? v > bv : v < bv) {
                          bv = v;
                          best = k;
                        }
                      }
                    } else {
                      double bv = Layouts.getDouble(seg, t, at * es);
                      for (long k = 1; k < n && !Double.isNaN(bv); k++) {
                        double v = Layouts.getDouble(seg, t, (at + k * sx) * es);
                        if (Double.isNaN(v) || (max ? v > bv : v < bv)) {
                          bv = v;
                          best = k;
                        }
                      }
                    }
                    oseg.set(Layouts.I64, (off[0] + i * st[0]) * 8, best);
                  }
                }));
    return keepDims ? out : out.squeeze(d);
  }
}
