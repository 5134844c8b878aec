package dev.kiln.models.cs336;

import static dev.kiln.dsl.Ops.einsum;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** {@code y = x Wᵀ} without bias, as CS336's {@code Linear}: weight {@code [d_out, d_in]}. */
@Module
public record Linear(@Param(shape = "d_out d_in", init = Init.TRUNC_NORMAL_FAN_IN_OUT) Tensor weight) {
  @Forward
  public @Shape("... d_out") Tensor apply(@Shape("... d_in") Tensor x) {
    return einsum("... d_in, d_out d_in -> ... d_out", x, weight);
  }
}
