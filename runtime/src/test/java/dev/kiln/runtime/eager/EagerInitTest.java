package dev.kiln.runtime.eager;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.DType;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Sizes;
import dev.kiln.runtime.eager.cs336.Embedding;
import dev.kiln.runtime.eager.cs336.Linear;
import dev.kiln.runtime.eager.cs336.TransformerLm;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** {@link Eager#init}, {@link Eager#stateDict}, {@link Eager#load} and {@link Eager#parameters}. */
class EagerInitTest {
  static final Map<String, Object> CONFIG = Cs336EagerTest.CONFIG;

  /** The names and shapes CS336's TransformerLM state dict has (assignment 1), in declaration order. */
  @Test
  void stateDictHasTheCs336NamesAndShapes() {
    TransformerLm lm = Eager.init(TransformerLm.class, CONFIG, 0);
    Map<String, NdArray> sd = Eager.stateDict(lm);
    Map<String, long[]> expected = new LinkedHashMap<>();
    expected.put("token_embeddings.weight", new long[] {40, 32});
    for (int l = 0; l < 2; l++) {
      String p = "layers." + l + ".";
      expected.put(p + "ln1.weight", new long[] {32});
      for (String proj : List.of("q_proj", "k_proj", "v_proj", "output_proj")) {
        expected.put(p + "attn." + proj + ".weight", new long[] {32, 32});
      }
      expected.put(p + "ln2.weight", new long[] {32});
      expected.put(p + "ffn.w1.weight", new long[] {48, 32});
      expected.put(p + "ffn.w2.weight", new long[] {32, 48});
      expected.put(p + "ffn.w3.weight", new long[] {48, 32});
    }
    expected.put("ln_final.weight", new long[] {32});
    expected.put("lm_head.weight", new long[] {40, 32});
    assertEquals(new ArrayList<>(expected.keySet()), new ArrayList<>(sd.keySet()));
    for (String k : expected.keySet()) {
      assertArrayEquals(expected.get(k), sd.get(k).shape(), k);
      assertEquals(DType.F32, sd.get(k).dtype(), k);
    }
    assertSame(lm.lmHead().weight(), sd.get("lm_head.weight"), "the state dict holds the record's own arrays");
    List<Eager.ParamInfo> table = Eager.parameters(TransformerLm.class, CONFIG);
    assertEquals(new ArrayList<>(expected.keySet()), table.stream().map(Eager.ParamInfo::name).toList());
    assertEquals(Init.TRUNC_NORMAL_UNIT, table.get(0).init());
    assertEquals("d_out d_in", table.get(table.size() - 1).declaredShape());
  }

  /** Sample mean and standard deviation of a truncated normal against its known moments, and its bounds. */
  private static void truncatedNormal(NdArray w, double sigma, String what) {
    double[] v = w.toDoubleArray();
    int n = v.length;
    double mean = 0;
    double max = 0;
    for (double x : v) {
      mean += x;
      max = Math.max(max, Math.abs(x));
    }
    mean /= n;
    double var = 0;
    for (double x : v) {
      var += (x - mean) * (x - mean);
    }
    double std = Math.sqrt(var / (n - 1));
    // N(0, s^2) cut at +-3s has std s * sqrt(1 - 2*3*phi(3) / (2*Phi(3) - 1)) = 0.98658 s.
    double phi3 = Math.exp(-4.5) / Math.sqrt(2 * Math.PI);
    double truncatedStd = sigma * Math.sqrt(1 - 6 * phi3 / 0.9973002039367398);
    // Five standard errors: the mean's is std/sqrt(n); the std's is about std/sqrt(2n) (kurtosis just under 3).
    assertTrue(Math.abs(mean) < 5 * truncatedStd / Math.sqrt(n), what + ": mean " + mean);
    assertTrue(Math.abs(std - truncatedStd) < 5 * truncatedStd / Math.sqrt(2.0 * n),
        what + ": std " + std + ", expected " + truncatedStd);
    assertTrue(max <= 3 * sigma, what + ": |w| reaches " + max + " beyond 3 sigma = " + 3 * sigma);
    // With n >= 65536 draws, P(no |w| > 2.9 sigma) = (1 - 0.0011)^n < 1e-30.
    assertTrue(max > 2.9 * sigma, what + ": |w| only reaches " + max + "; the tails are missing");
  }

  @Test
  void initialisationHasTheCs336Statistics() {
    Linear lin = Eager.init(Linear.class, Map.of("d_in", 256, "d_out", 512), 11);
    truncatedNormal((NdArray) lin.weight(), Math.sqrt(2.0 / (256 + 512)), "Linear 512x256");
    Embedding emb = Eager.init(Embedding.class, Map.of("vocab_size", 1024, "d_model", 64), 12);
    truncatedNormal((NdArray) emb.weight(), 1, "Embedding 1024x64");
    TransformerLm lm = Eager.init(TransformerLm.class, CONFIG, 13);
    for (double g : ((NdArray) lm.lnFinal().weight()).toDoubleArray()) {
      assertEquals(1.0, g, "norm gains start at one");
    }
  }

  @Test
  void eachParameterIsThePhiloxStreamOfItsKey() {
    TransformerLm a = Eager.init(TransformerLm.class, CONFIG, 99);
    TransformerLm b = Eager.init(TransformerLm.class, CONFIG, 99);
    TransformerLm c = Eager.init(TransformerLm.class, CONFIG, 100);
    Map<String, NdArray> sa = Eager.stateDict(a);
    Map<String, NdArray> sb = Eager.stateDict(b);
    Map<String, NdArray> sc = Eager.stateDict(c);
    for (Map.Entry<String, NdArray> e : sa.entrySet()) {
      String k = e.getKey();
      assertArrayEquals(e.getValue().toFloatArray(), sb.get(k).toFloatArray(), k + ": same seed, same values");
      if (k.endsWith("q_proj.weight")) {
        assertFalse(java.util.Arrays.equals(e.getValue().toFloatArray(), sc.get(k).toFloatArray()), k);
        double std = Math.sqrt(2.0 / 64);
        NdArray want = new Rng(99).stream(Sizes.stream(k))
            .truncNormal(NdArray.zeros(DType.F32, 32, 32), 0, std, -3 * std, 3 * std);
        assertArrayEquals(want.toFloatArray(), e.getValue().toFloatArray(), k + " is the stream of its key");
      }
    }
    TransformerLm f64 = Eager.init(TransformerLm.class, CONFIG, 99, DType.F64);
    assertEquals(DType.F64, Eager.stateDict(f64).get("lm_head.weight").dtype());
  }

  @Test
  void loadChecksNamesAndShapes() {
    Map<String, NdArray> sd = new LinkedHashMap<>(Eager.stateDict(Eager.init(TransformerLm.class, CONFIG, 1)));
    TransformerLm back = Eager.load(TransformerLm.class, CONFIG, sd);
    assertSame(sd.get("layers.1.ffn.w2.weight"), back.layers().get(1).ffn().w2().weight());
    NdArray head = sd.remove("lm_head.weight");
    sd.put("lm_head.bias", head);
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> Eager.load(TransformerLm.class, CONFIG, sd));
    assertTrue(e.getMessage().contains("missing [lm_head.weight]") && e.getMessage().contains("unexpected [lm_head.bias]"),
        e.getMessage());
    sd.remove("lm_head.bias");
    sd.put("lm_head.weight", NdArray.zeros(DType.F32, 41, 32));
    EagerShapeException s = assertThrows(EagerShapeException.class, () -> Eager.load(TransformerLm.class, CONFIG, sd));
    assertTrue(s.getMessage().contains("'lm_head.weight' has shape [41, 32] but Linear.weight 'd_out d_in' is [40, 32]"
        + " here (d_out=40 d_in=32)"), s.getMessage());
  }

  enum Mode { FAST, EXACT }

  /** Every kind of component: dim arithmetic, a bound expression, snake_case and @Hyper keys, an enum, a flag. */
  @Module
  record Kinds(
      @Param(shape = "heads d_model/heads", init = Init.ZEROS) Tensor table,
      @Bind("d_in=d_model d_out=2*d_model") Linear up,
      double scaleFactor,
      boolean useBias,
      Mode mode,
      @Hyper("n") long count) {
    @Forward
    public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
      return x;
    }
  }

  @Test
  void everyKindOfComponentReadsTheConfig() {
    Map<String, Object> config = new HashMap<>(Map.of(
        "heads", 4, "d_model", 12, "scale_factor", 0.5, "use_bias", true, "mode", "exact", "n", 7L));
    Kinds k = Eager.init(Kinds.class, config, 3);
    assertArrayEquals(new long[] {4, 3}, k.table().shape());
    assertArrayEquals(new long[] {24, 12}, k.up().weight().shape());
    assertEquals(0.5, k.scaleFactor());
    assertTrue(k.useBias());
    assertEquals(Mode.EXACT, k.mode());
    assertEquals(7L, k.count());
    config.remove("scale_factor");
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> Eager.init(Kinds.class, config, 3));
    assertTrue(e.getMessage().contains("Kinds.scaleFactor") && e.getMessage().contains("'scale_factor'"),
        e.getMessage());
    config.put("scale_factor", 0.5);
    config.put("d_model", 10);
    e = assertThrows(IllegalArgumentException.class, () -> Eager.init(Kinds.class, config, 3));
    assertTrue(e.getMessage().contains("not divisible"), e.getMessage());
    config.remove("d_model");
    e = assertThrows(IllegalArgumentException.class, () -> Eager.init(Kinds.class, config, 3));
    assertTrue(e.getMessage().contains("needs dim 'd_model'") && e.getMessage().contains("heads=4"), e.getMessage());
  }

  @Test
  void repeatListsAreAsLongAsTheirKeySays() {
    Map<String, Object> config = new HashMap<>(CONFIG);
    config.put("num_layers", 3);
    assertEquals(3, Eager.init(TransformerLm.class, config, 0).layers().size());
    config.remove("num_layers");
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> Eager.init(TransformerLm.class, config, 0));
    assertTrue(e.getMessage().contains("TransformerLm.layers") && e.getMessage().contains("'num_layers'"),
        e.getMessage());
  }
}
