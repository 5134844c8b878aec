package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousMissingShape(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("... d_model") Tensor apply(
      Tensor x) { // expect [MissingShape] 14
    return x.mul(gain);
  }
}
