package dev.kiln.runtime.train;

import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;

/**
 * What the trainer needs from a model: its parameters by state-dict name, the mean next-token loss of a batch, and
 * that loss's gradient. A model compiled from the DSL implements it; so can a hand-written one.
 *
 * <p>Inputs and targets are token ids, I64 (or I32) of shape {@code [batch, seq]}; {@code targets[b, s]} is the
 * token that follows {@code inputs[b, s]}. The loss is the cross-entropy averaged over all {@code batch·seq}
 * positions (plus whatever regulariser the model adds, e.g. z-loss).
 *
 * <p><b>Gradients are added, not returned.</b> The trainer owns one gradient buffer per parameter
 * ({@link ParameterSet#zerosLike}) and zeroes it before each step; {@link #accumulateGradients} adds into it. This
 * is the {@code +=} convention of the generated backward code, it lets gradient accumulation over micro-batches
 * reuse one buffer, and it keeps large off-heap buffers from being allocated anew at every step.
 *
 * <p><b>Determinism.</b> Exact resume (the losses after {@code --resume} equal those of an uninterrupted run bit for
 * bit) holds when the loss and gradients are a deterministic function of the parameters and the batch; a model
 * with its own randomness (dropout) must draw it from state it can save.
 */
public interface TrainableModel {
  /** The live parameters, in a fixed order, named as in the checkpoint ({@code layers.0.attn.q_proj.weight}). */
  ParameterSet parameters();

  /**
   * Computes the mean loss of the batch and <em>adds</em> its gradient with respect to every parameter into
   * {@code gradients} (same names, shapes and dtypes as {@link #parameters()}). Returns the loss.
   */
  double accumulateGradients(NdArray inputs, NdArray targets, ParameterSet gradients);

  /** The mean loss of the batch, without gradients (validation). */
  double loss(NdArray inputs, NdArray targets);
}
