package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousSubModuleScalarArg(@Bind("d_in=d_model d_out=d_model") Linear proj) {
  @Forward
  public @Shape("d_model") Tensor apply(@Shape("b d_model") Tensor x, @Shape("b") Tensor targets) {
    Tensor total = crossEntropy(x, targets);
    return proj.apply(total); // expect [ShapeMismatch] 23
  }
}
