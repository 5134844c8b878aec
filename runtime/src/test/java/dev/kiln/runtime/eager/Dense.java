package dev.kiln.runtime.eager;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.fail;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.runtime.tensor.NdArray;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * The oracle side of the eager tests: a row-major array of doubles with plain index arithmetic, and naive loops
 * (einsum over every assignment of its labels, numpy broadcasting by index clamping) that share no code with the
 * interpreter or the kernels.
 */
final class Dense {
  final long[] shape;
  final double[] v;

  Dense(long[] shape, double[] v) {
    this.shape = shape.clone();
    this.v = v;
    if (numel(shape) != v.length) {
      throw new IllegalArgumentException(Arrays.toString(shape) + " vs " + v.length);
    }
  }

  static Dense zeros(long... shape) {
    return new Dense(shape, new double[(int) numel(shape)]);
  }

  static Dense of(Tensor t) {
    return new Dense(t.shape(), ((NdArray) t).toDoubleArray());
  }

  static long numel(long[] shape) {
    long n = 1;
    for (long s : shape) {
      n *= s;
    }
    return n;
  }

  int flat(long... idx) {
    long f = 0;
    for (int d = 0; d < shape.length; d++) {
      f = f * shape[d] + idx[d];
    }
    return (int) f;
  }

  double get(long... idx) {
    return v[flat(idx)];
  }

  void set(double x, long... idx) {
    v[flat(idx)] = x;
  }

  /** The multi-index of flat position {@code f}. */
  long[] index(long f) {
    long[] idx = new long[shape.length];
    for (int d = shape.length - 1; d >= 0; d--) {
      idx[d] = f % shape[d];
      f /= shape[d];
    }
    return idx;
  }

  /** The element that numpy broadcasting pairs with output index {@code out} (right-aligned, size-1 dims pinned). */
  double broadcastGet(long[] out) {
    long[] idx = new long[shape.length];
    int lead = out.length - shape.length;
    for (int d = 0; d < shape.length; d++) {
      idx[d] = shape[d] == 1 ? 0 : out[d + lead];
    }
    return get(idx);
  }

  NdArray toNd(DType t) {
    // fromDoubles without a shape means 1-d, so a 0-d array is reshaped from one element.
    NdArray a = NdArray.fromDoubles(v).reshape(shape);
    return t == DType.F64 ? a : a.to(t);
  }

  // ---------------------------------------------------------------- random data

  static NdArray random(Random rnd, DType t, long... shape) {
    double[] d = new double[(int) numel(shape)];
    for (int i = 0; i < d.length; i++) {
      d[i] = rnd.nextGaussian();
    }
    return new Dense(shape, d).toNd(t);
  }

  static NdArray randomIds(Random rnd, long bound, long... shape) {
    long[] d = new long[(int) numel(shape)];
    for (int i = 0; i < d.length; i++) {
      d[i] = (long) rnd.nextInt((int) bound);
    }
    return NdArray.fromLongs(d).reshape(shape);
  }

  /** Shapes {@code a} and a random shape that broadcasts with it (dims dropped from the left or set to 1). */
  static long[] broadcastPartner(Random rnd, long[] a) {
    int drop = a.length == 0 ? 0 : rnd.nextInt(a.length + 1);
    long[] b = Arrays.copyOfRange(a, drop, a.length);
    for (int d = 0; d < b.length; d++) {
      if (rnd.nextInt(3) == 0) {
        b[d] = 1;
      }
    }
    return b;
  }

  static long[] randomShape(Random rnd, int minRank, int maxRank, int maxSize) {
    int r = minRank + rnd.nextInt(maxRank - minRank + 1);
    long[] s = new long[r];
    for (int d = 0; d < r; d++) {
      s[d] = 1 + rnd.nextInt(maxSize);
    }
    return s;
  }

  static long[] broadcast(long[] a, long[] b) {
    int r = Math.max(a.length, b.length);
    long[] out = new long[r];
    for (int i = 0; i < r; i++) {
      long x = i - (r - a.length) >= 0 ? a[i - (r - a.length)] : 1;
      long y = i - (r - b.length) >= 0 ? b[i - (r - b.length)] : 1;
      out[i] = Math.max(x, y);
    }
    return out;
  }

  // ---------------------------------------------------------------- naive einsum

  /**
   * Einsum without {@code ...}: labels are space-separated words. Loops over every assignment of every label and
   * accumulates the product into the output element.
   */
  static Dense einsum(String spec, Dense... ops) {
    String[] sides = spec.split("->", -1);
    String[] ins = sides[0].split(",");
    List<String[]> labels = new ArrayList<>();
    Map<String, Long> size = new HashMap<>();
    List<String> all = new ArrayList<>();
    for (int i = 0; i < ins.length; i++) {
      String[] ls = ins[i].trim().isEmpty() ? new String[0] : ins[i].trim().split("\\s+");
      labels.add(ls);
      for (int d = 0; d < ls.length; d++) {
        size.put(ls[d], ops[i].shape[d]);
        if (!all.contains(ls[d])) {
          all.add(ls[d]);
        }
      }
    }
    String[] out = sides[1].trim().isEmpty() ? new String[0] : sides[1].trim().split("\\s+");
    long[] outShape = Arrays.stream(out).mapToLong(size::get).toArray();
    Dense r = zeros(outShape);
    long total = 1;
    for (String l : all) {
      total *= size.get(l);
    }
    long[] val = new long[all.size()];
    for (long f = 0; f < total; f++) {
      long rest = f;
      for (int j = all.size() - 1; j >= 0; j--) {
        long n = size.get(all.get(j));
        val[j] = rest % n;
        rest /= n;
      }
      double p = 1;
      for (int i = 0; i < ops.length; i++) {
        String[] ls = labels.get(i);
        long[] idx = new long[ls.length];
        for (int d = 0; d < ls.length; d++) {
          idx[d] = val[all.indexOf(ls[d])];
        }
        p *= ops[i].get(idx);
      }
      long[] oi = new long[out.length];
      for (int d = 0; d < out.length; d++) {
        oi[d] = val[all.indexOf(out[d])];
      }
      r.v[r.flat(oi)] += p;
    }
    return r;
  }

  // ---------------------------------------------------------------- assertions

  /**
   * Asserts equal shapes and {@code |actual - expected| <= tol * max(1, |expected|)} everywhere (NaN and infinities
   * must match exactly), naming the first bad element.
   */
  static void assertClose(Dense expected, Tensor actual, double tol, String what) {
    assertArrayEquals(expected.shape, actual.shape(), what + ": shape");
    double[] a = ((NdArray) actual).toDoubleArray();
    for (int i = 0; i < a.length; i++) {
      double e = expected.v[i];
      boolean ok =
          Double.isNaN(e) ? Double.isNaN(a[i])
              : Double.isInfinite(e) ? a[i] == e
              : Math.abs(a[i] - e) <= tol * Math.max(1, Math.abs(e));
      if (!ok) {
        fail(what + ": element " + Arrays.toString(expected.index(i)) + " is " + a[i] + ", expected " + e
            + " (tolerance " + tol + " relative to max(1, |expected|))");
      }
    }
  }
}
