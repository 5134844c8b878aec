package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousWhereBroadcast(@Param(shape = "d_ff", init = Init.ONES) Tensor a, @Param(shape = "d_model", init = Init.ONES) Tensor b) {
  @Forward
  public @Shape("d_model") Tensor apply(@Shape("d_model") Tensor x) {
    return where(greater(x, b), a, b); // expect [BroadcastConflict] 33
  }
}
