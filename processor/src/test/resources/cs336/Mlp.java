package cs336;

import static dev.kiln.dsl.Ops.crossEntropy;
import static dev.kiln.dsl.Ops.gelu;
import static dev.kiln.dsl.Ops.relu;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Loss;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/** A two-layer MLP classifier; the activation is a hyper-parameter. */
@Module
public record Mlp(
    @Bind("d_in=d_in d_out=d_hidden") Linear fc1,
    @Bind("d_in=d_hidden d_out=classes") Linear fc2,
    Activation activation) {

  public enum Activation { RELU, GELU }

  @Forward
  public @Shape("... classes") Tensor apply(@Shape("... d_in") Tensor x) {
    Tensor h = fc1.apply(x);
    switch (activation) {
      case RELU -> h = relu(h);
      case GELU -> h = gelu(h);
    }
    return fc2.apply(h);
  }

  @Loss
  public @Shape("") Tensor loss(@Shape("b d_in") Tensor x, @Shape("b") Tensor labels) {
    return crossEntropy(apply(x), labels);
  }
}
