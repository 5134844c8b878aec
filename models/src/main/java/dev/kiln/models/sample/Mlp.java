package dev.kiln.models.sample;

import static dev.kiln.dsl.Ops.crossEntropy;
import static dev.kiln.dsl.Ops.gelu;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Loss;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;

/**
 * A two-layer classifier, the smallest model that trains: the processor generates {@code CompiledMlp} (forward,
 * backward, loss) and its fused kernels at build time.
 */
@Module
public record Mlp(
    @Bind("d_in=d_in d_out=d_hidden") Dense hidden,
    @Bind("d_in=d_hidden d_out=classes") Dense out) {
  @Forward
  public @Shape("... classes") Tensor apply(@Shape("... d_in") Tensor x) {
    return out.apply(gelu(hidden.apply(x)));
  }

  @Loss
  public @Shape("") Tensor loss(@Shape("b d_in") Tensor x, @Shape("b") Tensor labels) {
    return crossEntropy(apply(x), labels);
  }
}
