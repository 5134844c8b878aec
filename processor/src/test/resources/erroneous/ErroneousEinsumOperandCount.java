package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousEinsumOperandCount(@Param(shape = "d_out d_in", init = Init.TRUNC_NORMAL_FAN_IN_OUT) Tensor weight) {
  @Forward
  public @Shape("... d_out") Tensor apply(@Shape("... d_in") Tensor x) {
    return einsum("... d_in, d_out d_in -> ... d_out", x); // expect [EinsumMismatch] 12
  }
}
