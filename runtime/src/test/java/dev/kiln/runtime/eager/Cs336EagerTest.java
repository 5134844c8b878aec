package dev.kiln.runtime.eager;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.runtime.eager.cs336.Linear;
import dev.kiln.runtime.eager.cs336.MultiHeadSelfAttention;
import dev.kiln.runtime.eager.cs336.RmsNorm;
import dev.kiln.runtime.eager.cs336.Rope;
import dev.kiln.runtime.eager.cs336.SwiGlu;
import dev.kiln.runtime.eager.cs336.TransformerBlock;
import dev.kiln.runtime.eager.cs336.TransformerLm;
import dev.kiln.runtime.tensor.NdArray;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;

/**
 * The CS336 modules, called directly ({@code module.apply(x)}) with parameters from {@link Eager#init}, against
 * {@link NaiveCs336}. Each runs twice: inside {@code Eager.precision(F64)}, where only the order of double operations
 * differs from the oracle (tolerance 1e-12 relative to max(1, |y|); measured worst 2e-15), and in float32, where
 * float32 rounding of every intermediate accumulates through up to a dozen ops of sums over at most 48 terms:
 * 5e-6 (measured worst 5e-7 on these sizes, the LM's logits).
 */
class Cs336EagerTest {
  static final float EPS = 1e-5f;
  static final double THETA = 10000;
  static final Map<String, Object> CONFIG = Map.of(
      "vocab_size", 40, "d_model", 32, "num_layers", 2, "num_heads", 4, "d_ff", 48, "rope_theta", THETA,
      "eps", (double) EPS);

  private final Random rnd = new Random(17);

  private static NaiveCs336 naive(Map<String, NdArray> sd) {
    // RmsNorm's eps is a float component: the module adds (double) 1e-5f, so the oracle does too.
    return new NaiveCs336(sd, 4, THETA, EPS);
  }

  /** Checks {@code forward} in F64 and F32 against {@code expected} (flattened, row-major). */
  private static void check(String what, double[] expected, long[] shape, Supplier<Tensor> forward) {
    Tensor y64;
    try (Eager.Scope s = Eager.precision(DType.F64)) {
      y64 = forward.get();
    }
    assertEquals(DType.F64, y64.dtype(), what);
    Dense.assertClose(new Dense(shape, expected), y64, 1e-12, what + " in F64");
    Tensor y32 = forward.get();
    assertEquals(DType.F32, y32.dtype(), what);
    Dense.assertClose(new Dense(shape, expected), y32, 5e-6, what + " in F32");
  }

  private static double[] perSequence(NdArray x, java.util.function.Function<double[][], double[][]> f) {
    double[][][] out = new double[(int) x.shape(0)][][];
    for (int b = 0; b < out.length; b++) {
      out[b] = f.apply(NaiveCs336.sequence(x, b));
    }
    return NaiveCs336.flatten(out);
  }

  /** A state dict like {@code sd} with every norm gain replaced by random values (init makes them all ones). */
  private Map<String, NdArray> randomGains(Map<String, NdArray> sd) {
    Map<String, NdArray> out = new LinkedHashMap<>(sd);
    for (String k : sd.keySet()) {
      if (k.contains("ln")) {
        out.put(k, (NdArray) Dense.random(rnd, DType.F32, sd.get(k).shape()).mul(0.3).add(1.0));
      }
    }
    return out;
  }

  @Test
  void linear() {
    Linear lin = Eager.init(Linear.class, Map.of("d_in", 12, "d_out", 7), 1);
    NdArray x = Dense.random(rnd, DType.F32, 2, 3, 12);
    NaiveCs336 n = naive(Eager.stateDict(lin));
    check("Linear", perSequence(x, s -> NaiveCs336.linear(s, n.matrix("weight"))), new long[] {2, 3, 7},
        () -> lin.apply(x));
  }

  @Test
  void rmsNorm() {
    RmsNorm norm = new RmsNorm(Dense.random(rnd, DType.F32, 32), EPS);
    NdArray x = Dense.random(rnd, DType.F32, 2, 5, 32);
    NaiveCs336 n = naive(Eager.stateDict(norm));
    check("RmsNorm", perSequence(x, s -> n.rmsNorm(s, n.vector("weight"))), new long[] {2, 5, 32},
        () -> norm.apply(x));
  }

