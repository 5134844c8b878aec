package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousReduceKeepsAll(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("b") Tensor apply(@Shape("b d_model") Tensor x) {
    return reduce(x, "b d_model -> b extra", Reduction.MEAN); // expect [RearrangeMismatch] 22
  }
}
