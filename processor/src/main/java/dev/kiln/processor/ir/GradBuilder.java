package dev.kiln.processor.ir;

/** What a {@link Vjp} rule may do: add primitive nodes to the backward block, with the shape it states. */
public interface GradBuilder {
  /** Adds {@code op(in)} with result shape {@code shape}. */
  Value prim(Primitive op, Attr attr, Value.Elem elem, Shape shape, Value... in);

  default Value prim(Primitive op, Shape shape, Value... in) {
    return prim(op, new Attr.None(), Value.Elem.FLOAT, shape, in);
  }

  /** A scalar constant. */
  default Value constant(double v) {
    return constant(new Scalar.Lit(v));
  }

  Value constant(Scalar s);

  /** {@code g} summed down to {@code like}'s shape (the gradient of broadcasting); {@code g} itself when equal. */
  Value sumTo(Value g, Value like);

  /** Zeros of {@code like}'s shape. */
  default Value zerosLike(Value like) {
    return prim(Primitive.EXPAND, like.shape(), constant(0), like);
  }
}
