package dev.kiln.runtime.eager.cs336;

// The CS336 modules as the processor's positive fixtures write them (processor/src/test/resources/cs336), run here
// on the eager interpreter. The runtime does not run Kiln's annotation processor, so nothing is generated.

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** A pre-norm Transformer block. */
@Module
public record TransformerBlock(RmsNorm ln1, MultiHeadSelfAttention attn, RmsNorm ln2, SwiGlu ffn) {
  @Forward
  public @Shape("... s d_model") Tensor apply(@Shape("... s d_model") Tensor x, @Shape("s") Tensor positions) {
    Tensor h = x.add(attn.apply(ln1.apply(x), positions));
    return h.add(ffn.apply(ln2.apply(h)));
  }
}
