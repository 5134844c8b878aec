package dev.kiln.processor.ir;

import dev.kiln.processor.grad.VjpRules;

/**
 * The closed set of operations the IR is made of. Every op of {@code dev.kiln.dsl.Ops} is one of these or a
 * composite built from them (see {@code analyze.Composites}), so a rule given here once serves every model: the
 * shape rule, the vector-Jacobian product, and for pointwise primitives the CPU and CUDA expression
 * ({@link Rules}).
 *
 * <p>The last group of primitives never comes from user code: {@link #ATTENTION} is what the lower pass makes of the
 * {@code attention} composite, and the rest are what VJP rules emit (gradients of broadcasting, gathering, top-k,
 * cross-entropy and attention). They have no VJP of their own: Kiln differentiates once.
 */
public enum Primitive {
  NEG(Rules.unary(VjpRules::neg, "-%1$s", "-%1$s")),
  EXP(Rules.unary(VjpRules::exp, "Math.exp(%1$s)", "kiln_exp(%1$s)")),
  LOG(Rules.unary(VjpRules::log, "Math.log(%1$s)", "log(%1$s)")),
  SQRT(Rules.unary(VjpRules::sqrt, "Math.sqrt(%1$s)", "sqrt(%1$s)")),
  RSQRT(Rules.unary(VjpRules::rsqrt, "1.0 / Math.sqrt(%1$s)", "rsqrt(%1$s)")),
  TANH(Rules.unary(VjpRules::tanh, "Math.tanh(%1$s)", "tanh(%1$s)")),
  SIGMOID(Rules.unary(VjpRules::sigmoid, "1.0 / (1.0 + Math.exp(-%1$s))", "kiln_sigmoid(%1$s)")),
  COS(Rules.unary(VjpRules::cos, "Math.cos(%1$s)", "cos(%1$s)")),
  SIN(Rules.unary(VjpRules::sin, "Math.sin(%1$s)", "sin(%1$s)")),
  /** Integer or boolean to float. */
  CAST_FLOAT(Rules.unary(Vjp.NONE, "%1$s", "%1$s")),
  ADD(Rules.pointwise(2, VjpRules::add, "%1$s + %2$s", "%1$s + %2$s")),
  SUB(Rules.pointwise(2, VjpRules::sub, "%1$s - %2$s", "%1$s - %2$s")),
  MUL(Rules.pointwise(2, VjpRules::mul, "%1$s * %2$s", "%1$s * %2$s")),
  DIV(Rules.pointwise(2, VjpRules::div, "%1$s / %2$s", "%1$s / %2$s")),
  MAXIMUM(Rules.pointwise(2, VjpRules::maximum, "Math.max(%1$s, %2$s)", "fmax(%1$s, %2$s)")),
  GREATER(Rules.pointwise(2, Vjp.NONE, "(%1$s > %2$s ? 1.0 : 0.0)", "(%1$s > %2$s ? T(1) : T(0))")),
  LESS(Rules.pointwise(2, Vjp.NONE, "(%1$s < %2$s ? 1.0 : 0.0)", "(%1$s < %2$s ? T(1) : T(0))")),
  /** {@code cond ? a : b}. */
  WHERE(Rules.pointwise(3, VjpRules::where, "(%1$s != 0.0 ? %2$s : %3$s)", "(%1$s != T(0) ? %2$s : %3$s)")),
  /** Sum over the last axis or all axes ({@link Attr.Axes}). */
  SUM(new Rules(1, ShapeRules::reduceAxes, VjpRules::sum)),
  /** Max over the last axis or all axes. */
  MAX(new Rules(1, ShapeRules::reduceAxes, VjpRules::max)),
  EINSUM(new Rules(-1, ShapeRules::einsum, VjpRules::einsum)),
  REARRANGE(new Rules(1, ShapeRules::pattern, VjpRules::rearrange)),
  REPEAT(new Rules(1, ShapeRules::pattern, VjpRules::repeat)),
  /** Sum, max or min over the dims a pattern drops (mean is a composite). */
  REDUCE_PATTERN(new Rules(1, ShapeRules::pattern, VjpRules::reducePattern)),
  /** Rows of a table by integer ids: {@code n d}, {@code S} → {@code S d}. */
  GATHER(new Rules(2, ShapeRules::gather, VjpRules::gather)),
  TOPK_VALUES(new Rules(1, ShapeRules::topk, VjpRules::topkValues)),
  TOPK_INDICES(new Rules(1, ShapeRules::topk, Vjp.NONE)),
  /** {@code 0, 1, ..., n-1} with {@code n} an axis of the operand ({@link Attr.Axis}). */
  IOTA(new Rules(1, ShapeRules::iota, Vjp.NONE)),
  /** A scalar ({@link Attr.Const}). */
  CONST(new Rules(0, (ctx, node, in) -> Shape.scalar(), Vjp.NONE)),
  /**
   * RoPE as one device call ({@link Attr.Rope}): {@code x '... s d'}, integer positions broadcasting to {@code '... s'}
   * → x with pairs {@code (2i, 2i+1)} rotated by {@code pos · theta^(-2i/d)}. Its VJP is the inverse rotation.
   */
  ROPE(new Rules(2, (ctx, node, in) -> in.get(0), VjpRules::rope)),
  /**
   * Cross-entropy of each row as one device call: logits {@code S v}, integer targets {@code S} → {@code S}, the
   * log-sum-exp of the row minus its target's logit. Its VJP is {@link #CROSS_ENTROPY_GRAD}.
   */
  CROSS_ENTROPY(new Rules(2, ShapeRules::pick, VjpRules::crossEntropy)),

