package dev.kiln.models.cs336;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Context;
import dev.kiln.runtime.cpu.device.CpuDevice;
import dev.kiln.runtime.eager.Eager;
import dev.kiln.runtime.eager.GradCheck;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.train.CompiledModel;
import dev.kiln.runtime.train.LmModule;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.ModelConfig.Ffn;
import dev.kiln.runtime.train.ModelConfig.NormPlacement;
import dev.kiln.runtime.train.ModelConfig.NormType;
import dev.kiln.runtime.train.ModelConfig.Positions;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The CS336 Transformer LM in every variant, compiled by Kiln's processor and run on the CPU device in float64: the
 * generated forward and loss equal the eager interpreter's, and the generated backward equals central finite
 * differences of the eager loss ({@link GradCheck}), through the training adapter ({@link CompiledModel}, so the
 * state-dict names and the tied-embedding gradient sum are checked too). Parameters the variant never reads get
 * exactly zero gradient.
 */
class TransformerLmVariantsTest {
  /** A named variant of the tiny config. */
  record Variant(String name, ModelConfig config) {
    @Override
    public String toString() {
      return name;
    }
  }

  static ModelConfig tiny(int layers, NormPlacement placement, NormType norm, Ffn ffn, Positions positions,
      boolean tied, boolean qkNorm, double zLoss) {
    // vocab 7, context 4, d_model 8, 2 heads of width 4, d_ff 8: few enough parameters for finite differences (two
    // eager forwards each); heads of width 4, not 2, because a LayerNorm over two numbers (QK-norm) is ±1 whatever
    // they are, and its gradients are then all rounding noise. One layer for the single variants (they change the
    // block, not the stack; ~1 s each), two for CS336's model and the combinations, so the layer loop's backward
    // is checked too.
    return new ModelConfig(7, 4, 8, layers, 2, 8, 10_000.0, placement, norm, 1e-5, ffn, positions, tied, qkNorm,
        zLoss);
  }

  static Stream<Variant> variants() {
    NormPlacement pre = NormPlacement.PRE;
    NormType rms = NormType.RMSNORM;
    Ffn swiglu = Ffn.SWIGLU;
    Positions rope = Positions.ROPE;
    return Stream.of(
        new Variant("cs336", tiny(2, pre, rms, swiglu, rope, false, false, 0)),
        new Variant("post_norm", tiny(1, NormPlacement.POST, rms, swiglu, rope, false, false, 0)),
        new Variant("no_norm", tiny(1, NormPlacement.NONE, rms, swiglu, rope, false, false, 0)),
        new Variant("layernorm", tiny(1, pre, NormType.LAYERNORM, swiglu, rope, false, false, 0)),
        new Variant("silu", tiny(1, pre, rms, Ffn.SILU, rope, false, false, 0)),
        new Variant("gelu", tiny(1, pre, rms, Ffn.GELU, rope, false, false, 0)),
        new Variant("relu", tiny(1, pre, rms, Ffn.RELU, rope, false, false, 0)),
        new Variant("squared_relu", tiny(1, pre, rms, Ffn.SQUARED_RELU, rope, false, false, 0)),
        new Variant("nope", tiny(1, pre, rms, swiglu, Positions.NOPE, false, false, 0)),
        new Variant("learned_positions", tiny(1, pre, rms, swiglu, Positions.LEARNED, false, false, 0)),
        new Variant("tied_embeddings", tiny(1, pre, rms, swiglu, rope, true, false, 0)),
        new Variant("qk_norm", tiny(1, pre, rms, swiglu, rope, false, true, 0)),
        new Variant("z_loss", tiny(1, pre, rms, swiglu, rope, false, false, 1e-2)),
        new Variant("post_layernorm_gelu_learned_tied_qk_zloss",
            tiny(2, NormPlacement.POST, NormType.LAYERNORM, Ffn.GELU, Positions.LEARNED, true, true, 0.5)),
        new Variant("none_squared_relu_nope_qk_layernorm",
            tiny(2, NormPlacement.NONE, NormType.LAYERNORM, Ffn.SQUARED_RELU, Positions.NOPE, false, true, 0)));
  }

  private static final int BATCH = 2;
  private static final int SEQ = 4;

  /** The model of {@code c} in float64, with norm gains and biases moved off 1 and 0 so they matter. */
  static TransformerLm model(ModelConfig c, long seed) {
    TransformerLm lm = Eager.init(TransformerLm.class, LmModule.moduleConfig(c), seed, DType.F64);
    Rng rng = new Rng(seed + 1);
    for (Map.Entry<String, NdArray> e : Eager.stateDict(lm).entrySet()) {
      String k = e.getKey();
      if (k.contains("ln") || k.contains("_norm.")) {
        NdArray noise = NdArray.zeros(DType.F64, e.getValue().shape());
        rng.normal(noise, 0, 0.3);
        dev.kiln.runtime.cpu.Elementwise.addInto(e.getValue(), noise);
      }
    }
    return c.tiedEmbeddings() ? lm.withTiedEmbeddings() : lm;
  }

