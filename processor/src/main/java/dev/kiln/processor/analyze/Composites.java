package dev.kiln.processor.analyze;

import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.shape.EinopsPattern;
import dev.kiln.dsl.shape.ShapeParser;
import dev.kiln.processor.ir.Attr;
import dev.kiln.processor.ir.Dim;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Scalar;
import dev.kiln.processor.ir.Value;
import java.util.List;
import java.util.Map;

/**
 * The composite ops of {@code Ops}, written in primitives, so that every rule of a primitive (shape now; gradient
 * and kernels later) covers them. A fused kernel for a composite is an optimisation checked against this
 * definition, never a second definition.
 */
final class Composites {
  private Composites() {}

  /** Adds primitive nodes to the IR being built. */
  interface Builder {
    Value prim(Primitive op, Attr attr, Value.Elem elem, Value... in);

    default Value prim(Primitive op, Attr attr, Value... in) {
      return prim(op, attr, Value.Elem.FLOAT, in);
    }

    default Value prim(Primitive op, Value... in) {
      return prim(op, new Attr.None(), in);
    }

    default Value constant(Scalar s) {
      return prim(Primitive.CONST, new Attr.Const(s));
    }

    default Value constant(double v) {
      return constant(new Scalar.Lit(v));
    }
  }

  private static final Attr.Axes LAST_KEEP = new Attr.Axes(false, true);
  private static final Attr.Axes ALL = new Attr.Axes(true, false);

  private static Attr.Pattern pattern(String p, Map<String, Dim> sizes) {
    return new Attr.Pattern(PATTERNS.computeIfAbsent(p, ShapeParser::parsePattern), sizes, Reduction.SUM);
  }

  private static final Map<String, EinopsPattern> PATTERNS = new java.util.concurrent.ConcurrentHashMap<>();

  static Value square(Builder b, Value x) {
    return b.prim(Primitive.MUL, x, x);
  }

  static Value silu(Builder b, Value x) {
    return b.prim(Primitive.MUL, x, b.prim(Primitive.SIGMOID, x));
  }

  static Value relu(Builder b, Value x) {
    return b.prim(Primitive.MAXIMUM, x, b.constant(0));
  }

  /** The tanh approximation, as CS336 and GPT-2 use it. */
  static Value gelu(Builder b, Value x) {
    Value x3 = b.prim(Primitive.MUL, square(b, x), x);
    Value inner = b.prim(Primitive.ADD, x, b.prim(Primitive.MUL, x3, b.constant(0.044715)));
    Value t = b.prim(Primitive.TANH, b.prim(Primitive.MUL, inner, b.constant(Math.sqrt(2 / Math.PI))));
    Value onePlus = b.prim(Primitive.ADD, t, b.constant(1));
    return b.prim(Primitive.MUL, b.prim(Primitive.MUL, x, onePlus), b.constant(0.5));
  }

  static Value sum(Builder b, Value x) {
    return b.prim(Primitive.SUM, LAST_KEEP, x);
  }

  static Value mean(Builder b, Value x) {
    Value n = b.constant(new Scalar.Op("/", new Scalar.Lit(1), new Scalar.AxisSize(x, -1)));
    return b.prim(Primitive.MUL, sum(b, x), n);
  }

  /** {@code x - max(x)} over the last dim: the max does not change softmax but keeps exp from overflowing. */
  private static Value shifted(Builder b, Value x) {
    return b.prim(Primitive.SUB, x, b.prim(Primitive.MAX, LAST_KEEP, x));
  }

  static Value softmax(Builder b, Value x) {
    Value e = b.prim(Primitive.EXP, shifted(b, x));
    return b.prim(Primitive.DIV, e, sum(b, e));
  }

  static Value logSoftmax(Builder b, Value x) {
    Value s = shifted(b, x);
    return b.prim(Primitive.SUB, s, b.prim(Primitive.LOG, sum(b, b.prim(Primitive.EXP, s))));
  }

