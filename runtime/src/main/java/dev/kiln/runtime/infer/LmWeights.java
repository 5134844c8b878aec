package dev.kiln.runtime.infer;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.ModelConfig.NormPlacement;
import dev.kiln.runtime.train.ModelConfig.NormType;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The parameters of a CS336-family Transformer LM, by state-dict name, checked against a {@link ModelConfig} and held
 * as contiguous float32 copies (the engine owns them; the file they came from may be closed).
 *
 * <p>Names (the CS336 ones, plus the variants' own; {@code docs/inference.md} lists them for model authors):
 *
 * <pre>
 * token_embeddings.weight            [vocab_size, d_model]
 * position_embeddings.weight         [context_length, d_model]   positions = learned
 * layers.{i}.ln1.weight, .bias       [d_model]                   norm_placement != none; bias for layernorm
 * layers.{i}.attn.q_proj.weight      [d_model, d_model]          also k_proj, v_proj, output_proj
 * layers.{i}.attn.q_norm.weight, .bias [d_head]                  qk_norm; also k_norm; bias for layernorm
 * layers.{i}.ln2.weight, .bias       [d_model]
 * layers.{i}.ffn.w1.weight           [d_ff, d_model]
 * layers.{i}.ffn.w2.weight           [d_model, d_ff]
 * layers.{i}.ffn.w3.weight           [d_ff, d_model]             ffn = swiglu only
 * ln_final.weight, .bias             [d_model]                   norm_placement != none
 * lm_head.weight                     [vocab_size, d_model]       absent when tied_embeddings
 * </pre>
 */
public final class LmWeights {
  /** One layer's tensors; norm fields are null where the config has no such norm. */
  record Layer(
      Norm ln1, NdArray q, NdArray k, NdArray v, NdArray out, Norm qNorm, Norm kNorm, Norm ln2, NdArray w1,
      NdArray w2, NdArray w3) {}

  /** A norm's gain and (LayerNorm only) bias, on the heap: they are read element by element. */
  record Norm(float[] weight, float[] bias) {}

  private final ModelConfig config;
  private final NdArray tokenEmbeddings;
  private final NdArray positionEmbeddings;
  private final List<Layer> layers;
  private final Norm lnFinal;
  private final NdArray lmHead;

  private LmWeights(ModelConfig config, Map<String, NdArray> t) {
    this.config = config;
    this.tokenEmbeddings = t.get("token_embeddings.weight");
    this.positionEmbeddings = t.get("position_embeddings.weight");
    List<Layer> ls = new ArrayList<>();
    for (int i = 0; i < config.numLayers(); i++) {
      String p = "layers." + i + ".";
      ls.add(new Layer(
          norm(t, p + "ln1"), t.get(p + "attn.q_proj.weight"), t.get(p + "attn.k_proj.weight"),
          t.get(p + "attn.v_proj.weight"), t.get(p + "attn.output_proj.weight"), norm(t, p + "attn.q_norm"),
          norm(t, p + "attn.k_norm"), norm(t, p + "ln2"), t.get(p + "ffn.w1.weight"), t.get(p + "ffn.w2.weight"),
          t.get(p + "ffn.w3.weight")));
    }
    this.layers = List.copyOf(ls);
    this.lnFinal = norm(t, "ln_final");
    this.lmHead = config.tiedEmbeddings() ? tokenEmbeddings : t.get("lm_head.weight");
  }

  private static Norm norm(Map<String, NdArray> t, String prefix) {
    NdArray w = t.get(prefix + ".weight");
    if (w == null) {
      return null;
    }
    NdArray b = t.get(prefix + ".bias");
    return new Norm(w.toFloatArray(), b == null ? null : b.toFloatArray());
  }

  /**
   * Every tensor the config needs, name → shape, in the order of a state dict (embeddings, then each layer, then
   * the final norm and the head).
   */
  public static Map<String, long[]> expectedShapes(ModelConfig c) {
    long d = c.dModel();
    long dHead = c.headDim();
    Map<String, long[]> s = new LinkedHashMap<>();
    s.put("token_embeddings.weight", new long[] {c.vocabSize(), d});
    if (c.positions() == ModelConfig.Positions.LEARNED) {
      s.put("position_embeddings.weight", new long[] {c.contextLength(), d});
    }
    boolean norms = c.normPlacement() != NormPlacement.NONE;
    for (int i = 0; i < c.numLayers(); i++) {
      String p = "layers." + i + ".";
      if (norms) {
        addNorm(s, c, p + "ln1", d);
      }
      for (String proj : List.of("q_proj", "k_proj", "v_proj", "output_proj")) {
        s.put(p + "attn." + proj + ".weight", new long[] {d, d});
      }
      if (c.qkNorm()) {
        addNorm(s, c, p + "attn.q_norm", dHead);
        addNorm(s, c, p + "attn.k_norm", dHead);
      }
      if (norms) {
        addNorm(s, c, p + "ln2", d);
      }
      s.put(p + "ffn.w1.weight", new long[] {c.dFf(), d});
      s.put(p + "ffn.w2.weight", new long[] {d, c.dFf()});
      if (c.ffn() == ModelConfig.Ffn.SWIGLU) {
        s.put(p + "ffn.w3.weight", new long[] {c.dFf(), d});
      }
    }
    if (norms) {
      addNorm(s, c, "ln_final", d);
    }
    if (!c.tiedEmbeddings()) {
      s.put("lm_head.weight", new long[] {c.vocabSize(), d});
    }
    return s;
  }

  private static void addNorm(Map<String, long[]> s, ModelConfig c, String prefix, long n) {
    s.put(prefix + ".weight", new long[] {n});
    if (c.norm() == NormType.LAYERNORM) {
      s.put(prefix + ".bias", new long[] {n});
    }
  }

  /**
   * Checks {@code stateDict} against the config — every missing, extra or misshapen tensor is named, all at once —
   * and copies the tensors to contiguous float32 (F64, BF16 and F16 are converted).
   *
   * @param source what the tensors came from (a file name), for messages
   * @throws IllegalArgumentException listing every problem
   */
  public static LmWeights from(ModelConfig config, Map<String, NdArray> stateDict, String source) {
    Map<String, long[]> expected = expectedShapes(config);
    List<String> problems = new ArrayList<>();
    for (Map.Entry<String, long[]> e : expected.entrySet()) {
      NdArray a = stateDict.get(e.getKey());
      if (a == null) {
        problems.add("missing tensor " + e.getKey() + " " + Arrays.toString(e.getValue()) + missingHint(config,
            e.getKey()));
      } else if (!Arrays.equals(a.shape(), e.getValue())) {
        problems.add("tensor " + e.getKey() + " has shape " + Arrays.toString(a.shape()) + ", expected "
            + Arrays.toString(e.getValue()));
      } else if (!(a.dtype() == DType.F32 || a.dtype() == DType.F64 || a.dtype() == DType.BF16
          || a.dtype() == DType.F16)) {
        problems.add("tensor " + e.getKey() + " has dtype " + a.dtype() + "; weights must be F32, F64, BF16 or F16");
      }
    }
    for (String n : stateDict.keySet()) {
      if (!expected.containsKey(n)) {
        problems.add("unexpected tensor " + n + " " + Arrays.toString(stateDict.get(n).shape()) + extraHint(config,
            n));
      }
    }
    if (!problems.isEmpty()) {
      String head = source + ": the weights do not fit the model config ("
          + describe(config) + "); " + (problems.size() == 1 ? "" : problems.size() + " problems:");
      throw new IllegalArgumentException(
          problems.size() == 1 ? head + problems.get(0) : head + "\n  - " + String.join("\n  - ", problems));
    }
    Map<String, NdArray> owned = new LinkedHashMap<>();
    for (String n : expected.keySet()) {
      NdArray a = stateDict.get(n);
      // Always a fresh contiguous F32 array: the source may be a mapped file that is closed after loading.
      NdArray copy = NdArray.zeros(DType.F32, a.shape());
      copy.copyFrom(a);
      owned.put(n, copy);
    }
    return new LmWeights(config, owned);
  }

  private static String describe(ModelConfig c) {
    return "norm_placement " + lower(c.normPlacement()) + ", norm " + lower(c.norm()) + ", ffn " + lower(c.ffn())
        + ", positions " + lower(c.positions()) + ", tied_embeddings " + c.tiedEmbeddings() + ", qk_norm "
        + c.qkNorm();
  }

  private static String lower(Enum<?> e) {
    return e.name().toLowerCase(java.util.Locale.ROOT);
  }

  private static String missingHint(ModelConfig c, String name) {
    if (name.equals("lm_head.weight")) {
      return " (if the model shares it with token_embeddings.weight, set tied_embeddings: true)";
    }
    if (name.endsWith(".bias") && c.norm() == NormType.LAYERNORM) {
      return " (norm layernorm has a bias; an RMSNorm model has none: set norm: rmsnorm)";
    }
    return "";
  }

  private static String extraHint(ModelConfig c, String name) {
    if (name.equals("lm_head.weight") && c.tiedEmbeddings()) {
      return " (tied_embeddings is true, so the LM head is token_embeddings.weight; drop lm_head.weight or set"
          + " tied_embeddings: false)";
    }
    if (name.endsWith("ffn.w3.weight")) {
      return " (only ffn swiglu has w3; the config says ffn " + lower(c.ffn()) + ")";
    }
    if (name.endsWith(".bias") && c.norm() == NormType.RMSNORM) {
      return " (RMSNorm has no bias; a LayerNorm model needs norm: layernorm)";
    }
    if (name.equals("position_embeddings.weight")) {
      return " (learned positions need positions: learned; the config says " + lower(c.positions()) + ")";
    }
    if (name.contains("q_norm") || name.contains("k_norm")) {
      return " (QK-norm gains: set qk_norm: true)";
    }
    return "";
  }

  public ModelConfig config() {
    return config;
  }

  NdArray tokenEmbeddings() {
    return tokenEmbeddings;
  }

  /** Null unless positions are learned. */
  NdArray positionEmbeddings() {
    return positionEmbeddings;
  }

  Layer layer(int i) {
    return layers.get(i);
  }

  /** Null when norm placement is none. */
  Norm lnFinal() {
    return lnFinal;
  }

  /** {@code lm_head.weight}, or {@code token_embeddings.weight} when tied. */
  NdArray lmHead() {
    return lmHead;
  }
}
