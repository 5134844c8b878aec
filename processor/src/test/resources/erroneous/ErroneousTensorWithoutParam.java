package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousTensorWithoutParam(
    Tensor weight) { // expect [BadModule] 12
  @Forward
  public @Shape("... d_in") Tensor apply(@Shape("... d_in") Tensor x) {
    return x.mul(weight);
  }
}