  static NdArray ids(Rng rng, int vocab) {
    NdArray a = NdArray.zeros(DType.I64, BATCH, SEQ);
    rng.integers(a, 0, vocab);
    return a;
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("variants")
  void compiledForwardAndLossEqualEager(Variant v) {
    ModelConfig c = v.config();
    TransformerLm lm = model(c, 11);
    Rng rng = new Rng(5);
    NdArray tokens = ids(rng, c.vocabSize());
    NdArray targets = ids(rng, c.vocabSize());
    NdArray positions = NdArray.arange(DType.I64, SEQ);
    var compiled = new CompiledTransformerLm(new CpuDevice(), DType.F64);

    NdArray logits = (NdArray) compiled.forward(new Context(), lm, tokens, positions);
    double loss = ((NdArray) compiled.loss(new Context(), lm, tokens, positions, targets)).item();
    NdArray eagerLogits;
    double eagerLoss;
    try (var f64 = Eager.precision(DType.F64)) {
      eagerLogits = (NdArray) lm.apply(tokens, positions);
      eagerLoss = ((NdArray) lm.loss(tokens, positions, targets)).item();
    }
    assertEquals(List.of(BATCH, SEQ, c.vocabSize()), shape(logits));
    // Both compute in float64; they differ only in the order of sums (GEMM blocking, fused row kernels, blocked
    // attention): 1e-12 relative to the largest logit leaves room for that and nothing else.
    double scale = maxAbs(eagerLogits);
    assertTrue(maxAbsDiff(logits, eagerLogits) <= 1e-12 * scale, v + ": logits differ by "
        + maxAbsDiff(logits, eagerLogits) + " (largest logit " + scale + ")");
    assertEquals(eagerLoss, loss, 1e-12 * Math.abs(eagerLoss), v + ": loss");
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("variants")
  void compiledBackwardEqualsFiniteDifferences(Variant v) {
    ModelConfig c = v.config();
    Map<String, Object> moduleConfig = LmModule.moduleConfig(c);
    TransformerLm lm = model(c, 23);
    Rng rng = new Rng(7);
    NdArray tokens = ids(rng, c.vocabSize());
    NdArray targets = ids(rng, c.vocabSize());
    NdArray positions = NdArray.arange(DType.I64, SEQ);
    var compiled = new CompiledTransformerLm(new CpuDevice(), DType.F64);
    Map<String, String> names = LmModule.names(c, compiled.stateDict(lm).keySet());
    var model = new CompiledModel<>(program(compiled, positions), lm, names);
    CompiledModel.LossAndGradients lg = model.lossAndGradients(tokens, targets);

    // Parameters outside the variant's code path: exactly zero gradient (so leaving them out of the state dict loses
    // nothing).
    Context ctx = new Context();
    compiled.loss(ctx, lm, tokens, positions, targets);
    Map<String, Tensor> raw = compiled.stateDict(compiled.lossBackward(ctx, lm, NdArray.scalar(DType.F64, 1)).params());
    for (Map.Entry<String, Tensor> e : raw.entrySet()) {
      if (!names.containsKey(e.getKey())) {
        assertEquals(0.0, maxAbs((NdArray) e.getValue()), v + ": unused " + e.getKey() + " has a gradient");
      }
    }

    Map<String, NdArray> full = Eager.stateDict(lm);
    GradCheck.Result r = GradCheck.check(model.parameters().asMap(), x -> {
      Map<String, NdArray> sd = new LinkedHashMap<>(full);
      sd.putAll(x);
      if (c.tiedEmbeddings()) {
        sd.put("lm_head.weight", x.get("token_embeddings.weight"));
      }
      return Eager.load(TransformerLm.class, moduleConfig, sd).loss(tokens, positions, targets);
    }, lg.gradients());
    // Central differences with h = 1e-6 are good to ~1e-9 on this smooth loss; a wrong rule scores near 1.
    // Exception: the keys' QK-norm bias adds q·b to every score of a query, which the softmax ignores, so its true
    // gradient is zero and both sides are rounding noise (~1e-16 analytic, ~1e-10 numeric): held to that instead.
    for (String name : r.relativeErrors().keySet()) {
      if (name.endsWith("attn.k_norm.bias")) {
        assertTrue(r.maxAbsoluteErrors().get(name) < 1e-8 && maxAbs(lg.gradients().get(name)) < 1e-12,
            v + ": " + name + " should have zero gradient; analytic " + maxAbs(lg.gradients().get(name))
                + ", numeric differs by " + r.maxAbsoluteErrors().get(name));
      } else {
        assertTrue(r.relativeErrors().get(name) < 1e-6, v + ": " + name + " relative error "
            + r.relativeErrors().get(name) + " at " + r.worstElements().get(name));
      }
    }
    assertEquals(((NdArray) Eager.load(TransformerLm.class, moduleConfig, full).loss(tokens, positions, targets))
        .item(), lg.loss(), 1e-12, v + ": loss through the adapter");
  }

  static CompiledModel.Program<TransformerLm> program(CompiledTransformerLm m, Tensor positions) {
    return new CompiledModel.Program<>() {
      @Override
      public Tensor loss(Context ctx, TransformerLm params, Tensor inputs, Tensor targets) {
        return m.loss(ctx, params, inputs, positions, targets);
      }

      @Override
      public TransformerLm lossBackward(Context ctx, TransformerLm params, Tensor dLoss) {
        return m.lossBackward(ctx, params, dLoss).params();
      }

      @Override
      public Map<String, Tensor> stateDict(TransformerLm record) {
        return m.stateDict(record);
      }
    };
  }

  static List<Integer> shape(NdArray a) {
    return java.util.Arrays.stream(a.shape()).mapToObj(x -> (int) x).toList();
  }

  static double maxAbs(NdArray a) {
    double m = 0;
    for (double x : a.toDoubleArray()) {
      m = Math.max(m, Math.abs(x));
    }
    return m;
  }

  static double maxAbsDiff(NdArray a, NdArray b) {
    double[] x = a.toDoubleArray();
    double[] y = b.toDoubleArray();
    double m = 0;
    for (int i = 0; i < x.length; i++) {
      m = Math.max(m, Math.abs(x[i] - y[i]));
    }
    return m;
  }
}