  @Test
  void swiGlu() {
    SwiGlu ffn = Eager.init(SwiGlu.class, CONFIG, 2);
    NdArray x = Dense.random(rnd, DType.F32, 2, 5, 32);
    NaiveCs336 n = naive(Eager.stateDict(ffn));
    check("SwiGlu", perSequence(x, s -> n.swiGlu(s, "")), new long[] {2, 5, 32}, () -> ffn.apply(x));
  }

  @Test
  void rope() {
    Rope rope = Eager.init(Rope.class, CONFIG, 3);
    assertEquals(THETA, rope.theta());
    NdArray x = Dense.random(rnd, DType.F32, 2, 3, 5, 8); // [b, h, s, d_head]
    long[] pos = {4, 5, 6, 7, 8};
    NaiveCs336 n = naive(Map.of());
    double[] v = x.toDoubleArray();
    double[] expected = new double[v.length];
    for (int bh = 0; bh < 6; bh++) {
      double[][] head = new double[5][8];
      for (int s = 0; s < 5; s++) {
        System.arraycopy(v, (bh * 5 + s) * 8, head[s], 0, 8);
      }
      n.rope(head, pos);
      for (int s = 0; s < 5; s++) {
        System.arraycopy(head[s], 0, expected, (bh * 5 + s) * 8, 8);
      }
    }
    check("Rope", expected, x.shape(), () -> rope.apply(x, NdArray.fromLongs(pos)));
  }

  @Test
  void causalMultiHeadSelfAttention() {
    MultiHeadSelfAttention attn = Eager.init(MultiHeadSelfAttention.class, CONFIG, 4);
    NdArray x = Dense.random(rnd, DType.F32, 2, 6, 32);
    long[] pos = {0, 1, 2, 3, 4, 5};
    NaiveCs336 n = naive(Eager.stateDict(attn));
    check("MultiHeadSelfAttention", perSequence(x, s -> n.attention(s, pos, "")), new long[] {2, 6, 32},
        () -> attn.apply(x, NdArray.fromLongs(pos)));
  }

  @Test
  void preNormBlock() {
    TransformerBlock init = Eager.init(TransformerBlock.class, CONFIG, 5);
    Map<String, NdArray> sd = randomGains(Eager.stateDict(init));
    TransformerBlock block = Eager.load(TransformerBlock.class, CONFIG, sd);
    NdArray x = Dense.random(rnd, DType.F32, 2, 6, 32);
    long[] pos = {2, 3, 4, 5, 6, 7};
    NaiveCs336 n = naive(sd);
    check("TransformerBlock", perSequence(x, s -> n.block(s, pos, "")), new long[] {2, 6, 32},
        () -> block.apply(x, NdArray.fromLongs(pos)));
  }

  @Test
  void tinyTransformerLmAndItsLoss() {
    TransformerLm init = Eager.init(TransformerLm.class, CONFIG, 6);
    Map<String, NdArray> sd = randomGains(Eager.stateDict(init));
    TransformerLm lm = Eager.load(TransformerLm.class, CONFIG, sd);
    NdArray tokens = Dense.randomIds(rnd, 40, 2, 7);
    NdArray targets = Dense.randomIds(rnd, 40, 2, 7);
    NdArray positions = NdArray.arange(DType.I64, 7);
    long[] pos = positions.toLongArray();
    NaiveCs336 n = naive(sd);
    long[] tv = tokens.toLongArray();
    long[] gv = targets.toLongArray();
    double[][][] logits = new double[2][][];
    double loss = 0;
    for (int b = 0; b < 2; b++) {
      long[] seq = java.util.Arrays.copyOfRange(tv, b * 7, b * 7 + 7);
      logits[b] = n.lm(seq, pos, 2);
      loss += NaiveCs336.crossEntropy(logits[b], java.util.Arrays.copyOfRange(gv, b * 7, b * 7 + 7)) / 2;
    }
    check("TransformerLm", NaiveCs336.flatten(logits), new long[] {2, 7, 40}, () -> lm.apply(tokens, positions));
    double expectedLoss = loss;
    check("TransformerLm.loss", new double[] {expectedLoss}, new long[0], () -> lm.loss(tokens, positions, targets));
    assertArrayEquals(new long[0], lm.loss(tokens, positions, targets).shape());
  }
}
