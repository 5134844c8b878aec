package dev.kiln.runtime.optim;

import dev.kiln.runtime.io.Safetensors;
import dev.kiln.runtime.io.SafetensorsFile;
import dev.kiln.runtime.tensor.NdArray;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Updates a {@link ParameterSet} in place from gradients of the same names and shapes.
 *
 * <p>The learning rate is an argument of {@link #step} rather than a field, so a schedule stays a pure function of
 * the step and nothing about it needs saving. Everything else an optimizer remembers (moments, the step count) is
 * its <em>state</em>, saved as {@code optimizer.safetensors}: tensors named {@code <param>.<slot>} (e.g. {@code
 * layers.0.ffn.w1.weight.exp_avg}) and the step count and kind in the metadata.
 *
 * <p>Updates are element-wise, split over threads in chunks of a fixed size, and each element is computed the same
 * way wherever it runs: results are bit-identical for any thread count.
 */
public abstract class Optimizer {
  /** Elements per parallel chunk; a constant, so results never depend on the thread count. */
  static final long GRAIN = 1 << 15;

  protected final ParameterSet params;
  protected long steps;

  protected Optimizer(ParameterSet params) {
    this.params = params;
  }

  /** The parameters this optimizer updates. */
  public ParameterSet parameters() {
    return params;
  }

  /** Updates taken so far (the {@code t} of the next update is {@code stepCount() + 1}). */
  public long stepCount() {
    return steps;
  }

  /**
   * Sets the update count, for state that was advanced elsewhere (the GPU trainer keeps the moments on the device
   * and copies them here before a checkpoint).
   */
  public void restoreStepCount(long count) {
    if (count < 0) {
      throw new IllegalArgumentException("step count must be >= 0, got " + count);
    }
    steps = count;
  }

  /** The name stored in the state file's metadata ({@code "adamw"}, {@code "sgd"}). */
  public abstract String kind();

  /** Slot names of the per-parameter state tensors, in file order ({@code exp_avg}, {@code exp_avg_sq}). */
  protected abstract String[] slots();

  /** The state tensor of {@code slot} for {@code param} (allocated lazily is not allowed: always present). */
  protected abstract NdArray slot(String slot, String param);

  /** Hyper-parameters written to the metadata for people reading the file; not read back. */
  protected abstract Map<String, String> hyperParameters();

  /** Applies one update with learning rate {@code lr}; {@code grads} must match the parameters' layout. */
  public final void step(ParameterSet grads, double lr) {
    if (grads != params) {
      params.requireSameLayout(grads, "gradients");
    }
    if (!(lr >= 0) || Double.isInfinite(lr)) {
      throw new IllegalArgumentException("learning rate must be finite and >= 0, got " + lr);
    }
    steps++;
    for (String name : params.names()) {
      update(name, params.get(name), grads.get(name), lr);
    }
  }

  /** Updates one parameter; {@link #steps} already counts this update. */
  protected abstract void update(String name, NdArray param, NdArray grad, double lr);

  /** State tensors by file name, in parameter order. */
  public Map<String, NdArray> stateTensors() {
    LinkedHashMap<String, NdArray> out = new LinkedHashMap<>();
    for (String p : params.names()) {
      for (String s : slots()) {
        out.put(p + "." + s, slot(s, p));
      }
    }
    return out;
  }

  /** Metadata for the state file: kind, step and the hyper-parameters. */
  public Map<String, String> stateMetadata() {
    LinkedHashMap<String, String> m = new LinkedHashMap<>();
    m.put("optimizer", kind());
    m.put("step", Long.toString(steps));
    m.putAll(hyperParameters());
    return m;
  }

  /** Writes {@code optimizer.safetensors} (atomically). */
  public void save(Path file) throws IOException {
    Safetensors.write(file, stateTensors(), stateMetadata());
  }

  /** Restores the state written by {@link #save}; refuses a file of another kind or another set of parameters. */
  public void load(Path file) throws IOException {
    try (SafetensorsFile f = SafetensorsFile.open(file)) {
      String kind = f.metadata().get("optimizer");
      if (!kind().equals(kind)) {
        throw new IOException(
            "optimizer state " + file + " was written by " + (kind == null ? "an unknown optimizer" : kind)
                + ", but this run uses " + kind() + " (change optimizer.name back, or start without --resume)");
      }
      String step = f.metadata().get("step");
      long t;
      try {
        t = Long.parseLong(step);
      } catch (NumberFormatException | NullPointerException e) {
        throw new IOException("optimizer state " + file + " has no valid \"step\" in its metadata (got " + step + ")");
      }
      Map<String, NdArray> mine = stateTensors();
      for (String name : f.names()) {
        if (!mine.containsKey(name)) {
          throw new IOException(
              "optimizer state " + file + " holds " + name + ", which matches no parameter of this model");
        }
      }
      for (Map.Entry<String, NdArray> e : mine.entrySet()) {
        if (!f.contains(e.getKey())) {
          throw new IOException("optimizer state " + file + " lacks " + e.getKey());
        }
        NdArray src = f.get(e.getKey());
        NdArray dst = e.getValue();
        if (!Arrays.equals(src.shape(), dst.shape()) || src.dtype() != dst.dtype()) {
          throw new IOException(
              "optimizer state " + file + ": " + e.getKey() + " is " + src.dtype() + Arrays.toString(src.shape())
                  + " but this model needs " + dst.dtype() + Arrays.toString(dst.shape()));
        }
      }
      for (Map.Entry<String, NdArray> e : mine.entrySet()) {
        e.getValue().copyFrom(f.get(e.getKey()));
      }
      steps = t;
    }
  }
}
