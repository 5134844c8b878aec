package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousBranchShapes(@Bind("d_in=d_model d_out=d_ff") Linear up, boolean project) {
  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    return project ? up.apply(x) : x; // expect [ShapeMismatch] 12
  }
}
