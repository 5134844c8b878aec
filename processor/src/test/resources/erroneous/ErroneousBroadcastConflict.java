package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousBroadcastConflict(@Param(shape = "d_ff", init = Init.ONES) Tensor gain, @Param(shape = "d_model", init = Init.ONES) Tensor bias) {
  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    return x.mul(gain); // expect [BroadcastConflict] 18
  }
}
