package dev.kiln.runtime.data;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.io.TokenFile;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;

/**
 * Training batches as CS336's {@code get_batch(x, batch_size, context_length)}: {@code batch_size} start offsets
 * {@code i} uniform in {@code [0, len − context_length)}, inputs {@code x[i : i+m]}, targets {@code x[i+1 : i+m+1]},
 * as I64 {@code [batch_size, context_length]}.
 *
 * <p>Offsets come from a Philox {@link Rng} (one block per row), so a batch depends only on the generator's state
 * before it: saving {@link #rngState()} in a checkpoint and constructing with it continues the exact sequence.
 */
public final class RandomBatches {
  private final TokenFile tokens;
  private final int batchSize;
  private final int contextLength;
  private final long vocabSize;
  private final Rng rng;
  private long drawn;

  /**
   * @param tokens an open token file of at least {@code contextLength + 1} tokens (see {@link TokenSource#open})
   * @param rng the generator; its state advances by {@code batchSize} per batch
   * @param drawn batches drawn before (kept in checkpoints for people reading them; the RNG state alone decides)
   */
  public RandomBatches(TokenFile tokens, int batchSize, int contextLength, long vocabSize, Rng rng, long drawn) {
    if (batchSize < 1 || contextLength < 1) {
      throw new IllegalArgumentException(
          "batch_size and context_length must be >= 1, got " + batchSize + " and " + contextLength);
    }
    if (tokens.length() < contextLength + 1L) {
      throw new IllegalArgumentException(
          "token file " + tokens.path() + " holds " + tokens.length() + " tokens, fewer than context_length + 1 = "
              + (contextLength + 1));
    }
    this.tokens = tokens;
    this.batchSize = batchSize;
    this.contextLength = contextLength;
    this.vocabSize = vocabSize;
    this.rng = rng;
    this.drawn = drawn;
  }

  /** The next batch. */
  public Batch next() {
    NdArray starts = rng.integers(NdArray.zeros(DType.I64, batchSize), 0, tokens.length() - contextLength);
    long[] x = new long[batchSize * contextLength];
    long[] y = new long[batchSize * contextLength];
    int[] window = new int[contextLength + 1];
    for (int b = 0; b < batchSize; b++) {
      long i = starts.getLong(b);
      tokens.read(i, window);
      TokenSource.checkIds(tokens, i, window, vocabSize);
      for (int s = 0; s < contextLength; s++) {
        x[b * contextLength + s] = window[s];
        y[b * contextLength + s] = window[s + 1];
      }
    }
    drawn++;
    return new Batch(NdArray.fromLongs(x, batchSize, contextLength), NdArray.fromLongs(y, batchSize, contextLength));
  }

  /** The generator's state now: what a checkpoint saves. */
  public Rng.State rngState() {
    return rng.state();
  }

  /** Batches drawn so far, including those before a resume. */
  public long batchesDrawn() {
    return drawn;
  }

  public TokenFile tokens() {
    return tokens;
  }
}
