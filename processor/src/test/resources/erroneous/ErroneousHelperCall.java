package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousHelperCall(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  private Tensor scale(Tensor t) {
    return t.mul(gain);
  }

  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    return scale(x); // expect [UnsupportedConstruct] 12
  }
}