  // ---- made by the passes, never written by users

  /** Scaled dot-product attention as one kernel: {@code q, k, v} → out ({@link Attr.Attention}). */
  ATTENTION(new Rules(3, (ctx, node, in) -> in.get(0).withTail(1, in.get(2).dims().subList(
      in.get(2).dims().size() - 1, in.get(2).dims().size())), VjpRules::attention)),
  /** Gradient of broadcasting: input 0 summed down to the shape of input 1 (whose contents are not read). */
  SUM_TO(Rules.backwardOnly(2, 1)),
  /** Input 0 broadcast to the shape of input 1 (whose contents are not read); in a kernel, a read at a coarser level. */
  EXPAND(new Rules(2, (ctx, node, in) -> in.get(1), Vjp.SECOND_ORDER, "%1$s", "%1$s")),
  /** Gradient of {@link #GATHER}: {@code (ids, dOut, table)} → zeros like the table with rows of dOut added at ids. */
  SCATTER_ROWS(Rules.backwardOnly(3, 2)),
  /**
   * Gradient of top-k: {@code (idx, dOut, x)} → zeros like x with dOut added at idx along the last axis
   * ({@code idx} has x's rank).
   */
  SCATTER_LAST(Rules.backwardOnly(3, 2)),
  /**
   * Gradient of {@link #CROSS_ENTROPY}: {@code (logits, targets, dLoss)} → {@code dLoss · (softmax(logits) −
   * onehot(targets))}, shaped like the logits, one device call.
   */
  CROSS_ENTROPY_GRAD(Rules.backwardOnly(3, 0)),
  /** Gradients of {@link #ATTENTION}: {@code (q, k, v, out, dOut)} → dq; the three come from one device call. */
  ATTENTION_DQ(Rules.backwardOnly(5, 0)),
  ATTENTION_DK(Rules.backwardOnly(5, 1)),
  ATTENTION_DV(Rules.backwardOnly(5, 2));

  /**
   * What Kiln knows about one primitive.
   *
   * @param arity number of tensor inputs, -1 for any
   * @param shape the shape rule
   * @param vjp the vector-Jacobian product; {@link Vjp#NONE} where no input is differentiable
   * @param cpu for a pointwise primitive, the Java expression of one element in {@code double}s (a format string
   *     over the inputs {@code %1$s, %2$s, ...}); null otherwise
   * @param cuda the same in CUDA C over the element type {@code T} ({@code float} or {@code double})
   */
  public record Rules(int arity, ShapeRule shape, Vjp vjp, String cpu, String cuda) {
    Rules(int arity, ShapeRule shape, Vjp vjp) {
      this(arity, shape, vjp, null, null);
    }

    static Rules unary(Vjp vjp, String cpu, String cuda) {
      return new Rules(1, (ctx, node, in) -> in.get(0), vjp, cpu, cuda);
    }

    static Rules pointwise(int arity, Vjp vjp, String cpu, String cuda) {
      return new Rules(arity, ShapeRules::broadcast, vjp, cpu, cuda);
    }

    /** A primitive only VJP rules emit, shaped like input {@code like}; it is not differentiated again. */
    static Rules backwardOnly(int arity, int like) {
      return new Rules(arity, (ctx, node, in) -> in.get(like), Vjp.SECOND_ORDER);
    }
  }

  private final Rules rules;

  Primitive(Rules rules) {
    this.rules = rules;
  }

  public Rules rules() {
    return rules;
  }

  /** Whether this is computed element by element (with broadcasting): what a fused pointwise kernel may contain. */
  public boolean isPointwise() {
    return switch (this) {
      case NEG, EXP, LOG, SQRT, RSQRT, TANH, SIGMOID, COS, SIN, CAST_FLOAT, ADD, SUB, MUL, DIV, MAXIMUM, GREATER,
          LESS, WHERE, CONST -> true;
      default -> false;
    };
  }
}
