package dev.kiln.runtime.optim;

/**
 * A learning rate as a pure function of the step index {@code t} (0 for the first update), so resuming needs only
 * the step.
 */
public sealed interface LrSchedule {
  /** The learning rate for update {@code t} (0-based). */
  double lr(long t);

  /** The same rate at every step. */
  record Constant(double lr) implements LrSchedule {
    public Constant {
      requireRate("lr", lr);
    }

    @Override
    public double lr(long t) {
      return lr;
    }
  }

  /**
   * CS336's {@code get_lr_cosine_schedule(t, α_max, α_min, T_w, T_c)}: linear warmup {@code t/T_w·α_max} for
   * {@code t < T_w}; {@code α_min + ½(1 + cos((t−T_w)/(T_c−T_w)·π))(α_max−α_min)} for {@code T_w ≤ t ≤ T_c};
   * {@code α_min} after {@code T_c}.
   */
  record Cosine(double maxLr, double minLr, long warmupSteps, long cosineCycleSteps) implements LrSchedule {
    public Cosine {
      requireRate("max_lr", maxLr);
      requireRate("min_lr", minLr);
      if (warmupSteps < 0 || cosineCycleSteps < warmupSteps) {
        throw new IllegalArgumentException(
            "cosine schedule needs 0 <= warmup_steps <= cosine_cycle_steps, got " + warmupSteps + " and "
                + cosineCycleSteps);
      }
    }

    @Override
    public double lr(long t) {
      if (t < warmupSteps) {
        return (double) t / warmupSteps * maxLr;
      }
      if (t <= cosineCycleSteps) {
        if (cosineCycleSteps == warmupSteps) {
          return maxLr; // the cosine segment is a single point: its start
        }
        double progress = (double) (t - warmupSteps) / (cosineCycleSteps - warmupSteps);
        return minLr + 0.5 * (1 + Math.cos(progress * Math.PI)) * (maxLr - minLr);
      }
      return minLr;
    }
  }

  /** How a warmup-stable-decay schedule comes down. */
  enum DecayShape {
    LINEAR,
    COSINE
  }

  /**
   * Warmup-stable-decay (Hu et al., MiniCPM 2024): linear warmup to {@code maxLr} over {@code warmupSteps}, constant
   * until the last {@code decaySteps} of {@code totalSteps}, then down to {@code minLr} (linearly or along a
   * half-cosine), reached at step {@code totalSteps}.
   */
  record WarmupStableDecay(
      double maxLr, double minLr, long warmupSteps, long decaySteps, long totalSteps, DecayShape shape)
      implements LrSchedule {
    public WarmupStableDecay {
      requireRate("max_lr", maxLr);
      requireRate("min_lr", minLr);
      if (warmupSteps < 0 || decaySteps < 0 || warmupSteps + decaySteps > totalSteps) {
        throw new IllegalArgumentException(
            "warmup-stable-decay needs warmup_steps + decay_steps <= total steps, got " + warmupSteps + " + "
                + decaySteps + " > " + totalSteps);
      }
    }

    @Override
    public double lr(long t) {
      if (t < warmupSteps) {
        return (double) t / warmupSteps * maxLr;
      }
      long decayStart = totalSteps - decaySteps;
      if (t < decayStart) {
        return maxLr;
      }
      if (t >= totalSteps) {
        return minLr;
      }
      double progress = (double) (t - decayStart) / decaySteps;
      double fraction = shape == DecayShape.LINEAR ? 1 - progress : 0.5 * (1 + Math.cos(progress * Math.PI));
      return minLr + fraction * (maxLr - minLr);
    }
  }

  private static void requireRate(String key, double v) {
    if (!(v >= 0) || Double.isInfinite(v)) {
      throw new IllegalArgumentException(key + " must be finite and >= 0, got " + v);
    }
  }
}
