package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousRepeatUnbound(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("b d_model") Tensor apply(@Shape("b d_model") Tensor x) {
    Tensor copies = repeat(gain, "d_model -> copies d_model"); // expect [UnboundDim] 34
    return x;
  }
}
