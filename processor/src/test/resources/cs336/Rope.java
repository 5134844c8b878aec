package cs336;

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
