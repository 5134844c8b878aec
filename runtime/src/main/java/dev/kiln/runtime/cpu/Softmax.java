package dev.kiln.runtime.cpu;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Arrays;

/**
 * Softmax and log-softmax along any dim, numerically stable: each row is shifted by its maximum before {@code exp},
 * so no term overflows and the largest is exactly 1.
 *
 * <p>A row is loaded into a scratch array (a bulk copy when the dim is the contiguous last one, the common case),
 * processed there, and stored; F32/BF16/F16 rows compute in float with the sum of exponentials in double, F64 rows
 * in double; integer input gives F32. With {@link Simd#enabled()}, float rows use {@link VectorKernels#softmaxRow}.
 * A row whose maximum is -inf (every entry masked out), +inf or NaN comes out all NaN, as in PyTorch.
 */
public final class Softmax {
  /** Rows per parallel chunk are chosen so a chunk holds about this many elements; fixed, so results never depend on threads. */
  private static final long CHUNK_ELEMENTS = 1 << 15;

  private Softmax() {}

  /** {@code exp(x - max) / sum(exp(x - max))} along {@code dim} (negative counts from the end). */
  public static NdArray softmax(NdArray x, int dim) {
    return run(x, dim, false);
  }

  /** {@code x - max - log(sum(exp(x - max)))} along {@code dim}. */
  public static NdArray logSoftmax(NdArray x, int dim) {
    return run(x, dim, true);
  }

  /**
   * Softmax (or log-softmax with {@code log}) into an existing array of x's shape and result dtype; {@code out}
   * may be {@code x} itself (in place). Returns {@code out}.
   */
  public static NdArray softmaxInto(NdArray x, int dim, boolean log, NdArray out) {
    Elementwise.checkOut(out, x.shape(), DTypes.floatOf(x.dtype()), x);
    return run(x, dim, log, out);
  }

  private static NdArray run(NdArray x, int dim, boolean log) {
    return run(x, dim, log, null);
  }

  private static NdArray run(NdArray x, int dim, boolean log, NdArray given) {
    int r = x.rank();
    if (r == 0) {
      throw new IllegalArgumentException("softmax needs at least one dim; got a 0-d array");
    }
    int d = dim < 0 ? dim + r : dim;
    if (d < 0 || d >= r) {
      throw new IndexOutOfBoundsException(
          "softmax dim " + dim + " out of range for shape " + Arrays.toString(x.shape()));
    }
    DType rt = DTypes.floatOf(x.dtype());
    NdArray out = given != null ? given : NdArray.empty(rt, x.shape());
    long n = x.shape(d);
    if (out.numel() == 0) {
      return out;
    }
    if (n > Integer.MAX_VALUE - 16) {
      throw new IllegalArgumentException("softmax rows longer than 2^31 elements are not supported (dim " + d
          + " has " + n + ")");
    }
    int len = (int) n;
    long sx = x.stride(d);
    long so = out.stride(d);
    // Walk the other dims; each element of that walk starts one row.
    NdArray xo = x.select(d, 0);
    NdArray oo = out.select(d, 0);
    RowIter rows = RowIter.of(xo.shape(), oo, xo);
    long rowCount = rows.numel();
    long grain = Math.max(1, CHUNK_ELEMENTS / len);
    boolean dbl = rt == DType.F64;
    // Contiguous F32 rows in and out (the common last-dim case) are processed on the segments themselves.
    boolean direct = Simd.enabled() && x.dtype() == DType.F32 && sx == 1 && so == 1;
    var xs = x.segment();
    var os = out.segment();
    Parallel.forChunks(
        rowCount,
        grain,
        out.numel(),
        (chunk, start, end) -> {
          float[] fb = dbl ? null : new float[len];
          double[] db = dbl ? new double[len] : null;
          rows.forRange(
              start,
              end,
              (cnt, off, st) -> {
                for (long i = 0; i < cnt; i++) {
                  long ox = off[1] + i * st[1];
                  long oOut = off[0] + i * st[0];
                  if (direct) {
                    VectorKernels.softmaxRow(xs, ox * 4, os, oOut * 4, len, log);
                  } else if (dbl) {
                    Buffers.load(x, ox, sx, len, db);
                    rowD(db, len, log);
                    Buffers.store(db, len, out, oOut, so);
                  } else {
                    Buffers.load(x, ox, sx, len, fb);
                    if (Simd.enabled()) {
                      VectorKernels.softmaxRow(fb, len, log);
                    } else {
                      rowF(fb, len, log);
                    }
                    Buffers.store(fb, len, out, oOut, so);
                  }
                }
              });
        });
    return out;
  }

  static void rowF(float[] row, int n, boolean log) {
    float max = Float.NEGATIVE_INFINITY;
    for (int i = 0; i < n; i++) {
      max = Math.max(max, row[i]);
    }
    if (max == Float.NEGATIVE_INFINITY || Float.isNaN(max) || max == Float.POSITIVE_INFINITY) {
      degenerateRow(row, n, max, log);
      return;
    }
    double sum = 0;
    for (int i = 0; i < n; i++) {
      float e = (float) Math.exp(row[i] - max);
      sum += e;
      if (!log) {
        row[i] = e;
      }
    }
    if (log) {
      float shift = (float) (max + Math.log(sum));
      for (int i = 0; i < n; i++) {
        row[i] -= shift;
      }
    } else {
      float inv = (float) (1 / sum);
      for (int i = 0; i < n; i++) {
        row[i] *= inv;
      }
    }
  }

  static void rowD(double[] row, int n, boolean log) {
    double max = Double.NEGATIVE_INFINITY;
    for (int i = 0; i < n; i++) {
      max = Math.max(max, row[i]);
    }
    if (Double.isInfinite(max) || Double.isNaN(max)) {
      Arrays.fill(row, 0, n, Double.NaN);
      return;
    }
    double sum = 0;
    for (int i = 0; i < n; i++) {
      double e = Math.exp(row[i] - max);
      sum += e;
      if (!log) {
        row[i] = e;
      }
    }
    if (log) {
      double shift = max + Math.log(sum);
      for (int i = 0; i < n; i++) {
        row[i] -= shift;
      }
    } else {
      for (int i = 0; i < n; i++) {
        row[i] /= sum;
      }
    }
  }

  /** A row with no finite maximum: every entry masked (-inf), an infinity, or a NaN. The result is NaN. */
  static void degenerateRow(float[] row, int n, float max, boolean log) {
    Arrays.fill(row, 0, n, Float.NaN);
  }
}
