package cs336;

import static dev.kiln.dsl.Ops.attention;
import static dev.kiln.dsl.Ops.rearrange;
import static dev.kiln.dsl.Ops.rope;
import static dev.kiln.dsl.Ops.size;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/**
 * Attention with the RoPE primitive inline, as the models' multi-head attention has it: the rotated q and k are read
 * only by attention, and their gradients only by the projections' GEMMs (through the rearrange merging the heads).
 */
@Module
public record RotaryAttention(
    @Bind("d_in=d_model d_out=d_model") Linear qProj,
    @Bind("d_in=d_model d_out=d_model") Linear kProj,
    @Bind("d_in=d_model d_out=d_model") Linear vProj,
    @Hyper("num_heads") int numHeads,
    @Hyper("rope_theta") double theta) {

  static final String SPLIT = "... s (h d_head) -> ... h s d_head";

  @Forward
  public @Shape("... s d_model") Tensor apply(@Shape("... s d_model") Tensor x, @Shape("s") Tensor positions) {
    Tensor q = rope(rearrange(qProj.apply(x), SPLIT, size("h", numHeads)), positions, theta);
    Tensor k = rope(rearrange(kProj.apply(x), SPLIT, size("h", numHeads)), positions, theta);
    Tensor v = rearrange(vProj.apply(x), SPLIT, size("h", numHeads));
    return rearrange(attention(q, k, v, Mask.CAUSAL), "... h s d_head -> ... s (h d_head)");
  }
}
