package dev.kiln.models.cs336;

import static dev.kiln.dsl.Ops.attention;
import static dev.kiln.dsl.Ops.rearrange;
import static dev.kiln.dsl.Ops.rope;
import static dev.kiln.dsl.Ops.size;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/**
 * Causal multi-head self-attention. Heads are consecutive slices of {@code d_model}; with QK-norm each head's queries
 * and keys are normalised over {@code d_head} (gains shared by the heads) before RoPE, which rotates the pairs
 * {@code (2i, 2i+1)} of each head when the config's {@code positions} is {@code rope}.
 */
@Module
public record MultiHeadSelfAttention(
    @Bind("d_in=d_model d_out=d_model") Linear qProj,
    @Bind("d_in=d_model d_out=d_model") Linear kProj,
    @Bind("d_in=d_model d_out=d_model") Linear vProj,
    @Bind("d_in=d_model d_out=d_model") Linear outputProj,
    @Bind("d_model=d_model/num_heads") Norm qNorm,
    @Bind("d_model=d_model/num_heads") Norm kNorm,
    @Hyper("num_heads") int numHeads,
    @Hyper("rope_theta") double ropeTheta,
    @Hyper("positions") Positions positionKind,
    @Hyper("qk_norm") boolean qkNorm) {

  static final String SPLIT = "... s (h d_head) -> ... h s d_head";

  @Forward
  public @Shape("... s d_model") Tensor apply(@Shape("... s d_model") Tensor x, @Shape("s") Tensor positions) {
    Tensor q = rearrange(qProj.apply(x), SPLIT, size("h", numHeads));
    Tensor k = rearrange(kProj.apply(x), SPLIT, size("h", numHeads));
    Tensor v = rearrange(vProj.apply(x), SPLIT, size("h", numHeads));
    if (qkNorm) {
      q = qNorm.apply(q);
      k = kNorm.apply(k);
    }
    if (positionKind == Positions.ROPE) {
      q = rope(q, positions, ropeTheta);
      k = rope(k, positions, ropeTheta);
    }
    Tensor o = attention(q, k, v, Mask.CAUSAL);
    return outputProj.apply(rearrange(o, "... h s d_head -> ... s (h d_head)"));
  }
}
