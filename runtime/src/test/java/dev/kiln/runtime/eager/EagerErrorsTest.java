package dev.kiln.runtime.eager;

import static dev.kiln.dsl.Ops.attention;
import static dev.kiln.dsl.Ops.crossEntropy;
import static dev.kiln.dsl.Ops.einsum;
import static dev.kiln.dsl.Ops.gather;
import static dev.kiln.dsl.Ops.rearrange;
import static dev.kiln.dsl.Ops.rmsNorm;
import static dev.kiln.dsl.Ops.rope;
import static dev.kiln.dsl.Ops.size;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Tensor;
import dev.kiln.runtime.tensor.NdArray;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/** Run-time shape errors carry the compile-time diagnostic's ID, both shapes, the dim and what it is bound to. */
class EagerErrorsTest {
  private static final NdArray X = NdArray.zeros(DType.F32, 2, 3, 16);
  private static final NdArray W = NdArray.zeros(DType.F32, 4, 8);

  private static String fails(String id, Executable e) {
    EagerShapeException x = assertThrows(EagerShapeException.class, e);
    assertEquals(id, x.id(), x.getMessage());
    assertTrue(x.getMessage().startsWith("[" + id + "] "), x.getMessage());
    return x.getMessage();
  }

  private static void contains(String message, String... parts) {
    for (String p : parts) {
      assertTrue(message.contains(p), "'" + p + "' missing from:\n" + message);
    }
  }

  @Test
  void einsumNamesTheDimBothOperandsAndTheirShapes() {
    String m = fails("EinsumMismatch", () -> einsum("... d_in, d_out d_in -> ... d_out", X, W));
    contains(m, "'d_in' is 8 in operand 2 'd_out d_in' (shape [4, 8])", "but 16 in operand 1 '... d_in'",
        "(shape [2, 3, 16])", "hint:");
  }

  @Test
  void einsumRankAndOperandCount() {
    contains(fails("EinsumMismatch", () -> einsum("b s d, d -> b s", W, NdArray.zeros(DType.F32, 8))),
        "operand 1 'b s d' names 3 dims but the tensor has shape [4, 8]");
    contains(fails("EinsumMismatch", () -> einsum("i, i ->", W)), "has 2 operands but 1 tensors were given");
    contains(fails("MalformedShape", () -> einsum("i j -> k", W)), "einsum \"i j -> k\"");
  }

  @Test
  void broadcastNamesBothShapesAndTheDim() {
    String m = fails("BroadcastConflict", () -> X.mul(NdArray.zeros(DType.F32, 8)));
    contains(m, "mul: cannot broadcast [2, 3, 16] with [8]", "the last dim is 16 on one side and 8 on the other");
    contains(fails("BroadcastConflict", () -> X.add(NdArray.zeros(DType.F32, 5, 1))), "dim -2");
  }

  @Test
  void rearrangeSaysWhichGroupDoesNotFit() {
    String m = fails("RearrangeMismatch", () -> rearrange(X, "b s (h d) -> b h s d", size("h", 5)));
    contains(m, "rearrange \"b s (h d) -> b h s d\"", "16", "not divisible by 5", "[2, 3, 16]");
    contains(fails("RearrangeMismatch", () -> rearrange(X, "b s -> s b")), "[2, 3, 16]");
  }

  @Test
  void compositeOpsCheckTheirOperands() {
    contains(fails("ShapeMismatch", () -> rmsNorm(X, NdArray.ones(DType.F32, 8), 1e-5)),
        "rmsNorm expects weight 'd' with d = 16", "got shape [8]");
    NdArray q = NdArray.zeros(DType.F32, 2, 5, 8);
    contains(fails("ShapeMismatch", () -> attention(q, NdArray.zeros(DType.F32, 2, 5, 4), q, Mask.CAUSAL)),
        "'d' is 8 in q but 4 in k");
    contains(fails("ShapeMismatch", () -> rope(NdArray.zeros(DType.F32, 2, 3, 5), NdArray.arange(DType.I64, 3),
        1e4)), "odd last dim 5");
    contains(fails("BroadcastConflict", () -> rope(X, NdArray.arange(DType.I64, 4), 1e4)),
        "positions of shape [4] do not broadcast to '... s' = [2, 3]");
    contains(fails("ShapeMismatch", () -> crossEntropy(X, NdArray.zeros(DType.I64, 3))),
        "expects targets '...' = [2, 3]", "got shape [3]");
    contains(fails("ShapeMismatch", () -> gather(W, NdArray.zeros(DType.F32, 3))), "must hold integers");
  }

  @Test
  void foreignTensorsAreRejectedByName() {
    Tensor foreign = new Tensor() {
      @Override
      public long[] shape() {
        return new long[] {2};
      }

      @Override
      public DType dtype() {
        return DType.F32;
      }
    };
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> foreign.add(foreign));
    contains(e.getMessage(), "add: the left operand is a", "computes on dev.kiln.runtime.tensor.NdArray");
  }
}
