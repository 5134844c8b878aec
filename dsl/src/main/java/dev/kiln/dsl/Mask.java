package dev.kiln.dsl;

/** Which query/key pairs {@link Ops#attention} lets through. */
public enum Mask {
  /** Every query sees every key. */
  NONE,
  /** Query {@code i} sees keys {@code 0..i} (decoder self-attention). */
  CAUSAL
}
