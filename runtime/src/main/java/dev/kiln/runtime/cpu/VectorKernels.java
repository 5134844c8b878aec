package dev.kiln.runtime.cpu;

import java.lang.foreign.MemorySegment;
import dev.kiln.runtime.tensor.Layouts;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * F32 kernels on the Vector API. Only reached behind {@link Simd#enabled()}, so this class (and the incubator
 * module) is never loaded when the module is absent.
 *
 * <p>Tails use masked vector ops rather than a scalar loop, so an element's result never depends on where a block
 * or chunk boundary falls. {@code exp} is computed here from add/mul/fma and bit operations instead of
 * {@code lanewise(EXP)}: the incubator's EXP may take a different code path (SVML stub vs Java fallback) in
 * interpreted and compiled code, which would make results depend on JIT timing and break bit-for-bit determinism.
 * Lane sums are finished in a fixed sequential order for the same reason ({@code reduceLanes(ADD)} has no fixed
 * order).
 */
final class VectorKernels {
  private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
  private static final int L = S.length();
  private static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;

  private VectorKernels() {}

  // ---------------------------------------------------------------- binary over contiguous F32 segments

  /**
   * {@code o[i] = a[i] op b[i]} for {@code n} contiguous F32 elements at the given byte offsets.
   *
   * <p>One loop per operator on purpose: a single loop over {@code lanewise(VectorOperators.Binary, ...)} with the
   * operator as a parameter measured 3–4× slower here (add at 7–9 GB/s instead of 25–28 GB/s; C2 does not fold the
   * operator and falls back to the generic path).
   */
  static boolean binary(Elementwise.Binary op, MemorySegment a, long ab, MemorySegment b, long bb, MemorySegment o,
      long ob, long n) {
    switch (op) {
      case ADD -> add(a, ab, b, bb, o, ob, n);
      case SUB -> sub(a, ab, b, bb, o, ob, n);
      case MUL -> mul(a, ab, b, bb, o, ob, n);
      case DIV -> div(a, ab, b, bb, o, ob, n);
      default -> {
        return false;
      }
    }
    return true;
  }

  private static void add(MemorySegment a, long ab, MemorySegment b, long bb, MemorySegment o, long ob, long n) {
    long i = 0;
    long bound = n - n % L;
    for (; i < bound; i += L) {
      FloatVector x = FloatVector.fromMemorySegment(S, a, ab + i * 4, LE);
      FloatVector y = FloatVector.fromMemorySegment(S, b, bb + i * 4, LE);
      x.add(y).intoMemorySegment(o, ob + i * 4, LE);
    }
    if (i < n) {
      VectorMask<Float> m = S.indexInRange(i, n);
      FloatVector x = FloatVector.fromMemorySegment(S, a, ab + i * 4, LE, m);
      FloatVector y = FloatVector.fromMemorySegment(S, b, bb + i * 4, LE, m);
      x.add(y).intoMemorySegment(o, ob + i * 4, LE, m);
    }
  }

  private static void sub(MemorySegment a, long ab, MemorySegment b, long bb, MemorySegment o, long ob, long n) {
    long i = 0;
    long bound = n - n % L;
    for (; i < bound; i += L) {
      FloatVector x = FloatVector.fromMemorySegment(S, a, ab + i * 4, LE);
      FloatVector y = FloatVector.fromMemorySegment(S, b, bb + i * 4, LE);
      x.sub(y).intoMemorySegment(o, ob + i * 4, LE);
    }
    if (i < n) {
      VectorMask<Float> m = S.indexInRange(i, n);
      FloatVector x = FloatVector.fromMemorySegment(S, a, ab + i * 4, LE, m);
      FloatVector y = FloatVector.fromMemorySegment(S, b, bb + i * 4, LE, m);
      x.sub(y).intoMemorySegment(o, ob + i * 4, LE, m);
    }
  }

