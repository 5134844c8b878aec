package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousSubModuleBinding(@Bind("d_in=d_model d_out=d_ff") Linear w1, @Bind("d_in=d_model d_out=d_model") Linear w2, @Bind("d_in=d_model d_out=d_ff") Linear w3) {
  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    return w2.apply(silu(w1.apply(x)).mul(w3.apply(x))); // expect [ShapeMismatch] 21
  }
}
