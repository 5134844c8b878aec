package dev.kiln.processor.gen;

import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Context;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every CS336 module and every primitive fixture ({@code prims/}) compiled by the processor and run on the CPU device: generated forward equals the eager
 * interpreter's forward, and generated backward equals central differences of the eager forward, in float64, on
 * shapes drawn at random per case.
 */
class GeneratedModulesTest {
  /** A module, a config, and inputs made from a random source. */
  record Case(String name, String module, String eagerMethod, String forward, String backward,
      Map<String, Object> config, java.util.function.Function<Random, Object[]> inputs, boolean[] differentiable) {
    @Override
    public String toString() {
      return name;
    }
  }

  private static final double EPS = 1e-5;

  static Stream<Arguments> cases() {
    Random shapes = new Random(20240611);
    int b = 1 + shapes.nextInt(2);
    int s = 2 + shapes.nextInt(3);
    List<Case> cs = List.of(
        new Case("Linear", "cs336.Linear", "apply", "forward", "backward", Map.of("d_in", 3, "d_out", 5),
            r -> new Object[] {Harness.random(r, b, s, 3)}, new boolean[] {true}),
        new Case("Embedding", "cs336.Embedding", "apply", "forward", "backward", Map.of("vocab_size", 7, "d_model", 4),
            r -> new Object[] {Harness.ints(r, 7, b, s)}, new boolean[] {false}),
        new Case("RmsNorm", "cs336.RmsNorm", "apply", "forward", "backward", Map.of("d_model", 6, "eps", EPS),
            r -> new Object[] {Harness.random(r, b, s, 6)}, new boolean[] {true}),
        new Case("SwiGlu", "cs336.SwiGlu", "apply", "forward", "backward", Map.of("d_model", 4, "d_ff", 6),
            r -> new Object[] {Harness.random(r, b, s, 4)}, new boolean[] {true}),
        new Case("Rope", "cs336.Rope", "apply", "forward", "backward", Map.of("rope_theta", 10000.0),
            r -> new Object[] {Harness.random(r, b, s, 4), Harness.arange(s)}, new boolean[] {true, false}),
        new Case("MultiHeadSelfAttention", "cs336.MultiHeadSelfAttention", "apply", "forward", "backward",
            Map.of("d_model", 8, "num_heads", 2, "rope_theta", 10000.0),
            r -> new Object[] {Harness.random(r, b, s, 8), Harness.arange(s)}, new boolean[] {true, false}),
        new Case("RotaryAttention", "cs336.RotaryAttention", "apply", "forward", "backward",
            Map.of("d_model", 8, "num_heads", 2, "rope_theta", 10000.0),
            r -> new Object[] {Harness.random(r, b, s, 8), Harness.arange(s)}, new boolean[] {true, false}),
        new Case("TransformerBlock", "cs336.TransformerBlock", "apply", "forward", "backward",
            Map.of("d_model", 8, "num_heads", 2, "d_ff", 12, "eps", EPS, "rope_theta", 10000.0),
            r -> new Object[] {Harness.random(r, b, s, 8), Harness.arange(s)}, new boolean[] {true, false}),
        new Case("TransformerLm", "cs336.TransformerLm", "apply", "forward", "backward", lmConfig(),
            r -> new Object[] {Harness.ints(r, 11, b, s), Harness.arange(s)}, new boolean[] {false, false}),
        new Case("TransformerLm.loss", "cs336.TransformerLm", "loss", "loss", "lossBackward", lmConfig(),
            r -> new Object[] {Harness.ints(r, 11, b, s), Harness.arange(s), Harness.ints(r, 11, b, s)},
            new boolean[] {false, false, false}),
        new Case("Mlp(relu)", "cs336.Mlp", "apply", "forward", "backward", mlpConfig("RELU"),
            r -> new Object[] {Harness.random(r, b, s, 4)}, new boolean[] {true}),
        new Case("Mlp(gelu)", "cs336.Mlp", "apply", "forward", "backward", mlpConfig("GELU"),
            r -> new Object[] {Harness.random(r, b, s, 4)}, new boolean[] {true}),
        new Case("Mlp.loss", "cs336.Mlp", "loss", "loss", "lossBackward", mlpConfig("GELU"),
            r -> new Object[] {Harness.random(r, 5, 4), Harness.ints(r, 3, 5)}, new boolean[] {true, false}),
        new Case("Pointwise", "prims.Pointwise", "apply", "forward", "backward", Map.of("d", 5),
            r -> new Object[] {Harness.random(r, b + 1, 5)}, new boolean[] {true}),
        new Case("Einops", "prims.Einops", "apply", "forward", "backward", Map.of("d", 3, "e", 4),
            r -> new Object[] {Harness.random(r, b, s, 3)}, new boolean[] {true}),
        new Case("Selection(relu)", "prims.Selection", "apply", "forward", "backward",
            Map.of("d", 5, "rectify", true), r -> new Object[] {Harness.random(r, b + 1, 5)}, new boolean[] {true}),
        new Case("Selection", "prims.Selection", "apply", "forward", "backward", Map.of("d", 5, "rectify", false),
            r -> new Object[] {Harness.random(r, b + 1, 5)}, new boolean[] {true}),
        new Case("RepeatBranch(residual)", "prims.RepeatBranch", "apply", "forward", "backward",
            Map.of("n", 3, "d_model", 6, "eps", EPS, "residual", true),
            r -> new Object[] {Harness.random(r, b + 1, 6)}, new boolean[] {true}),
        new Case("RepeatBranch", "prims.RepeatBranch", "apply", "forward", "backward",
            Map.of("n", 2, "d_model", 6, "eps", EPS, "residual", false),
            r -> new Object[] {Harness.random(r, b + 1, 6)}, new boolean[] {true}),
        new Case("Heads(gained, twice)", "dev.kiln.fixture.Heads", "apply", "forward", "backward",
            Map.of("d", 8, "heads", 2, "mode", "GAINED", "twice", true),
            r -> new Object[] {Harness.random(r, b, s, 8), Harness.arange(s)}, new boolean[] {true, false}),
        new Case("Heads(plain)", "dev.kiln.fixture.Heads", "apply", "forward", "backward",
            Map.of("d", 8, "heads", 2, "mode", "PLAIN", "twice", false),
            r -> new Object[] {Harness.random(r, b, s, 8), Harness.arange(s)}, new boolean[] {true, false}));
    return cs.stream().map(Arguments::of);
  }

