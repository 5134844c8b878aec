package dev.kiln.runtime.train;

import dev.kiln.runtime.optim.GradClip;
import dev.kiln.runtime.optim.Optimizer;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;

/** Training on the CPU: gradients in host buffers the model adds into, {@link GradClip}, a host {@link Optimizer}. */
final class HostEngine implements TrainingEngine {
  private final TrainableModel model;
  private final ParameterSet params;
  private final ParameterSet grads;
  private final Optimizer optimizer;

  HostEngine(TrainableModel model, Optimizer optimizer) {
    this.model = model;
    this.params = model.parameters();
    this.grads = ParameterSet.zerosLike(params);
    this.optimizer = optimizer;
  }

  @Override
  public ParameterSet hostParameters() {
    return params;
  }

  @Override
  public Optimizer hostOptimizer() {
    return optimizer;
  }

  @Override
  public void beginStep(double lr) {
    grads.zero();
  }

  @Override
  public double accumulate(NdArray inputs, NdArray targets) {
    return model.accumulateGradients(inputs, targets, grads);
  }

  @Override
  public double clipGradients(int microBatches, double maxNorm) {
    if (microBatches > 1) {
      GradClip.scale(grads, 1.0 / microBatches);
    }
    return maxNorm > 0 ? GradClip.clip(grads, maxNorm) : GradClip.globalNorm(grads);
  }

  @Override
  public void update(double lr) {
    optimizer.step(grads, lr);
  }

  @Override
  public void abandonStep() {}

  @Override
  public double loss(NdArray inputs, NdArray targets) {
    return model.loss(inputs, targets);
  }

  @Override
  public void syncToHost() {}

  @Override
  public void syncFromHost() {}

  @Override
  public void close() {}
}
