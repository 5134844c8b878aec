package dev.kiln.runtime.data;

import dev.kiln.runtime.io.TokenFile;
import dev.kiln.runtime.tensor.NdArray;

/**
 * A deterministic pass over a validation token file: non-overlapping windows, window {@code k} has inputs
 * {@code x[k·m : k·m+m]} and targets {@code x[k·m+1 : k·m+m+1]}; there are {@code (len − 1) / m} of them (the tail
 * that cannot fill a window is left out). Windows are grouped into batches of {@code batchSize} (the last batch may be
 * smaller), optionally only the first {@code maxBatches}.
 */
public final class SequentialBatches {
  private final TokenFile tokens;
  private final int batchSize;
  private final int contextLength;
  private final long vocabSize;
  private final long windows;
  private final long batches;

  /** @param maxBatches at most this many batches; 0 or less for all */
  public SequentialBatches(TokenFile tokens, int batchSize, int contextLength, long vocabSize, long maxBatches) {
    if (batchSize < 1 || contextLength < 1) {
      throw new IllegalArgumentException(
          "batch_size and context_length must be >= 1, got " + batchSize + " and " + contextLength);
    }
    if (tokens.length() < contextLength + 1L) {
      throw new IllegalArgumentException(
          "validation file " + tokens.path() + " holds " + tokens.length() + " tokens, fewer than context_length + 1"
              + " = " + (contextLength + 1));
    }
    this.tokens = tokens;
    this.batchSize = batchSize;
    this.contextLength = contextLength;
    this.vocabSize = vocabSize;
    long all = (tokens.length() - 1) / contextLength;
    long allBatches = (all + batchSize - 1) / batchSize;
    this.batches = maxBatches > 0 ? Math.min(maxBatches, allBatches) : allBatches;
    this.windows = Math.min(all, batches * batchSize);
  }

  /** Batches in the pass. */
  public long batchCount() {
    return batches;
  }

  /** Windows (rows) over all batches of the pass. */
  public long windowCount() {
    return windows;
  }

  /** Batch {@code i} of the pass. */
  public Batch batch(long i) {
    if (i < 0 || i >= batches) {
      throw new IndexOutOfBoundsException("validation batch " + i + " out of range [0, " + batches + ")");
    }
    long first = i * batchSize;
    int rows = (int) Math.min(batchSize, windows - first);
    long[] x = new long[rows * contextLength];
    long[] y = new long[rows * contextLength];
    int[] window = new int[contextLength + 1];
    for (int r = 0; r < rows; r++) {
      long start = (first + r) * contextLength;
      tokens.read(start, window);
      TokenSource.checkIds(tokens, start, window, vocabSize);
      for (int s = 0; s < contextLength; s++) {
        x[r * contextLength + s] = window[s];
        y[r * contextLength + s] = window[s + 1];
      }
    }
    return new Batch(NdArray.fromLongs(x, rows, contextLength), NdArray.fromLongs(y, rows, contextLength));
  }

  /** A loss function of one batch: the mean over its tokens. */
  @FunctionalInterface
  public interface BatchLoss {
    double loss(Batch b);
  }

  /**
   * The mean loss per token over the whole pass: each batch's mean weighted by its token count, so a short last
   * batch counts for what it holds.
   */
  public double meanLoss(BatchLoss f) {
    double sum = 0;
    long count = 0;
    for (long i = 0; i < batches; i++) {
      Batch b = batch(i);
      sum += f.loss(b) * b.tokens();
      count += b.tokens();
    }
    return sum / count;
  }
}