  static Map<String, Object> lmConfig() {
    return Map.of("vocab_size", 11, "d_model", 8, "num_layers", 2, "num_heads", 2, "d_ff", 12, "eps", EPS,
        "rope_theta", 10000.0);
  }

  static Map<String, Object> mlpConfig(String activation) {
    return Map.of("d_in", 4, "d_hidden", 6, "classes", 3, "activation", activation);
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("cases")
  void initEqualsEagerInit(Case c) {
    Harness h = new Harness(Generated.cs336(), c.module(), c.config(), 17, DType.F64);
    @SuppressWarnings("unchecked")
    Record eager = dev.kiln.runtime.eager.Eager.init((Class<Record>) h.params.getClass(), c.config(), 17, DType.F64);
    Map<String, Tensor> mine = h.stateDict(h.params);
    Map<String, dev.kiln.runtime.tensor.NdArray> theirs = dev.kiln.runtime.eager.Eager.stateDict(eager);
    assertTrue(mine.keySet().equals(theirs.keySet()), mine.keySet() + " vs " + theirs.keySet());
    for (var e : mine.entrySet()) {
      // The same Philox stream per key on the same device code path: bit for bit.
      assertTrue(Harness.maxAbsDiff(e.getValue(), theirs.get(e.getKey())) == 0, c + ": " + e.getKey());
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("cases")
  void forwardEqualsEager(Case c) {
    Harness h = new Harness(Generated.cs336(), c.module(), c.config(), 7, DType.F64);
    Object[] in = c.inputs().apply(new Random(1));
    Tensor generated = h.forward(c.forward(), new Context(), in);
    Tensor eager = h.eager(c.eagerMethod(), in);
    // Both compute in float64 from the same parameters; they differ only in the order of additions (BLAS blocking,
    // fused kernels), a few ulps of the largest magnitude.
    double err = Harness.maxAbsDiff(generated, eager);
    assertTrue(err <= 1e-12 * Math.max(1, Harness.maxAbs(eager)), c + ": generated forward differs from eager by " + err);
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("cases")
  void backwardEqualsFiniteDifferences(Case c) {
    Harness h = new Harness(Generated.cs336(), c.module(), c.config(), 11, DType.F64);
    Random r = new Random(3);
    Object[] in = c.inputs().apply(r);
    // Central differences with h = 1e-5 in float64 are exact to about h² ≈ 1e-10 relative (plus rounding of order
    // 1e-16 / h ≈ 1e-11), far below the 1e-6 the generated gradient must meet.
    for (Harness.Check k : h.gradientCheck(c.eagerMethod(), c.forward(), c.backward(), in, c.differentiable(), r, 12)) {
      assertTrue(k.relativeError() < 1e-6, c + ": gradient of " + k.name() + " has relative error " + k.relativeError());
    }
  }
}
