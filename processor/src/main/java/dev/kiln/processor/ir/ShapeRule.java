package dev.kiln.processor.ir;

import java.util.List;

/** Infers the shape of a primitive's result from its inputs' shapes, reporting through the context. */
@FunctionalInterface
public interface ShapeRule {
  /** The result shape, or null after reporting an error. {@code in} are resolved, never null. */
  Shape infer(ShapeContext ctx, Node.Prim node, List<Shape> in);
}
