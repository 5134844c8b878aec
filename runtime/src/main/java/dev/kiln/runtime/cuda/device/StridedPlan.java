package dev.kiln.runtime.cuda.device;

import java.util.Arrays;

/**
 * The iteration space of one strided kernel of {@code device_ops.cu}: an output shape and each operand's strides over
 * it, with dims merged wherever they are contiguous in every operand (so a contiguous add arrives as rank 1 and the
 * kernel's index arithmetic is one multiply). Size-1 dims are dropped. At most {@link #MAX_RANK} dims remain.
 */
final class StridedPlan {
  static final int MAX_RANK = 8;

  private final long[] shape;
  private final long[][] strides;
  private final long numel;

  private StridedPlan(long[] shape, long[][] strides, long numel) {
    this.shape = shape;
    this.strides = strides;
    this.numel = numel;
  }

  /**
   * Plans a walk over {@code shape} where operand {@code i} has {@code strides[i]} (already broadcast to {@code
   * shape}: 0 where it repeats).
   */
  static StridedPlan of(long[] shape, long[]... strides) {
    long n = 1;
    for (long s : shape) {
      n = Math.multiplyExact(n, s);
    }
    int ops = strides.length;
    // At least one dim: a 0-d tensor walks as [1].
    long[] outShape = new long[Math.max(1, shape.length)];
    long[][] outStrides = new long[ops][Math.max(1, shape.length)];
    int r = 0;
    // Walk from the innermost dim outwards; dim d merges into the current innermost kept dim when, for every
    // operand, stride[d] == stride[kept] * size[kept].
    for (int d = shape.length - 1; d >= 0; d--) {
      if (shape[d] == 1) {
        continue;
      }
      boolean merge = r > 0;
      for (int o = 0; o < ops && merge; o++) {
        merge = strides[o][d] == outStrides[o][r - 1] * outShape[r - 1];
      }
      if (merge) {
        outShape[r - 1] *= shape[d];
      } else {
        outShape[r] = shape[d];
        for (int o = 0; o < ops; o++) {
          outStrides[o][r] = strides[o][d];
        }
        r++;
      }
    }
    if (r == 0) {
      r = 1;
      outShape[0] = 1;
    }
    if (r > MAX_RANK) {
      throw new IllegalArgumentException("cuda device: an operand layout of shape " + Arrays.toString(shape)
          + " needs " + r + " strided dims after merging; the kernels take at most " + MAX_RANK
          + " (make an operand contiguous first)");
    }
    // Reverse into row-major order (outermost first).
    long[] sh = new long[r];
    long[][] st = new long[ops][r];
    for (int i = 0; i < r; i++) {
      sh[i] = outShape[r - 1 - i];
      for (int o = 0; o < ops; o++) {
        st[o][i] = outStrides[o][r - 1 - i];
      }
    }
    return new StridedPlan(sh, st, n);
  }

  /**
   * Whether the {@code _32} kernels may run this walk: every element index and every operand offset below 2^31
   * (32-bit division is a few instructions; 64-bit division is emulated and dominates a strided walk).
   */
  boolean fits32() {
    if (numel >= 1L << 31) {
      return false;
    }
    for (long[] st : strides) {
      long reach = 0;
      for (int d = 0; d < shape.length; d++) {
        if (st[d] < 0) {
          return false;
        }
        reach += st[d] * (shape[d] - 1);
      }
      if (reach >= 1L << 31) {
        return false;
      }
    }
    return true;
  }

  /** {@code base}, or its 32-bit-index twin {@code base_32} when {@link #fits32}. */
  String kernel(String base) {
    return fits32() ? base + "_32" : base;
  }

  long numel() {
    return numel;
  }

  /** The size of the innermost (fastest-varying) dim of the walk. */
  long innerSize() {
    return shape[shape.length - 1];
  }

  /** Operand {@code i}'s stride along the innermost dim. */
  long innerStride(int i) {
    return strides[i][shape.length - 1];
  }

  int rank() {
    return shape.length;
  }

  /** The {@code KilnShape} struct: 8 sizes then the rank. */
  long[] shapeWords() {
    long[] w = new long[MAX_RANK + 1];
    System.arraycopy(shape, 0, w, 0, shape.length);
    w[MAX_RANK] = shape.length;
    return w;
  }

  /** The {@code KilnStrides} struct of operand {@code i}. */
  long[] strideWords(int i) {
    return Arrays.copyOf(strides[i], MAX_RANK);
  }

  /** Broadcast strides of an operand of {@code shape}/{@code strides} viewed at {@code target} (numpy rules). */
  static long[] broadcastStrides(long[] shape, long[] strides, long[] target, String what) {
    int lead = target.length - shape.length;
    if (lead < 0) {
      throw new IllegalArgumentException(what + " " + Arrays.toString(shape) + " has more dims than "
          + Arrays.toString(target));
    }
    long[] out = new long[target.length];
    for (int i = 0; i < target.length; i++) {
      int j = i - lead;
      if (j < 0) {
        out[i] = 0;
      } else if (shape[j] == target[i]) {
        out[i] = target[i] == 1 ? 0 : strides[j];
      } else if (shape[j] == 1) {
        out[i] = 0;
      } else {
        throw new IllegalArgumentException(what + " " + Arrays.toString(shape) + " does not broadcast to "
            + Arrays.toString(target));
      }
    }
    return out;
  }
}
