package dev.kiln.runtime.optim;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.cpu.Parallel;
import dev.kiln.runtime.data.Batch;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import dev.kiln.runtime.train.BigramModel;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class OptimizerTest {
  @TempDir Path tmp;

  /** A deterministic bigram corpus: token t is followed by (3t + 1) mod V most of the time. */
  static Batch corpusBatch(Rng rng, int vocab, int batch, int seq) {
    long[] x = new long[batch * seq];
    long[] y = new long[batch * seq];
    NdArray u = rng.integers(NdArray.zeros(DType.I64, batch * seq), 0, vocab);
    NdArray noise = rng.uniform(NdArray.zeros(DType.F64, batch * seq));
    for (int i = 0; i < x.length; i++) {
      x[i] = u.getLong(i);
      y[i] = noise.getDouble(i) < 0.8 ? (3 * x[i] + 1) % vocab : (x[i] + 5) % vocab;
    }
    return new Batch(NdArray.fromLongs(x, batch, seq), NdArray.fromLongs(y, batch, seq));
  }

  @Test
  void adamwLowersTheLossOfTheTestModel() {
    BigramModel model = new BigramModel(16, DType.F32, 7);
    AdamW opt = new AdamW(model.parameters(), 0.9, 0.999, 1e-8, 0.01);
    ParameterSet grads = ParameterSet.zerosLike(model.parameters());
    Rng rng = new Rng(99);
    Batch eval = corpusBatch(new Rng(5), 16, 16, 32);
    double before = model.loss(eval.inputs(), eval.targets());
    for (int step = 0; step < 300; step++) {
      grads.zero();
      Batch b = corpusBatch(rng, 16, 8, 16);
      model.accumulateGradients(b.inputs(), b.targets(), grads);
      GradClip.clip(grads, 1.0);
      opt.step(grads, 0.05);
    }
    double after = model.loss(eval.inputs(), eval.targets());
    // The corpus's conditional entropy is about 0.8·ln(1/0.8) + 0.2·ln(1/0.2) ≈ 0.50 nats; a random init sits near
    // ln 16 ≈ 2.8 or above. 300 steps must get well below 1.
    assertTrue(before > 2.0, "initial loss " + before);
    assertTrue(after < 0.8, "loss after 300 AdamW steps: " + after + " (was " + before + ")");
  }

  @Test
  void stateRoundTripsAndContinuesIdentically() throws IOException {
    ParameterSet a = randomParams(1);
    ParameterSet b = randomParams(1);
    AdamW oa = new AdamW(a, 0.9, 0.95, 1e-8, 0.1);
    Rng g = new Rng(3);
    for (int t = 0; t < 5; t++) {
      oa.step(randomGrads(a, g), 0.01);
    }
    Path f = tmp.resolve("optimizer.safetensors");
    oa.save(f);
    for (String n : a.names()) {
      b.get(n).copyFrom(a.get(n));
    }
    AdamW ob = new AdamW(b, 0.9, 0.95, 1e-8, 0.1);
    ob.load(f);
    assertEquals(5, ob.stepCount());
    for (int t = 0; t < 3; t++) {
      ParameterSet gr = randomGrads(a, g);
      oa.step(gr, 0.02);
      ob.step(gr, 0.02);
    }
    for (String n : a.names()) {
      assertArrayEquals(a.get(n).toFloatArray(), b.get(n).toFloatArray(), 0f, n); // bit for bit: same arithmetic
    }
  }

  @Test
  void loadRefusesAnotherOptimizerOrModel() throws IOException {
    ParameterSet a = randomParams(1);
    Path f = tmp.resolve("o.safetensors");
    new Sgd(a, 0.9, 0, false).save(f);
    IOException kind = assertThrows(IOException.class, () -> new AdamW(a, 0.9, 0.95, 1e-8, 0).load(f));
    assertTrue(kind.getMessage().contains("sgd"), kind.getMessage());
    LinkedHashMap<String, NdArray> other = new LinkedHashMap<>();
    other.put("w", NdArray.zeros(DType.F32, 2, 2));
    other.put("b", NdArray.zeros(DType.F32, 3));
    IOException shape = assertThrows(IOException.class, () -> new Sgd(ParameterSet.of(other), 0.9, 0, false).load(f));
    assertTrue(shape.getMessage().contains("w.momentum_buffer"), shape.getMessage());
  }

  @Test
  void updatesAreIdenticalOnOneThreadAndMany() {
    int saved = Parallel.threads();
    try {
      float[][] results = new float[2][];
      for (int run = 0; run < 2; run++) {
        Parallel.setThreads(run == 0 ? 1 : 4);
        LinkedHashMap<String, NdArray> m = new LinkedHashMap<>();
        m.put("big", new Rng(11).normal(NdArray.zeros(DType.F32, 300_001), 0, 1)); // above the parallel threshold
        ParameterSet p = ParameterSet.of(m);
        AdamW opt = new AdamW(p, 0.9, 0.95, 1e-8, 0.1);
        Rng g = new Rng(12);
        for (int t = 0; t < 3; t++) {
          ParameterSet gr = randomGrads(p, g);
          GradClip.clip(gr, 100.0);
          opt.step(gr, 1e-3);
        }
        results[run] = p.get("big").toFloatArray();
      }
      assertArrayEquals(results[0], results[1], 0f); // element-wise and fixed chunks: exactly equal
    } finally {
      Parallel.setThreads(saved);
    }
  }

  @Test
  void clipLeavesSmallGradientsAloneAndScalesLargeOnes() {
    LinkedHashMap<String, NdArray> m = new LinkedHashMap<>();
    m.put("a", NdArray.fromFloats(new float[] {3, 0}));
    m.put("b", NdArray.fromDoubles(new double[] {0, 4}));
    ParameterSet g = ParameterSet.of(m);
    assertEquals(5.0, GradClip.clip(g, 10.0), 0);
    assertArrayEquals(new float[] {3, 0}, g.get("a").toFloatArray(), 0f);
    assertEquals(5.0, GradClip.clip(g, 1.0), 0);
    // scaled by 1/(5 + 1e-6): the new norm is 1 - 2e-7
    assertEquals(1.0 / (1 + 2e-7), GradClip.globalNorm(g), 1e-7);
    assertThrows(IllegalArgumentException.class, () -> GradClip.clip(g, 0));
  }

  @Test
  void schedulesAtTheirCorners() {
    LrSchedule.WarmupStableDecay lin = new LrSchedule.WarmupStableDecay(1, 0.1, 10, 20, 100, LrSchedule.DecayShape.LINEAR);
    assertEquals(0, lin.lr(0), 0);
    assertEquals(0.5, lin.lr(5), 1e-15);
    assertEquals(1, lin.lr(10), 0);
    assertEquals(1, lin.lr(79), 0);
    assertEquals(1, lin.lr(80), 0);
    assertEquals(0.55, lin.lr(90), 1e-12);
    assertEquals(0.1, lin.lr(100), 0);
    LrSchedule.WarmupStableDecay cos = new LrSchedule.WarmupStableDecay(1, 0.1, 10, 20, 100, LrSchedule.DecayShape.COSINE);
    assertEquals(0.55, cos.lr(90), 1e-12); // a half-cosine passes the midpoint halfway
    assertEquals(0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI / 4)), cos.lr(85), 1e-12);
    assertThrows(IllegalArgumentException.class,
        () -> new LrSchedule.WarmupStableDecay(1, 0, 50, 60, 100, LrSchedule.DecayShape.LINEAR));
    assertThrows(IllegalArgumentException.class, () -> new LrSchedule.Cosine(1, 0, 10, 5));
    assertEquals(0.3, new LrSchedule.Constant(0.3).lr(12345), 0);
  }

  @Test
  void badArgumentsAreRefused() {
    ParameterSet p = randomParams(1);
    assertThrows(IllegalArgumentException.class, () -> new AdamW(p, 1.0, 0.9, 1e-8, 0));
    assertThrows(IllegalArgumentException.class, () -> new Sgd(p, 0, 0, true));
    AdamW opt = new AdamW(p, 0.9, 0.9, 1e-8, 0);
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> opt.step(randomParams(1), Double.NaN));
    assertTrue(e.getMessage().contains("learning rate"));
    LinkedHashMap<String, NdArray> wrong = new LinkedHashMap<>();
    wrong.put("w", NdArray.zeros(DType.F32, 3));
    e = assertThrows(IllegalArgumentException.class, () -> opt.step(ParameterSet.of(wrong), 0.1));
    assertTrue(e.getMessage().contains("gradients"), e.getMessage());
    LinkedHashMap<String, NdArray> ints = new LinkedHashMap<>();
    ints.put("i", NdArray.zeros(DType.I32, 3));
    assertThrows(IllegalArgumentException.class, () -> ParameterSet.of(ints));
  }

  private static ParameterSet randomParams(long seed) {
    LinkedHashMap<String, NdArray> m = new LinkedHashMap<>();
    Rng r = new Rng(seed);
    m.put("w", r.normal(NdArray.zeros(DType.F32, 4, 3), 0, 1));
    m.put("b", r.normal(NdArray.zeros(DType.F32, 3), 0, 1));
    return ParameterSet.of(m);
  }

  private static ParameterSet randomGrads(ParameterSet like, Rng rng) {
    ParameterSet g = ParameterSet.zerosLike(like);
    g.forEach((n, a) -> rng.normal(a, 0, 1));
    return g;
  }

}
