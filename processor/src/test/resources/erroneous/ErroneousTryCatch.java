package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousTryCatch(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    try { // expect [UnsupportedConstruct] 5
      return x.mul(gain);
    } catch (RuntimeException e) {
      return x;
    }
  }
}
