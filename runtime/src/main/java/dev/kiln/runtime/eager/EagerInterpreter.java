package dev.kiln.runtime.eager;

import com.google.auto.service.AutoService;
import dev.kiln.dsl.DType;
import dev.kiln.dsl.DimSize;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.TopK;
import dev.kiln.dsl.shape.Axis;
import dev.kiln.dsl.shape.EinsumSpec;
import dev.kiln.dsl.shape.ShapeParser;
import dev.kiln.dsl.shape.ShapeSpec;
import dev.kiln.dsl.shape.ShapeSyntaxException;
import dev.kiln.dsl.spi.EagerBackend;
import dev.kiln.runtime.cpu.Elementwise;
import dev.kiln.runtime.cpu.Indexing;
import dev.kiln.runtime.cpu.Reduce;
import dev.kiln.runtime.cpu.Softmax;
import dev.kiln.runtime.tensor.Einops;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.DoubleUnaryOperator;

/**
 * The eager reference interpreter: runs {@link dev.kiln.dsl.Ops} and {@link Tensor}'s arithmetic on {@link NdArray}s
 * with the CPU kernels, one op at a time. Calling a module's forward method outside compiled code lands here.
 *
 * <p><b>Obviously right, not fast.</b> Composite ops are written as their definition: {@code attention} builds the
 * full score matrix, masks it with {@code -inf}, takes a softmax and a weighted sum; {@code rmsNorm} is
 * {@code x * rsqrt(mean(x^2) + eps) * weight}; {@code rope} and {@code crossEntropy} are plain loops in double.
 *
 * <p><b>Precision.</b> Outside an {@link Eager#precision} scope an op computes in its operands' dtype (two float
 * dtypes promote to the wider). Inside {@code Eager.precision(F64)} (or F32) every floating operand is converted to
 * that dtype as it enters an op, so a whole forward — parameters included — runs in it; integer tensors (token ids,
 * positions, targets) stay integers.
 *
 * <p><b>Shapes</b> are checked before each op; a mismatch throws {@link EagerShapeException} with the message style of
 * the compile-time diagnostics. Results are new arrays, except that {@code rearrange} returns a view of its input
 * when the strides allow (as einops and PyTorch do); never write through a result you did not allocate.
 */
@AutoService(EagerBackend.class)
public final class EagerInterpreter implements EagerBackend {

  /** Public for {@link java.util.ServiceLoader}. */
  public EagerInterpreter() {}

  // ================================================================ operand handling

  /** The operand as an NdArray, converted to the scope's precision when it is floating. */
  static NdArray in(Tensor t, String op, String role) {
    if (t == null) {
      throw new NullPointerException(op + ": " + role + " is null");
    }
    if (!(t instanceof NdArray a)) {
      throw new IllegalArgumentException(
          op + ": " + role + " is a " + t.getClass().getName() + ", but Kiln's eager interpreter computes on "
              + NdArray.class.getName() + "; build inputs and parameters as NdArrays (NdArray.fromFloats, Eager.init,"
              + " Safetensors), or run the module through its Compiled class for other tensors");
    }
    DType p = Eager.precisionOrNull();
    if (p != null && a.dtype().isFloating() && a.dtype() != p) {
      return a.to(p);
    }
    return a;
  }

  /** The operand for an op that only makes sense in floating point: integers become the scope's (or F32) floats. */
  private static NdArray floating(Tensor t, String op, String role) {
    NdArray a = in(t, op, role);
    if (!a.dtype().isFloating()) {
      DType p = Eager.precisionOrNull();
      return a.to(p == null ? DType.F32 : p);
    }
    return a;
  }

  private static void checkBroadcast(String op, NdArray a, NdArray b) {
    long[] x = a.shape();
    long[] y = b.shape();
    int r = Math.max(x.length, y.length);
    for (int i = 1; i <= r; i++) {
      long p = i <= x.length ? x[x.length - i] : 1;
      long q = i <= y.length ? y[y.length - i] : 1;
      if (p != q && p != 1 && q != 1) {
        throw EagerShapeException.broadcast(op, x, y);
      }
    }
  }

