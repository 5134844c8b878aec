package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousShapeUnclosedGroup(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("... d_model") Tensor apply(
      @Shape("... (d_model") Tensor x) { // expect [MalformedShape] 14
    return x.mul(gain);
  }
}
