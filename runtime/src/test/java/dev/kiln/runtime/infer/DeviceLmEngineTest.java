package dev.kiln.runtime.infer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.spi.Device;
import dev.kiln.runtime.cpu.device.CpuDevice;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The device-SPI engine (here on the CPU device) against the reference {@link TransformerLmEngine}: prefill and then
 * one decode per token, every variant combination, logits compared at every step.
 *
 * <p>Tolerance 1e-4 relative to max(1, |logit|): both compute the same function in float32 storage, but the reference
 * takes norm statistics and RoPE angles in double and the device engine in float32 (RSQRT of a float sum, the device's
 * RoPE tables), and decode steps use another summation order (two GEMMs and a softmax against the fused attention of
 * the full forward). Measured worst over the 360 combinations (two generations each): 4.7e-5, so the bound has a margin
 * of 2; a wrong cache or position is off by orders of magnitude more
 * ({@link #aWrongCacheIsCaughtAndPrefillStartsOver}).
 */
class DeviceLmEngineTest {
  static final double TOL = 1e-4;

  /**
   * Prefill of {@code promptLength} ids then a decode per remaining id, each step against the reference; then a second
   * generation on the same engine with a prompt of half the length (prefill starts over: the cache rows the first
   * one filled must not leak into the second, and on the GPU the second replays the first one's decode graph).
   */
  static double checkAgainstReference(ModelConfig c, LmWeights w, Device device, int[] ids, int promptLength,
      String what) {
    TransformerLmEngine ref = new TransformerLmEngine(w);
    double worst = 0;
    try (DeviceLmEngine e = new DeviceLmEngine(w, device)) {
      for (int prompt : new int[] {promptLength, Math.max(1, promptLength / 2)}) {
        worst = Math.max(worst, TinyLms.assertClose(ref.prefill(Arrays.copyOf(ids, prompt)),
            e.prefill(Arrays.copyOf(ids, prompt)), TOL, what + ", prefill of " + prompt));
        for (int p = prompt; p < ids.length; p++) {
          worst = Math.max(worst, TinyLms.assertClose(ref.decode(ids[p]), e.decode(ids[p]), TOL,
              what + ", decode at " + p + " after a prompt of " + prompt));
        }
        assertEquals(ids.length, e.position());
      }
    }
    return worst;
  }

  @Test
  void everyVariantFollowsTheReferenceEngine() {
    Random rnd = new Random(7);
    Device cpu = new CpuDevice();
    int combos = 0;
    double worst = 0;
    for (ModelConfig c : TinyLms.everyVariant(29, 12, 16, 2, 4, 24)) {
      String what = TinyLms.describe(c);
      LmWeights w = LmWeights.from(c, TinyLms.randomWeights(c, combos), what);
      int[] ids = rnd.ints(2 + rnd.nextInt(11), 0, 29).toArray();
      worst = Math.max(worst, checkAgainstReference(c, w, cpu, ids, 1 + rnd.nextInt(ids.length - 1), what));
      combos++;
    }
    assertEquals(3 * 2 * 5 * 3 * 2 * 2, combos);
    System.out.printf("device engine vs reference, %d variant combinations: worst relative error %.1e%n", combos,
        worst);
  }

  @Test
  void aWrongCacheIsCaughtAndPrefillStartsOver() {
    // The comparison can fail: after a prompt that differs in one early token the logits differ by far more than
    // the tolerance. And prefill empties the cache: the right prompt then gives the reference's logits again.
    ModelConfig c = TinyLms.cs336(31, 16, 16, 2, 2, 20);
    LmWeights w = LmWeights.from(c, TinyLms.randomWeights(c, 3), "test");
    TransformerLmEngine ref = new TransformerLmEngine(w);
    NdArray full = ref.forwardAll(new int[] {3, 1, 4, 1, 5, 9});
    try (DeviceLmEngine e = new DeviceLmEngine(w, new CpuDevice())) {
      e.prefill(new int[] {3, 2, 4, 1, 5});
      NdArray wrong = e.decode(9);
      assertThrows(org.opentest4j.AssertionFailedError.class,
          () -> TinyLms.assertClose(full.select(0, 5), wrong, TOL, "other history"));
      e.prefill(new int[] {3, 1, 4, 1, 5});
      TinyLms.assertClose(full.select(0, 5), e.decode(9), TOL, "after a new prefill");
      // A chunk appended after the prompt runs token by token against the cache.
      e.prefill(new int[] {3, 1});
      TinyLms.assertClose(full.select(0, 5), e.append(new int[] {4, 1, 5, 9}), TOL, "chunk 2..5");
    }
  }

  /**
   * A chunk that fails at its third token leaves the position where the call started and the cache as before: the
   * same chunk fed again gives the reference's logits (rows the failed call added to would otherwise count twice).
   */
  @Test
  void aFailedAppendCanBeRepeated() {
    ModelConfig c = TinyLms.cs336(31, 16, 16, 2, 2, 20);
    LmWeights w = LmWeights.from(c, TinyLms.randomWeights(c, 3), "test");
    NdArray full = new TransformerLmEngine(w).forwardAll(new int[] {3, 1, 4, 1, 5, 9});
    Device cpu = new CpuDevice();
    int[] scatters = {0};
    // Each decode step adds keys and values to 2 layers: the 5th add is the third token's first.
    Device failing = (Device) java.lang.reflect.Proxy.newProxyInstance(Device.class.getClassLoader(),
        new Class<?>[] {Device.class}, (proxy, method, args) -> {
          if (method.getName().equals("scatterAddRows") && ++scatters[0] == 5) {
            throw new IllegalStateException("injected failure");
          }
          try {
            return method.invoke(cpu, args);
          } catch (java.lang.reflect.InvocationTargetException e) {
            throw e.getCause();
          }
        });
    try (DeviceLmEngine e = new DeviceLmEngine(w, failing)) {
      e.prefill(new int[] {3, 1});
      IllegalStateException thrown = assertThrows(IllegalStateException.class,
          () -> e.append(new int[] {4, 1, 5, 9}));
      assertEquals("injected failure", thrown.getMessage());
      assertEquals(2, e.position());
      TinyLms.assertClose(full.select(0, 5), e.append(new int[] {4, 1, 5, 9}), TOL, "the chunk fed again");
      assertEquals(6, e.position());
    }
  }

  @Test
  void badInputIsAClearErrorAndLeavesThePositionAlone() {
    ModelConfig c = TinyLms.cs336(13, 4, 8, 1, 2, 12);
    LmWeights w = LmWeights.from(c, TinyLms.randomWeights(c, 1), "test");
    try (DeviceLmEngine e = new DeviceLmEngine(w, new CpuDevice())) {
      IllegalArgumentException tooLong = assertThrows(IllegalArgumentException.class,
          () -> e.prefill(new int[] {1, 2, 3, 4, 5}));
      assertTrue(tooLong.getMessage().contains("the prompt has 5 tokens but the model's context_length is 4"),
          tooLong.getMessage());
      e.prefill(new int[] {1, 2, 3});
      IllegalArgumentException badId = assertThrows(IllegalArgumentException.class, () -> e.decode(13));
      assertTrue(badId.getMessage().contains("outside the model's vocabulary [0, 13)"), badId.getMessage());
      assertEquals(3, e.position());
      e.decode(4);
      IllegalStateException full = assertThrows(IllegalStateException.class, () -> e.decode(5));
      assertTrue(full.getMessage().contains("the context is full"), full.getMessage());
      assertEquals(4, e.position());
    }
  }
}