  static Value rmsNorm(Builder b, Value x, Value weight, Scalar eps) {
    Value ms = b.prim(Primitive.ADD, mean(b, square(b, x)), b.constant(eps));
    return b.prim(Primitive.MUL, b.prim(Primitive.MUL, x, b.prim(Primitive.RSQRT, ms)), weight);
  }

  /**
   * Mean cross-entropy: {@code log-sum-exp(logits) - logits[target]}, averaged over every position. Each row's loss
   * is one {@link Primitive#CROSS_ENTROPY} device call (one pass over the logits, and one for the gradient) rather
   * than the shift, exponential, sum, log and pick it decomposes into, each a full pass over rows × vocabulary.
   */
  static Value crossEntropy(Builder b, Value logits, Value targets) {
    Value perPosition = b.prim(Primitive.CROSS_ENTROPY, new Attr.None(), logits, targets);
    Value total = b.prim(Primitive.SUM, ALL, perPosition);
    return b.prim(Primitive.MUL, total,
        b.constant(new Scalar.Op("/", new Scalar.Lit(1), new Scalar.Count(perPosition))));
  }

  /** {@code softmax(q k^T / sqrt(d) masked) v}; the lower pass turns this into one flash-attention kernel. */
  static Value attention(Builder b, Value q, Value k, Value v, Mask mask) {
    Value scores = b.prim(Primitive.EINSUM,
        new Attr.Einsum(ShapeParser.parseEinsum("... s d, ... t d -> ... s t")), q, k);
    Value scale = b.constant(new Scalar.Op("/", new Scalar.Lit(1),
        new Scalar.Op("sqrt", new Scalar.AxisSize(q, -1), null)));
    scores = b.prim(Primitive.MUL, scores, scale);
    if (mask == Mask.CAUSAL) {
      Value qi = b.prim(Primitive.REARRANGE, pattern("s -> s 1", Map.of()),
          b.prim(Primitive.IOTA, new Attr.Axis(-2), Value.Elem.INT, q));
      Value ki = b.prim(Primitive.IOTA, new Attr.Axis(-2), Value.Elem.INT, k);
      Value future = b.prim(Primitive.GREATER, new Attr.None(), Value.Elem.BOOL, ki, qi);
      scores = b.prim(Primitive.WHERE, future, b.constant(Double.NEGATIVE_INFINITY), scores);
    }
    return b.prim(Primitive.EINSUM, new Attr.Einsum(ShapeParser.parseEinsum("... s t, ... t e -> ... s e")),
        softmax(b, scores), v);
  }

  /**
   * RoPE: pairs {@code (x[2i], x[2i+1])} rotate by {@code pos * theta^(-2i/d)}, as one {@link Primitive#ROPE} device
   * call (a kernel on the GPU, a loop on the CPU) rather than the dozen primitives the rotation decomposes into. The
   * pair split is still written as a rearrange, whose shape rule reports an odd head width; the node itself is
   * dead and removed.
   */
  static Value rope(Builder b, Value x, Value positions, Scalar theta) {
    b.prim(Primitive.REARRANGE, pattern("... (h two) -> ... h two", Map.of("two", Dim.of(2))), x);
    Value pos = b.prim(Primitive.REARRANGE, pattern("... s -> ... s 1", Map.of()), positions);
    // Positions broadcast against x's rows: the sum's shape rule says so, or reports the conflict.
    b.prim(Primitive.ADD, b.prim(Primitive.CAST_FLOAT, pos), x);
    return b.prim(Primitive.ROPE, new Attr.Rope(theta, false), Value.Elem.FLOAT, x, positions);
  }

  /** {@code reduce(x, pattern, how)}: sum, max and min are primitives; mean is the sum scaled by the counts. */
  static Value reduce(Builder b, Value x, Attr.Pattern p) {
    if (p.how() != Reduction.MEAN) {
      return b.prim(Primitive.REDUCE_PATTERN, p, x);
    }
    Value s = b.prim(Primitive.REDUCE_PATTERN, new Attr.Pattern(p.pattern(), p.sizes(), Reduction.SUM), x);
    return b.prim(Primitive.MUL, s, b.constant(new Scalar.Op("/", new Scalar.Count(s), new Scalar.Count(x))));
  }
}
