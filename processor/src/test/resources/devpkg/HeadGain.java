package dev.kiln.fixture;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** A gain per element of a head. */
@Module
public record HeadGain(@Param(shape = "d_head", init = Init.TRUNC_NORMAL_UNIT) Tensor gain) {
  @Forward
  public @Shape("... d_head") Tensor apply(@Shape("... d_head") Tensor x) {
    return x.mul(gain);
  }
}
