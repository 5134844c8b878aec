package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousRearrangeSplitUnbound(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("b s d_model") Tensor apply(@Shape("b s d_model") Tensor x) {
    Tensor heads = rearrange(x, "b s (h d) -> b h s d"); // expect [UnboundDim] 30
    return x;
  }
}
