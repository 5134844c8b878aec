package dev.kiln.processor.gen;

import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Context;
import dev.kiln.runtime.cpu.Elementwise;
import dev.kiln.runtime.tensor.NdArray;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Models train on generated code alone (float32 on the CPU device): plain SGD on the gradients {@code backward}
 * returns lowers the loss. Each run uses fixed data, so a loss that does not fall means the gradients point the
 * wrong way.
 */
class TrainingTest {
  private static void sgd(Harness h, Record grads, double lr) {
    Map<String, Tensor> p = h.stateDict(h.params);
    Map<String, Tensor> g = h.stateDict((Record) Harness.component(grads, 0));
    for (var e : p.entrySet()) {
      Elementwise.axpyInto((NdArray) e.getValue(), -lr, (NdArray) g.get(e.getKey()));
    }
  }

  private static double scalar(Tensor t) {
    return ((NdArray) t).item();
  }

  private static NdArray f32(NdArray a) {
    return a.to(DType.F32);
  }

  /** Runs {@code steps} of SGD on a loss method and returns the losses. */
  private static List<Double> train(Harness h, Object[] inputs, double lr, int steps) {
    List<Double> losses = new ArrayList<>();
    for (int i = 0; i < steps; i++) {
      Context ctx = new Context();
      Tensor loss = h.forward("loss", ctx, inputs);
      losses.add(scalar(loss));
      Record grads = (Record) Generated.call(h.compiled, "lossBackward", ctx, h.params, NdArray.scalar(DType.F32, 1));
      sgd(h, grads, lr);
    }
    return losses;
  }

  @Test
  void mlpClassifierLearns() {
    Harness h = new Harness(Generated.cs336(), "cs336.Mlp", Map.of("d_in", 6, "d_hidden", 16, "classes", 3,
        "activation", "GELU"), 5, DType.F32);
    Random r = new Random(9);
    NdArray x = f32(Harness.random(r, 32, 6));
    // Labels a fixed function of x (the sign pattern of two coordinates), so the task is learnable.
    long[] labels = new long[32];
    for (int i = 0; i < 32; i++) {
      double a = x.getDouble(i, 0);
      double b = x.getDouble(i, 1);
      labels[i] = a > 0 ? (b > 0 ? 0 : 1) : 2;
    }
    List<Double> losses = train(h, new Object[] {x, NdArray.fromLongs(labels, 32)}, 0.5, 40);
    // ln 3 ≈ 1.10 is chance; a classifier that learns the rule gets well under it.
    assertTrue(losses.get(losses.size() - 1) < 0.6 * losses.get(0), losses.toString());
  }

  @Test
  void tinyTransformerLmLearnsToCopyTheNextToken() {
    Harness h = new Harness(Generated.cs336(), "cs336.TransformerLm", Map.of("vocab_size", 8, "d_model", 16,
        "num_layers", 2, "num_heads", 2, "d_ff", 32, "eps", 1e-5, "rope_theta", 10000.0), 3, DType.F32);
    // Sequences count up modulo the vocabulary; the target is the next token. Attention, RoPE, RMSNorm, SwiGLU and
    // the loop over layers all carry gradient.
    int b = 4;
    int s = 6;
    long[] ids = new long[b * s];
    long[] next = new long[b * s];
    for (int i = 0; i < b; i++) {
      for (int j = 0; j < s; j++) {
        ids[i * s + j] = (i + j) % 8;
        next[i * s + j] = (i + j + 1) % 8;
      }
    }
    List<Double> losses = train(h, new Object[] {NdArray.fromLongs(ids, b, s), Harness.arange(s),
        NdArray.fromLongs(next, b, s)}, 0.3, 30);
    assertTrue(losses.get(losses.size() - 1) < 0.5 * losses.get(0), losses.toString());
  }

  @Test
  void transformerBlockFitsARegressionTarget() {
    Harness h = new Harness(Generated.cs336(), "cs336.TransformerBlock", Map.of("d_model", 8, "num_heads", 2,
        "d_ff", 16, "eps", 1e-5, "rope_theta", 10000.0), 4, DType.F32);
    Random r = new Random(4);
    NdArray x = f32(Harness.random(r, 2, 5, 8));
    NdArray target = f32(Harness.random(r, 2, 5, 8));
    NdArray positions = Harness.arange(5);
    List<Double> losses = new ArrayList<>();
    for (int step = 0; step < 40; step++) {
      Context ctx = new Context();
      NdArray y = (NdArray) h.forward("forward", ctx, x, positions);
      // Mean squared error, computed here; its gradient 2 (y - t) / n is the dOut of the generated backward.
      NdArray diff = Elementwise.sub(y, target);
      losses.add(java.util.Arrays.stream(Elementwise.mul(diff, diff).toDoubleArray()).average().orElseThrow());
      NdArray dOut = Elementwise.mul(diff, 2.0 / diff.numel());
      sgd(h, (Record) Generated.call(h.compiled, "backward", ctx, h.params, dOut), 0.5);
    }
    assertTrue(losses.get(losses.size() - 1) < 0.8 * losses.get(0), losses.toString());
  }
}
