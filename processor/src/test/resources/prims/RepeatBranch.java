package prims;

import cs336.RmsNorm;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Repeat;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;
import java.util.List;

/**
 * A branch inside a @Repeat loop body (the processor crashed on it while checking the loop's carried shapes): each
 * layer either adds its norm to the residual or replaces it.
 */
@Module
public record RepeatBranch(@Repeat("n") List<RmsNorm> norms, @Hyper("residual") boolean residual) {
  @Forward
  public @Shape("b d_model") Tensor apply(@Shape("b d_model") Tensor x) {
    for (RmsNorm norm : norms) {
      if (residual) {
        x = x.add(norm.apply(x));
      } else {
        x = norm.apply(x).mul(x);
      }
    }
    return x;
  }
}
