package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousEinsumLiteralMismatch(@Param(shape = "d_out 3", init = Init.TRUNC_NORMAL_FAN_IN_OUT) Tensor weight) {
  @Forward
  public @Shape("... d_out") Tensor apply(@Shape("... 4") Tensor x) {
    return einsum("... c, d_out c -> ... d_out", x, weight); // expect [EinsumMismatch] 53
  }
}
