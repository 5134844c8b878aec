package dev.kiln.models.cs336;

import static dev.kiln.dsl.Ops.gelu;
import static dev.kiln.dsl.Ops.relu;
import static dev.kiln.dsl.Ops.silu;
import static dev.kiln.dsl.Ops.square;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/**
 * The position-wise feed-forward network: CS336's SwiGLU, or {@code W2 act(W1 x)} with the activation the config's
 * {@code ffn} names. {@code w3} is SwiGLU's gate; the other kinds never read it and the state dict leaves it out.
 */
@Module
public record FeedForward(
    @Bind("d_in=d_model d_out=d_ff") Linear w1,
    @Bind("d_in=d_ff d_out=d_model") Linear w2,
    @Bind("d_in=d_model d_out=d_ff") Linear w3,
    @Hyper("ffn") Ffn kind) {

  @Forward
  public @Shape("... d_model") Tensor apply(@Shape("... d_model") Tensor x) {
    Tensor h = w1.apply(x);
    switch (kind) {
      case SWIGLU -> h = silu(h).mul(w3.apply(x));
      case SILU -> h = silu(h);
      case GELU -> h = gelu(h);
      case RELU -> h = relu(h);
      case SQUARED_RELU -> h = square(relu(h));
    }
    return w2.apply(h);
  }
}
