package dev.kiln.runtime.infer;

import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;

/**
 * What {@link Generator} drives: a language model fed a prompt, then one token at a time, answering each time with
 * the logits of the next position. {@link TransformerLmEngine} does it with a KV cache on the CPU;
 * {@link DeviceLmEngine} runs the same equations on any {@link dev.kiln.dsl.spi.Device} (the GPU's among them).
 */
public interface NextTokenModel {
  ModelConfig config();

  /** Tokens consumed so far: the absolute position the next token will take. */
  int position();

  /** Starts over with {@code promptIds}; the logits of the last prompt position, float32 {@code [vocab_size]}. */
  NdArray prefill(int[] promptIds);

  /** Feeds one more token; the logits of the position after it. */
  NdArray decode(int tokenId);
}
