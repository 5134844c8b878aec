package dev.kiln.runtime.eager.cs336;

// The CS336 modules as the processor's positive fixtures write them (processor/src/test/resources/cs336), run here
// on the eager interpreter. The runtime does not run Kiln's annotation processor, so nothing is generated.

import static dev.kiln.dsl.Ops.attention;
import static dev.kiln.dsl.Ops.rearrange;
import static dev.kiln.dsl.Ops.size;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** Causal multi-head self-attention with RoPE on queries and keys. */
@Module
public record MultiHeadSelfAttention(
    @Bind("d_in=d_model d_out=d_model") Linear qProj,
    @Bind("d_in=d_model d_out=d_model") Linear kProj,
    @Bind("d_in=d_model d_out=d_model") Linear vProj,
    @Bind("d_in=d_model d_out=d_model") Linear outputProj,
    Rope rope,
    @Hyper("num_heads") int numHeads) {

  static final String SPLIT = "... s (h d_head) -> ... h s d_head";

  @Forward
  public @Shape("... s d_model") Tensor apply(@Shape("... s d_model") Tensor x, @Shape("s") Tensor positions) {
    Tensor q = rope.apply(rearrange(qProj.apply(x), SPLIT, size("h", numHeads)), positions);
    Tensor k = rope.apply(rearrange(kProj.apply(x), SPLIT, size("h", numHeads)), positions);
    Tensor v = rearrange(vProj.apply(x), SPLIT, size("h", numHeads));
    Tensor o = attention(q, k, v, Mask.CAUSAL);
    return outputProj.apply(rearrange(o, "... h s d_head -> ... s (h d_head)"));
  }
}
