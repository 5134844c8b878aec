package dev.kiln.runtime.infer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.fail;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.ModelConfig.Ffn;
import dev.kiln.runtime.train.ModelConfig.NormPlacement;
import dev.kiln.runtime.train.ModelConfig.NormType;
import dev.kiln.runtime.train.ModelConfig.Positions;
import java.util.LinkedHashMap;
import java.util.Map;

/** Tiny configs and random weights for the inference tests, and the comparison they share. */
final class TinyLms {
  private TinyLms() {}

  static ModelConfig config(
      int vocab, int context, int dModel, int layers, int heads, int dFf, NormPlacement placement, NormType norm,
      Ffn ffn, Positions positions, boolean tied, boolean qkNorm) {
    return new ModelConfig(vocab, context, dModel, layers, heads, dFf, 10_000.0, placement, norm, 1e-5, ffn,
        positions, tied, qkNorm, 0.0);
  }

  /**
   * Every combination of norm placement × norm × FFN × positions × tied × QK-norm (360) at one size, in a fixed
   * order.
   */
  static java.util.List<ModelConfig> everyVariant(int vocab, int context, int dModel, int layers, int heads, int dFf) {
    java.util.List<ModelConfig> out = new java.util.ArrayList<>();
    for (NormPlacement placement : NormPlacement.values()) {
      for (NormType norm : NormType.values()) {
        for (Ffn ffn : Ffn.values()) {
          for (Positions positions : Positions.values()) {
            for (boolean tied : new boolean[] {false, true}) {
              for (boolean qk : new boolean[] {false, true}) {
                out.add(config(vocab, context, dModel, layers, heads, dFf, placement, norm, ffn, positions, tied, qk));
              }
            }
          }
        }
      }
    }
    return out;
  }

  /** The variant settings of {@code c}, for messages. */
  static String describe(ModelConfig c) {
    return c.normPlacement() + "/" + c.norm() + "/" + c.ffn() + "/" + c.positions() + "/tied=" + c.tiedEmbeddings()
        + "/qk=" + c.qkNorm();
  }

  /** The CS336 default variant (pre-norm, RMSNorm, SwiGLU, RoPE, untied, no QK-norm). */
  static ModelConfig cs336(int vocab, int context, int dModel, int layers, int heads, int dFf) {
    return config(vocab, context, dModel, layers, heads, dFf, NormPlacement.PRE, NormType.RMSNORM, Ffn.SWIGLU,
        Positions.ROPE, false, false);
  }

  /**
   * Random weights of every tensor the config needs: matrices N(0, 1/d_in) so activations stay near unit scale,
   * embeddings N(0, 1), norm gains 1 + N(0, 0.2²) and biases N(0, 0.1²) so that neither is a no-op.
   */
  static Map<String, NdArray> randomWeights(ModelConfig c, long seed) {
    Rng rng = new Rng(seed);
    Map<String, NdArray> sd = new LinkedHashMap<>();
    int stream = 0;
    for (Map.Entry<String, long[]> e : LmWeights.expectedShapes(c).entrySet()) {
      String n = e.getKey();
      long[] s = e.getValue();
      NdArray a = NdArray.zeros(DType.F32, s);
      Rng r = rng.stream(stream++);
      if (n.endsWith(".bias")) {
        r.normal(a, 0, 0.1);
      } else if (s.length == 1) {
        r.normal(a, 1, 0.2);
      } else if (n.contains("embeddings")) {
        r.normal(a, 0, 1);
      } else {
        r.normal(a, 0, 1 / Math.sqrt(s[1]));
      }
      sd.put(n, a);
    }
    return sd;
  }

  /**
   * Asserts {@code |actual − expected| <= tol · max(1, |expected|)} element by element, naming the first bad one
   * and the worst relative error.
   */
  static double assertClose(NdArray expected, NdArray actual, double tol, String what) {
    assertArrayEquals(expected.shape(), actual.shape(), what + ": shape");
    double[] e = expected.toDoubleArray();
    double[] a = actual.toDoubleArray();
    double worst = 0;
    for (int i = 0; i < e.length; i++) {
      double err = Math.abs(a[i] - e[i]) / Math.max(1, Math.abs(e[i]));
      if (!(err <= tol)) {
        fail(what + ": element " + i + " is " + a[i] + ", expected " + e[i] + " (relative error " + err
            + " > " + tol + ")");
      }
      worst = Math.max(worst, err);
    }
    return worst;
  }
}
