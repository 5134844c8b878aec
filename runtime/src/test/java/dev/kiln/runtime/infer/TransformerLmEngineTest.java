package dev.kiln.runtime.infer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;
import dev.kiln.runtime.train.ModelConfig.Ffn;
import dev.kiln.runtime.train.ModelConfig.NormPlacement;
import dev.kiln.runtime.train.ModelConfig.NormType;
import dev.kiln.runtime.train.ModelConfig.Positions;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Cached decoding against the uncached full forward, for every variant combination.
 *
 * <p>Tolerance 1e-4 relative to max(1, |logit|): both paths compute the same function in float32, but a decode step
 * multiplies one row (GEMV shapes, another summation order inside OpenBLAS) where {@code forwardAll} multiplies all
 * rows at once, and the difference goes through the layers, softmax and the LM head. Which kernels OpenBLAS picks
 * depends on the CPU. Measured: 0 (bit-identical) over all 360 tiny combinations on the machine the test was written
 * on, where OpenBLAS happened to sum each row in the same order either way, but up to 3.7e-5 on an AMD EPYC (the
 * variants without norms, whose activations grow through the layers, worst); 1.4e-6 and 1.5e-6 on the wider model of
 * {@link #cachedDecodingEqualsForwardAllOnAWiderModel}. A cache holding another history is off by far more
 * ({@link #aCacheHoldingAnotherHistoryIsCaught}).
 */
class TransformerLmEngineTest {
  static final double TOL = 1e-4;

  @Test
  void cachedDecodingEqualsForwardAllForEveryVariant() {
    Random rnd = new Random(5);
    int combos = 0;
    double worst = 0;
    for (ModelConfig c : TinyLms.everyVariant(29, 12, 16, 2, 4, 24)) {
      String what = TinyLms.describe(c);
      TransformerLmEngine e = TransformerLmEngine.load(c, TinyLms.randomWeights(c, combos), what);
      int[] ids = rnd.ints(1 + rnd.nextInt(12), 0, 29).toArray();
      worst = Math.max(worst, checkCachedEqualsFull(e, ids, 1 + rnd.nextInt(ids.length), what));
      combos++;
    }
    assertEquals(3 * 2 * 5 * 3 * 2 * 2, combos);
    System.out.printf("cached vs full, %d variant combinations: worst relative error %.1e%n", combos, worst);
  }

  @Test
  void cachedDecodingEqualsForwardAllOnAWiderModel() {
    // Sizes where OpenBLAS picks other kernels for one row than for many (d_model 128, 48 positions).
    ModelConfig c = TinyLms.config(97, 48, 128, 2, 8, 200, NormPlacement.PRE, NormType.RMSNORM, Ffn.SWIGLU,
        Positions.ROPE, false, true);
    TransformerLmEngine e = TransformerLmEngine.load(c, TinyLms.randomWeights(c, 11), "wide");
    int[] ids = new Random(9).ints(48, 0, 97).toArray();
    double worst = checkCachedEqualsFull(e, ids, 17, "wide");
    System.out.printf("cached vs full, d_model 128: worst relative error %.1e%n", worst);
  }

  @Test
  void aCacheHoldingAnotherHistoryIsCaught() {
    // The comparison can fail: decoding after a prompt that differs in one early token gives logits that differ
    // from the full forward by far more than the tolerance.
    ModelConfig c = TinyLms.cs336(31, 16, 16, 2, 2, 20);
    TransformerLmEngine e = TransformerLmEngine.load(c, TinyLms.randomWeights(c, 3), "test");
    int[] ids = {3, 1, 4, 1, 5, 9};
    NdArray full = e.forwardAll(ids);
    e.prefill(new int[] {3, 2, 4, 1, 5});
    NdArray wrong = e.decode(9);
    assertThrows(org.opentest4j.AssertionFailedError.class,
        () -> TinyLms.assertClose(full.select(0, 5), wrong, TOL, "other history"));
  }

  /** Prefill of the first {@code promptLength} ids, then one decode per remaining id; every step vs forwardAll. */
  static double checkCachedEqualsFull(TransformerLmEngine e, int[] ids, int promptLength, String what) {
    NdArray full = e.forwardAll(ids);
    double worst = TinyLms.assertClose(full.select(0, promptLength - 1),
        e.prefill(Arrays.copyOf(ids, promptLength)), TOL, what + ", prefill of " + promptLength);
    for (int p = promptLength; p < ids.length; p++) {
      NdArray step = e.decode(ids[p]);
      worst = Math.max(worst, TinyLms.assertClose(full.select(0, p), step, TOL, what + ", decode at " + p));
    }
    assertEquals(ids.length, e.position());
    return worst;
  }

  @Test
  void chunkedAppendAlignsTheCausalMaskBottomRight() {
    // Chunks of 3 after a prompt of 2: the queries at positions 2..4 see keys 0..2, 0..3, 0..4 of the cache.
    ModelConfig c = TinyLms.cs336(31, 16, 16, 2, 2, 20);
    TransformerLmEngine e = TransformerLmEngine.load(c, TinyLms.randomWeights(c, 3), "test");
    int[] ids = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};
    NdArray full = e.forwardAll(ids);
    e.prefill(new int[] {3, 1});
    TinyLms.assertClose(full.select(0, 4), e.append(new int[] {4, 1, 5}), TOL, "chunk 2..4");
    TinyLms.assertClose(full.select(0, 10), e.append(new int[] {9, 2, 6, 5, 3, 5}), TOL, "chunk 5..10");
    // prefill starts over: the same prompt gives the same logits as the first time.
    TinyLms.assertClose(full.select(0, 1), e.prefill(new int[] {3, 1}), TOL, "prefill after reset");
    assertEquals(2, e.position());
  }

  @Test
  void contextLimitIsAClearErrorAndLeavesTheCacheUsable() {
    ModelConfig c = TinyLms.cs336(13, 4, 8, 1, 2, 12);
    TransformerLmEngine e = TransformerLmEngine.load(c, TinyLms.randomWeights(c, 1), "test");
    IllegalArgumentException tooLong = assertThrows(IllegalArgumentException.class,
        () -> e.prefill(new int[] {1, 2, 3, 4, 5}));
    assertTrue(tooLong.getMessage().contains("the prompt has 5 tokens but the model's context_length is 4"),
        tooLong.getMessage());
    NdArray full = e.forwardAll(new int[] {1, 2, 3, 4});
    e.prefill(new int[] {1, 2, 3});
    e.decode(4);
    IllegalStateException full4 = assertThrows(IllegalStateException.class, () -> e.decode(5));
    assertTrue(full4.getMessage().contains("4 tokens are cached") && full4.getMessage().contains("context_length of 4"),
        full4.getMessage());
    assertEquals(4, e.position());
    TinyLms.assertClose(full.select(0, 2), e.prefill(new int[] {1, 2, 3}), TOL, "after the error");
  }

  @Test
  void badTokenIdsAndEmptyPromptsAreNamed() {
    ModelConfig c = TinyLms.cs336(13, 4, 8, 1, 2, 12);
    TransformerLmEngine e = TransformerLmEngine.load(c, TinyLms.randomWeights(c, 1), "test");
    IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> e.prefill(new int[] {1, 13}));
    assertTrue(bad.getMessage().contains("token id 13 at index 1 is outside the model's vocabulary [0, 13)"),
        bad.getMessage());
    assertThrows(IllegalArgumentException.class, () -> e.decode(-1));
    assertEquals(0, e.position());
    IllegalArgumentException empty = assertThrows(IllegalArgumentException.class, () -> e.prefill(new int[0]));
    assertTrue(empty.getMessage().contains("the prompt is empty"), empty.getMessage());
  }

  @Test
  void unusableConfigsAreRefused() {
    ModelConfig oddHeads = TinyLms.cs336(13, 4, 12, 1, 4, 12); // d_head 3 with RoPE
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> TransformerLmEngine.requireUsable(oddHeads, "config.json"));
    assertTrue(e.getMessage().contains("config.json: RoPE rotates pairs of dims, but the head width"), e.getMessage());
    ModelConfig indivisible = TinyLms.cs336(13, 4, 10, 1, 4, 12);
    e = assertThrows(IllegalArgumentException.class,
        () -> TransformerLmEngine.requireUsable(indivisible, "config.json"));
    assertTrue(e.getMessage().contains("d_model (10) is not divisible by num_heads (4)"), e.getMessage());
  }
}
