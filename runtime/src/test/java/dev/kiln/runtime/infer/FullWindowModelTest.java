package dev.kiln.runtime.infer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Cache-free generation ({@link FullWindowModel}, what {@code kiln generate --device cuda} uses) against the KV-cache
 * engine: fed the same tokens, each step's logits agree, because each is the last row of a full causal forward.
 */
class FullWindowModelTest {
  @Test
  void everyStepEqualsTheCachedEngine() {
    ModelConfig c = TinyLms.cs336(31, 16, 16, 2, 2, 20);
    TransformerLmEngine cached = TransformerLmEngine.load(c, TinyLms.randomWeights(c, 5), "test");
    TransformerLmEngine reference = TransformerLmEngine.load(c, TinyLms.randomWeights(c, 5), "test");
    int[] calls = {0};
    FullWindowModel window = new FullWindowModel(c, ids -> {
      calls[0]++;
      int[] ints = Arrays.stream(ids).mapToInt(Math::toIntExact).toArray();
      return reference.forwardAll(ints).select(0, ints.length - 1).contiguous();
    });
    int[] prompt = {3, 1, 4};
    // The cached engine computes in another order (one row at a time): float32 rounding, 1e-5 of the largest logit.
    TinyLms.assertClose(cached.prefill(prompt), window.prefill(prompt), 1e-5, "prefill");
    Random rnd = new Random(2);
    while (window.position() < c.contextLength()) {
      int next = rnd.nextInt(c.vocabSize());
      NdArray a = cached.decode(next);
      NdArray b = window.decode(next);
      TinyLms.assertClose(a, b, 1e-5, "decode at position " + window.position());
      assertEquals(cached.position(), window.position());
    }
    assertEquals(c.contextLength() - prompt.length + 1, calls[0], "one full forward per token");
    IllegalStateException full = assertThrows(IllegalStateException.class, () -> window.decode(1));
    assertEquals(true, full.getMessage().contains("context is full"), full.getMessage());
    assertThrows(IllegalArgumentException.class, () -> window.prefill(new int[0]));
  }
}