  private static NdArray binary(String op, Elementwise.Binary kind, Tensor a, Tensor b) {
    NdArray x = in(a, op, "the left operand");
    NdArray y = in(b, op, "the right operand");
    checkBroadcast(op, x, y);
    if (kind == Elementwise.Binary.DIV && !x.dtype().isFloating() && !y.dtype().isFloating()) {
      x = floating(x, op, "the left operand");
      y = floating(y, op, "the right operand");
    }
    return Elementwise.binary(kind, x, y);
  }

  private static NdArray unary(String op, Elementwise.Unary kind, Tensor t, boolean floatOnly) {
    NdArray x = floatOnly ? floating(t, op, "x") : in(t, op, "x");
    return Elementwise.unary(kind, x);
  }

  /** {@code f} applied to every element, computed in double and rounded once to the result dtype. */
  private static NdArray map(NdArray x, DoubleUnaryOperator f) {
    double[] v = x.toDoubleArray();
    for (int i = 0; i < v.length; i++) {
      v[i] = f.applyAsDouble(v[i]);
    }
    NdArray out = NdArray.fromDoubles(v).reshape(x.shape()); // no shape would mean 1-d, so 0-d is a reshape
    return x.dtype() == DType.F64 ? out : out.to(x.dtype());
  }

  private static void requireRank(String op, String role, NdArray x, int min, String pattern) {
    if (x.rank() < min) {
      throw new EagerShapeException(
          "ShapeMismatch",
          op + " expects " + role + " '" + pattern + "' but got shape " + Arrays.toString(x.shape()) + " (rank "
              + x.rank() + ")",
          null);
    }
  }

  private static void requireIntegral(String op, String role, NdArray x) {
    if (x.dtype().isFloating()) {
      throw new EagerShapeException(
          "ShapeMismatch",
          op + ": " + role + " must hold integers (I32, I64 or U8), got " + x.dtype() + " "
              + Arrays.toString(x.shape()),
          "build ids with NdArray.fromLongs / fromInts, or convert with .to(DType.I64)");
    }
  }

  // ================================================================ Tensor arithmetic

  @Override
  public Tensor add(Tensor a, Tensor b) {
    return binary("add", Elementwise.Binary.ADD, a, b);
  }

  @Override
  public Tensor sub(Tensor a, Tensor b) {
    return binary("sub", Elementwise.Binary.SUB, a, b);
  }

  @Override
  public Tensor mul(Tensor a, Tensor b) {
    return binary("mul", Elementwise.Binary.MUL, a, b);
  }

  @Override
  public Tensor div(Tensor a, Tensor b) {
    return binary("div", Elementwise.Binary.DIV, a, b);
  }

  @Override
  public Tensor neg(Tensor x) {
    return unary("neg", Elementwise.Unary.NEG, x, false);
  }

  @Override
  public Tensor addScalar(Tensor x, double value) {
    NdArray a = value == Math.rint(value) ? in(x, "add", "x") : floating(x, "add", "x");
    return Elementwise.add(a, value);
  }

  @Override
  public Tensor mulScalar(Tensor x, double value) {
    NdArray a = value == Math.rint(value) ? in(x, "mul", "x") : floating(x, "mul", "x");
    return Elementwise.mul(a, value);
  }

  // ================================================================ einops

