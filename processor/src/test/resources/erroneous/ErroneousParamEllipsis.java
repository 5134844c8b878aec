package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousParamEllipsis(
    @Param(shape = "... d_in", init = Init.ONES) Tensor weight) { // expect [UnboundDim] 5
  @Forward
  public @Shape("... d_in") Tensor apply(@Shape("... d_in") Tensor x) {
    return x.mul(weight);
  }
}
