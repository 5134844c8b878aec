package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousOldSwitch(@Param(shape = "d_model", init = Init.ONES) Tensor gain, Mask mask) {
  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    switch (mask) {
      case CAUSAL: // expect [UnsupportedConstruct] 7
        return x.mul(gain);
      default:
        return x;
    }
  }
}
