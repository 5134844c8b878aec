package dev.kiln.runtime.eager;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.runtime.eager.cs336.TransformerBlock;
import dev.kiln.runtime.eager.cs336.TransformerLm;
import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.io.Safetensors;
import dev.kiln.runtime.io.SafetensorsFile;
import dev.kiln.runtime.tensor.NdArray;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The eager interpreter against PyTorch: fixtures written by {@code scripts/reference/cs336_block_reference.py} (a
 * CS336 pre-norm block with RoPE, and a tiny Transformer LM with its loss and float64 gradients). The records load
 * the PyTorch state dict name for name.
 *
 * <p>Tolerances, relative to max(1, |y|): float32 1e-5 — two float32 computations of the same function in different
 * op orders (the design's float32 bar); float64 1e-10 — the same function in double, except that RmsNorm's
 * {@code float eps} component adds (double) 1e-5f where PyTorch adds 1e-5, a relative difference of 2.5e-8 in eps
 * that moves outputs by about 1e-13. Measured worst: float32 7.6e-7 (LM logits), float64 6e-13 (block).
 */
class Cs336TorchReferenceTest {

  private static SafetensorsFile fixture(String name) throws Exception {
    return Safetensors.open(Path.of(Cs336TorchReferenceTest.class.getResource("/reference/" + name).toURI()));
  }

  private static Map<String, Object> config(SafetensorsFile f) {
    return Json.parseObject(f.metadata().get("config"));
  }

  /** The weights: every tensor that is not an input, an output or a gradient. */
  private static Map<String, NdArray> weights(SafetensorsFile f) {
    Map<String, NdArray> sd = new LinkedHashMap<>();
    for (String n : f.names()) {
      if (!n.startsWith("input.") && !n.startsWith("output.") && !n.startsWith("grad.")) {
        sd.put(n, f.get(n));
      }
    }
    return sd;
  }

  @Test
  void preNormBlockWithRopeMatchesPyTorch() throws Exception {
    try (SafetensorsFile f = fixture("cs336_block.safetensors")) {
      TransformerBlock block = Eager.load(TransformerBlock.class, config(f), weights(f));
      NdArray x = f.get("input.x");
      NdArray positions = f.get("input.positions");
      Tensor y32 = block.apply(x, positions);
      assertEquals(DType.F32, y32.dtype());
      Dense.assertClose(Dense.of(f.get("output.y_f32")), y32, 1e-5, "block, float32");
      try (Eager.Scope s = Eager.precision(DType.F64)) {
        Dense.assertClose(Dense.of(f.get("output.y_f64")), block.apply(x, positions), 1e-10, "block, float64");
      }
    }
  }

  @Test
  void tinyLanguageModelLogitsLossAndGradientsMatchPyTorch() throws Exception {
    try (SafetensorsFile f = fixture("cs336_lm.safetensors")) {
      Map<String, Object> config = config(f);
      Map<String, NdArray> sd = weights(f);
      TransformerLm lm = Eager.load(TransformerLm.class, config, sd);
      NdArray tokens = f.get("input.tokens");
      NdArray positions = f.get("input.positions");
      NdArray targets = f.get("input.targets");
      Dense.assertClose(Dense.of(f.get("output.logits_f32")), lm.apply(tokens, positions), 1e-5, "logits, float32");
      Dense.assertClose(Dense.of(f.get("output.loss_f32")), lm.loss(tokens, positions, targets), 1e-5,
          "loss, float32");
      try (Eager.Scope s = Eager.precision(DType.F64)) {
        Dense.assertClose(Dense.of(f.get("output.loss_f64")), lm.loss(tokens, positions, targets), 1e-10,
            "loss, float64");
      }
      // PyTorch's float64 gradients agree with finite differences of the eager loss (a sample of three tensors,
      // to keep the test fast): the fixture's gradients are an oracle the backward tests can trust.
      Map<String, NdArray> wrt = new LinkedHashMap<>();
      Map<String, NdArray> analytic = new LinkedHashMap<>();
      for (String n : List.of("ln_final.weight", "layers.0.ln1.weight", "layers.1.ln2.weight")) {
        wrt.put(n, sd.get(n));
        analytic.put(n, f.get("grad." + n));
      }
      GradCheck.Result r = GradCheck.check(wrt, in -> {
        Map<String, NdArray> changed = new LinkedHashMap<>(sd);
        changed.putAll(in);
        return Eager.load(TransformerLm.class, config, changed).loss(tokens, positions, targets);
      }, analytic);
      r.assertBelow(1e-6);
    }
  }
}
