package dev.kiln.models.cs336;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/**
 * One Transformer block: attention, then the feed-forward network, each on a residual branch; the norms sit where
 * the config's {@code norm_placement} says (with {@code none}, {@code ln1}/{@code ln2} are never read and the state
 * dict leaves them out).
 */
@Module
public record TransformerBlock(
    Norm ln1,
    MultiHeadSelfAttention attn,
    Norm ln2,
    FeedForward ffn,
    @Hyper("norm_placement") NormPlacement placement) {

  @Forward
  public @Shape("... s d_model") Tensor apply(@Shape("... s d_model") Tensor x, @Shape("s") Tensor positions) {
    if (placement == NormPlacement.POST) {
      Tensor h = ln1.apply(x.add(attn.apply(x, positions)));
      return ln2.apply(h.add(ffn.apply(h)));
    }
    if (placement == NormPlacement.NONE) {
      Tensor h = x.add(attn.apply(x, positions));
      return h.add(ffn.apply(h));
    }
    Tensor h = x.add(attn.apply(ln1.apply(x), positions));
    return h.add(ffn.apply(ln2.apply(h)));
  }
}
