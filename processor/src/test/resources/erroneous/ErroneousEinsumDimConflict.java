package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousEinsumDimConflict(@Param(shape = "d_out d_in", init = Init.TRUNC_NORMAL_FAN_IN_OUT) Tensor weight, @Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("... d_out") Tensor apply(@Shape("... d_model") Tensor x) {
    return einsum("... d_in, d_out d_in -> ... d_out", x, weight); // expect [EinsumMismatch] 56
  }
}
