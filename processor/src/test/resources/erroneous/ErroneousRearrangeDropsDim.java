package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousRearrangeDropsDim(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("b d_model") Tensor apply(@Shape("b s d_model") Tensor x) {
    return rearrange(x, "b s d_model -> b d_model"); // expect [RearrangeMismatch] 25
  }
}
