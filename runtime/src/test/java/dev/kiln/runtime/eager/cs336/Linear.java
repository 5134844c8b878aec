package dev.kiln.runtime.eager.cs336;

// The CS336 modules as the processor's positive fixtures write them (processor/src/test/resources/cs336), run here
// on the eager interpreter. The runtime does not run Kiln's annotation processor, so nothing is generated.

import static dev.kiln.dsl.Ops.einsum;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** y = x W^T, without bias, as CS336's Linear. */
@Module
public record Linear(@Param(shape = "d_out d_in", init = Init.TRUNC_NORMAL_FAN_IN_OUT) Tensor weight) {
  @Forward
  public @Shape("... d_out") Tensor apply(@Shape("... d_in") Tensor x) {
    return einsum("... d_in, d_out d_in -> ... d_out", x, weight);
  }
}
