package dev.kiln.runtime.cpu;

import static dev.kiln.runtime.cpu.TestArrays.assertClose;
import static dev.kiln.runtime.cpu.TestArrays.broadcastIndex;
import static dev.kiln.runtime.cpu.TestArrays.describe;
import static dev.kiln.runtime.cpu.TestArrays.forEachIndex;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Elementwise.Binary;
import dev.kiln.runtime.cpu.Elementwise.Compare;
import dev.kiln.runtime.cpu.Elementwise.Unary;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class ElementwiseTest {
  private final boolean simdBefore = Simd.enabled();

  @AfterEach
  void restore() {
    Simd.setEnabled(simdBefore);
  }

  private static void useSimd(boolean on) {
    if (on && !Simd.available()) {
      throw new IllegalStateException("surefire adds jdk.incubator.vector; without it this test cannot cover the "
          + "Vector API path");
    }
    Simd.setEnabled(on);
  }

  /** The oracle: each unary op written out again in double. */
  static double refUnary(Unary op, double x) {
    return switch (op) {
      case NEG -> -x;
      case ABS -> Math.abs(x);
      case EXP -> Math.exp(x);
      case LOG -> Math.log(x);
      case SQRT -> Math.sqrt(x);
      case RSQRT -> 1 / Math.sqrt(x);
      case SQUARE -> x * x;
      case TANH -> Math.tanh(x);
      case SIGMOID -> 1 / (1 + Math.exp(-x));
      case SILU -> x * (1 / (1 + Math.exp(-x)));
      case GELU -> 0.5 * x * (1 + Erf.erf(x / Math.sqrt(2)));
      case GELU_TANH -> 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
      case RELU -> Math.max(x, 0);
      case RECIPROCAL -> 1 / x;
    };
  }

  @ParameterizedTest
  @ValueSource(booleans = {false, true})
  void unaryMatchesReferenceOnRandomLayouts(boolean simd) {
    useSimd(simd);
    Random rnd = new Random(11);
    DType[] types = {DType.F32, DType.F64, DType.BF16, DType.F16, DType.I32};
    for (Unary op : Unary.values()) {
      for (DType t : types) {
        for (int trial = 0; trial < 6; trial++) {
          long[] shape = TestArrays.randomShape(rnd, 0, 4, true);
          NdArray x = TestArrays.random(rnd, t, shape, 2.0);
          NdArray y = Elementwise.unary(op, x);
          DType want = t.isFloating() ? t : (op == Unary.NEG || op == Unary.ABS || op == Unary.SQUARE
              || op == Unary.RELU) ? t : DType.F32;
          assertEquals(want, y.dtype(), op + " of " + t);
          assertArrayEquals(shape, y.shape());
          assertTrue(y.isContiguous());
          forEachIndex(shape, idx -> {
            double ref = refUnary(op, x.getDouble(idx));
            // Reference in double from the same (already rounded) inputs; see TestArrays.rtol for the tolerances.
            // atol covers results near 0 where relative error is meaningless (gelu/silu of tiny negatives).
            double atol = t == DType.BF16 ? 1e-2 : t == DType.F16 ? 2e-3 : t == DType.F64 ? 1e-14 : 1e-7;
            assertClose(ref, y.getDouble(idx), TestArrays.rtol(want == DType.F32 ? DType.F32 : t) , atol,
                op + " " + describe(x) + " at " + Arrays.toString(idx) + " input " + x.getDouble(idx));
          });
        }
      }
    }
  }

  @Test
  void unaryIntegerStaysExact() {
    NdArray x = NdArray.fromLongs(new long[] {-3, 0, 5, Long.MAX_VALUE / 2, -(1L << 60)});
    assertArrayEquals(new long[] {3, 0, -5, -(Long.MAX_VALUE / 2), 1L << 60}, Elementwise.neg(x).toLongArray());
    assertArrayEquals(new long[] {0, 0, 5, Long.MAX_VALUE / 2, 0}, Elementwise.relu(x).toLongArray());
    assertEquals(DType.I64, Elementwise.abs(x).dtype());
  }

  /** Vector exp against Math.exp over ordinary values, the clamp edges, subnormal results and specials. */
  @Test
  void vectorExpWithinTwoUlpsIncludingEdges() {
    if (!Simd.available()) {
      throw new IllegalStateException("needs jdk.incubator.vector (surefire adds it)");
    }
    Random rnd = new Random(3);
    float[] x = new float[4096 + 13];
    for (int i = 0; i < x.length; i++) {
      x[i] = (float) (rnd.nextDouble() * 200 - 100);
    }
    float[] specials = {0f, -0f, 1f, -1f, 88.7f, 88.72f, 88.8f, 89f, 100f, -87.3f, -88f, -100f, -103.9f, -104f,
        -110f, -200f, Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, 1e-30f, -1e-30f};
    System.arraycopy(specials, 0, x, 0, specials.length);
    float[] y = new float[x.length];
    assertTrue(VectorKernels.unary(Unary.EXP, x, y, x.length));
    for (int i = 0; i < x.length; i++) {
      float want = (float) Math.exp(x[i]);
      if (Float.isNaN(want) || Float.isInfinite(want) || want == 0 || want < Float.MIN_NORMAL) {
        // Specials must match exactly; subnormal results within 2 of the smallest subnormal steps.
        if (Float.isNaN(want)) {
          assertTrue(Float.isNaN(y[i]), "exp(" + x[i] + ")");
        } else {
          assertEquals(want, y[i], 2 * Float.MIN_VALUE, "exp(" + x[i] + ")");
        }
      } else {
        // Degree-7 polynomial on |r| <= ln2/2 plus a two-part ln2 keeps the error within 2 float ulps.
        assertEquals(want, y[i], 2 * Math.ulp(want), "exp(" + x[i] + ")");
      }
    }
  }

  static long[][] broadcastPair(Random rnd) {
    long[] out = TestArrays.randomShape(rnd, 0, 4, true);
    long[][] pair = new long[2][];
    for (int k = 0; k < 2; k++) {
      int drop = out.length == 0 ? 0 : rnd.nextInt(out.length + 1);
      long[] s = Arrays.copyOfRange(out, drop, out.length);
      for (int i = 0; i < s.length; i++) {
        if (rnd.nextInt(3) == 0) {
          s[i] = 1;
        }
      }
      pair[k] = s;
    }
    return pair;
  }

  static double refBinary(Binary op, double a, double b, boolean integral) {
    if (integral) {
      long x = (long) a;
      long y = (long) b;
      return switch (op) {
        case ADD -> x + y;
        case SUB -> x - y;
        case MUL -> x * y;
        case POW -> (long) Math.pow(x, y);
        case MAXIMUM -> Math.max(x, y);
        case MINIMUM -> Math.min(x, y);
        case DIV -> (double) x / y;
      };
    }
    return switch (op) {
      case ADD -> a + b;
      case SUB -> a - b;
      case MUL -> a * b;
      case DIV -> a / b;
      case POW -> Math.pow(a, b);
      case MAXIMUM -> Math.max(a, b);
      case MINIMUM -> Math.min(a, b);
    };
  }

  /** {a, b, expected result} dtype triples: the documented promotion rules. */
  static final DType[][] PROMOTIONS = {
    {DType.F32, DType.F32, DType.F32},
    {DType.F64, DType.F64, DType.F64},
    {DType.F32, DType.F64, DType.F64},
    {DType.BF16, DType.BF16, DType.BF16},
    {DType.BF16, DType.F32, DType.F32},
    {DType.BF16, DType.F16, DType.F32},
    {DType.I32, DType.F32, DType.F32},
    {DType.F64, DType.I64, DType.F64},
    {DType.I32, DType.I32, DType.I32},
    {DType.I64, DType.I32, DType.I64},
    {DType.U8, DType.I32, DType.I32},
  };

  @ParameterizedTest
  @ValueSource(booleans = {false, true})
  void binaryMatchesReferenceWithBroadcasting(boolean simd) {
    useSimd(simd);
    Random rnd = new Random(5);
    for (Binary op : Binary.values()) {
      for (DType[] p : PROMOTIONS) {
        for (int trial = 0; trial < 8; trial++) {
          long[][] shapes = broadcastPair(rnd);
          NdArray a = TestArrays.random(rnd, p[0], shapes[0], 1.5);
          NdArray b0 = TestArrays.random(rnd, p[1], shapes[1], 1.5);
          // Integer pow rejects negative exponents (tested below), so integer exponents are made non-negative.
          NdArray b = op == Binary.POW && !p[2].isFloating() ? Elementwise.abs(b0) : b0;
          NdArray c = Elementwise.binary(op, a, b);
          DType want = op == Binary.DIV && !p[2].isFloating() ? DType.F32 : p[2];
          assertEquals(want, c.dtype(), op + " " + p[0] + " " + p[1]);
          long[] shape = NdArray.broadcastShapes(shapes[0], shapes[1]);
          assertArrayEquals(shape, c.shape());
          boolean integral = !want.isFloating();
          forEachIndex(shape, idx -> {
            double av = a.getDouble(broadcastIndex(idx, shapes[0]));
            double bv = b.getDouble(broadcastIndex(idx, shapes[1]));
            double ref = refBinary(op, av, bv, integral);
            // Integers are exact; floats within one rounding into the result type (TestArrays.rtol).
            double atol = integral ? 0 : want == DType.BF16 ? 1e-2 : 1e-7;
            assertClose(ref, c.getDouble(idx), TestArrays.rtol(want), atol,
                op + " " + describe(a) + " , " + describe(b) + " at " + Arrays.toString(idx));
          });
        }
      }
    }
  }

  /**
   * F32 shapes broadcast along leading dims only (RoPE's {@code [b, h, s, d/2, 2] op [s, d/2, 1]}, either side)
   * take the tiled path once the contiguous runs reach 16 elements; the small random shapes above never do.
   */
  @ParameterizedTest
  @ValueSource(booleans = {false, true})
  void leadingBroadcastOfLargeBlocksMatchesReference(boolean simd) {
    useSimd(simd);
    Random rnd = new Random(11);
    Binary[] ops = {Binary.ADD, Binary.SUB, Binary.MUL, Binary.DIV};
    for (int trial = 0; trial < 12; trial++) {
      long b = 1 + rnd.nextInt(3);
      long h = 1 + rnd.nextInt(4);
      long s = 4 + rnd.nextInt(29);
      long half = 4 + rnd.nextInt(12);
      long[] full = {b, h, s, half, 2};
      long[] part = trial % 3 == 0 ? new long[] {1, s, half, 2} : new long[] {s, half, 1};
      // The tiled path needs the full operand contiguous over its trailing dims: contiguous, a head-split view
      // ([b, s, h, d/2, 2] seen as [b, h, s, d/2, 2]), and in a random layout (mostly the general driver).
      NdArray x = switch (trial % 4) {
        case 3 -> TestArrays.random(rnd, DType.F32, full, 1.5);
        case 2 -> TestArrays.random(rnd, DType.F32, new long[] {b, s, h, half, 2}, 1.5, TestArrays.Layout.CONTIGUOUS)
            .permute(0, 2, 1, 3, 4);
        default -> TestArrays.random(rnd, DType.F32, full, 1.5, TestArrays.Layout.CONTIGUOUS);
      };
      NdArray y = TestArrays.random(rnd, DType.F32, part, 1.5);
      for (Binary op : ops) {
        for (boolean fullFirst : new boolean[] {true, false}) {
          NdArray l = fullFirst ? x : y;
          NdArray r = fullFirst ? y : x;
          NdArray c = Elementwise.binary(op, l, r);
          assertArrayEquals(full, c.shape());
          long[] ls = l.shape();
          long[] rs = r.shape();
          forEachIndex(full, idx -> {
            float lv = (float) l.getDouble(broadcastIndex(idx, ls));
            float rv = (float) r.getDouble(broadcastIndex(idx, rs));
            float ref = switch (op) {
              case ADD -> lv + rv;
              case SUB -> lv - rv;
              case MUL -> lv * rv;
              default -> lv / rv;
            };
            // Exact: one float32 operation per element on every path, so every path gives the same bits.
            assertEquals(ref, (float) c.getDouble(idx),
                op + " " + describe(l) + " , " + describe(r) + " at " + Arrays.toString(idx));
          });
        }
      }
    }
  }

  @Test
  void integerArithmeticIsExactIn64Bits() {
    NdArray a = NdArray.fromLongs(new long[] {(1L << 53) + 1, -7});
    NdArray b = NdArray.fromLongs(new long[] {2, 3});
    assertArrayEquals(new long[] {(1L << 53) + 3, -4}, Elementwise.add(a, b).toLongArray());
    assertArrayEquals(new long[] {(1L << 54) + 2, -21}, Elementwise.mul(a, b).toLongArray());
    NdArray q = Elementwise.div(NdArray.fromInts(new int[] {7, -7}), NdArray.fromInts(new int[] {2, 2}));
    assertEquals(DType.F32, q.dtype());
    assertArrayEquals(new float[] {3.5f, -3.5f}, q.toFloatArray());
  }

  @Test
  void integerPowRejectsNegativeExponents() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> Elementwise.pow(NdArray.fromInts(new int[] {2, 3}), NdArray.fromInts(new int[] {1, -1})));
    assertTrue(e.getMessage().contains("3^-1"), e.getMessage());
  }

  @Test
  void mismatchedShapesNameBoth() {
    NdArray a = NdArray.zeros(DType.F32, 2, 3);
    NdArray b = NdArray.zeros(DType.F32, 4, 3);
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Elementwise.add(a, b));
    assertTrue(e.getMessage().contains("[2, 3]") && e.getMessage().contains("[4, 3]"), e.getMessage());
  }

  @Test
  void scalarVariantsFollowTheDocumentedDtypes() {
    Random rnd = new Random(8);
    for (DType t : new DType[] {DType.F32, DType.F64, DType.BF16, DType.I32}) {
      NdArray x = TestArrays.random(rnd, t, new long[] {3, 4}, 1.0);
      for (Binary op : Binary.values()) {
        double s = 2.0;
        NdArray y = Elementwise.binary(op, x, s);
        DType want = op == Binary.DIV && !t.isFloating() ? DType.F32 : t;
        assertEquals(want, y.dtype(), op + " scalar on " + t);
        forEachIndex(x.shape(), idx -> assertClose(refBinary(op, x.getDouble(idx), s, !want.isFloating()),
            y.getDouble(idx), TestArrays.rtol(want), want == DType.BF16 ? 1e-2 : 1e-7, op + " " + t));
      }
      NdArray frac = Elementwise.add(x, 0.5);
      assertEquals(t.isFloating() ? t : DType.F32, frac.dtype(), "integer plus a fraction gives F32");
    }
    // The scalar is not rounded to bf16 first: bf16(1) + 0.001 rounds the float32 sum, which is 1.
    NdArray one = NdArray.full(DType.BF16, 1.0, 1);
    assertEquals(1.0, Elementwise.add(one, 0.001).getDouble(0));
    // 1 + 0.004 is closer to 1.0078125 (the next bf16) than to 1.
    assertEquals(1.0078125, Elementwise.add(one, 0.004).getDouble(0));
  }

  @Test
  void comparisonsAndNaN() {
    Random rnd = new Random(9);
    for (DType[] p : PROMOTIONS) {
      for (int trial = 0; trial < 6; trial++) {
        long[][] shapes = broadcastPair(rnd);
        NdArray a = TestArrays.random(rnd, p[0], shapes[0], 1);
        // Small integers make ties common, so EQ/LE/GE see equal pairs.
        NdArray b = p[1].isFloating() && rnd.nextBoolean() ? a.to(p[1]) : TestArrays.random(rnd, p[1], shapes[1], 1);
        long[] sb = b.shape();
        for (Compare op : Compare.values()) {
          NdArray c = Elementwise.compare(op, a, b);
          assertEquals(DType.BOOL, c.dtype());
          long[] shape = NdArray.broadcastShapes(shapes[0], sb);
          forEachIndex(shape, idx -> {
            double x = a.getDouble(broadcastIndex(idx, shapes[0]));
            double y = b.getDouble(broadcastIndex(idx, sb));
            if (p[2] == DType.F32 || p[2] == DType.BF16) {
              x = (float) x;
              y = (float) y;
            }
            boolean want = switch (op) {
              case EQ -> x == y;
              case NE -> x != y;
              case LT -> x < y;
              case LE -> x <= y;
              case GT -> x > y;
              case GE -> x >= y;
            };
            assertEquals(want ? 1L : 0L, c.getLong(idx), op + " " + x + " " + y);
          });
        }
      }
    }
    NdArray nan = NdArray.fromFloats(new float[] {Float.NaN, 0f, -0f});
    NdArray other = NdArray.fromFloats(new float[] {Float.NaN, -0f, 1f});
    assertArrayEquals(new long[] {0, 1, 0}, Elementwise.eq(nan, other).toLongArray());
    assertArrayEquals(new long[] {1, 0, 1}, Elementwise.ne(nan, other).toLongArray());
    assertArrayEquals(new long[] {0, 1, 1}, Elementwise.le(nan, other).toLongArray());
    assertArrayEquals(new long[] {0, 0, 1}, Elementwise.lt(nan, other).toLongArray());
  }

  @Test
  void whereAndMaskedFillBroadcast() {
    Random rnd = new Random(21);
    for (int trial = 0; trial < 40; trial++) {
      long[][] ab = broadcastPair(rnd);
      long[][] cb = broadcastPair(rnd);
      long[] shape;
      try {
        shape = NdArray.broadcastShapes(NdArray.broadcastShapes(ab[0], ab[1]), cb[0]);
      } catch (IllegalArgumentException e) {
        continue; // independent random shapes may not broadcast; that case has its own test
      }
      NdArray cond = TestArrays.random(rnd, DType.BOOL, cb[0], 1);
      NdArray a = TestArrays.random(rnd, DType.F32, ab[0], 1);
      NdArray b = TestArrays.random(rnd, trial % 2 == 0 ? DType.F64 : DType.F32, ab[1], 1);
      NdArray w = Elementwise.where(cond, a, b);
      assertEquals(DTypes.promote(a.dtype(), b.dtype()), w.dtype());
      forEachIndex(shape, idx -> {
        boolean c = cond.getLong(broadcastIndex(idx, cb[0])) != 0;
        double want = c ? a.getDouble(broadcastIndex(idx, ab[0])) : b.getDouble(broadcastIndex(idx, ab[1]));
        assertEquals(want, w.getDouble(idx), 0.0, "where picks, never computes");
      });
    }
    NdArray x = NdArray.fromFloats(new float[] {1, 2, 3, 4, 5, 6}, 2, 3);
    NdArray mask = NdArray.fromInts(new int[] {1, 0, 1}, 3).to(DType.BOOL);
    NdArray f = Elementwise.maskedFill(x, mask, Double.NEGATIVE_INFINITY);
    assertArrayEquals(new float[] {Float.NEGATIVE_INFINITY, 2, Float.NEGATIVE_INFINITY, Float.NEGATIVE_INFINITY, 5,
        Float.NEGATIVE_INFINITY}, f.toFloatArray());
    assertThrows(IllegalArgumentException.class,
        () -> Elementwise.maskedFill(x, NdArray.zeros(DType.BOOL, 3, 3), 0));
  }

  @Test
  void accumulateInPlaceWithBroadcasting() {
    Random rnd = new Random(33);
    for (DType t : new DType[] {DType.F32, DType.F64, DType.BF16, DType.I64}) {
      for (int trial = 0; trial < 25; trial++) {
        long[] shape = TestArrays.randomShape(rnd, 0, 4, true);
        TestArrays.Layout l = TestArrays.Layout.values()[rnd.nextInt(4)]; // never an expanded destination
        NdArray dst = TestArrays.random(rnd, t, shape, 1, l);
        NdArray before = dst.copy();
        long[] ss = shape.clone();
        for (int i = 0; i < ss.length; i++) {
          if (rnd.nextBoolean()) {
            ss[i] = 1;
          }
        }
        NdArray src = TestArrays.random(rnd, t, ss, 1);
        double alpha = t == DType.I64 ? -2 : 0.75;
        NdArray back = Elementwise.axpyInto(dst, alpha, src);
        assertSame(dst, back);
        forEachIndex(shape, idx -> {
          double want = before.getDouble(idx) + alpha * src.getDouble(broadcastIndex(idx, ss));
          assertClose(want, dst.getDouble(idx), TestArrays.rtol(t), t == DType.BF16 ? 1e-2 : 1e-7,
              "axpy " + t + " " + describe(dst));
        });
      }
    }
    NdArray g = NdArray.fromFloats(new float[] {1, 2, 3, 4}, 2, 2);
    Elementwise.addInto(g, g.transpose(0, 1)); // overlapping source: reads a snapshot
    assertArrayEquals(new float[] {2, 5, 5, 8}, g.toFloatArray());
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> Elementwise.addInto(NdArray.zeros(DType.F32, 2, 3), NdArray.zeros(DType.F32, 3, 3)));
    assertTrue(e.getMessage().contains("[3, 3]") && e.getMessage().contains("[2, 3]"), e.getMessage());
    assertThrows(IllegalArgumentException.class,
        () -> Elementwise.addInto(NdArray.zeros(DType.F32, 1, 3).expand(4, 3), NdArray.zeros(DType.F32, 4, 3)));
  }

  @Test
  void erfKnownValues() {
    // Values from Python's math.erf / math.erfc (correctly rounded libm); the series and continued fraction
    // should agree to ~1e-15 relative.
    assertClose(0.5204998778130465, Erf.erf(0.5), 2e-15, 0, "erf(0.5)");
    assertClose(0.8427007929497149, Erf.erf(1), 2e-15, 0, "erf(1)");
    assertClose(0.9999589021219005, Erf.erf(2.9), 2e-15, 0, "erf(2.9)");
    assertClose(-0.1124629160182849, Erf.erf(-0.1), 2e-15, 0, "erf(-0.1)");
    assertClose(2.2090496998585438e-05, Erf.erfc(3.0), 1e-13, 0, "erfc(3)");
    assertClose(1.5374597944280351e-12, Erf.erfc(5), 1e-13, 0, "erfc(5)");
    assertClose(1.9953222650189528, Erf.erfc(-2), 2e-15, 0, "erfc(-2)");
    assertFalse(Double.isNaN(Erf.gelu(-40)));
  }
}
