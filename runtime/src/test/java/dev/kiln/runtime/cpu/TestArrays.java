package dev.kiln.runtime.cpu;

import static org.junit.jupiter.api.Assertions.fail;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Arrays;
import java.util.Random;

/** Random shapes, random memory layouts and a naive index-tuple walk: the oracle side of the kernel tests. */
final class TestArrays {
  private TestArrays() {}

  static final long[] SIZES = {0, 1, 1, 2, 3, 4, 5, 7};

  /** A random shape of rank 0..maxRank; sizes include 0 and 1, and large ones are shrunk to keep tests fast. */
  static long[] randomShape(Random rnd, int minRank, int maxRank, boolean allowEmpty) {
    int r = minRank + rnd.nextInt(maxRank - minRank + 1);
    long[] s = new long[r];
    for (int i = 0; i < r; i++) {
      long v = SIZES[rnd.nextInt(SIZES.length)];
      if (!allowEmpty && v == 0) {
        v = 2;
      }
      s[i] = v;
    }
    return s;
  }

  /** Layouts a test array can come in. */
  enum Layout {
    CONTIGUOUS,
    PERMUTED,
    STEPPED,
    NEGATIVE_OFFSET_SLICE,
    EXPANDED
  }

  /**
   * An array of the given shape in a random layout (permuted, sliced with steps, a sub-window, or broadcast with
   * stride 0), filled with random values: floats in [-2, 2) (scaled by {@code scale}), integers in [-5, 5].
   */
  static NdArray random(Random rnd, DType t, long[] shape, double scale) {
    Layout l = Layout.values()[rnd.nextInt(Layout.values().length)];
    return random(rnd, t, shape, scale, l);
  }

  static NdArray random(Random rnd, DType t, long[] shape, double scale, Layout layout) {
    int r = shape.length;
    NdArray a;
    switch (layout) {
      case PERMUTED -> {
        int[] perm = permutation(rnd, r);
        long[] base = new long[r];
        for (int i = 0; i < r; i++) {
          base[perm[i]] = shape[i];
        }
        // base dim perm[i] holds result dim i, so permuting by perm gives back `shape`.
        a = fill(rnd, NdArray.zeros(t, base), scale).permute(perm);
      }
      case STEPPED -> {
        long[] base = new long[r];
        long[] steps = new long[r];
        long[] starts = new long[r];
        for (int i = 0; i < r; i++) {
          steps[i] = 1 + rnd.nextInt(3);
          starts[i] = rnd.nextInt(2);
          base[i] = starts[i] + shape[i] * steps[i] + rnd.nextInt(2);
        }
        a = fill(rnd, NdArray.zeros(t, base), scale);
        for (int i = 0; i < r; i++) {
          a = a.slice(i, starts[i], starts[i] + shape[i] * steps[i], steps[i]);
        }
      }
      case NEGATIVE_OFFSET_SLICE -> {
        long[] base = new long[r];
        for (int i = 0; i < r; i++) {
          base[i] = shape[i] + 2;
        }
        a = fill(rnd, NdArray.zeros(t, base), scale);
        for (int i = 0; i < r; i++) {
          a = a.slice(i, -shape[i] - 1, -1, 1);
        }
      }
      case EXPANDED -> {
        long[] small = shape.clone();
        for (int i = 0; i < r; i++) {
          if (rnd.nextBoolean()) {
            small[i] = 1;
          }
        }
        a = fill(rnd, NdArray.zeros(t, small), scale).expand(shape);
      }
      default -> a = fill(rnd, NdArray.zeros(t, shape), scale);
    }
    if (!Arrays.equals(a.shape(), shape)) {
      fail("test helper built shape " + Arrays.toString(a.shape()) + " for " + Arrays.toString(shape));
    }
    return a;
  }

  static int[] permutation(Random rnd, int r) {
    int[] p = new int[r];
    for (int i = 0; i < r; i++) {
      p[i] = i;
    }
    for (int i = r - 1; i > 0; i--) {
      int j = rnd.nextInt(i + 1);
      int tmp = p[i];
      p[i] = p[j];
      p[j] = tmp;
    }
    return p;
  }

  static NdArray fill(Random rnd, NdArray a, double scale) {
    forEachIndex(
        a.shape(),
        idx -> {
          if (a.dtype().isFloating()) {
            a.setDouble((rnd.nextDouble() * 4 - 2) * scale, idx);
          } else if (a.dtype() == DType.BOOL) {
            a.setLong(rnd.nextInt(2), idx);
          } else if (a.dtype() == DType.U8) {
            a.setLong(rnd.nextInt(11), idx);
          } else {
            a.setLong(rnd.nextInt(11) - 5, idx);
          }
        });
    return a;
  }

  interface IndexFn {
    void accept(long[] idx);
  }

  /** Every index tuple of {@code shape} in row-major order (one empty tuple for rank 0, none when empty). */
  static void forEachIndex(long[] shape, IndexFn f) {
    long n = NdArray.numel(shape);
    long[] idx = new long[shape.length];
    for (long k = 0; k < n; k++) {
      long rem = k;
      for (int d = shape.length - 1; d >= 0; d--) {
        idx[d] = rem % shape[d];
        rem /= shape[d];
      }
      f.accept(idx.clone());
    }
  }

  /** The index into an operand of shape {@code s} that broadcasts to {@code idx} (numpy rules). */
  static long[] broadcastIndex(long[] idx, long[] s) {
    long[] out = new long[s.length];
    int lead = idx.length - s.length;
    for (int i = 0; i < s.length; i++) {
      out[i] = s[i] == 1 ? 0 : idx[i + lead];
    }
    return out;
  }

  /** Asserts |got - want| <= atol + rtol |want| (NaNs must match NaNs, infinities must match exactly). */
  static void assertClose(double want, double got, double rtol, double atol, String what) {
    if (Double.isNaN(want) || Double.isNaN(got)) {
      if (!(Double.isNaN(want) && Double.isNaN(got))) {
        fail(what + ": expected " + want + " but got " + got);
      }
      return;
    }
    if (Double.isInfinite(want) || Double.isInfinite(got)) {
      if (want != got) {
        fail(what + ": expected " + want + " but got " + got);
      }
      return;
    }
    if (Math.abs(got - want) > atol + rtol * Math.abs(want)) {
      fail(what + ": expected " + want + " but got " + got + " (diff " + Math.abs(got - want) + ", rtol " + rtol
          + ", atol " + atol + ")");
    }
  }

  /** Relative tolerance for one rounding into {@code t} plus a few float32 operations. */
  static double rtol(DType t) {
    return switch (t) {
      // Results are rounded once to float after double math, or computed with a ~2 ulp vector exp: 1e-6 covers
      // a few float ulps (6e-8 each) with margin.
      case F32 -> 1e-6;
      // Double math differs from the reference only by library rounding (pow, exp) or the erf series: ~1e-14.
      case F64 -> 1e-12;
      // One rounding to 8 (bf16) / 11 (f16) significant bits: 2^-8 and 2^-11 relative, doubled for margin.
      case BF16 -> 8e-3;
      case F16 -> 1e-3;
      default -> 0;
    };
  }

  static String describe(NdArray a) {
    return a.dtype() + Arrays.toString(a.shape()) + " strides " + Arrays.toString(a.strides()) + " offset "
        + a.offset();
  }
}
