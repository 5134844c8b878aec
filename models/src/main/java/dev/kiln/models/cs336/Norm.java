package dev.kiln.models.cs336;

import static dev.kiln.dsl.Ops.mean;
import static dev.kiln.dsl.Ops.rmsNorm;
import static dev.kiln.dsl.Ops.rsqrt;
import static dev.kiln.dsl.Ops.square;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/**
 * RMSNorm or LayerNorm over the last dim, as the config's {@code norm} says. The bias is LayerNorm's; an RMSNorm
 * model never reads it (its gradient is zero), and the model's state dict leaves it out.
 */
@Module
public record Norm(
    @Param(shape = "d_model", init = Init.ONES) Tensor weight,
    @Param(shape = "d_model", init = Init.ZEROS) Tensor bias,
    @Hyper("norm") NormType type,
    @Hyper("norm_eps") double eps) {

  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    if (type == NormType.LAYERNORM) {
      Tensor centred = x.sub(mean(x));
      return centred.mul(rsqrt(mean(square(centred)).add(eps))).mul(weight).add(bias);
    }
    return rmsNorm(x, weight, eps);
  }
}
