package dev.kiln.processor.ir;

/**
 * The closed set of operations the IR is made of. Every op of {@code dev.kiln.dsl.Ops} is one of these or a
 * composite built from them (see {@code analyze.Composites}), so a rule given here once serves every model: the
 * shape rule now; the vector-Jacobian product and the CPU/CUDA expressions join {@link Rules} in later passes.
 */
public enum Primitive {
  NEG(Rules.unary()),
  EXP(Rules.unary()),
  LOG(Rules.unary()),
  SQRT(Rules.unary()),
  RSQRT(Rules.unary()),
  TANH(Rules.unary()),
  SIGMOID(Rules.unary()),
  COS(Rules.unary()),
  SIN(Rules.unary()),
  /** Integer or boolean to float. */
  CAST_FLOAT(Rules.unary()),
  ADD(Rules.pointwise(2)),
  SUB(Rules.pointwise(2)),
  MUL(Rules.pointwise(2)),
  DIV(Rules.pointwise(2)),
  MAXIMUM(Rules.pointwise(2)),
  GREATER(Rules.pointwise(2)),
  LESS(Rules.pointwise(2)),
  /** {@code cond ? a : b}. */
  WHERE(Rules.pointwise(3)),
  /** Sum over the last axis or all axes ({@link Attr.Axes}). */
  SUM(new Rules(1, ShapeRules::reduceAxes)),
  /** Max over the last axis or all axes. */
  MAX(new Rules(1, ShapeRules::reduceAxes)),
  EINSUM(new Rules(-1, ShapeRules::einsum)),
  REARRANGE(new Rules(1, ShapeRules::pattern)),
  REPEAT(new Rules(1, ShapeRules::pattern)),
  /** Sum, max or min over the dims a pattern drops (mean is a composite). */
  REDUCE_PATTERN(new Rules(1, ShapeRules::pattern)),
  /** Rows of a table by integer ids: {@code n d}, {@code S} → {@code S d}. */
  GATHER(new Rules(2, ShapeRules::gather)),
  /** One element per row of the last axis: {@code S v}, {@code S} → {@code S}. */
  PICK(new Rules(2, ShapeRules::pick)),
  TOPK_VALUES(new Rules(1, ShapeRules::topk)),
  TOPK_INDICES(new Rules(1, ShapeRules::topk)),
  /** {@code 0, 1, ..., n-1} with {@code n} an axis of the operand ({@link Attr.Axis}). */
  IOTA(new Rules(1, ShapeRules::iota)),
  /** A scalar ({@link Attr.Const}). */
  CONST(new Rules(0, (ctx, node, in) -> Shape.scalar())),
  /** A small literal table ({@link Attr.Table}). */
  TABLE(new Rules(0, ShapeRules::table));

  /**
   * What Kiln knows about one primitive.
   *
   * @param arity number of tensor inputs, -1 for any
   * @param shape the shape rule
   */
  public record Rules(int arity, ShapeRule shape) {
    static Rules unary() {
      return new Rules(1, (ctx, node, in) -> in.get(0));
    }

    static Rules pointwise(int arity) {
      return new Rules(arity, ShapeRules::broadcast);
    }
  }

  private final Rules rules;

  Primitive(Rules rules) {
    this.rules = rules;
  }

  public Rules rules() {
    return rules;
  }
}
