package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousBindRhsMalformed(
    @Bind("d_in=d_model* d_out=d_ff") Linear w1) { // expect [MalformedShape] 5
  @Forward
  public @Shape("... d_ff") Tensor apply(@Shape("... d_model") Tensor x) {
    return w1.apply(x);
  }
}
