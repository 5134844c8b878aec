package dev.kiln.runtime.eager.cs336;

// The CS336 modules as the processor's positive fixtures write them (processor/src/test/resources/cs336), run here
// on the eager interpreter. The runtime does not run Kiln's annotation processor, so nothing is generated.

import static dev.kiln.dsl.Ops.rope;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** Rotary position embedding; it has no parameters, only the base theta. */
@Module
public record Rope(@Hyper("rope_theta") double theta) {
  @Forward
  public @Shape("... s d_k") Tensor apply(@Shape("... s d_k") Tensor x, @Shape("s") Tensor positions) {
    return rope(x, positions, theta);
  }
}