  @Override
  public Tensor einsum(String spec, Tensor... operands) {
    String where = "einsum \"" + spec + "\"";
    EinsumSpec s;
    try {
      s = ShapeParser.parseEinsum(spec);
    } catch (ShapeSyntaxException e) {
      throw new EagerShapeException("MalformedShape", where + ": " + e.getMessage(), null);
    }
    if (operands.length != s.inputs().size()) {
      throw new EagerShapeException(
          "EinsumMismatch",
          where + " has " + s.inputs().size() + " operands but " + operands.length + " tensors were given",
          "pass one tensor per comma-separated operand of the spec");
    }
    NdArray[] xs = new NdArray[operands.length];
    boolean anyF64 = false;
    boolean allSame = true;
    for (int i = 0; i < operands.length; i++) {
      xs[i] = in(operands[i], "einsum", "operand " + (i + 1));
      anyF64 |= xs[i].dtype() == DType.F64;
      allSame &= xs[i].dtype() == xs[0].dtype();
    }
    // Einops multiplies in one floating dtype: promote as the pointwise kernels would.
    DType common = anyF64 ? DType.F64 : allSame && xs[0].dtype().isFloating() ? xs[0].dtype() : DType.F32;
    for (int i = 0; i < xs.length; i++) {
      if (xs[i].dtype() != common) {
        xs[i] = xs[i].to(common);
      }
    }
    checkEinsum(where, s, xs);
    try {
      return Einops.einsum(spec, xs);
    } catch (IllegalArgumentException e) {
      throw new EagerShapeException("EinsumMismatch", e.getMessage(), null);
    }
  }

  /** Binds every spec name to its size, naming both operands, their parts of the spec and shapes on a conflict. */
  private static void checkEinsum(String where, EinsumSpec s, NdArray[] xs) {
    Map<String, Long> size = new HashMap<>();
    Map<String, Integer> from = new HashMap<>();
    long[] ellipsis = null;
    int ellipsisFrom = -1;
    for (int i = 0; i < xs.length; i++) {
      ShapeSpec part = s.inputs().get(i);
      long[] shape = xs[i].shape();
      int named = part.axes().size() - (part.hasEllipsis() ? 1 : 0);
      if (shape.length < named || (!part.hasEllipsis() && shape.length != named)) {
        throw new EagerShapeException(
            "EinsumMismatch",
            where + ": operand " + (i + 1) + " '" + part + "' names " + named + " dims" + (part.hasEllipsis()
                ? " besides '...'" : "") + " but the tensor has shape " + Arrays.toString(shape) + " (rank "
                + shape.length + ")",
            "rearrange the operand, or fix its part of the spec");
      }
      int er = shape.length - named;
      int d = 0;
      for (Axis a : part.axes()) {
        if (a instanceof Axis.Ellipsis) {
          long[] mine = Arrays.copyOfRange(shape, d, d + er);
          if (ellipsis == null) {
            ellipsis = mine;
            ellipsisFrom = i;
          } else {
            try {
              ellipsis = NdArray.broadcastShapes(ellipsis, mine);
            } catch (IllegalArgumentException e) {
              throw new EagerShapeException(
                  "EinsumMismatch",
                  where + ": '...' is " + Arrays.toString(mine) + " in operand " + (i + 1) + " (shape "
                      + Arrays.toString(shape) + ") but " + Arrays.toString(ellipsis) + " in operand "
                      + (ellipsisFrom + 1) + " (shape " + Arrays.toString(xs[ellipsisFrom].shape())
                      + "), which do not broadcast",
                  "the dims '...' stands for must be equal or 1, aligned from the right");
            }
          }
          d += er;
        } else {
          String n = ((Axis.Name) a).name();
          Long prev = size.get(n);
          if (prev != null && prev != shape[d]) {
            int j = from.get(n);
            throw new EagerShapeException(
                "EinsumMismatch",
                where + ": '" + n + "' is " + shape[d] + " in operand " + (i + 1) + " '" + part + "' (shape "
                    + Arrays.toString(shape) + ") but " + prev + " in operand " + (j + 1) + " '" + s.inputs().get(j)
                    + "' (shape " + Arrays.toString(xs[j].shape()) + ")",
                "a name means one dim in every operand: make the sizes agree, or name different dims differently");
          }
          size.put(n, shape[d]);
          from.putIfAbsent(n, i);
          d++;
        }
      }
    }
  }

