package dev.kiln.runtime.train;

import dev.kiln.runtime.optim.Optimizer;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;

/**
 * What the {@link Trainer} asks of the machine a model trains on: one optimizer step as begin, micro-batches,
 * clipping, update; validation losses; and host copies of the parameters and optimizer state for checkpoints. The
 * loop, the data, the schedule, logging and checkpoint files are the trainer's and the same on every device.
 *
 * <p>{@link #forModel} runs on the CPU (gradients, clipping and the optimizer on host arrays);
 * {@link CudaEngine} keeps parameters, gradients and AdamW state on a GPU and copies them to the host only around
 * checkpoints.
 */
public interface TrainingEngine extends AutoCloseable {
  /** The parameters as host arrays, by checkpoint name: live on the CPU, a copy made by {@link #syncToHost} on a GPU. */
  ParameterSet hostParameters();

  /** The optimizer whose state checkpoints save and resume loads (host arrays, as {@link #hostParameters}). */
  Optimizer hostOptimizer();

  /**
   * Starts an optimizer step that will update at learning rate {@code lr} (a captured CUDA-graph step needs it
   * before the batch runs): gradients are zero.
   */
  void beginStep(double lr);

  /**
   * Runs steps as CUDA-graph replays, clipping to {@code maxGradNorm} (0: no clipping); for one micro-batch per step.
   *
   * @throws UnsupportedOperationException on an engine that has no graphs (the CPU's)
   */
  default void enableGraphs(double maxGradNorm) {
    throw new UnsupportedOperationException("CUDA graphs need training.device cuda");
  }

  /** Adds the gradient of one micro-batch's mean loss; returns that loss. */
  double accumulate(NdArray inputs, NdArray targets);

  /**
   * Averages the gradients over {@code microBatches}, clips them to global norm {@code maxNorm} (0: no clipping),
   * and returns the norm before clipping.
   */
  double clipGradients(int microBatches, double maxNorm);

  /** Applies the update at learning rate {@code lr} and ends the step. */
  void update(double lr);

  /** Ends a step without updating (training diverged). */
  void abandonStep();

  /** The mean loss of a batch, without gradients. */
  double loss(NdArray inputs, NdArray targets);

  /** Brings {@link #hostParameters} and {@link #hostOptimizer} up to date (before a checkpoint is written). */
  void syncToHost();

  /** Loads {@link #hostParameters} and {@link #hostOptimizer} into the device (after a checkpoint was read). */
  void syncFromHost();

  @Override
  void close();

  /** The CPU engine over {@code model} with the optimizer {@code config} describes. */
  static TrainingEngine forModel(TrainableModel model, TrainConfig.OptimizerConfig config) {
    return new HostEngine(model, config.create(model.parameters()));
  }
}
