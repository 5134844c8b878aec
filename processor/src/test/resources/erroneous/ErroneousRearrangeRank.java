package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousRearrangeRank(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("d_model b") Tensor apply(@Shape("b s d_model") Tensor x) {
    return rearrange(x, "b d_model -> d_model b"); // expect [RearrangeMismatch] 22
  }
}
