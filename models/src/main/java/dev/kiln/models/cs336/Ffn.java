package dev.kiln.models.cs336;

/** The feed-forward network (config key {@code ffn}). */
public enum Ffn {
  /** {@code W2 (silu(W1 x) ⊙ W3 x)} (CS336). */
  SWIGLU,
  /** {@code W2 silu(W1 x)}. */
  SILU,
  /** {@code W2 gelu(W1 x)}, GeLU in its tanh form ({@code Ops.gelu}). */
  GELU,
  /** {@code W2 relu(W1 x)}. */
  RELU,
  /** {@code W2 relu(W1 x)²}. */
  SQUARED_RELU
}
