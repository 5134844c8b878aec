package dev.kiln.dsl;

/** Initialisers of {@link Param} tensors: the ones the CS336 Transformer uses. */
public enum Init {
  /**
   * Normal with mean 0 and standard deviation {@code sqrt(2 / (fan_in + fan_out))}, truncated at ±3σ (CS336's
   * {@code Linear}). For a shape {@code d_out d_in}, fan_in is the last dim and fan_out the product of the others.
   */
  TRUNC_NORMAL_FAN_IN_OUT,
  /** Normal with mean 0 and standard deviation 1, truncated at ±3 (CS336's {@code Embedding}). */
  TRUNC_NORMAL_UNIT,
  /** All ones (RMSNorm gains). */
  ONES,
  /** All zeros (biases). */
  ZEROS
}
