package dev.kiln.runtime.eager;

import static dev.kiln.dsl.Ops.einsum;
import static dev.kiln.dsl.Ops.exp;
import static dev.kiln.dsl.Ops.gather;
import static dev.kiln.dsl.Ops.softmax;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** {@link Eager#precision}: what a scope converts, what it leaves alone, and that scopes nest and restore. */
class EagerPrecisionTest {

  @Test
  void f64ScopeComputesFloat32OperandsInDouble() {
    Random rnd = new Random(3);
    NdArray x = Dense.random(rnd, DType.F32, 3, 7);
    NdArray w = Dense.random(rnd, DType.F32, 5, 7);
    Dense expected = Dense.einsum("b i, o i -> b o", Dense.of(x), Dense.of(w));
    for (int i = 0; i < expected.v.length; i++) {
      expected.v[i] = Math.exp(expected.v[i] / 4);
    }
    Tensor y;
    try (Eager.Scope s = Eager.precision(DType.F64)) {
      y = exp(einsum("... d_in, d_out d_in -> ... d_out", x, w).div(4.0));
    }
    assertEquals(DType.F64, y.dtype());
    // The float32 inputs are exact in double, so only double rounding separates the op from the oracle.
    Dense.assertClose(expected, y, 1e-13, "float64 forward of float32 parameters");
    Tensor f32 = exp(einsum("... d_in, d_out d_in -> ... d_out", x, w).div(4.0));
    assertEquals(DType.F32, f32.dtype(), "outside the scope, float32 stays float32");
  }

  @Test
  void integerTensorsStayIntegers() {
    NdArray table = NdArray.fromFloats(new float[] {1, 2, 3, 4}, 2, 2);
    NdArray ids = NdArray.fromLongs(new long[] {1, 0, 1});
    try (Eager.Scope s = Eager.precision(DType.F64)) {
      Tensor rows = gather(table, ids);
      assertEquals(DType.F64, rows.dtype());
      Dense.assertClose(new Dense(new long[] {3, 2}, new double[] {3, 4, 1, 2, 3, 4}), rows, 0, "gather");
    }
  }

  @Test
  void scopesNestAndRestore() {
    NdArray x = NdArray.fromFloats(new float[] {1, 2, 3});
    assertNull(Eager.currentPrecision());
    try (Eager.Scope outer = Eager.precision(DType.F64)) {
      try (Eager.Scope inner = Eager.precision(DType.F32)) {
        assertEquals(DType.F32, softmax(x.to(DType.F64)).dtype(), "inner F32 scope converts F64 down");
      }
      assertEquals(DType.F64, Eager.currentPrecision());
      assertEquals(DType.F64, softmax(x).dtype());
    }
    assertNull(Eager.currentPrecision());
    assertEquals(DType.F32, softmax(x).dtype());
  }

  @Test
  void onlyF32AndF64AreComputePrecisions() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Eager.precision(DType.BF16));
    assertEquals(true, e.getMessage().contains("F32 or F64"), e.getMessage());
  }
}