  private static void mul(MemorySegment a, long ab, MemorySegment b, long bb, MemorySegment o, long ob, long n) {
    long i = 0;
    long bound = n - n % L;
    for (; i < bound; i += L) {
      FloatVector x = FloatVector.fromMemorySegment(S, a, ab + i * 4, LE);
      FloatVector y = FloatVector.fromMemorySegment(S, b, bb + i * 4, LE);
      x.mul(y).intoMemorySegment(o, ob + i * 4, LE);
    }
    if (i < n) {
      VectorMask<Float> m = S.indexInRange(i, n);
      FloatVector x = FloatVector.fromMemorySegment(S, a, ab + i * 4, LE, m);
      FloatVector y = FloatVector.fromMemorySegment(S, b, bb + i * 4, LE, m);
      x.mul(y).intoMemorySegment(o, ob + i * 4, LE, m);
    }
  }

  private static void div(MemorySegment a, long ab, MemorySegment b, long bb, MemorySegment o, long ob, long n) {
    long i = 0;
    long bound = n - n % L;
    for (; i < bound; i += L) {
      FloatVector x = FloatVector.fromMemorySegment(S, a, ab + i * 4, LE);
      FloatVector y = FloatVector.fromMemorySegment(S, b, bb + i * 4, LE);
      x.div(y).intoMemorySegment(o, ob + i * 4, LE);
    }
    if (i < n) {
      VectorMask<Float> m = S.indexInRange(i, n);
      FloatVector x = FloatVector.fromMemorySegment(S, a, ab + i * 4, LE, m);
      FloatVector y = FloatVector.fromMemorySegment(S, b, bb + i * 4, LE, m);
      x.div(y).intoMemorySegment(o, ob + i * 4, LE, m);
    }
  }

  // ---------------------------------------------------------------- unary over float[] blocks

  /** {@code o = op(x)} over {@code n} elements; false when this op has no vector form here (caller goes scalar). */
  static boolean unary(Elementwise.Unary op, float[] x, float[] o, int n) {
    switch (op) {
      case EXP, SIGMOID, SILU -> {
        int i = 0;
        int bound = S.loopBound(n);
        for (; i < bound; i += L) {
          unaryLanes(op, FloatVector.fromArray(S, x, i)).intoArray(o, i);
        }
        if (i < n) {
          VectorMask<Float> m = S.indexInRange(i, n);
          unaryLanes(op, FloatVector.fromArray(S, x, i, m)).intoArray(o, i, m);
        }
        return true;
      }
      default -> {
        return false;
      }
    }
  }

  private static FloatVector unaryLanes(Elementwise.Unary op, FloatVector v) {
    return switch (op) {
      case EXP -> exp(v);
      case SIGMOID -> one().div(exp(v.neg()).add(1f));
      default -> v.div(exp(v.neg()).add(1f)); // SILU
    };
  }

  private static FloatVector one() {
    return FloatVector.broadcast(S, 1f);
  }

  private static final float LOG2E = 1.44269504088896341f;
  private static final float LN2_HI = 0.693145751953125f;
  private static final float LN2_LO = 1.428606765330187045e-06f;
  private static final float MAGIC = 12582912f; // 1.5 * 2^23: adding it rounds a float to an integer in its low bits

