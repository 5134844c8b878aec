package dev.kiln.runtime.tensor;

import java.util.function.LongConsumer;

/**
 * Visits the element offsets of strided arrays in row-major order. This is the generic (slow) path; kernels use it
 * for the outer dims and run a tight loop over the innermost one.
 */
public final class StridedWalk {
  private StridedWalk() {}

  /** Receives matching element offsets of two arrays. */
  @FunctionalInterface
  public interface PairConsumer {
    void accept(long a, long b);
  }

  /** Calls {@code f} with the element offset of every element of the array. */
  public static void forEach(long[] shape, long[] strides, long offset, LongConsumer f) {
    int r = shape.length;
    for (long s : shape) {
      if (s == 0) {
        return;
      }
    }
    if (r == 0) {
      f.accept(offset);
      return;
    }
    long[] idx = new long[r];
    long inner = shape[r - 1];
    long innerStride = strides[r - 1];
    long base = offset;
    while (true) {
      long e = base;
      for (long i = 0; i < inner; i++, e += innerStride) {
        f.accept(e);
      }
      int d = r - 2;
      while (d >= 0) {
        idx[d]++;
        base += strides[d];
        if (idx[d] < shape[d]) {
          break;
        }
        base -= strides[d] * shape[d];
        idx[d] = 0;
        d--;
      }
      if (d < 0) {
        return;
      }
    }
  }

  /** Like {@link #forEach} over two arrays of one shape with their own strides and offsets. */
  public static void forEach2(
      long[] shape, long[] stridesA, long offsetA, long[] stridesB, long offsetB, PairConsumer f) {
    int r = shape.length;
    for (long s : shape) {
      if (s == 0) {
        return;
      }
    }
    if (r == 0) {
      f.accept(offsetA, offsetB);
      return;
    }
    long[] idx = new long[r];
    long inner = shape[r - 1];
    long sa = stridesA[r - 1];
    long sb = stridesB[r - 1];
    long baseA = offsetA;
    long baseB = offsetB;
    while (true) {
      long a = baseA;
      long b = baseB;
      for (long i = 0; i < inner; i++, a += sa, b += sb) {
        f.accept(a, b);
      }
      int d = r - 2;
      while (d >= 0) {
        idx[d]++;
        baseA += stridesA[d];
        baseB += stridesB[d];
        if (idx[d] < shape[d]) {
          break;
        }
        baseA -= stridesA[d] * shape[d];
        baseB -= stridesB[d] * shape[d];
        idx[d] = 0;
        d--;
      }
      if (d < 0) {
        return;
      }
    }
  }
}
