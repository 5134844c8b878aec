package prims;

import static dev.kiln.dsl.Ops.relu;
import static dev.kiln.dsl.Ops.topk;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** Top-k and a branch on a boolean hyper-parameter. */
@Module
public record Selection(@Param(shape = "d", init = Init.TRUNC_NORMAL_UNIT) Tensor w, @Hyper("rectify") boolean rectify) {
  @Forward
  public @Shape("b 2") Tensor apply(@Shape("b d") Tensor x) {
    Tensor h = x.mul(w);
    if (rectify) {
      h = relu(h);
    }
    return topk(h.add(x), 2).values();
  }
}