  /**
   * e^x to about 1 ulp: x = k ln2 + r with |r| <= ln2/2, e^r by its degree-7 Taylor polynomial (error below
   * 2^-24 on that range), then scaled by 2^k in two halves so that under- and overflow round like IEEE.
   */
  static FloatVector exp(FloatVector x) {
    // Beyond these e^x is 0 or +inf in float; NaN stays NaN (its comparisons are false). Compare-and-blend rather
    // than max/min, whose Java semantics (NaN, -0) cost several extra instructions per vector.
    FloatVector xc = x.blend(-104f, x.lt(-104f));
    xc = xc.blend(89f, xc.compare(VectorOperators.GT, 89f));
    FloatVector t = xc.mul(LOG2E).add(MAGIC);
    FloatVector kf = t.sub(MAGIC);
    IntVector k = t.reinterpretAsInts().sub(Float.floatToRawIntBits(MAGIC));
    FloatVector r = kf.neg().fma(FloatVector.broadcast(S, LN2_HI), xc);
    r = kf.neg().fma(FloatVector.broadcast(S, LN2_LO), r);
    FloatVector p = FloatVector.broadcast(S, 1f / 5040);
    p = p.fma(r, FloatVector.broadcast(S, 1f / 720));
    p = p.fma(r, FloatVector.broadcast(S, 1f / 120));
    p = p.fma(r, FloatVector.broadcast(S, 1f / 24));
    p = p.fma(r, FloatVector.broadcast(S, 1f / 6));
    p = p.fma(r, FloatVector.broadcast(S, 0.5f));
    p = p.fma(r, one());
    p = p.fma(r, one());
    IntVector k1 = k.lanewise(VectorOperators.ASHR, 1);
    IntVector k2 = k.sub(k1);
    FloatVector s1 = k1.add(127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
    FloatVector s2 = k2.add(127).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
    return p.mul(s1).mul(s2);
  }

  private static final float TWO_POW_MINUS_64 = 0x1p-64f;

  /**
   * e^x for x <= 0 (or -inf, or NaN), to the accuracy of {@link #exp}: the same reduction and polynomial, with
   * fewer instructions because the range is one-sided. Softmax only ever exponentiates {@code x - max <= 0}.
   *
   * <p>With x clamped to [-104, 0], k = round(x log2 e) lies in [-150, 0], so 2^(k+64) is a normal float and
   * {@code p * 2^(k+64)} is exact; the final {@code * 2^-64} is then the only rounding, exactly as IEEE rounds a
   * subnormal result. 2^(k+64) is built from the bits of {@code t = x log2 e + 1.5*2^23}: its low bits hold k, and
   * the bits of 1.5*2^23 vanish when shifted left by 23, so {@code (t.bits << 23) + ((127+64) << 23)} is the float
   * 2^(k+64) with two integer ops.
   */
  static FloatVector expNonPositive(FloatVector x) {
    FloatVector xc = x.blend(-104f, x.lt(-104f)); // e^-104 rounds to 0 in float; NaN compares false and stays
    FloatVector t = xc.mul(LOG2E).add(MAGIC);
    FloatVector kf = t.sub(MAGIC);
    FloatVector r = kf.fma(FloatVector.broadcast(S, -LN2_HI), xc);
    r = kf.fma(FloatVector.broadcast(S, -LN2_LO), r);
    FloatVector p = FloatVector.broadcast(S, 1f / 5040);
    p = p.fma(r, FloatVector.broadcast(S, 1f / 720));
    p = p.fma(r, FloatVector.broadcast(S, 1f / 120));
    p = p.fma(r, FloatVector.broadcast(S, 1f / 24));
    p = p.fma(r, FloatVector.broadcast(S, 1f / 6));
    p = p.fma(r, FloatVector.broadcast(S, 0.5f));
    p = p.fma(r, one());
    p = p.fma(r, one());
    FloatVector scale = t.reinterpretAsInts().lanewise(VectorOperators.LSHL, 23).add((127 + 64) << 23)
        .reinterpretAsFloats();
    return p.mul(scale).mul(TWO_POW_MINUS_64);
  }

  // ---------------------------------------------------------------- softmax rows

  /**
   * Softmax (or log-softmax) of {@code row[0, n)} in place, computed in float; exponentials are summed in float
   * lanes for at most 16 vector steps, then flushed in lane order into a double.
   */
  static void softmaxRow(float[] row, int n, boolean log) {
    int bound = S.loopBound(n);
    FloatVector mv = FloatVector.broadcast(S, Float.NEGATIVE_INFINITY);
    int i = 0;
    for (; i < bound; i += L) {
      mv = mv.max(FloatVector.fromArray(S, row, i));
    }
    float max = maxLanes(mv);
    for (; i < n; i++) {
      max = Math.max(max, row[i]);
    }
    if (max == Float.NEGATIVE_INFINITY || Float.isNaN(max)) {
      Softmax.degenerateRow(row, n, max, log);
      return;
    }
    FloatVector sv = FloatVector.zero(S);
    double sum = 0;
    int step = 0;
    for (i = 0; i < bound; i += L, step++) {
      FloatVector e = expNonPositive(FloatVector.fromArray(S, row, i).sub(max));
      sv = sv.add(e);
      if (!log) {
        e.intoArray(row, i);
      }
      if ((step & 15) == 15) {
        sum += sumLanes(sv);
        sv = FloatVector.zero(S);
      }
    }
    if (i < n) {
      VectorMask<Float> m = S.indexInRange(i, n);
      FloatVector e = expNonPositive(FloatVector.fromArray(S, row, i, m).sub(max));
      sv = sv.add(e, m);
      if (!log) {
        e.intoArray(row, i, m);
      }
    }
    sum += sumLanes(sv);
    if (log) {
      float shift = (float) (max + Math.log(sum));
      for (i = 0; i < bound; i += L) {
        FloatVector.fromArray(S, row, i).sub(shift).intoArray(row, i);
      }
      for (; i < n; i++) {
        row[i] -= shift;
      }
    } else {
      float inv = (float) (1 / sum);
      for (i = 0; i < bound; i += L) {
        FloatVector.fromArray(S, row, i).mul(inv).intoArray(row, i);
      }
      for (; i < n; i++) {
        row[i] *= inv;
      }
    }
  }

  /**
   * Softmax (or log-softmax) of {@code n} contiguous F32 elements read from {@code x} at byte offset {@code xb},
   * written to {@code o} at byte offset {@code ob} ({@code o} may be {@code x} at the same offset: in place).
   *
   * <p>Works on the segments directly: one pass reads the row for its maximum, a second computes the exponentials
   * into the output while summing them, and a third scales the output, which by then is in cache. The row is
   * thus read from memory once and written once, without the copies into and out of a scratch array. Lane sums
   * are flushed into a double every 16 vector steps in lane order, a fixed order whatever the thread count.
   */
  static void softmaxRow(MemorySegment x, long xb, MemorySegment o, long ob, int n, boolean log) {
    float max = rowMax(x, xb, n);
    if (max == Float.NEGATIVE_INFINITY || Float.isNaN(max)) {
      for (int i = 0; i < n; i++) {
        o.set(Layouts.F32, ob + i * 4L, Float.NaN);
      }
      return;
    }
    double sum = expSum(x, xb, o, ob, n, max, !log);
    if (log) {
      addRow(x, xb, o, ob, n, -(float) (max + Math.log(sum)));
    } else {
      scaleRow(o, ob, n, (float) (1 / sum));
    }
  }

  // The passes of the segment row are separate small methods: in one large method C2 stops inlining at its node
  // budget, and a vector that reaches a call it did not inline is boxed on the heap in the hot loop.

  private static float rowMax(MemorySegment x, long xb, int n) {
    int bound = S.loopBound(n);
    long vb = (long) L * 4;
    // Two accumulators hide the latency of max; max is exact, so the grouping cannot change the result. A
    // compare-and-blend max (two instructions, against several for Java's max with its NaN and -0 rules) skips
    // NaNs, which is harmless: a NaN entry still makes the sum of exponentials, and so the whole row, NaN, and a
    // row of only NaNs keeps max = -inf, which also gives an all-NaN row. Which zero wins between -0 and +0 does
    // not change x - max's exponential.
    FloatVector m0 = FloatVector.broadcast(S, Float.NEGATIVE_INFINITY);
    FloatVector m1 = m0;
    int i = 0;
    for (; i + L < bound; i += 2 * L) {
      FloatVector a = FloatVector.fromMemorySegment(S, x, xb + i * 4L, LE);
      FloatVector b = FloatVector.fromMemorySegment(S, x, xb + i * 4L + vb, LE);
      m0 = m0.blend(a, m0.lt(a));
      m1 = m1.blend(b, m1.lt(b));
    }
    for (; i < bound; i += L) {
      FloatVector a = FloatVector.fromMemorySegment(S, x, xb + i * 4L, LE);
      m0 = m0.blend(a, m0.lt(a));
    }
    float max = maxLanes(m0.max(m1));
    for (; i < n; i++) {
      float v = x.get(Layouts.F32, xb + i * 4L);
      max = v > max ? v : max;
    }
    return max;
  }

  /** {@code o[i] = x[i] + c}. */
  private static void addRow(MemorySegment x, long xb, MemorySegment o, long ob, int n, float c) {
    int bound = S.loopBound(n);
    int i = 0;
    for (; i < bound; i += L) {
      FloatVector.fromMemorySegment(S, x, xb + i * 4L, LE).add(c).intoMemorySegment(o, ob + i * 4L, LE);
    }
    for (; i < n; i++) {
      o.set(Layouts.F32, ob + i * 4L, x.get(Layouts.F32, xb + i * 4L) + c);
    }
  }

  /** {@code o[i] *= c}. */
  private static void scaleRow(MemorySegment o, long ob, int n, float c) {
    int bound = S.loopBound(n);
    int i = 0;
    for (; i < bound; i += L) {
      FloatVector.fromMemorySegment(S, o, ob + i * 4L, LE).mul(c).intoMemorySegment(o, ob + i * 4L, LE);
    }
    for (; i < n; i++) {
      o.set(Layouts.F32, ob + i * 4L, o.get(Layouts.F32, ob + i * 4L) * c);
    }
  }

  /**
   * Sums {@code exp(x[i] - max)} over the row, storing each exponential into {@code o} when {@code store}. Float
   * lanes accumulate 16 vector steps, then are added into a double in lane order. Kept apart from the caller (and
   * the lane flush written without a call) so that C2 inlines {@code exp} and keeps every vector in registers.
   */
  private static double expSum(MemorySegment x, long xb, MemorySegment o, long ob, int n, float max, boolean store) {
    int bound = S.loopBound(n);
    float[] lanes = new float[L];
    double sum = 0;
    int i = 0;
    while (i < bound) {
      int blockEnd = Math.min(bound, i + 16 * L);
      FloatVector sv = FloatVector.zero(S);
      for (; i < blockEnd; i += L) {
        FloatVector e = expNonPositive(FloatVector.fromMemorySegment(S, x, xb + i * 4L, LE).sub(max));
        sv = sv.add(e);
        if (store) {
          e.intoMemorySegment(o, ob + i * 4L, LE);
        }
      }
      sv.intoArray(lanes, 0);
      for (int j = 0; j < L; j++) {
        sum += lanes[j];
      }
    }
    if (i < n) {
      VectorMask<Float> m = S.indexInRange(i, n);
      FloatVector e = expNonPositive(FloatVector.fromMemorySegment(S, x, xb + i * 4L, LE, m).sub(max));
      FloatVector sv = FloatVector.zero(S).add(e, m);
      if (store) {
        e.intoMemorySegment(o, ob + i * 4L, LE, m);
      }
      sv.intoArray(lanes, 0);
      for (int j = 0; j < L; j++) {
        sum += lanes[j];
      }
    }
    return sum;
  }

  private static float maxLanes(FloatVector v) {
    float[] lanes = v.toArray();
    float m = lanes[0];
    for (int i = 1; i < lanes.length; i++) {
      m = Math.max(m, lanes[i]);
    }
    return m;
  }

  private static double sumLanes(FloatVector v) {
    float[] lanes = v.toArray();
    double s = 0;
    for (float f : lanes) {
      s += f;
    }
    return s;
  }
}
