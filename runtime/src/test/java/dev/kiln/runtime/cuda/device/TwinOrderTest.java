package dev.kiln.runtime.cuda.device;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The bf16 twins' layout (no GPU needed): same-shaped parameters of one module end to end, in declaration order, so
 * that the stacked GEMMs find SwiGLU's w1 and w3 (around w2) as rows of one matrix, and q, k, v as declared.
 */
class TwinOrderTest {
  private record Shaped(long... shape) implements Tensor {
    @Override
    public DType dtype() {
      return DType.F32;
    }
  }

  @Test
  void sameShapedSiblingsLieEndToEnd() {
    Map<String, Tensor> dict = new LinkedHashMap<>();
    dict.put("token_embeddings.weight", new Shaped(100, 16));
    dict.put("layers.0.ln1.weight", new Shaped(16));
    dict.put("layers.0.attn.q_proj.weight", new Shaped(16, 16));
    dict.put("layers.0.attn.k_proj.weight", new Shaped(16, 16));
    dict.put("layers.0.attn.v_proj.weight", new Shaped(16, 16));
    dict.put("layers.0.attn.output_proj.weight", new Shaped(16, 16));
    dict.put("layers.0.ln2.weight", new Shaped(16));
    dict.put("layers.0.ffn.w1.weight", new Shaped(48, 16));
    dict.put("layers.0.ffn.w2.weight", new Shaped(16, 48));
    dict.put("layers.0.ffn.w3.weight", new Shaped(48, 16));
    dict.put("layers.1.ffn.w1.weight", new Shaped(48, 16));
    dict.put("layers.1.ffn.w2.weight", new Shaped(16, 48));
    dict.put("layers.1.ffn.w3.weight", new Shaped(48, 16));
    dict.put("ln_final.weight", new Shaped(16));
    dict.put("lm_head.weight", new Shaped(100, 16));
    assertEquals(List.of("token_embeddings.weight", "lm_head.weight", "layers.0.ln1.weight", "layers.0.ln2.weight",
        "layers.0.attn.q_proj.weight", "layers.0.attn.k_proj.weight", "layers.0.attn.v_proj.weight",
        "layers.0.attn.output_proj.weight", "layers.0.ffn.w1.weight", "layers.0.ffn.w3.weight",
        "layers.0.ffn.w2.weight", "layers.1.ffn.w1.weight", "layers.1.ffn.w3.weight", "layers.1.ffn.w2.weight",
        "ln_final.weight"), CudaModelDevice.twinOrder(dict));
  }

  @Test
  void anFfnOfEqualWidthsKeepsItsOrder() {
    // d_ff = d_model: w2 has w1's shape too, and follows it as declared; w1 and w3 are then not end to end, and
    // the device runs their GEMMs one by one (stackedOperands finds no stack).
    Map<String, Tensor> dict = new LinkedHashMap<>();
    dict.put("ffn.w1.weight", new Shaped(16, 16));
    dict.put("ffn.w2.weight", new Shaped(16, 16));
    dict.put("ffn.w3.weight", new Shaped(16, 16));
    assertEquals(List.copyOf(dict.keySet()), CudaModelDevice.twinOrder(dict));
  }
}
