package dev.kiln.models.cs336;

/** Where each block normalises (config key {@code norm_placement}). */
public enum NormPlacement {
  /** Before each sub-layer, inside the residual branch: {@code x + f(norm(x))} (CS336). */
  PRE,
  /** After the residual add: {@code norm(x + f(x))} (the original Transformer). */
  POST,
  /** No norm anywhere, not even before the LM head. */
  NONE
}
