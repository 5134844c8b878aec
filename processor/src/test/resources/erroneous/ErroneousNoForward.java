package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousNoForward( // expect [BadModule] 8
    @Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  public Tensor apply(Tensor x) {
    return x.mul(gain);
  }
}
