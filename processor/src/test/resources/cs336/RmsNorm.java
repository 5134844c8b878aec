package cs336;

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
