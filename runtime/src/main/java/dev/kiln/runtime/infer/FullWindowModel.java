package dev.kiln.runtime.infer;

import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.train.ModelConfig;
import java.util.Arrays;
import java.util.function.Function;

/**
 * Generation without a KV cache: every step runs the full causal forward over the tokens so far and keeps the last
 * position's logits. Each step costs a forward of the whole window (quadratic over a generation, where a cache is
 * linear), but any forward works: this is how the compiled DSL model generates on a GPU, where the cached engine
 * does not run yet.
 */
public final class FullWindowModel implements NextTokenModel {
  private final ModelConfig config;
  private final Function<long[], NdArray> lastLogits;
  private long[] ids = new long[0];

  /**
   * @param lastLogits token ids at positions 0..n-1 → float32 logits {@code [vocab_size]} of position n-1
   */
  public FullWindowModel(ModelConfig config, Function<long[], NdArray> lastLogits) {
    this.config = config;
    this.lastLogits = lastLogits;
  }

  @Override
  public ModelConfig config() {
    return config;
  }

  @Override
  public int position() {
    return ids.length;
  }

  @Override
  public NdArray prefill(int[] promptIds) {
    if (promptIds.length == 0) {
      throw new IllegalArgumentException("the prompt is empty: prefill needs at least one token");
    }
    if (promptIds.length > config.contextLength()) {
      throw new IllegalArgumentException("the prompt has " + promptIds.length + " tokens but the model's"
          + " context_length is " + config.contextLength() + "; shorten the prompt");
    }
    ids = Arrays.stream(promptIds).asLongStream().toArray();
    return run();
  }

  @Override
  public NdArray decode(int tokenId) {
    if (ids.length == config.contextLength()) {
      throw new IllegalStateException("the context is full: " + ids.length + " tokens (context_length "
          + config.contextLength() + ")");
    }
    if (tokenId < 0 || tokenId >= config.vocabSize()) {
      throw new IllegalArgumentException("token id " + tokenId + " is outside the vocabulary [0, "
          + config.vocabSize() + ")");
    }
    ids = Arrays.copyOf(ids, ids.length + 1);
    ids[ids.length - 1] = tokenId;
    return run();
  }

  private NdArray run() {
    NdArray logits = lastLogits.apply(ids.clone());
    if (logits.numel() != config.vocabSize()) {
      throw new IllegalStateException("the forward returned " + logits.numel() + " logits, expected vocab_size "
          + config.vocabSize());
    }
    return logits;
  }
}
