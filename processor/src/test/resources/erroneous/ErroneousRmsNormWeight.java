package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousRmsNormWeight(@Param(shape = "d_ff", init = Init.ONES) Tensor weight, @Param(shape = "d_model", init = Init.ONES) Tensor unused, float eps) {
  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    return rmsNorm(x, weight, eps); // expect [BroadcastConflict] 23
  }
}