  private static Map<String, Long> sizes(String op, DimSize[] sizes) {
    Map<String, Long> m = new LinkedHashMap<>();
    for (DimSize d : sizes) {
      Long prev = m.put(d.name(), d.value());
      if (prev != null && prev != d.value()) {
        throw new EagerShapeException(
            "RearrangeMismatch", op + ": size of '" + d.name() + "' given twice, " + prev + " and " + d.value(), null);
      }
    }
    return m;
  }

  private static EagerShapeException patternError(String op, String pattern, NdArray x, IllegalArgumentException e) {
    if (e instanceof ShapeSyntaxException se) {
      return new EagerShapeException("MalformedShape", op + " \"" + pattern + "\": " + se.getMessage(), null);
    }
    String msg = e.getMessage();
    String shape = Arrays.toString(x.shape());
    return new EagerShapeException(
        "RearrangeMismatch",
        msg.contains(shape) ? msg : msg + " (input shape " + shape + ")",
        "the left side must name every dim of the input; give the sizes a split cannot infer with size(\"h\", n)");
  }

  @Override
  public Tensor rearrange(Tensor x, String pattern, DimSize... sizes) {
    NdArray a = in(x, "rearrange", "x");
    try {
      return Einops.rearrange(a, pattern, sizes("rearrange \"" + pattern + "\"", sizes));
    } catch (IllegalArgumentException e) {
      throw patternError("rearrange", pattern, a, e);
    }
  }

  @Override
  public Tensor reduce(Tensor x, String pattern, Reduction how, DimSize... sizes) {
    NdArray a = in(x, "reduce", "x");
    Reduce.Op op =
        switch (how) {
          case SUM -> Reduce.Op.SUM;
          case MEAN -> Reduce.Op.MEAN;
          case MAX -> Reduce.Op.MAX;
          case MIN -> Reduce.Op.MIN;
        };
    if (how == Reduction.MEAN) {
      a = floating(a, "reduce", "x");
    }
    try {
      return Einops.reduce(a, pattern, op, sizes("reduce \"" + pattern + "\"", sizes));
    } catch (IllegalArgumentException e) {
      throw patternError("reduce", pattern, a, e);
    }
  }

  @Override
  public Tensor repeat(Tensor x, String pattern, DimSize... sizes) {
    NdArray a = in(x, "repeat", "x");
    try {
      // Einops may return a stride-0 broadcast view; eager results are real arrays, safe to write.
      return Einops.repeat(a, pattern, sizes("repeat \"" + pattern + "\"", sizes)).contiguous();
    } catch (IllegalArgumentException e) {
      throw patternError("repeat", pattern, a, e);
    }
  }

  // ================================================================ pointwise

  @Override
  public Tensor exp(Tensor x) {
    return unary("exp", Elementwise.Unary.EXP, x, true);
  }

  @Override
  public Tensor log(Tensor x) {
    return unary("log", Elementwise.Unary.LOG, x, true);
  }

  @Override
  public Tensor sqrt(Tensor x) {
    return unary("sqrt", Elementwise.Unary.SQRT, x, true);
  }

  @Override
  public Tensor rsqrt(Tensor x) {
    return unary("rsqrt", Elementwise.Unary.RSQRT, x, true);
  }

  @Override
  public Tensor square(Tensor x) {
    return unary("square", Elementwise.Unary.SQUARE, x, false);
  }

  @Override
  public Tensor tanh(Tensor x) {
    return unary("tanh", Elementwise.Unary.TANH, x, true);
  }

  @Override
  public Tensor cos(Tensor x) {
    return map(floating(x, "cos", "x"), Math::cos);
  }

  @Override
  public Tensor sin(Tensor x) {
    return map(floating(x, "sin", "x"), Math::sin);
  }

  @Override
  public Tensor sigmoid(Tensor x) {
    return unary("sigmoid", Elementwise.Unary.SIGMOID, x, true);
  }

  @Override
  public Tensor silu(Tensor x) {
    return unary("silu", Elementwise.Unary.SILU, x, true);
  }

  /** The tanh approximation, as {@link dev.kiln.dsl.Ops#gelu} specifies (not the erf form). */
  @Override
  public Tensor gelu(Tensor x) {
    return unary("gelu", Elementwise.Unary.GELU_TANH, x, true);
  }

