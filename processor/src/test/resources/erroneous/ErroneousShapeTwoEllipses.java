package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousShapeTwoEllipses(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("... d_model ...") // expect [MalformedShape] 17
  Tensor apply(@Shape("... d_model") Tensor x) {
    return x.mul(gain);
  }
}
