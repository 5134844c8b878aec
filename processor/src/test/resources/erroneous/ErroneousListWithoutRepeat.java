package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousListWithoutRepeat(
    List<Linear> layers) { // expect [BadModule] 18
  @Forward
  public @Shape("... d_in") Tensor apply(@Shape("... d_in") Tensor x) {
    return x;
  }
}
