package dev.kiln.runtime.train;

import dev.kiln.runtime.infer.LmWeights;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * The bridge between a training config's {@link ModelConfig} and the DSL's CS336 Transformer LM
 * ({@code dev.kiln.models.cs336.TransformerLm} in module {@code kiln-models}): the config the compiled module's
 * {@code init} reads, and which of its state-dict keys the configured variant uses, under which name.
 *
 * <p>The module's record holds every parameter any variant may read; {@link LmWeights#expectedShapes} (the names the
 * inference engine loads) says which ones a variant has. With tied embeddings, the module's {@code lm_head.weight} is
 * the token embedding table itself and is trained and saved as {@code token_embeddings.weight}.
 */
public final class LmModule {
  private LmModule() {}

  /**
   * The config of the compiled module: dims ({@code vocab_size}, {@code context_length}, {@code d_model},
   * {@code num_layers}, {@code num_heads}, {@code d_ff}) and hyper-parameters ({@code rope_theta}, {@code norm_eps},
   * and the variant enums by constant name).
   */
  public static Map<String, Object> moduleConfig(ModelConfig c) {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("vocab_size", c.vocabSize());
    m.put("context_length", c.contextLength());
    m.put("d_model", c.dModel());
    m.put("num_layers", c.numLayers());
    m.put("num_heads", c.numHeads());
    m.put("d_ff", c.dFf());
    m.put("rope_theta", c.ropeTheta());
    m.put("norm_eps", c.normEps());
    m.put("norm_placement", c.normPlacement().name());
    m.put("norm", c.norm().name());
    m.put("ffn", c.ffn().name());
    m.put("positions", c.positions().name());
    m.put("qk_norm", c.qkNorm());
    m.put("z_loss", c.zLoss());
    return m;
  }

  /**
   * Module state-dict key → trainer/checkpoint name for the keys the variant reads (the names of {@link
   * LmWeights#expectedShapes}, in the module's order; {@code lm_head.weight} → {@code token_embeddings.weight} when
   * tied). Keys of {@code moduleKeys} not in the result are parameters the variant never reads.
   *
   * @throws IllegalStateException when the module lacks a name the variant needs (the module and {@link LmWeights}
   *     disagree)
   */
  public static Map<String, String> names(ModelConfig c, Collection<String> moduleKeys) {
    Map<String, long[]> expected = LmWeights.expectedShapes(c);
    Map<String, String> names = new LinkedHashMap<>();
    for (String k : moduleKeys) {
      if (expected.containsKey(k)) {
        names.put(k, k);
      } else if (c.tiedEmbeddings() && k.equals("lm_head.weight")) {
        names.put(k, "token_embeddings.weight");
      }
    }
    for (String n : expected.keySet()) {
      if (!names.containsValue(n)) {
        throw new IllegalStateException("the compiled Transformer LM has no parameter '" + n + "', which a "
            + describe(c) + " model needs; its keys are " + moduleKeys);
      }
    }
    return names;
  }

  private static String describe(ModelConfig c) {
    return String.join(" ", lower(c.normPlacement()), lower(c.norm()), lower(c.ffn()), lower(c.positions()),
        c.tiedEmbeddings() ? "tied" : "untied", c.qkNorm() ? "qk_norm" : "");
  }

  private static String lower(Enum<?> e) {
    return e.name().toLowerCase(Locale.ROOT);
  }
}
