package dev.kiln.models.cs336;

/** How the model knows token positions (config key {@code positions}). */
public enum Positions {
  /** Rotary embeddings on every head's queries and keys (CS336). */
  ROPE,
  /** None: only the causal mask tells positions apart. */
  NOPE,
  /** A learned absolute embedding, {@code position_embeddings.weight}, added to the token embedding. */
  LEARNED
}
