package dev.kiln.models.sample;

import static dev.kiln.dsl.Ops.einsum;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** An affine layer, {@code x Wᵀ + b}. */
@Module
public record Dense(
    @Param(shape = "d_out d_in", init = Init.TRUNC_NORMAL_FAN_IN_OUT) Tensor weight,
    @Param(shape = "d_out", init = Init.ZEROS) Tensor bias) {
  @Forward
  public @Shape("... d_out") Tensor apply(@Shape("... d_in") Tensor x) {
    return einsum("... d_in, d_out d_in -> ... d_out", x, weight).add(bias);
  }
}
