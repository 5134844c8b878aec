package dev.kiln.runtime.eager.cs336;

// The CS336 modules as the processor's positive fixtures write them (processor/src/test/resources/cs336), run here
// on the eager interpreter. The runtime does not run Kiln's annotation processor, so nothing is generated.

import static dev.kiln.dsl.Ops.silu;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** The position-wise feed-forward network of the CS336 Transformer. */
@Module
public record SwiGlu(
    @Bind("d_in=d_model d_out=d_ff") Linear w1,
    @Bind("d_in=d_ff d_out=d_model") Linear w2,
    @Bind("d_in=d_model d_out=d_ff") Linear w3) {

  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    return w2.apply(silu(w1.apply(x)).mul(w3.apply(x)));
  }
}
