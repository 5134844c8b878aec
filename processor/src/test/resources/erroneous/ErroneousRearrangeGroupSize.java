package erroneous;

import static dev.kiln.dsl.Ops.*;

import cs336.*;
import dev.kiln.dsl.*;
import dev.kiln.dsl.Module;
import java.util.List;

@Module
public record ErroneousRearrangeGroupSize(@Hyper("num_heads") int heads, @Hyper("head_dim") int headDim, @Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("b num_heads s head_dim") Tensor apply(@Shape("b s d_model") Tensor x) {
    return rearrange(x, "b s (h d) -> b h s d", size("h", heads), size("d", headDim)); // expect [RearrangeMismatch] 22
  }
}
