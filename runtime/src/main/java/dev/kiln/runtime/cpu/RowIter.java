package dev.kiln.runtime.cpu;

import dev.kiln.runtime.tensor.NdArray;
import java.util.Arrays;

/**
 * Walks several arrays of one (broadcast) shape together, in row-major order, handing out runs of elements
 * ("rows") along the innermost dim. Adjacent dims that are contiguous with each other in <em>every</em> operand are
 * merged first, so contiguous operands come out as one long row and a kernel's inner loop sees stride 1.
 *
 * <p>Any flat sub-range {@code [start, end)} can be walked on its own, which is how {@link Parallel} chunks split
 * an op: a chunk may begin or end in the middle of a row.
 */
final class RowIter {
  private final long[] shape;
  private final long[][] strides;
  private final long[] offsets;
  private final long numel;

  /** Receives one row: its length, and per operand the element offset of its first element and its stride. */
  @FunctionalInterface
  interface RowFn {
    void row(long n, long[] offsets, long[] strides);
  }

  /**
   * @param shape the common shape
   * @param arrays operands already expanded to {@code shape} (strides 0 where broadcast)
   */
  static RowIter of(long[] shape, NdArray... arrays) {
    long[][] st = new long[arrays.length][];
    long[] off = new long[arrays.length];
    for (int k = 0; k < arrays.length; k++) {
      if (!Arrays.equals(arrays[k].shape(), shape)) {
        throw new IllegalArgumentException(
            "operand " + k + " has shape " + Arrays.toString(arrays[k].shape()) + ", expected "
                + Arrays.toString(shape));
      }
      st[k] = arrays[k].strides();
      off[k] = arrays[k].offset();
    }
    return new RowIter(shape, st, off);
  }

  /** Like {@link #of(long[], NdArray...)} from raw strides and element offsets, one row per operand. */
  static RowIter of(long[] shape, long[][] strides, long[] offsets) {
    return new RowIter(shape, strides, offsets);
  }

  private RowIter(long[] shape, long[][] strides, long[] offsets) {
    int ops = strides.length;
    // Drop size-1 dims (their stride never matters), then merge neighbours that are contiguous in every operand.
    long[] ns = new long[shape.length];
    long[][] nt = new long[ops][shape.length];
    int r = 0;
    for (int d = 0; d < shape.length; d++) {
      if (shape[d] == 1) {
        continue;
      }
      boolean merge = r > 0;
      for (int k = 0; k < ops && merge; k++) {
        merge = nt[k][r - 1] == strides[k][d] * shape[d];
      }
      if (merge) {
        ns[r - 1] *= shape[d];
        for (int k = 0; k < ops; k++) {
          nt[k][r - 1] = strides[k][d];
        }
      } else {
        ns[r] = shape[d];
        for (int k = 0; k < ops; k++) {
          nt[k][r] = strides[k][d];
        }
        r++;
      }
    }
    if (r == 0) {
      // Rank 0 or all dims of size 1: one row of one element.
      this.shape = new long[] {1};
      this.strides = new long[ops][1];
    } else {
      this.shape = Arrays.copyOf(ns, r);
      this.strides = new long[ops][];
      for (int k = 0; k < ops; k++) {
        this.strides[k] = Arrays.copyOf(nt[k], r);
      }
    }
    this.offsets = offsets.clone();
    this.numel = NdArray.numel(shape);
  }

  long numel() {
    return numel;
  }

  /** Length of the innermost (merged) dim: the longest row a walk can produce. */
  long innerSize() {
    return shape[shape.length - 1];
  }

  /** Inner stride of operand {@code k} after merging. */
  long innerStride(int k) {
    return strides[k][shape.length - 1];
  }

  /** Calls {@code f} for the rows covering flat elements {@code [start, end)}. */
  void forRange(long start, long end, RowFn f) {
    if (start >= end) {
      return;
    }
    int r = shape.length;
    int ops = offsets.length;
    long[] idx = new long[r];
    long rem = start;
    for (int d = r - 1; d >= 0; d--) {
      idx[d] = rem % shape[d];
      rem /= shape[d];
    }
    long[] base = new long[ops];
    for (int k = 0; k < ops; k++) {
      long o = offsets[k];
      for (int d = 0; d < r; d++) {
        o += idx[d] * strides[k][d];
      }
      base[k] = o;
    }
    long[] rowOff = new long[ops];
    long[] rowSt = new long[ops];
    for (int k = 0; k < ops; k++) {
      rowSt[k] = strides[k][r - 1];
    }
    long pos = start;
    long inner = shape[r - 1];
    while (pos < end) {
      long n = Math.min(inner - idx[r - 1], end - pos);
      System.arraycopy(base, 0, rowOff, 0, ops);
      f.row(n, rowOff, rowSt);
      pos += n;
      if (pos >= end) {
        return;
      }
      // Advance to the start of the next row.
      for (int k = 0; k < ops; k++) {
        base[k] -= idx[r - 1] * strides[k][r - 1];
      }
      idx[r - 1] = 0;
      int d = r - 2;
      while (d >= 0) {
        idx[d]++;
        for (int k = 0; k < ops; k++) {
          base[k] += strides[k][d];
        }
        if (idx[d] < shape[d]) {
          break;
        }
        for (int k = 0; k < ops; k++) {
          base[k] -= strides[k][d] * shape[d];
        }
        idx[d] = 0;
        d--;
      }
    }
  }
}
