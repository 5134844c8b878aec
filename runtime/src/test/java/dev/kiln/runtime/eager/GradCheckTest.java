package dev.kiln.runtime.eager;

import static dev.kiln.dsl.Ops.crossEntropy;
import static dev.kiln.dsl.Ops.einsum;
import static dev.kiln.dsl.Ops.reduce;
import static dev.kiln.dsl.Ops.square;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Reduction;
import dev.kiln.runtime.tensor.NdArray;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * {@link GradCheck} on functions whose gradients are known in closed form. A correct analytic gradient must score
 * below 1e-6 (the threshold the processor's backward tests use; central differences in double with h = 1e-6 are
 * good to ~1e-9 on these smooth functions), and a wrong one must be caught.
 */
class GradCheckTest {

  @Test
  void sumOfSquares() {
    Random rnd = new Random(1);
    NdArray x = Dense.random(rnd, DType.F64, 3, 4);
    NdArray before = x.copy();
    GradCheck.Result r = GradCheck.check(
        Map.of("x", x), in -> reduce(square(in.get("x")), "a b -> ", Reduction.SUM), Map.of("x", x.mul(2.0)));
    r.assertBelow(1e-6);
    assertTrue(r.maxRelativeError() < 1e-8, r.toString());
    assertArrayEquals(before.toDoubleArray(), x.toDoubleArray(), "the check leaves its inputs as they were");
  }

  @Test
  void softmaxCrossEntropyWithIntegerTargets() {
    Random rnd = new Random(2);
    int n = 6;
    int v = 5;
    NdArray logits = (NdArray) Dense.random(rnd, DType.F32, n, v).mul(2.0);
    NdArray targets = Dense.randomIds(rnd, v, n);
    // d/dz mean_r(-log softmax(z_r)[t_r]) = (softmax(z) - onehot(t)) / n, computed here by hand.
    Dense z = Dense.of(logits);
    long[] t = targets.toLongArray();
    Dense grad = Dense.zeros(n, v);
    for (int r = 0; r < n; r++) {
      double sum = 0;
      for (int j = 0; j < v; j++) {
        sum += Math.exp(z.v[r * v + j]);
      }
      for (int j = 0; j < v; j++) {
        grad.v[r * v + j] = (Math.exp(z.v[r * v + j]) / sum - (j == t[r] ? 1 : 0)) / n;
      }
    }
    Map<String, NdArray> in = new LinkedHashMap<>();
    in.put("logits", logits);
    in.put("targets", targets);
    GradCheck.Result r =
        GradCheck.check(in, x -> crossEntropy(x.get("logits"), x.get("targets")), Map.of("logits", grad.toNd(DType.F64)));
    // float32 logits are checked in float64: the function is evaluated on their exact double values.
    r.assertBelow(1e-6);
  }

  @Test
  void linearLayerBothGradients() {
    Random rnd = new Random(3);
    NdArray x = Dense.random(rnd, DType.F64, 2, 3, 4);
    NdArray w = Dense.random(rnd, DType.F64, 5, 4);
    NdArray g = Dense.random(rnd, DType.F64, 2, 3, 5);
    // L = sum(g * (x W^T)): dL/dW = g^T x, dL/dx = g W.
    Dense dw = Dense.einsum("b s o, b s i -> o i", Dense.of(g), Dense.of(x));
    Dense dx = Dense.einsum("b s o, o i -> b s i", Dense.of(g), Dense.of(w));
    Map<String, NdArray> in = new LinkedHashMap<>();
    in.put("x", x);
    in.put("w", w);
    in.put("g", g);
    GradCheck.Result r = GradCheck.check(in,
        a -> einsum("b s o, b s o ->", einsum("... d_in, d_out d_in -> ... d_out", a.get("x"), a.get("w")), a.get("g")),
        Map.of("x", dx.toNd(DType.F64), "w", dw.toNd(DType.F64)));
    r.assertBelow(1e-6);
    assertEquals(2, r.relativeErrors().size(), "only the tensors given analytic gradients are checked");
  }

  @Test
  void aWrongGradientIsCaught() {
    Random rnd = new Random(4);
    NdArray x = Dense.random(rnd, DType.F64, 8);
    NdArray wrong = ((NdArray) x.mul(2.0)).copy();
    wrong.setDouble(wrong.getDouble(3) + 1e-3, 3);
    GradCheck.Result r =
        GradCheck.check(Map.of("x", x), in -> reduce(square(in.get("x")), "a -> ", Reduction.SUM), Map.of("x", wrong));
    assertTrue(r.relativeErrors().get("x") > 1e-5, r.toString());
    AssertionError e = assertThrows(AssertionError.class, () -> r.assertBelow(1e-6));
    assertTrue(e.getMessage().contains("x: relative error") && e.getMessage().contains("flat element 3"),
        e.getMessage());
  }

  @Test
  void badArgumentsAreNamed() {
    NdArray x = NdArray.fromDoubles(new double[] {1, 2});
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> GradCheck.check(Map.of("x", x),
        in -> reduce(in.get("x"), "a -> ", Reduction.SUM), Map.of("y", x)));
    assertTrue(e.getMessage().contains("'y' names no input"), e.getMessage());
    e = assertThrows(IllegalArgumentException.class, () -> GradCheck.check(Map.of("x", x), in -> in.get("x"),
        Map.of("x", x)));
    assertTrue(e.getMessage().contains("one-element"), e.getMessage());
  }
}
