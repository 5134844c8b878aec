package dev.kiln.models.cs336;

import static dev.kiln.dsl.Ops.crossEntropy;
import static dev.kiln.dsl.Ops.logSoftmax;
import static dev.kiln.dsl.Ops.mean;
import static dev.kiln.dsl.Ops.reduce;
import static dev.kiln.dsl.Ops.square;

import dev.kiln.dsl.Bind;
import dev.kiln.dsl.Forward;
import dev.kiln.dsl.Hyper;
import dev.kiln.dsl.Loss;
import dev.kiln.dsl.Module;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Repeat;
import dev.kiln.dsl.Shape;
import dev.kiln.dsl.Tensor;
import java.util.List;

/**
 * The CS336 Transformer language model and the variants its ablations switch between: token embedding (plus a learned
 * absolute position embedding when {@code positions} is {@code learned}) → {@code num_layers} blocks → final norm
 * (unless {@code norm_placement} is {@code none}) → LM head.
 *
 * <p>The record holds every parameter any variant may read; a variant's code path reads only its own (the others get
 * zero gradients), and its state dict holds only those: the names {@code dev.kiln.runtime.infer.LmWeights} lists for
 * the config, which the inference engine loads. Tied embeddings are parameter sharing, as in PyTorch: {@link
 * #withTiedEmbeddings} makes the LM head read the token embedding table itself, one tensor used twice, whose gradient
 * is the sum of the two entries of the gradient record ({@code token_embeddings.weight} and {@code lm_head.weight}).
 *
 * <p>The loss is the mean cross-entropy over all positions (fused with the log-softmax, max subtracted) plus, when
 * {@code z_loss} is positive, {@code z_loss · mean(log² Z)} with {@code log Z} the log-sum-exp of each position's
 * logits (PaLM's z-loss).
 */
@Module
public record TransformerLm(
    Embedding tokenEmbeddings,
    @Bind("vocab_size=context_length") Embedding positionEmbeddings,
    @Repeat("num_layers") List<TransformerBlock> layers,
    Norm lnFinal,
    @Bind("d_in=d_model d_out=vocab_size") Linear lmHead,
    @Hyper("norm_placement") NormPlacement placement,
    @Hyper("positions") Positions positionKind,
    @Hyper("z_loss") double zLoss) {

  /**
   * This model with the LM head sharing the token embedding table ({@code tied_embeddings}): {@code lm_head.weight} is
   * then the same tensor as {@code token_embeddings.weight}, and the state dict names it once.
   */
  public TransformerLm withTiedEmbeddings() {
    return new TransformerLm(tokenEmbeddings, positionEmbeddings, layers, lnFinal, new Linear(tokenEmbeddings.weight()),
        placement, positionKind, zLoss);
  }

  @Forward
  public @Shape("b s vocab_size") Tensor apply(@Shape("b s") Tensor tokenIds, @Shape("s") Tensor positions) {
    Tensor x = tokenEmbeddings.apply(tokenIds);
    if (positionKind == Positions.LEARNED) {
      x = x.add(positionEmbeddings.apply(positions));
    }
    for (TransformerBlock layer : layers) {
      x = layer.apply(x, positions);
    }
    if (placement != NormPlacement.NONE) {
      x = lnFinal.apply(x);
    }
    return lmHead.apply(x);
  }

  @Loss
  public @Shape("") Tensor loss(
      @Shape("b s") Tensor tokenIds, @Shape("s") Tensor positions, @Shape("b s") Tensor targets) {
    Tensor logits = apply(tokenIds, positions);
    Tensor ce = crossEntropy(logits, targets);
    if (zLoss > 0) {
      // log Z of each row: logits − logSoftmax(logits) is log Z in every column; the mean picks it stably.
      Tensor logZ = mean(logits.sub(logSoftmax(logits)));
      return ce.add(reduce(square(logZ), "b s 1 ->", Reduction.MEAN).mul(zLoss));
    }
    return ce;
  }
}
