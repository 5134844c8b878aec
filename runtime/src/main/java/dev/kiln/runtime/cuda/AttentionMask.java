package dev.kiln.runtime.cuda;

/** Which keys a query may attend to. */
public enum AttentionMask {
  /** Every key. */
  NONE,
  /** Keys at or before the query's own position (autoregressive language models). */
  CAUSAL
}
