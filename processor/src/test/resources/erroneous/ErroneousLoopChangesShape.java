package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousLoopChangesShape(@Bind("d_in=d_model d_out=d_ff") @Repeat("num_layers") List<Linear> layers) {
  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    for (Linear layer : layers) {
      x = layer.apply(x); // expect [ShapeMismatch] 7
    }
    return x;
  }
}