  @Override
  public Tensor relu(Tensor x) {
    return unary("relu", Elementwise.Unary.RELU, x, false);
  }

  @Override
  public Tensor maximum(Tensor a, Tensor b) {
    return binary("maximum", Elementwise.Binary.MAXIMUM, a, b);
  }

  @Override
  public Tensor greater(Tensor a, Tensor b) {
    NdArray x = in(a, "greater", "a");
    NdArray y = in(b, "greater", "b");
    checkBroadcast("greater", x, y);
    return Elementwise.gt(x, y);
  }

  @Override
  public Tensor less(Tensor a, Tensor b) {
    NdArray x = in(a, "less", "a");
    NdArray y = in(b, "less", "b");
    checkBroadcast("less", x, y);
    return Elementwise.lt(x, y);
  }

  @Override
  public Tensor where(Tensor cond, Tensor a, Tensor b) {
    NdArray c = in(cond, "where", "cond");
    NdArray x = in(a, "where", "a");
    NdArray y = in(b, "where", "b");
    checkBroadcast("where(cond, a, _)", c, x);
    long[] condAndA = NdArray.broadcastShapes(c.shape(), x.shape());
    try {
      NdArray.broadcastShapes(condAndA, y.shape());
    } catch (IllegalArgumentException e) {
      throw EagerShapeException.broadcast("where(cond, a, b)", condAndA, y.shape());
    }
    return Elementwise.where(c, x, y);
  }

  // ================================================================ rows

  @Override
  public Tensor softmax(Tensor x) {
    NdArray a = floating(x, "softmax", "x");
    requireRank("softmax", "x", a, 1, "... n");
    return Softmax.softmax(a, -1);
  }

  @Override
  public Tensor logSoftmax(Tensor x) {
    NdArray a = floating(x, "logSoftmax", "x");
    requireRank("logSoftmax", "x", a, 1, "... n");
    return Softmax.logSoftmax(a, -1);
  }

  @Override
  public Tensor sum(Tensor x) {
    NdArray a = in(x, "sum", "x");
    requireRank("sum", "x", a, 1, "... n");
    return Reduce.reduce(a, Reduce.Op.SUM, new int[] {-1}, true);
  }

  @Override
  public Tensor mean(Tensor x) {
    NdArray a = floating(x, "mean", "x");
    requireRank("mean", "x", a, 1, "... n");
    return Reduce.reduce(a, Reduce.Op.MEAN, new int[] {-1}, true);
  }

  @Override
  public Tensor rmsNorm(Tensor x, Tensor weight, double eps) {
    NdArray a = floating(x, "rmsNorm", "x");
    NdArray w = floating(weight, "rmsNorm", "weight");
    requireRank("rmsNorm", "x", a, 1, "... d");
    long d = a.shape(-1);
    if (w.rank() != 1 || w.shape(0) != d) {
      throw new EagerShapeException(
          "ShapeMismatch",
          "rmsNorm expects weight 'd' with d = " + d + " (the last dim of x, shape " + Arrays.toString(a.shape())
              + ") but got shape " + Arrays.toString(w.shape()),
          "the gain has one entry per feature of x's last dim");
    }
    NdArray meanSquare = Reduce.reduce(Elementwise.square(a), Reduce.Op.MEAN, new int[] {-1}, true);
    NdArray inverseRms = Elementwise.rsqrt(Elementwise.add(meanSquare, eps));
    return Elementwise.mul(Elementwise.mul(a, inverseRms), w);
  }

  @Override
  public Tensor gather(Tensor table, Tensor ids) {
    NdArray t = in(table, "gather", "table");
    NdArray i = in(ids, "gather", "ids");
    if (t.rank() != 2) {
      throw new EagerShapeException(
          "ShapeMismatch",
          "gather expects table 'n d' (rank 2) but got shape " + Arrays.toString(t.shape()),
          "gather looks up rows of a matrix; rearrange the table to 'n d' first");
    }
    requireIntegral("gather", "ids", i);
    return Indexing.embedding(t, i);
  }

