package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousRearrangeNameConflict(@Param(shape = "d_model d_ff", init = Init.ONES) Tensor table) {
  @Forward
  public @Shape("d_model b") Tensor apply(@Shape("b d_ff") Tensor x) {
    return rearrange(x, "b d_model -> d_model b"); // expect [RearrangeMismatch] 22
  }
}
