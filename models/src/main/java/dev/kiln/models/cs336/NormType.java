package dev.kiln.models.cs336;

/** The norm (config key {@code norm}). */
public enum NormType {
  /** {@code x / sqrt(mean(x²) + eps) · g} (CS336). */
  RMSNORM,
  /** {@code (x − mean) / sqrt(var + eps) · g + b}, biased variance, as PyTorch's {@code LayerNorm}. */
  LAYERNORM
}
