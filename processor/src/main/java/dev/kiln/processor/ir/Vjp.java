package dev.kiln.processor.ir;

import java.util.List;

/**
 * The vector-Jacobian product of a primitive: given the node and the adjoint {@code g} of its output, adds nodes
 * that compute the adjoint contribution of each input that {@code need}s one, and returns them (null where not
 * needed or not differentiable). Contributions already have their input's shape (broadcasting is summed away).
 */
@FunctionalInterface
public interface Vjp {
  List<Value> apply(GradBuilder b, Node.Prim node, Value g, boolean[] need);

  /** No input is differentiable (comparisons, casts, indices, constants). */
  Vjp NONE = (b, node, g, need) -> java.util.Arrays.asList(new Value[node.inputs().size()]);

  /** A primitive that only VJP rules emit: Kiln differentiates once, so reaching this is a bug in the grad pass. */
  Vjp SECOND_ORDER = (b, node, g, need) -> {
    throw new IllegalStateException(node.op() + " is made by the grad pass and is not differentiated again");
  };
}
