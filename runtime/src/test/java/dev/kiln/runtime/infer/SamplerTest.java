package dev.kiln.runtime.infer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import org.junit.jupiter.api.Test;

class SamplerTest {
  private static final double[] LOGITS = {2.0, 1.0, 0.5, 0.0, -1.0, 3.0, 0.5};

  /**
   * The oracle, written separately from the sampler: the distribution by its definition — softmax of logits / T,
   * keep the k largest, then the shortest most-probable prefix reaching p of the renormalised mass, renormalise.
   */
  static double[] expected(double[] logits, double t, int k, double p) {
    int v = logits.length;
    double[] e = new double[v];
    double z = 0;
    for (int i = 0; i < v; i++) {
      e[i] = Math.exp(logits[i] / t);
      z += e[i];
    }
    List<Integer> ids = new ArrayList<>();
    for (int i = 0; i < v; i++) {
      ids.add(i);
    }
    ids.sort(Comparator.comparingDouble((Integer i) -> -e[i]).thenComparingInt(i -> i));
    List<Integer> kept = new ArrayList<>(ids.subList(0, k > 0 ? Math.min(k, v) : v));
    double mass = kept.stream().mapToDouble(i -> e[i]).sum();
    List<Integer> nucleus = new ArrayList<>();
    double cum = 0;
    for (int i : kept) {
      nucleus.add(i);
      cum += e[i] / mass;
      if (cum >= p) {
        break;
      }
    }
    double m2 = nucleus.stream().mapToDouble(i -> e[i]).sum();
    double[] out = new double[v];
    for (int i : nucleus) {
      out[i] = e[i] / m2;
    }
    return out;
  }

  /** Pearson's chi-square of {@code n} draws against {@code probs}, over the categories with p > 0. */
  private static double chiSquare(Sampler s, double[] probs, int n, int[] countsOut) {
    for (int d = 0; d < n; d++) {
      countsOut[s.sample(LOGITS)]++;
    }
    double chi = 0;
    for (int i = 0; i < probs.length; i++) {
      if (probs[i] > 0) {
        double want = n * probs[i];
        chi += (countsOut[i] - want) * (countsOut[i] - want) / want;
      }
    }
    return chi;
  }

  /** Upper 0.1% points of the chi-square distribution, by degrees of freedom 1..6. */
  private static final double[] CRITICAL_0_001 = {10.83, 13.82, 16.27, 18.47, 20.52, 22.46};

  @Test
  void drawsFollowTheExactDistributionChiSquare() {
    double[][] settings = {{1.0, 0, 1.0}, {0.7, 3, 1.0}, {1.3, 0, 0.7}, {0.8, 5, 0.9}, {2.0, 4, 0.95}};
    for (double[] st : settings) {
      double t = st[0];
      int k = (int) st[1];
      double p = st[2];
      Sampler s = new Sampler(t, k, p, new Rng(2024));
      double[] want = expected(LOGITS, t, k, p);
      assertArrayEquals(want, s.distribution(LOGITS), 1e-12, "distribution for T=" + t + " k=" + k + " p=" + p);
      int[] counts = new int[LOGITS.length];
      double chi = chiSquare(s, want, 20_000, counts);
      int support = 0;
      for (int i = 0; i < want.length; i++) {
        if (want[i] > 0) {
          support++;
        } else {
          assertEquals(0, counts[i], "token " + i + " lies outside the kept set but was drawn");
        }
      }
      // A fixed seed makes this deterministic; at the 0.1% level a correct sampler passes, and a wrong distribution
      // (off by a few percent on 20,000 draws) lands far above the critical value.
      assertTrue(chi < CRITICAL_0_001[support - 2],
          "chi-square " + chi + " with " + (support - 1) + " degrees of freedom for T=" + t + " k=" + k + " p=" + p);
    }
  }

  @Test
  void aBiasedSamplerWouldFailTheTest() {
    // The test's power: draws from the T=1 sampler checked against T=1.1's distribution must be rejected.
    Sampler s = new Sampler(1.0, 0, 1.0, new Rng(2024));
    double chi = chiSquare(s, expected(LOGITS, 1.1, 0, 1.0), 20_000, new int[LOGITS.length]);
    assertTrue(chi > CRITICAL_0_001[5], "chi-square " + chi);
  }

  @Test
  void edgeCases() {
    int argmax = 5;
    assertEquals(argmax, new Sampler(0, 0, 1, new Rng(1)).sample(LOGITS)); // temperature 0: greedy
    assertEquals(argmax, Sampler.greedy().sample(NdArray.fromDoubles(LOGITS)));
    Sampler k1 = new Sampler(1.5, 1, 1, new Rng(1));
    Sampler p0 = new Sampler(1.5, 0, 1e-9, new Rng(1));
    Sampler cold = new Sampler(1e-6, 0, 1, new Rng(1));
    for (int i = 0; i < 200; i++) {
      assertEquals(argmax, k1.sample(LOGITS));
      assertEquals(argmax, p0.sample(LOGITS));
      assertEquals(argmax, cold.sample(LOGITS));
    }
    // Ties: greedy takes the lowest id; top-k=1 too.
    double[] tied = {1, 4, 4, 0};
    assertEquals(1, Sampler.greedy().sample(tied));
    assertArrayEquals(new double[] {0, 1, 0, 0}, new Sampler(1, 1, 1, new Rng(0)).distribution(tied), 0);
    // top-k larger than the vocabulary keeps everything; huge logits do not overflow.
    double[] big = {1000, 999, -1000};
    double[] d = new Sampler(1, 10, 1, new Rng(0)).distribution(big);
    assertEquals(1 / (1 + Math.exp(-1)), d[0], 1e-15);
    assertEquals(0, d[2], 1e-300);
    // -inf logits (masked tokens) are never drawn.
    double[] masked = {Double.NEGATIVE_INFINITY, 0, 0};
    Sampler m = new Sampler(1, 0, 1, new Rng(3));
    for (int i = 0; i < 100; i++) {
      assertTrue(m.sample(masked) != 0);
    }
    // Rows of a batch are drawn in order, from one generator.
    NdArray rows = new Sampler(0, 0, 1, new Rng(0)).sampleRows(NdArray.fromDoubles(new double[] {0, 1, 5, 2, 0, 0}, 2, 3));
    assertArrayEquals(new long[] {2, 0}, rows.toLongArray());
    // The same seed gives the same text.
    Sampler a = new Sampler(1, 0, 0.9, new Rng(77));
    Sampler b = new Sampler(1, 0, 0.9, new Rng(77));
    for (int i = 0; i < 50; i++) {
      assertEquals(a.sample(LOGITS), b.sample(LOGITS));
    }
    assertEquals(a.rngState(), b.rngState());
  }

  @Test
  void badSettingsAndLogitsAreRefused() {
    assertThrows(IllegalArgumentException.class, () -> new Sampler(-1, 0, 1, new Rng(0)));
    assertThrows(IllegalArgumentException.class, () -> new Sampler(1, -1, 1, new Rng(0)));
    assertThrows(IllegalArgumentException.class, () -> new Sampler(1, 0, 0, new Rng(0)));
    assertThrows(IllegalArgumentException.class, () -> new Sampler(1, 0, 1.5, new Rng(0)));
    Sampler s = new Sampler(1, 0, 1, new Rng(0));
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> s.sample(new double[] {0, Double.NaN}));
    assertTrue(e.getMessage().contains("logit 1 is NaN"), e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> s.sample(NdArray.zeros(dev.kiln.dsl.DType.F32, 2, 3)));
  }
}
