package dev.kiln.runtime.eager;

import static dev.kiln.dsl.Ops.attention;
import static dev.kiln.dsl.Ops.cos;
import static dev.kiln.dsl.Ops.crossEntropy;
import static dev.kiln.dsl.Ops.einsum;
import static dev.kiln.dsl.Ops.exp;
import static dev.kiln.dsl.Ops.gather;
import static dev.kiln.dsl.Ops.gelu;
import static dev.kiln.dsl.Ops.greater;
import static dev.kiln.dsl.Ops.less;
import static dev.kiln.dsl.Ops.log;
import static dev.kiln.dsl.Ops.logSoftmax;
import static dev.kiln.dsl.Ops.maximum;
import static dev.kiln.dsl.Ops.mean;
import static dev.kiln.dsl.Ops.rearrange;
import static dev.kiln.dsl.Ops.reduce;
import static dev.kiln.dsl.Ops.relu;
import static dev.kiln.dsl.Ops.repeat;
import static dev.kiln.dsl.Ops.rmsNorm;
import static dev.kiln.dsl.Ops.rope;
import static dev.kiln.dsl.Ops.rsqrt;
import static dev.kiln.dsl.Ops.sigmoid;
import static dev.kiln.dsl.Ops.silu;
import static dev.kiln.dsl.Ops.sin;
import static dev.kiln.dsl.Ops.size;
import static dev.kiln.dsl.Ops.softmax;
import static dev.kiln.dsl.Ops.sqrt;
import static dev.kiln.dsl.Ops.square;
import static dev.kiln.dsl.Ops.sum;
import static dev.kiln.dsl.Ops.tanh;
import static dev.kiln.dsl.Ops.topk;
import static dev.kiln.dsl.Ops.where;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.TopK;
import dev.kiln.dsl.spi.EagerBackend;
import dev.kiln.runtime.tensor.NdArray;
import java.lang.reflect.Method;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.TreeSet;
import java.util.function.BiFunction;
import java.util.function.DoubleUnaryOperator;
import java.util.function.Function;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * Every op of the eager interpreter against naive float64 loops ({@link Dense}) on random shapes, called the way
 * module code calls it ({@code Ops.*} and {@code Tensor} methods, through the ServiceLoader lookup), in F64 and F32.
 *
 * <p>Tolerances, relative to {@code max(1, |expected|)}: F64 1e-12 — the oracle and the op differ only in the order
 * of at most a few hundred double operations; F32 1e-5 — the oracle reads the same float32-rounded inputs, so only
 * the op's float32 rounding (a few ulps of 6e-8, accumulated over at most ~100 terms) separates them.
 */
class EagerOpsTest {
  private static final int TRIALS = 6;

  static double tol(DType t) {
    return t == DType.F64 ? 1e-12 : 1e-5;
  }

