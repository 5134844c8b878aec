package dev.kiln.runtime.eager.cs336;

// The CS336 modules as the processor's positive fixtures write them (processor/src/test/resources/cs336), run here
// on the eager interpreter. The runtime does not run Kiln's annotation processor, so nothing is generated.

import static dev.kiln.dsl.Ops.mean;
import static dev.kiln.dsl.Ops.rsqrt;
import static dev.kiln.dsl.Ops.square;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** RMSNorm written out from primitives (Ops.rmsNorm is the same composite). */
@Module
public record RmsNorm(@Param(shape = "d_model", init = Init.ONES) Tensor weight, @Hyper("eps") float eps) {
  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    Tensor inverseRms = rsqrt(mean(square(x)).add(eps));
    return x.mul(inverseRms).mul(weight);
  }
}