  @Override
  public TopK topk(Tensor x, int k) {
    NdArray a = in(x, "topk", "x");
    requireRank("topk", "x", a, 1, "... n");
    if (k < 0 || k > a.shape(-1)) {
      throw new EagerShapeException(
          "ShapeMismatch",
          "topk: k = " + k + " but the last dim of x (shape " + Arrays.toString(a.shape()) + ") has "
              + a.shape(-1) + " entries",
          "k must lie in [0, n]");
    }
    Indexing.TopK r = Indexing.topk(a, k, -1, true);
    return new TopK(r.values(), r.indices());
  }

  /**
   * The definition: {@code scores = q k^T / sqrt(d)} as one einsum, {@code -inf} where the mask forbids (query
   * {@code i} sees keys {@code 0..i} under {@link Mask#CAUSAL}, counted from the first query and the first key),
   * softmax over keys, then {@code scores v} as one einsum. Leading dims broadcast as in einsum's {@code ...}.
   */
  @Override
  public Tensor attention(Tensor q, Tensor k, Tensor v, Mask mask) {
    NdArray qa = floating(q, "attention", "q");
    NdArray ka = floating(k, "attention", "k");
    NdArray va = floating(v, "attention", "v");
    requireRank("attention", "q", qa, 2, "... s d");
    requireRank("attention", "k", ka, 2, "... t d");
    requireRank("attention", "v", va, 2, "... t e");
    if (ka.shape(-1) != qa.shape(-1)) {
      throw new EagerShapeException(
          "ShapeMismatch",
          "attention: q '... s d' has shape " + Arrays.toString(qa.shape()) + " and k '... t d' has shape "
              + Arrays.toString(ka.shape()) + ": 'd' is " + qa.shape(-1) + " in q but " + ka.shape(-1) + " in k",
          "queries and keys need the same head dim");
    }
    if (va.shape(-2) != ka.shape(-2)) {
      throw new EagerShapeException(
          "ShapeMismatch",
          "attention: k '... t d' has shape " + Arrays.toString(ka.shape()) + " and v '... t e' has shape "
              + Arrays.toString(va.shape()) + ": 't' is " + ka.shape(-2) + " in k but " + va.shape(-2) + " in v",
          "every key needs its value: k and v must have the same number of positions");
    }
    NdArray scores = (NdArray) einsum("... s d, ... t d -> ... s t", qa, ka);
    scores = Elementwise.mul(scores, 1.0 / Math.sqrt(qa.shape(-1)));
    if (mask == Mask.CAUSAL) {
      long s = qa.shape(-2);
      long t = ka.shape(-2);
      NdArray future = NdArray.zeros(DType.BOOL, s, t);
      for (long i = 0; i < s; i++) {
        for (long j = i + 1; j < t; j++) {
          future.setLong(1, i, j);
        }
      }
      scores = Elementwise.maskedFill(scores, future, Double.NEGATIVE_INFINITY);
    } else if (mask == null) {
      throw new NullPointerException("attention: mask is null; pass Mask.NONE or Mask.CAUSAL");
    }
    NdArray weights = Softmax.softmax(scores, -1);
    return einsum("... s t, ... t e -> ... s e", weights, va);
  }

