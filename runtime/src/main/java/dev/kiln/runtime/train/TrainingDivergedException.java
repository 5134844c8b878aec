package dev.kiln.runtime.train;

import java.nio.file.Path;

/** The loss or the gradient norm became NaN or infinite: the run stopped before applying that step's update. */
public final class TrainingDivergedException extends RuntimeException {
  private final long step;
  private final Path lastCheckpoint;

  public TrainingDivergedException(String message, long step, Path lastCheckpoint) {
    super(message);
    this.step = step;
    this.lastCheckpoint = lastCheckpoint;
  }

  /** The step (1-based) whose loss or gradient was not finite. */
  public long step() {
    return step;
  }

  /** The last checkpoint written before it (still intact), or null when none was. */
  public Path lastCheckpoint() {
    return lastCheckpoint;
  }
}
