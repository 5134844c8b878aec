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

  /** What a whole step queued with {@link #queueStep} reports: its loss, its gradient norm, whether it skipped AdamW. */
  record StepResult(double loss, double gradNorm, boolean skipped) {}

  /** A step queued with {@link #queueStep}. */
  interface QueuedStep {
    /** Waits until the step has run on the device; then (and on every later call) returns its results. */
    StepResult await();
  }

  /** Whether {@link #queueStep} is available: CUDA-graph mode, whose steps run without the host. */
  default boolean canQueueSteps() {
    return false;
  }

  /**
   * Queues one whole optimizer step on one batch (forward, backward, clipping, the update at {@code lr}) and returns
   * before the device has run it, so that the host prepares and queues the next step while this one runs: the
   * device never waits for the host between steps. A step whose gradient norm is not finite skips the update on
   * the device. Call {@link QueuedStep#await} in queueing order; a step queued after one that turns out skipped
   * was queued with that step's update counted (its bias correction one step ahead), so a caller stops at the
   * first skipped step, as the trainer does on divergence.
   *
   * @throws UnsupportedOperationException where {@link #canQueueSteps} is false
   */
  default QueuedStep queueStep(double lr, NdArray inputs, NdArray targets) {
    throw new UnsupportedOperationException("queued steps need CUDA graphs (training.device cuda, graphs on)");
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
