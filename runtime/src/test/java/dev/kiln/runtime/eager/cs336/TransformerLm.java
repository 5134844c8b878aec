package dev.kiln.runtime.eager.cs336;

// The CS336 modules as the processor's positive fixtures write them (processor/src/test/resources/cs336), run here
// on the eager interpreter. The runtime does not run Kiln's annotation processor, so nothing is generated.

import static dev.kiln.dsl.Ops.crossEntropy;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Loss;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Repeat;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;
import java.util.List;

/** The CS336 Transformer language model: embedding, a stack of blocks, final norm, LM head. */
@Module
public record TransformerLm(
    Embedding tokenEmbeddings,
    @Repeat("num_layers") List<TransformerBlock> layers,
    RmsNorm lnFinal,
    @Bind("d_in=d_model d_out=vocab_size") Linear lmHead) {

  @Forward
  public @Shape("b s vocab_size") Tensor apply(@Shape("b s") Tensor tokenIds, @Shape("s") Tensor positions) {
    Tensor x = tokenEmbeddings.apply(tokenIds);
    for (TransformerBlock layer : layers) {
      x = layer.apply(x, positions);
    }
    return lmHead.apply(lnFinal.apply(x));
  }

  @Loss
  public @Shape("") Tensor loss(
      @Shape("b s") Tensor tokenIds, @Shape("s") Tensor positions, @Shape("b s") Tensor targets) {
    return crossEntropy(apply(tokenIds, positions), targets);
  }
}
