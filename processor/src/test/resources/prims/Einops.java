package prims;

import static dev.kiln.dsl.Ops.einsum;
import static dev.kiln.dsl.Ops.logSoftmax;
import static dev.kiln.dsl.Ops.rearrange;
import static dev.kiln.dsl.Ops.reduce;
import static dev.kiln.dsl.Ops.repeat;
import static dev.kiln.dsl.Ops.size;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** Einsum layouts (batched, transposed, an output that needs a copy) and every einops operation. */
@Module
public record Einops(@Param(shape = "d e", init = Init.TRUNC_NORMAL_FAN_IN_OUT) Tensor m) {
  @Forward
  public @Shape("b e") Tensor apply(@Shape("b s d") Tensor x) {
    Tensor y = einsum("b s d, d e -> b e s", x, m);
    Tensor z = rearrange(y, "b e s -> b s e");
    Tensor scores = einsum("b s e, b t e -> b s t", z, z);
    Tensor mixed = einsum("b s t, b t e -> b s e", scores, z);
    Tensor sum = reduce(mixed, "b s e -> b e", Reduction.SUM);
    Tensor mx = reduce(z, "b s e -> b e", Reduction.MAX);
    Tensor mn = reduce(z, "b s e -> b e", Reduction.MIN);
    Tensor mean = reduce(z, "b s e -> b e", Reduction.MEAN);
    Tensor rep = repeat(mean, "b e -> b e k", size("k", 3));
    Tensor back = reduce(rep, "b e k -> b e", Reduction.SUM);
    Tensor split = rearrange(back, "b (h w) -> b h w", size("h", 2));
    Tensor merged = rearrange(split, "b h w -> b (w h)");
    return sum.add(mx).add(mn.mul(merged)).add(logSoftmax(mean));
  }
}
