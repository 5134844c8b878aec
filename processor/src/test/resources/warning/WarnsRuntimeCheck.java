package warning;

import static dev.kiln.dsl.Ops.einsum;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** Queries and keys of possibly different lengths s and t, used as if equal: provable only at run time. */
@Module
public record WarnsRuntimeCheck(@Param(shape = "d_model", init = Init.ONES) Tensor gain) {
  @Forward
  public @Shape("b s") Tensor apply(@Shape("b s d_model") Tensor q, @Shape("b t d_model") Tensor k) {
    return einsum("b s d_model, b s d_model -> b s", q, k);
  }
}
