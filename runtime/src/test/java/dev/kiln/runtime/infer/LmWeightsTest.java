package dev.kiln.runtime.infer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.ModelConfig.Ffn;
import dev.kiln.runtime.train.ModelConfig.NormPlacement;
import dev.kiln.runtime.train.ModelConfig.NormType;
import dev.kiln.runtime.train.ModelConfig.Positions;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** State-dict names and shapes per variant, and the messages for state dicts that do not fit. */
class LmWeightsTest {
  private static final ModelConfig CS336 = TinyLms.cs336(10, 6, 8, 2, 2, 12);

  @Test
  void cs336NamesAndShapes() {
    Map<String, long[]> s = LmWeights.expectedShapes(CS336);
    assertEquals(List.of("token_embeddings.weight", "layers.0.ln1.weight", "layers.0.attn.q_proj.weight",
        "layers.0.attn.k_proj.weight", "layers.0.attn.v_proj.weight", "layers.0.attn.output_proj.weight",
        "layers.0.ln2.weight", "layers.0.ffn.w1.weight", "layers.0.ffn.w2.weight", "layers.0.ffn.w3.weight",
        "layers.1.ln1.weight", "layers.1.attn.q_proj.weight", "layers.1.attn.k_proj.weight",
        "layers.1.attn.v_proj.weight", "layers.1.attn.output_proj.weight", "layers.1.ln2.weight",
        "layers.1.ffn.w1.weight", "layers.1.ffn.w2.weight", "layers.1.ffn.w3.weight", "ln_final.weight",
        "lm_head.weight"), List.copyOf(s.keySet()));
    assertArrayEquals(new long[] {10, 8}, s.get("token_embeddings.weight"));
    assertArrayEquals(new long[] {12, 8}, s.get("layers.1.ffn.w1.weight"));
    assertArrayEquals(new long[] {8, 12}, s.get("layers.1.ffn.w2.weight"));
    assertArrayEquals(new long[] {8}, s.get("ln_final.weight"));
  }

  @Test
  void variantNamesAndShapes() {
    ModelConfig c = TinyLms.config(10, 6, 8, 1, 2, 12, NormPlacement.POST, NormType.LAYERNORM, Ffn.GELU,
        Positions.LEARNED, true, true);
    Map<String, long[]> s = LmWeights.expectedShapes(c);
    assertEquals(List.of("token_embeddings.weight", "position_embeddings.weight", "layers.0.ln1.weight",
        "layers.0.ln1.bias", "layers.0.attn.q_proj.weight", "layers.0.attn.k_proj.weight",
        "layers.0.attn.v_proj.weight", "layers.0.attn.output_proj.weight", "layers.0.attn.q_norm.weight",
        "layers.0.attn.q_norm.bias", "layers.0.attn.k_norm.weight", "layers.0.attn.k_norm.bias",
        "layers.0.ln2.weight", "layers.0.ln2.bias", "layers.0.ffn.w1.weight", "layers.0.ffn.w2.weight",
        "ln_final.weight", "ln_final.bias"), List.copyOf(s.keySet()));
    assertArrayEquals(new long[] {6, 8}, s.get("position_embeddings.weight"));
    assertArrayEquals(new long[] {4}, s.get("layers.0.attn.q_norm.weight"));
    ModelConfig none = TinyLms.config(10, 6, 8, 1, 2, 12, NormPlacement.NONE, NormType.RMSNORM, Ffn.RELU,
        Positions.NOPE, false, false);
    assertEquals(List.of("token_embeddings.weight", "layers.0.attn.q_proj.weight", "layers.0.attn.k_proj.weight",
        "layers.0.attn.v_proj.weight", "layers.0.attn.output_proj.weight", "layers.0.ffn.w1.weight",
        "layers.0.ffn.w2.weight", "lm_head.weight"), List.copyOf(LmWeights.expectedShapes(none).keySet()));
  }

  @Test
  void everyMissingExtraAndMisshapenTensorIsNamed() {
    Map<String, NdArray> sd = new LinkedHashMap<>(TinyLms.randomWeights(CS336, 1));
    sd.remove("layers.1.attn.k_proj.weight");
    sd.put("layers.0.ffn.w2.weight", NdArray.zeros(DType.F32, 12, 8));
    sd.put("layers.0.ln1.bias", NdArray.zeros(DType.F32, 8));
    sd.put("rotary.inv_freq", NdArray.zeros(DType.F32, 2));
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> LmWeights.from(CS336, sd, "model.safetensors"));
    String m = e.getMessage();
    assertTrue(m.startsWith("model.safetensors: the weights do not fit the model config (norm_placement pre, norm"
        + " rmsnorm, ffn swiglu, positions rope, tied_embeddings false, qk_norm false); 4 problems:"), m);
    assertTrue(m.contains("missing tensor layers.1.attn.k_proj.weight [8, 8]"), m);
    assertTrue(m.contains("tensor layers.0.ffn.w2.weight has shape [12, 8], expected [8, 12]"), m);
    assertTrue(m.contains("unexpected tensor layers.0.ln1.bias [8] (RMSNorm has no bias"), m);
    assertTrue(m.contains("unexpected tensor rotary.inv_freq [2]"), m);
  }

  @Test
  void tyingMismatchesGetAHint() {
    ModelConfig tied = TinyLms.config(10, 6, 8, 1, 2, 12, NormPlacement.PRE, NormType.RMSNORM, Ffn.SWIGLU,
        Positions.ROPE, true, false);
    Map<String, NdArray> untiedWeights = TinyLms.randomWeights(TinyLms.cs336(10, 6, 8, 1, 2, 12), 1);
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> LmWeights.from(tied, untiedWeights, "m"));
    assertTrue(e.getMessage().contains("unexpected tensor lm_head.weight [10, 8] (tied_embeddings is true"),
        e.getMessage());
    e = assertThrows(IllegalArgumentException.class,
        () -> LmWeights.from(TinyLms.cs336(10, 6, 8, 1, 2, 12), TinyLms.randomWeights(tied, 1), "m"));
    assertTrue(e.getMessage().contains("missing tensor lm_head.weight [10, 8] (if the model shares it with"
        + " token_embeddings.weight, set tied_embeddings: true)"), e.getMessage());
  }

  @Test
  void otherFloatDtypesAreConvertedAndIntegersRefused() {
    Map<String, NdArray> f32 = TinyLms.randomWeights(CS336, 2);
    Map<String, NdArray> bf16 = new LinkedHashMap<>();
    Map<String, NdArray> roundTripped = new LinkedHashMap<>();
    f32.forEach((n, a) -> {
      bf16.put(n, a.to(DType.BF16));
      roundTripped.put(n, a.to(DType.BF16).to(DType.F32));
    });
    int[] ids = {1, 2, 3, 4};
    // BF16 -> F32 is exact, so the two engines must agree bit for bit.
    assertArrayEquals(TransformerLmEngine.load(CS336, roundTripped, "f32").forwardAll(ids).toFloatArray(),
        TransformerLmEngine.load(CS336, bf16, "bf16").forwardAll(ids).toFloatArray());
    Map<String, NdArray> ints = new LinkedHashMap<>(f32);
    ints.put("ln_final.weight", NdArray.zeros(DType.I32, 8));
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LmWeights.from(CS336, ints, "m"));
    assertTrue(e.getMessage().contains("tensor ln_final.weight has dtype I32; weights must be F32, F64, BF16 or F16"),
        e.getMessage());
  }
}
