package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousEinsumOperandRank(@Param(shape = "d_out d_in", init = Init.TRUNC_NORMAL_FAN_IN_OUT) Tensor weight) {
  @Forward
  public @Shape("d_out") Tensor apply(@Shape("b d_in") Tensor x) {
    return einsum("d_out d_in, d_in -> d_out", weight, x); // expect [EinsumMismatch] 56
  }
}
