package dev.kiln.runtime.infer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.eager.Eager;
import dev.kiln.runtime.eager.cs336.TransformerLm;
import dev.kiln.runtime.io.Json;
import dev.kiln.runtime.io.Safetensors;
import dev.kiln.runtime.io.SafetensorsFile;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * {@link TransformerLmEngine#forwardAll} against independent oracles: the eager interpreter running the CS336
 * {@code TransformerLm} record (test sources of the eager package) and PyTorch fixtures written by
 * {@code scripts/reference/cs336_block_reference.py} (the CS336 tiny LM, and one tiny LM per architecture variant).
 * Every fixture is also decoded with the cache, token by token.
 *
 * <p>Tolerance 1e-5 relative to max(1, |logit|), the project's float32 bar: the engine computes in float32 (norm
 * statistics and RoPE angles in double) and the oracles are PyTorch float32 (other op order), PyTorch float64 and
 * the eager interpreter in float64. Measured worst: 8.8e-7 against eager F64, 1.3e-6 against the CS336 fixture,
 * 3.5e-6 over the variants (no_norm, whose activations grow unnormalised; the others stay below 2.5e-6).
 */
class TransformerLmReferenceTest {
  static final double TOL = 1e-5;

  private static Path resource(String name) throws Exception {
    return Path.of(TransformerLmReferenceTest.class.getResource("/reference/" + name).toURI());
  }

  private static Map<String, NdArray> weights(SafetensorsFile f) {
    Map<String, NdArray> sd = new LinkedHashMap<>();
    for (String n : f.names()) {
      if (!n.startsWith("input.") && !n.startsWith("output.") && !n.startsWith("grad.")) {
        sd.put(n, f.get(n));
      }
    }
    return sd;
  }

  private static int[] row(NdArray tokens, int b) {
    long[] ids = tokens.select(0, b).toLongArray();
    int[] out = new int[ids.length];
    for (int i = 0; i < ids.length; i++) {
      out[i] = Math.toIntExact(ids[i]);
    }
    return out;
  }

  @Test
  void defaultConfigMatchesTheEagerInterpreterInFloat64() {
    Map<String, Object> cfg = Map.of("vocab_size", 53, "d_model", 32, "num_layers", 3, "num_heads", 4, "d_ff", 40,
        "rope_theta", 10_000.0, "eps", 1e-5);
    TransformerLm lm = Eager.init(TransformerLm.class, cfg, 21);
    // Eager.init draws norm gains as ones; random gains make the final and block norms matter.
    Map<String, NdArray> sd = new LinkedHashMap<>(Eager.stateDict(lm));
    Random rnd = new Random(4);
    for (String n : sd.keySet()) {
      if (n.contains("ln")) {
        NdArray g = sd.get(n).copy();
        for (long i = 0; i < g.numel(); i++) {
          g.setDouble(1 + 0.3 * rnd.nextGaussian(), i);
        }
        sd.put(n, g);
      }
    }
    lm = Eager.load(TransformerLm.class, cfg, sd);
    ModelConfig c = TinyLms.cs336(53, 20, 32, 3, 4, 40);
    TransformerLmEngine engine = TransformerLmEngine.load(c, sd, "eager state dict");
    int[] ids = rnd.ints(20, 0, 53).toArray();
    long[] tokens = new long[ids.length];
    for (int i = 0; i < ids.length; i++) {
      tokens[i] = ids[i];
    }
    NdArray expected;
    try (Eager.Scope s = Eager.precision(DType.F64)) {
      expected = (NdArray) lm.apply(NdArray.fromLongs(tokens, 1, ids.length), NdArray.arange(DType.I64, ids.length));
    }
    double worst = TinyLms.assertClose(expected.select(0, 0), engine.forwardAll(ids), TOL, "eager F64 vs engine");
    TransformerLmEngineTest.checkCachedEqualsFull(engine, ids, 5, "eager config");
    System.out.printf("engine vs eager F64: worst relative error %.1e%n", worst);
  }

  @Test
  void cs336TinyLmMatchesPyTorch() throws Exception {
    try (SafetensorsFile f = Safetensors.open(resource("cs336_lm.safetensors"))) {
      Map<String, Object> cfg = Json.parseObject(f.metadata().get("config"));
      NdArray tokens = f.get("input.tokens");
      int seq = (int) tokens.shape(1);
      ModelConfig c = TinyLms.cs336(((Number) cfg.get("vocab_size")).intValue(), seq,
          ((Number) cfg.get("d_model")).intValue(), ((Number) cfg.get("num_layers")).intValue(),
          ((Number) cfg.get("num_heads")).intValue(), ((Number) cfg.get("d_ff")).intValue());
      TransformerLmEngine engine = TransformerLmEngine.load(c, weights(f), "cs336_lm.safetensors");
      NdArray logits = f.get("output.logits_f32");
      double worst = 0;
      for (int b = 0; b < tokens.shape(0); b++) {
        worst = Math.max(worst, TinyLms.assertClose(logits.select(0, b), engine.forwardAll(row(tokens, b)), TOL,
            "cs336_lm batch row " + b));
        TransformerLmEngineTest.checkCachedEqualsFull(engine, row(tokens, b), 3, "cs336_lm cached, row " + b);
      }
      System.out.printf("engine vs PyTorch cs336_lm f32: worst relative error %.1e%n", worst);
    }
  }

  @Test
  void everyVariantMatchesPyTorch() throws Exception {
    List<Path> fixtures;
    try (Stream<Path> s = Files.list(resource("lm_variants"))) {
      fixtures = s.filter(p -> p.toString().endsWith(".safetensors")).sorted().toList();
    }
    assertEquals(13, fixtures.size(), "fixtures in lm_variants: " + fixtures);
    StringBuilder report = new StringBuilder();
    for (Path p : fixtures) {
      String name = p.getFileName().toString();
      try (SafetensorsFile f = Safetensors.open(p)) {
        ModelConfig c = ModelFolder.configFromTree(Json.parseObject(f.metadata().get("config")), name);
        TransformerLmEngine engine = TransformerLmEngine.load(c, weights(f), name);
        int[] ids = row(f.get("input.tokens"), 0);
        NdArray ours = engine.forwardAll(ids);
        double w32 = TinyLms.assertClose(f.get("output.logits_f32").select(0, 0), ours, TOL, name + " vs torch f32");
        double w64 = TinyLms.assertClose(f.get("output.logits_f64").select(0, 0), ours, TOL, name + " vs torch f64");
        TransformerLmEngineTest.checkCachedEqualsFull(engine, ids, 2, name + " cached");
        report.append(String.format("%s %.1e/%.1e  ", name, w32, w64));
      }
    }
    assertTrue(report.length() > 0, report.toString());
    System.out.println("variants vs torch f32/f64: " + report);
  }
}
