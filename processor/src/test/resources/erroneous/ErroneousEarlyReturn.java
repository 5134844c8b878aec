package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousEarlyReturn(@Bind("d_in=d_model d_out=d_ff") Linear up, boolean skip) {
  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    if (skip) {
      return up.apply(x); // expect [ShapeMismatch] 14
    }
    return x;
  }
}
