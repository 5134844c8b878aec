package dev.kiln.runtime.data;

import dev.kiln.runtime.tensor.NdArray;
import java.util.Arrays;

/** Token ids {@code inputs[b, s]} and the ids that follow them, {@code targets[b, s]}: both I64 {@code [batch, seq]}. */
public record Batch(NdArray inputs, NdArray targets) {
  public Batch {
    if (inputs.rank() != 2 || !Arrays.equals(inputs.shape(), targets.shape())) {
      throw new IllegalArgumentException(
          "a batch needs inputs and targets of one shape [batch, seq], got " + Arrays.toString(inputs.shape())
              + " and " + Arrays.toString(targets.shape()));
    }
  }

  /** Rows in the batch. */
  public long size() {
    return inputs.shape(0);
  }

  /** Tokens predicted: batch × seq. */
  public long tokens() {
    return inputs.numel();
  }
}
