package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousParamShapeComma(
    @Param(shape = "d_out, d_in", init = Init.TRUNC_NORMAL_FAN_IN_OUT) Tensor weight) { // expect [MalformedShape] 5
  @Forward
  public @Shape("... d_in") Tensor apply(@Shape("... d_in") Tensor x) {
    return x;
  }
}
