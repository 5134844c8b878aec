package prims;

import static dev.kiln.dsl.Ops.cos;
import static dev.kiln.dsl.Ops.exp;
import static dev.kiln.dsl.Ops.greater;
import static dev.kiln.dsl.Ops.less;
import static dev.kiln.dsl.Ops.log;
import static dev.kiln.dsl.Ops.maximum;
import static dev.kiln.dsl.Ops.sigmoid;
import static dev.kiln.dsl.Ops.sin;
import static dev.kiln.dsl.Ops.softmax;
import static dev.kiln.dsl.Ops.sqrt;
import static dev.kiln.dsl.Ops.square;
import static dev.kiln.dsl.Ops.tanh;
import static dev.kiln.dsl.Ops.where;

import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Param;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** Every pointwise primitive, on parameters broadcast over the batch, so each one's gradient is checked. */
@Module
public record Pointwise(
    @Param(shape = "d", init = Init.TRUNC_NORMAL_UNIT) Tensor w,
    @Param(shape = "d", init = Init.ONES) Tensor g) {
  @Forward
  public @Shape("b d") Tensor apply(@Shape("b d") Tensor x) {
    Tensor a = x.mul(w);
    Tensor pos = sqrt(square(a).add(1.0));
    Tensor l = log(pos.add(g.mul(g)));
    Tensor t = tanh(a).neg();
    Tensor sel = where(greater(a, t), l.div(pos), where(less(a, t.sub(0.5)), t, sigmoid(a)));
    Tensor m = maximum(sel, exp(a.mul(0.3)).sub(1.0));
    return softmax(m.add(cos(a)).mul(sin(t))).mul(g);
  }
}
