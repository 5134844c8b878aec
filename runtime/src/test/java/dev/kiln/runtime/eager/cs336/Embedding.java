package dev.kiln.runtime.eager.cs336;

// The CS336 modules as the processor's positive fixtures write them (processor/src/test/resources/cs336), run here
// on the eager interpreter. The runtime does not run Kiln's annotation processor, so nothing is generated.

import static dev.kiln.dsl.Ops.gather;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** Token ids to vectors. */
@Module
public record Embedding(@Param(shape = "vocab_size d_model", init = Init.TRUNC_NORMAL_UNIT) Tensor weight) {
  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("...") Tensor tokenIds) {
    return gather(weight, tokenIds);
  }
}