  /** One check per {@link EagerBackend} method, keyed by its name; each runs {@link #TRIALS} random cases. */
  private static Map<String, java.util.function.Consumer<DType>> cases() {
    Map<String, java.util.function.Consumer<DType>> c = new LinkedHashMap<>();
    c.put("add", t -> binaryCase(t, "add", Tensor::add, Double::sum));
    c.put("sub", t -> binaryCase(t, "sub", Tensor::sub, (a, b) -> a - b));
    c.put("mul", t -> binaryCase(t, "mul", Tensor::mul, (a, b) -> a * b));
    c.put("div", t -> binaryCase(t, "div", Tensor::div, (a, b) -> a / b));
    c.put("maximum", t -> binaryCase(t, "maximum", (a, b) -> maximum(a, b), Math::max));
    c.put("greater", t -> binaryCase(t, "greater", (a, b) -> greater(a, b), (a, b) -> a > b ? 1 : 0));
    c.put("less", t -> binaryCase(t, "less", (a, b) -> less(a, b), (a, b) -> a < b ? 1 : 0));
    c.put("neg", t -> unaryCase(t, "neg", Tensor::neg, x -> -x, false));
    c.put("addScalar", t -> {
      unaryCase(t, "add(double)", x -> x.add(0.75), x -> x + 0.75, false);
      unaryCase(t, "sub(double)", x -> x.sub(1.5), x -> x - 1.5, false);
    });
    c.put("mulScalar", t -> {
      unaryCase(t, "mul(double)", x -> x.mul(-2.5), x -> x * -2.5, false);
      unaryCase(t, "div(double)", x -> x.div(4.0), x -> x / 4.0, false);
    });
    c.put("exp", t -> unaryCase(t, "exp", x -> exp(x), Math::exp, false));
    c.put("log", t -> unaryCase(t, "log", x -> log(x), Math::log, true));
    c.put("sqrt", t -> unaryCase(t, "sqrt", x -> sqrt(x), Math::sqrt, true));
    c.put("rsqrt", t -> unaryCase(t, "rsqrt", x -> rsqrt(x), x -> 1 / Math.sqrt(x), true));
    c.put("square", t -> unaryCase(t, "square", x -> square(x), x -> x * x, false));
    c.put("tanh", t -> unaryCase(t, "tanh", x -> tanh(x), Math::tanh, false));
    c.put("cos", t -> unaryCase(t, "cos", x -> cos(x), Math::cos, false));
    c.put("sin", t -> unaryCase(t, "sin", x -> sin(x), Math::sin, false));
    c.put("sigmoid", t -> unaryCase(t, "sigmoid", x -> sigmoid(x), x -> 1 / (1 + Math.exp(-x)), false));
    c.put("silu", t -> unaryCase(t, "silu", x -> silu(x), x -> x / (1 + Math.exp(-x)), false));
    c.put("gelu", t -> unaryCase(t, "gelu", x -> gelu(x),
        x -> 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x))), false));
    c.put("relu", t -> unaryCase(t, "relu", x -> relu(x), x -> Math.max(x, 0), false));
    c.put("where", EagerOpsTest::whereCase);
    c.put("softmax", t -> rowCase(t, "softmax", x -> softmax(x), EagerOpsTest::naiveSoftmax, false));
    c.put("logSoftmax", t -> rowCase(t, "logSoftmax", x -> logSoftmax(x), row -> {
      double[] s = naiveSoftmax(row);
      for (int i = 0; i < s.length; i++) {
        s[i] = Math.log(s[i]);
      }
      return s;
    }, false));
    c.put("sum", t -> rowCase(t, "sum", x -> sum(x), row -> new double[] {Arrays.stream(row).sum()}, true));
    c.put("mean", t -> rowCase(t, "mean", x -> mean(x),
        row -> new double[] {Arrays.stream(row).sum() / row.length}, true));
    c.put("einsum", EagerOpsTest::einsumCase);
    c.put("rearrange", EagerOpsTest::rearrangeCase);
    c.put("reduce", EagerOpsTest::reduceCase);
    c.put("repeat", EagerOpsTest::repeatCase);
    c.put("rmsNorm", EagerOpsTest::rmsNormCase);
    c.put("gather", EagerOpsTest::gatherCase);
    c.put("topk", EagerOpsTest::topkCase);
    c.put("attention", EagerOpsTest::attentionCase);
    c.put("rope", EagerOpsTest::ropeCase);
    c.put("crossEntropy", EagerOpsTest::crossEntropyCase);
    return c;
  }

  @TestFactory
  Stream<DynamicTest> everyOpAgainstNaiveLoops() {
    return cases().entrySet().stream().flatMap(e -> Stream.of(DType.F64, DType.F32)
        .map(t -> DynamicTest.dynamicTest(e.getKey() + " " + t, () -> e.getValue().accept(t))));
  }

  @Test
  void everyBackendMethodHasACase() {
    TreeSet<String> methods = new TreeSet<>();
    for (Method m : EagerBackend.class.getMethods()) {
      methods.add(m.getName());
    }
    assertEquals(methods, new TreeSet<>(cases().keySet()), "ops of EagerBackend without a test case (or stale ones)");
  }

  @Test
  void opsRunOnTheEagerInterpreter() {
    NdArray x = NdArray.fromFloats(new float[] {1, 2});
    Tensor y = x.add(x);
    assertSame(NdArray.class, y.getClass());
    assertEquals(java.util.ServiceLoader.load(EagerBackend.class).findFirst().orElseThrow().getClass(),
        EagerInterpreter.class);
  }

  // ================================================================ cases

  private static void unaryCase(DType t, String what, Function<Tensor, Tensor> op, DoubleUnaryOperator f,
      boolean positive) {
    Random rnd = new Random(what.hashCode());
    for (int trial = 0; trial < TRIALS; trial++) {
      long[] shape = Dense.randomShape(rnd, 0, 4, 5);
      NdArray x = Dense.random(rnd, t, shape);
      if (positive) {
        x = (NdArray) x.mul(x).add(0.05);
      }
      Dense dx = Dense.of(x);
      Dense expected = Dense.zeros(shape);
      for (int i = 0; i < expected.v.length; i++) {
        expected.v[i] = f.applyAsDouble(dx.v[i]);
      }
      Tensor y = op.apply(x);
      assertEquals(t, y.dtype(), what + " keeps the dtype");
      Dense.assertClose(expected, y, tol(t), what + " " + Arrays.toString(shape));
    }
  }

  private static void binaryCase(DType t, String what, BiFunction<Tensor, Tensor, Tensor> op,
      java.util.function.DoubleBinaryOperator f) {
    Random rnd = new Random(what.hashCode());
    for (int trial = 0; trial < TRIALS; trial++) {
      long[] sa = Dense.randomShape(rnd, 0, 4, 4);
      long[] sb = Dense.broadcastPartner(rnd, sa);
      if (trial % 2 == 1) {
        long[] swap = sa;
        sa = sb;
        sb = swap;
      }
      NdArray a = Dense.random(rnd, t, sa);
      NdArray b = Dense.random(rnd, t, sb);
      Dense da = Dense.of(a);
      Dense db = Dense.of(b);
      long[] out = Dense.broadcast(sa, sb);
      Dense expected = Dense.zeros(out);
      for (int i = 0; i < expected.v.length; i++) {
        long[] idx = expected.index(i);
        expected.v[i] = f.applyAsDouble(da.broadcastGet(idx), db.broadcastGet(idx));
      }
      Dense.assertClose(expected, op.apply(a, b), tol(t), what + " " + Arrays.toString(sa) + " with "
          + Arrays.toString(sb));
    }
  }

  private static void whereCase(DType t) {
    Random rnd = new Random(7);
    for (int trial = 0; trial < TRIALS; trial++) {
      long[] s = Dense.randomShape(rnd, 1, 4, 4);
      long[] sc = Dense.broadcastPartner(rnd, s);
      long[] sa = Dense.broadcastPartner(rnd, s);
      NdArray cond = Dense.random(rnd, t, sc);
      NdArray mask = (NdArray) greater(cond, NdArray.scalar(t, 0));
      NdArray a = Dense.random(rnd, t, sa);
      NdArray b = Dense.random(rnd, t, s);
      Dense dc = Dense.of(cond);
      Dense da = Dense.of(a);
      Dense db = Dense.of(b);
      Dense expected = Dense.zeros(s);
      for (int i = 0; i < expected.v.length; i++) {
        long[] idx = expected.index(i);
        expected.v[i] = dc.broadcastGet(idx) > 0 ? da.broadcastGet(idx) : db.broadcastGet(idx);
      }
      Dense.assertClose(expected, where(mask, a, b), tol(t), "where " + Arrays.toString(s));
    }
  }

  private static double[] naiveSoftmax(double[] row) {
    double max = Arrays.stream(row).max().orElseThrow();
    double[] e = Arrays.stream(row).map(x -> Math.exp(x - max)).toArray();
    double s = Arrays.stream(e).sum();
    return Arrays.stream(e).map(x -> x / s).toArray();
  }

  /** An op over the last dim; {@code keep1} when the result keeps it as size 1. */
  private static void rowCase(DType t, String what, Function<Tensor, Tensor> op, Function<double[], double[]> f,
      boolean keep1) {
    Random rnd = new Random(what.hashCode());
    for (int trial = 0; trial < TRIALS; trial++) {
      long[] shape = Dense.randomShape(rnd, 1, 4, 6);
      NdArray x = Dense.random(rnd, t, shape);
      Dense dx = Dense.of(x);
      int n = (int) shape[shape.length - 1];
      long[] outShape = shape.clone();
      if (keep1) {
        outShape[outShape.length - 1] = 1;
      }
      Dense expected = Dense.zeros(outShape);
      int rows = dx.v.length / n;
      int outN = keep1 ? 1 : n;
      for (int r = 0; r < rows; r++) {
        double[] y = f.apply(Arrays.copyOfRange(dx.v, r * n, r * n + n));
        System.arraycopy(y, 0, expected.v, r * outN, outN);
      }
      Dense.assertClose(expected, op.apply(x), tol(t), what + " " + Arrays.toString(shape));
    }
  }

  private static void einsumCase(DType t) {
    Random rnd = new Random(11);
    for (int trial = 0; trial < TRIALS; trial++) {
      long b = 1 + rnd.nextInt(3);
      long s = 1 + rnd.nextInt(4);
      long i = 1 + rnd.nextInt(5);
      long o = 1 + rnd.nextInt(5);
      long h = 1 + rnd.nextInt(3);
      // Linear: '...' stands for two dims here, spelled out for the oracle.
      NdArray x = Dense.random(rnd, t, b, s, i);
      NdArray w = Dense.random(rnd, t, o, i);
      Dense.assertClose(Dense.einsum("b s i, o i -> b s o", Dense.of(x), Dense.of(w)),
          einsum("... d_in, d_out d_in -> ... d_out", x, w), tol(t), "linear");
      // Attention scores, batched over two dims.
      NdArray q = Dense.random(rnd, t, b, h, s, i);
      NdArray k = Dense.random(rnd, t, b, h, o, i);
      Dense.assertClose(Dense.einsum("b h s d, b h u d -> b h s u", Dense.of(q), Dense.of(k)),
          einsum("b h s d, b h t d -> b h s t", q, k), tol(t), "scores");
      // A sum over a dim only one operand has, three operands, and a full contraction to a scalar.
      NdArray m = Dense.random(rnd, t, i, o);
      NdArray v = Dense.random(rnd, t, o);
      Dense.assertClose(Dense.einsum("b s i, i o, o -> b", Dense.of(x), Dense.of(m), Dense.of(v)),
          einsum("b s i, i o, o -> b", x, m, v), tol(t), "three operands");
      Dense.assertClose(Dense.einsum("b s i, b s i ->", Dense.of(x), Dense.of(x)),
          einsum("b s i, b s i ->", x, x), tol(t), "full contraction");
      // '...' broadcasting a size-1 dim against the other operand's.
      NdArray y = Dense.random(rnd, t, 1, s, i);
      NdArray z = Dense.random(rnd, t, b, 1, i);
      Dense dy = Dense.of(y);
      Dense dz = Dense.of(z);
      Dense expected = Dense.zeros(b, s);
      for (int bb = 0; bb < b; bb++) {
        for (int ss = 0; ss < s; ss++) {
          double acc = 0;
          for (int ii = 0; ii < i; ii++) {
            acc += dy.get(0, ss, ii) * dz.get(bb, 0, ii);
          }
          expected.set(acc, bb, ss);
        }
      }
      Dense.assertClose(expected, einsum("... d, ... d -> ...", y, z), tol(t), "broadcast '...'");
    }
  }

  private static void rearrangeCase(DType t) {
    Random rnd = new Random(13);
    for (int trial = 0; trial < TRIALS; trial++) {
      long b = 1 + rnd.nextInt(3);
      long s = 1 + rnd.nextInt(4);
      long h = 1 + rnd.nextInt(3);
      long d = 1 + rnd.nextInt(4);
      NdArray x = Dense.random(rnd, t, b, s, h * d);
      Dense dx = Dense.of(x);
      Dense split = Dense.zeros(b, h, s, d);
      for (long i = 0; i < b; i++) {
        for (long j = 0; j < h; j++) {
          for (long k = 0; k < s; k++) {
            for (long l = 0; l < d; l++) {
              split.set(dx.get(i, k, j * d + l), i, j, k, l);
            }
          }
        }
      }
      Tensor y = rearrange(x, "b s (h d) -> b h s d", size("h", h));
      Dense.assertClose(split, y, 0, "split heads");
      // And back: merging heads is the inverse.
      Dense.assertClose(dx, rearrange(y, "... h s d -> ... s (h d)"), 0, "merge heads");
      Dense flat = new Dense(new long[] {b * s * h * d}, dx.v.clone());
      Dense.assertClose(flat, rearrange(x, "b s e -> (b s e)"), 0, "flatten");
    }
  }

  private static void reduceCase(DType t) {
    Random rnd = new Random(17);
    for (Reduction how : Reduction.values()) {
      for (int trial = 0; trial < TRIALS; trial++) {
        long b = 1 + rnd.nextInt(3);
        long s = 1 + rnd.nextInt(4);
        long d = 1 + rnd.nextInt(5);
        NdArray x = Dense.random(rnd, t, b, s, d);
        Dense dx = Dense.of(x);
        Dense expected = Dense.zeros(b, d);
        for (long i = 0; i < b; i++) {
          for (long k = 0; k < d; k++) {
            double acc = switch (how) {
              case SUM, MEAN -> 0;
              case MAX -> Double.NEGATIVE_INFINITY;
              case MIN -> Double.POSITIVE_INFINITY;
            };
            for (long j = 0; j < s; j++) {
              double v = dx.get(i, j, k);
              acc = switch (how) {
                case SUM, MEAN -> acc + v;
                case MAX -> Math.max(acc, v);
                case MIN -> Math.min(acc, v);
              };
            }
            expected.set(how == Reduction.MEAN ? acc / s : acc, i, k);
          }
        }
        Dense.assertClose(expected, reduce(x, "b s d -> b d", how), tol(t), "reduce " + how);
      }
    }
  }

  private static void repeatCase(DType t) {
    Random rnd = new Random(19);
    for (int trial = 0; trial < TRIALS; trial++) {
      long r = 1 + rnd.nextInt(3);
      long d = 1 + rnd.nextInt(5);
      NdArray x = Dense.random(rnd, t, d);
      Dense dx = Dense.of(x);
      Dense expected = Dense.zeros(r, d);
      Dense tiled = Dense.zeros(r * d);
      for (long i = 0; i < r; i++) {
        for (long k = 0; k < d; k++) {
          expected.set(dx.get(k), i, k);
          tiled.set(dx.get(k), i * d + k);
        }
      }
      Dense.assertClose(expected, repeat(x, "d -> r d", size("r", r)), 0, "repeat new axis");
      Dense.assertClose(tiled, repeat(x, "d -> (r d)", size("r", r)), 0, "repeat tiled");
    }
  }

  private static void rmsNormCase(DType t) {
    Random rnd = new Random(23);
    for (int trial = 0; trial < TRIALS; trial++) {
      long[] shape = Dense.randomShape(rnd, 1, 3, 6);
      int d = (int) shape[shape.length - 1];
      NdArray x = Dense.random(rnd, t, shape);
      NdArray w = Dense.random(rnd, t, d);
      Dense dx = Dense.of(x);
      Dense dw = Dense.of(w);
      Dense expected = Dense.zeros(shape);
      double eps = 1e-5;
      for (int r = 0; r < dx.v.length / d; r++) {
        double ms = 0;
        for (int j = 0; j < d; j++) {
          ms += dx.v[r * d + j] * dx.v[r * d + j];
        }
        double inv = 1 / Math.sqrt(ms / d + eps);
        for (int j = 0; j < d; j++) {
          expected.v[r * d + j] = dx.v[r * d + j] * inv * dw.v[j];
        }
      }
      Dense.assertClose(expected, rmsNorm(x, w, eps), tol(t), "rmsNorm " + Arrays.toString(shape));
    }
  }

  private static void gatherCase(DType t) {
    Random rnd = new Random(29);
    for (int trial = 0; trial < TRIALS; trial++) {
      long n = 1 + rnd.nextInt(7);
      long d = 1 + rnd.nextInt(5);
      long[] idShape = Dense.randomShape(rnd, 0, 3, 4);
      NdArray table = Dense.random(rnd, t, n, d);
      NdArray ids = Dense.randomIds(rnd, n, idShape);
      if (trial % 2 == 0) {
        ids = ids.to(DType.I32);
      }
      Dense dt = Dense.of(table);
      long[] idv = ids.toLongArray();
      long[] outShape = Arrays.copyOf(idShape, idShape.length + 1);
      outShape[idShape.length] = d;
      Dense expected = Dense.zeros(outShape);
      for (int p = 0; p < idv.length; p++) {
        for (int j = 0; j < d; j++) {
          expected.v[(int) (p * d + j)] = dt.get(idv[p], j);
        }
      }
      Dense.assertClose(expected, gather(table, ids), 0, "gather");
    }
  }

  private static void topkCase(DType t) {
    Random rnd = new Random(31);
    for (int trial = 0; trial < TRIALS; trial++) {
      long[] shape = Dense.randomShape(rnd, 1, 3, 7);
      int n = (int) shape[shape.length - 1];
      int k = rnd.nextInt(n + 1);
      NdArray x = Dense.random(rnd, t, shape);
      Dense dx = Dense.of(x);
      long[] outShape = shape.clone();
      outShape[outShape.length - 1] = k;
      Dense values = Dense.zeros(outShape);
      Dense indices = Dense.zeros(outShape);
      for (int r = 0; r < dx.v.length / n; r++) {
        Integer[] order = new Integer[n];
        for (int j = 0; j < n; j++) {
          order[j] = j;
        }
        final int row = r;
        // Gaussian values have no ties, so the order is unique.
        Arrays.sort(order, (p, q) -> Double.compare(dx.v[row * n + q], dx.v[row * n + p]));
        for (int j = 0; j < k; j++) {
          values.v[r * k + j] = dx.v[r * n + order[j]];
          indices.v[r * k + j] = order[j];
        }
      }
      TopK top = topk(x, k);
      Dense.assertClose(values, top.values(), 0, "topk values");
      Dense.assertClose(indices, top.indices(), 0, "topk indices");
      assertEquals(DType.I64, top.indices().dtype());
    }
  }

  /** Naive attention over [b, h, s, d] with explicit loops; causal means key j is visible to query i iff j <= i. */
  static Dense naiveAttention(Dense q, Dense k, Dense v, boolean causal) {
    long b = q.shape[0];
    long h = q.shape[1];
    long s = q.shape[2];
    long d = q.shape[3];
    long tk = k.shape[2];
    long e = v.shape[3];
    Dense out = Dense.zeros(b, h, s, e);
    for (long bi = 0; bi < b; bi++) {
      for (long hi = 0; hi < h; hi++) {
        for (long i = 0; i < s; i++) {
          double[] score = new double[(int) tk];
          double max = Double.NEGATIVE_INFINITY;
          for (long j = 0; j < tk; j++) {
            if (causal && j > i) {
              score[(int) j] = Double.NEGATIVE_INFINITY;
              continue;
            }
            double acc = 0;
            for (long c = 0; c < d; c++) {
              acc += q.get(bi, hi, i, c) * k.get(bi, hi, j, c);
            }
            score[(int) j] = acc / Math.sqrt(d);
            max = Math.max(max, score[(int) j]);
          }
          double z = 0;
          for (int j = 0; j < tk; j++) {
            score[j] = Math.exp(score[j] - max);
            z += score[j];
          }
          for (long c = 0; c < e; c++) {
            double acc = 0;
            for (long j = 0; j < tk; j++) {
              acc += score[(int) j] / z * v.get(bi, hi, j, c);
            }
            out.set(acc, bi, hi, i, c);
          }
        }
      }
    }
    return out;
  }

  private static void attentionCase(DType t) {
    Random rnd = new Random(37);
    for (int trial = 0; trial < TRIALS; trial++) {
      long b = 1 + rnd.nextInt(2);
      long h = 1 + rnd.nextInt(3);
      long s = 1 + rnd.nextInt(5);
      long tk = trial % 2 == 0 ? s : 1 + rnd.nextInt(6);
      long d = 1 + rnd.nextInt(5);
      long e = 1 + rnd.nextInt(4);
      NdArray q = Dense.random(rnd, t, b, h, s, d);
      NdArray k = Dense.random(rnd, t, b, h, tk, d);
      NdArray v = Dense.random(rnd, t, b, h, tk, e);
      for (Mask m : Mask.values()) {
        Dense expected = naiveAttention(Dense.of(q), Dense.of(k), Dense.of(v), m == Mask.CAUSAL);
        Dense.assertClose(expected, attention(q, k, v, m), tol(t),
            "attention " + m + " s=" + s + " t=" + tk);
      }
    }
  }

  /** RoPE on pairs (2i, 2i+1) of the last dim, angle position * theta^(-2i/d), for x of shape [b, s, d]. */
  static Dense naiveRope(Dense x, long[] positions, double theta) {
    int d = (int) x.shape[x.shape.length - 1];
    long s = x.shape[x.shape.length - 2];
    Dense out = Dense.zeros(x.shape);
    for (int r = 0; r < x.v.length / d; r++) {
      long pos = positions[(int) (r % s)];
      for (int i = 0; i < d / 2; i++) {
        double angle = pos / Math.pow(theta, (2.0 * i) / d);
        double a = x.v[r * d + 2 * i];
        double c = x.v[r * d + 2 * i + 1];
        out.v[r * d + 2 * i] = a * Math.cos(angle) - c * Math.sin(angle);
        out.v[r * d + 2 * i + 1] = a * Math.sin(angle) + c * Math.cos(angle);
      }
    }
    return out;
  }

  private static void ropeCase(DType t) {
    Random rnd = new Random(41);
    for (int trial = 0; trial < TRIALS; trial++) {
      long b = 1 + rnd.nextInt(3);
      long s = 1 + rnd.nextInt(6);
      long d = 2 * (1 + rnd.nextInt(4));
      NdArray x = Dense.random(rnd, t, b, s, d);
      long[] pos = new long[(int) s];
      for (int i = 0; i < s; i++) {
        pos[i] = rnd.nextInt(50);
      }
      double theta = trial % 2 == 0 ? 10000 : 500;
      Dense.assertClose(naiveRope(Dense.of(x), pos, theta), rope(x, NdArray.fromLongs(pos), theta), tol(t),
          "rope");
    }
  }

  private static void crossEntropyCase(DType t) {
    Random rnd = new Random(43);
    for (int trial = 0; trial < TRIALS; trial++) {
      long b = 1 + rnd.nextInt(3);
      long s = 1 + rnd.nextInt(4);
      int v = 1 + rnd.nextInt(9);
      NdArray logits = (NdArray) Dense.random(rnd, t, b, s, v).mul(3.0);
      NdArray targets = Dense.randomIds(rnd, v, b, s);
      Dense dl = Dense.of(logits);
      long[] tv = targets.toLongArray();
      double total = 0;
      for (int r = 0; r < tv.length; r++) {
        double z = 0;
        for (int j = 0; j < v; j++) {
          z += Math.exp(dl.v[r * v + j]);
        }
        total += Math.log(z) - dl.v[r * v + (int) tv[r]];
      }
      Tensor loss = crossEntropy(logits, targets);
      assertArrayEquals(new long[0], loss.shape(), "the loss is a scalar");
      Dense.assertClose(new Dense(new long[0], new double[] {total / tv.length}), loss, tol(t), "crossEntropy");
    }
  }
}
