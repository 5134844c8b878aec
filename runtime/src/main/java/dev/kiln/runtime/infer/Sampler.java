package dev.kiln.runtime.infer;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import java.util.Arrays;

/**
 * Picks the next token from a model's logits: temperature, then top-k, then top-p (nucleus), then one draw from a
 * seeded {@link Rng}.
 *
 * <ul>
 *   <li><b>Temperature</b> {@code T}: probabilities are {@code softmax(logits / T)}; {@code T = 0} is greedy
 *       decoding (the arg-max, the lowest id among ties) and draws no random number.
 *   <li><b>Top-k</b> ({@code k > 0}): only the {@code k} most probable tokens stay (ties broken by lower id).
 *   <li><b>Top-p</b> ({@code p < 1}): of what remains, the smallest set of most probable tokens whose probability,
 *       renormalised over the remaining tokens, sums to at least {@code p}; always at least one token.
 *   <li>The survivors are renormalised and one is drawn by inverse CDF over token ids in increasing order, with one
 *       uniform double from the generator per draw.
 * </ul>
 *
 * Probabilities are computed in float64 with the maximum subtracted, so any finite logits work.
 */
public final class Sampler {
  private final double temperature;
  private final int topK;
  private final double topP;
  private final Rng rng;

  /**
   * @param temperature {@code >= 0}; 0 is greedy
   * @param topK {@code >= 0}; 0 keeps every token
   * @param topP in {@code (0, 1]}; 1 keeps every token
   * @param rng the generator; a fixed seed gives a reproducible text
   */
  public Sampler(double temperature, int topK, double topP, Rng rng) {
    if (!(temperature >= 0) || Double.isInfinite(temperature)) {
      throw new IllegalArgumentException("temperature must be finite and >= 0 (0 for greedy), got " + temperature);
    }
    if (topK < 0) {
      throw new IllegalArgumentException("top-k must be >= 0 (0 turns it off), got " + topK);
    }
    if (!(topP > 0 && topP <= 1)) {
      throw new IllegalArgumentException("top-p must lie in (0, 1] (1 turns it off), got " + topP);
    }
    this.temperature = temperature;
    this.topK = topK;
    this.topP = topP;
    this.rng = rng;
  }

  /** Greedy decoding: always the most probable token. */
  public static Sampler greedy() {
    return new Sampler(0, 0, 1, new Rng(0));
  }

  /** The next token for logits of shape {@code [V]} (or {@code [1, V]}). */
  public int sample(NdArray logits) {
    if (logits.numel() != logits.shape(-1)) {
      throw new IllegalArgumentException(
          "sample(NdArray) takes the logits of one position, shape [V]; got " + Arrays.toString(logits.shape())
              + " (use sampleRows for [batch, V])");
    }
    return sample(logits.toDoubleArray());
  }

  /** One token per row of {@code logits[B, V]}, as I64 {@code [B]}; rows are drawn in order. */
  public NdArray sampleRows(NdArray logits) {
    if (logits.rank() != 2) {
      throw new IllegalArgumentException("sampleRows needs logits of shape [batch, V], got "
          + Arrays.toString(logits.shape()));
    }
    int rows = Math.toIntExact(logits.shape(0));
    long[] out = new long[rows];
    for (int r = 0; r < rows; r++) {
      out[r] = sample(logits.select(0, r).toDoubleArray());
    }
    return NdArray.fromLongs(out);
  }

  /** The next token for {@code logits}. */
  public int sample(double[] logits) {
    if (temperature == 0) {
      return argmax(logits);
    }
    double[] p = distribution(logits);
    double u = rng.uniform(NdArray.zeros(DType.F64, 1)).getDouble(0);
    double cum = 0;
    int last = -1;
    for (int i = 0; i < p.length; i++) {
      if (p[i] > 0) {
        cum += p[i];
        last = i;
        if (u < cum) {
          return i;
        }
      }
    }
    return last; // u fell in the rounding gap above the final cumulative sum
  }

  /**
   * The distribution {@link #sample} draws from: {@code softmax(logits / T)} restricted by top-k and top-p and
   * renormalised (zero outside the kept set). With {@code T = 0}, all mass on the arg-max.
   */
  public double[] distribution(double[] logits) {
    int v = logits.length;
    if (v == 0) {
      throw new IllegalArgumentException("cannot sample from an empty vocabulary");
    }
    for (int i = 0; i < v; i++) {
      if (Double.isNaN(logits[i]) || logits[i] == Double.POSITIVE_INFINITY) {
        throw new IllegalArgumentException("logit " + i + " is " + logits[i] + "; the model's output is not finite");
      }
    }
    double[] p = new double[v];
    if (temperature == 0) {
      p[argmax(logits)] = 1;
      return p;
    }
    double max = Double.NEGATIVE_INFINITY;
    for (double x : logits) {
      max = Math.max(max, x);
    }
    if (max == Double.NEGATIVE_INFINITY) {
      throw new IllegalArgumentException("every logit is -infinity: no token can be sampled");
    }
    double sum = 0;
    for (int i = 0; i < v; i++) {
      p[i] = Math.exp((logits[i] - max) / temperature);
      sum += p[i];
    }
    for (int i = 0; i < v; i++) {
      p[i] /= sum;
    }
    if ((topK > 0 && topK < v) || topP < 1) {
      // The kept set is "most probable first; among equal probabilities, lower ids first". Only the probability
      // values decide how many survive, so sort a primitive copy of them (no boxed index sort per token: that cost
      // 4 ms a draw at a 10k vocabulary), then pick ids by threshold, taking ties in increasing id order.
      double[] desc = p.clone();
      Arrays.sort(desc);
      for (int i = 0, j = v - 1; i < j; i++, j--) {
        double t = desc[i];
        desc[i] = desc[j];
        desc[j] = t;
      }
      int keep = topK > 0 ? Math.min(topK, v) : v;
      if (topP < 1) {
        double kept = 0;
        for (int r = 0; r < keep; r++) {
          kept += desc[r];
        }
        double cum = 0;
        int n = 0;
        while (n < keep) {
          cum += desc[n] / kept;
          n++;
          if (cum >= topP) {
            break;
          }
        }
        keep = n;
      }
      double threshold = desc[keep - 1];
      int above = 0;
      while (above < keep && desc[above] > threshold) {
        above++;
      }
      int tiesLeft = keep - above;
      double[] q = new double[v];
      double total = 0;
      for (int r = 0; r < keep; r++) {
        total += desc[r];
      }
      for (int i = 0; i < v; i++) {
        if (p[i] > threshold) {
          q[i] = p[i] / total;
        } else if (p[i] == threshold && tiesLeft > 0) {
          q[i] = p[i] / total;
          tiesLeft--;
        }
      }
      return q;
    }
    return p;
  }

  /** The generator's state (to continue a generation later). */
  public Rng.State rngState() {
    return rng.state();
  }

  private static int argmax(double[] x) {
    int best = 0;
    for (int i = 1; i < x.length; i++) {
      if (x[i] > x[best]) {
        best = i;
      }
    }
    if (Double.isNaN(x[best])) {
      throw new IllegalArgumentException("logits contain NaN; the model's output is not finite");
    }
    return best;
  }
}
