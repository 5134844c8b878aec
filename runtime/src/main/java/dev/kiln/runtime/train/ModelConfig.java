package dev.kiln.runtime.train;

/**
 * The model section of a training config: CS336's Transformer LM hyper-parameters ({@code vocab_size},
 * {@code context_length}, {@code d_model}, {@code num_layers}, {@code num_heads}, {@code d_ff}, {@code rope_theta})
 * and the architecture variants CS336's ablations switch between. The trainer does not interpret them; the model
 * built from the config does.
 */
public record ModelConfig(
    @Required int vocabSize,
    @Required int contextLength,
    @Required int dModel,
    @Required int numLayers,
    @Required int numHeads,
    @Required int dFf,
    double ropeTheta,
    NormPlacement normPlacement,
    NormType norm,
    double normEps,
    Ffn ffn,
    Positions positions,
    boolean tiedEmbeddings,
    boolean qkNorm,
    double zLoss) {

  /** Where each block normalises: before each sub-layer (CS336), after the residual add, or not at all. */
  public enum NormPlacement {
    PRE,
    POST,
    NONE
  }

  public enum NormType {
    RMSNORM,
    LAYERNORM
  }

  /** The feed-forward network: CS336's SwiGLU, or a plain two-matrix MLP with the named activation. */
  public enum Ffn {
    SWIGLU,
    SILU,
    GELU,
    RELU,
    SQUARED_RELU
  }

  /** Position information: rotary embeddings on each head, none, or a learned absolute embedding. */
  public enum Positions {
    ROPE,
    NOPE,
    LEARNED
  }

  /** The defaults; the required components hold placeholders that the loader never lets through. */
  public static ModelConfig defaults() {
    return new ModelConfig(
        0, 0, 0, 0, 0, 0, 10_000.0, NormPlacement.PRE, NormType.RMSNORM, 1e-5, Ffn.SWIGLU, Positions.ROPE, false,
        false, 0.0);
  }

  /** Width of one attention head. */
  public int headDim() {
    return dModel / numHeads;
  }
}
