package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousRearrangeAddsDim(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("b s d_model") Tensor apply(@Shape("b d_model") Tensor x, @Shape("s") Tensor positions) {
    return rearrange(x, "b d_model -> b s d_model"); // expect [RearrangeMismatch] 25
  }
}