  /**
   * Plain loops in double: pair {@code (x[2i], x[2i+1])} of every row is rotated by
   * {@code position * theta^(-2i/d)}, the CS336 convention (interleaved pairs, not halves).
   */
  @Override
  public Tensor rope(Tensor x, Tensor positions, double theta) {
    NdArray a = floating(x, "rope", "x");
    NdArray p = in(positions, "rope", "positions");
    requireRank("rope", "x", a, 2, "... s d");
    long[] shape = a.shape();
    int d = Math.toIntExact(shape[shape.length - 1]);
    if (d % 2 != 0) {
      throw new EagerShapeException(
          "ShapeMismatch",
          "rope rotates pairs of the last dim, but x has shape " + Arrays.toString(shape) + " with an odd last dim "
              + d,
          "the head dim must be even");
    }
    long[] rows = Arrays.copyOf(shape, shape.length - 1);
    long[] both;
    try {
      both = NdArray.broadcastShapes(rows, p.shape());
    } catch (IllegalArgumentException e) {
      both = null;
    }
    if (both == null || !Arrays.equals(both, rows)) {
      throw new EagerShapeException(
          "BroadcastConflict",
          "rope: positions of shape " + Arrays.toString(p.shape()) + " do not broadcast to '... s' = "
              + Arrays.toString(rows) + " (x has shape " + Arrays.toString(shape) + ")",
          "give one position per row of x, e.g. positions of shape [s]");
    }
    if (!(theta > 0)) {
      throw new IllegalArgumentException("rope: theta must be positive, got " + theta);
    }
    double[] pos = p.expand(rows).toDoubleArray();
    double[] v = a.toDoubleArray();
    double[] inverseFrequency = new double[d / 2];
    for (int i = 0; i < d / 2; i++) {
      inverseFrequency[i] = Math.pow(theta, -2.0 * i / d);
    }
    for (int r = 0; r < pos.length; r++) {
      int base = r * d;
      for (int i = 0; i < d / 2; i++) {
        double angle = pos[r] * inverseFrequency[i];
        double c = Math.cos(angle);
        double s = Math.sin(angle);
        double x0 = v[base + 2 * i];
        double x1 = v[base + 2 * i + 1];
        v[base + 2 * i] = x0 * c - x1 * s;
        v[base + 2 * i + 1] = x0 * s + x1 * c;
      }
    }
    NdArray out = NdArray.fromDoubles(v, shape);
    return a.dtype() == DType.F64 ? out : out.to(a.dtype());
  }

  /**
   * Mean over every position of {@code -log_softmax(logits)[target]}, each row's log-softmax taken in double after
   * subtracting the row's max; the result is a 0-d array of the logits' dtype.
   */
  @Override
  public Tensor crossEntropy(Tensor logits, Tensor targets) {
    NdArray z = floating(logits, "crossEntropy", "logits");
    NdArray t = in(targets, "crossEntropy", "targets");
    requireRank("crossEntropy", "logits", z, 1, "... v");
    requireIntegral("crossEntropy", "targets", t);
    long[] rowsShape = Arrays.copyOf(z.shape(), z.rank() - 1);
    if (!Arrays.equals(rowsShape, t.shape())) {
      throw new EagerShapeException(
          "ShapeMismatch",
          "crossEntropy expects targets '...' = " + Arrays.toString(rowsShape) + " (logits '... v' have shape "
              + Arrays.toString(z.shape()) + ") but got shape " + Arrays.toString(t.shape()),
          "one target id per row of logits");
    }
    int v = Math.toIntExact(z.shape(-1));
    double[] zs = z.toDoubleArray();
    long[] ts = t.toLongArray();
    if (ts.length == 0) {
      throw new IllegalArgumentException("crossEntropy over zero positions has no mean");
    }
    double total = 0;
    for (int r = 0; r < ts.length; r++) {
      long target = ts[r];
      if (target < 0 || target >= v) {
        throw new IndexOutOfBoundsException(
            "crossEntropy: target " + target + " at flat position " + r + " of targets "
                + Arrays.toString(t.shape()) + " is out of range for " + v + " classes (valid: 0.." + (v - 1) + ")");
      }
      int base = r * v;
      double max = Double.NEGATIVE_INFINITY;
      for (int j = 0; j < v; j++) {
        max = Math.max(max, zs[base + j]);
      }
      double sumExp = 0;
      for (int j = 0; j < v; j++) {
        sumExp += Math.exp(zs[base + j] - max);
      }
      total += max + Math.log(sumExp) - zs[base + (int) target];
    }
    return NdArray.scalar(z.dtype(), total / ts.length);
  }
}
