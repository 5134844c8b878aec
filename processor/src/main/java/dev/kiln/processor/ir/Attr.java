package dev.kiln.processor.ir;

import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.shape.EinopsPattern;
import dev.kiln.dsl.shape.EinsumSpec;
import java.util.List;
import java.util.Map;

/** The static arguments of a primitive node. */
public sealed interface Attr {
  record None() implements Attr {}

  record Einsum(EinsumSpec spec) implements Attr {}

  /**
   * An einops pattern with the sizes given in the call; {@code how} only for {@link Primitive#REDUCE_PATTERN}.
   */
  record Pattern(EinopsPattern pattern, Map<String, Dim> sizes, Reduction how) implements Attr {
    public Pattern {
      sizes = Map.copyOf(sizes);
    }
  }

  /** A reduction over the last axis ({@code keep}: leave it as size 1) or, with {@code all}, over every axis. */
  record Axes(boolean all, boolean keep) implements Attr {}

  /** A constant scalar, broadcast like a rank-0 tensor. */
  record Const(Scalar value) implements Attr {}

  /** Which axis of the operand gives the length ({@link Primitive#IOTA}), counted from the end. */
  record Axis(int fromEnd) implements Attr {}

  /** The {@code k} of top-k: a literal or a config dim. */
  record TopK(Dim k) implements Attr {}

  /**
   * {@link Primitive#ROPE}: the base {@code theta}; {@code inverse} rotates by minus the angle (the VJP: a rotation's
   * transpose is its inverse).
   */
  record Rope(Scalar theta, boolean inverse) implements Attr {}

  /** {@link Primitive#ATTENTION} and its gradients: the mask and the score scale ({@code 1/sqrt(d)}). */
  record Attention(dev.kiln.dsl.Mask mask, Scalar scale) implements Attr {}

  /**
   * A pattern op the grad pass made to undo {@code forward} (a rearrange, repeat or reduce): {@code inverse} applied
   * with the sizes that binding {@code forward} to the shape of the node's second input (the forward operand, whose
   * contents are not read) gives, plus the forward call's own {@code sizes}.
   */
  record Inverse(EinopsPattern forward, Map<String, Dim> sizes, EinopsPattern inverse) implements Attr {
    public Inverse {
      sizes = Map.copyOf(sizes);
    }
  }
}
