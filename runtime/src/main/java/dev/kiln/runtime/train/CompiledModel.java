package dev.kiln.runtime.train;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Context;
import dev.kiln.runtime.cpu.Elementwise;
import dev.kiln.runtime.optim.ParameterSet;
import dev.kiln.runtime.tensor.NdArray;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * A module compiled by Kiln's processor, as the trainer sees it: a {@link TrainableModel} over the generated {@code
 * loss}/{@code lossBackward} of a {@code Compiled<Module>} running on the CPU device.
 *
 * <p>The runtime does not depend on the module that declares the model, so the generated class is reached through
 * {@link Program}, three method references written where both are visible: {@code
 * new CompiledModel<>(Program.of(...), params, names)}. The parameters are the record's own tensors (no copies): the
 * optimizer updates them in place and the next forward reads the update.
 *
 * <p><b>Names.</b> {@code names} maps the module's state-dict keys to the names the trainer and checkpoints use. Keys
 * left out are parameters the model's configuration never reads (a variant's unused gains or gates): they get no
 * optimizer state and are not saved. Two keys may map to one name when they are one tensor (tied embeddings): their
 * gradients add up.
 *
 * <p><b>Per step.</b> One forward (saving what backward needs in a context reused across calls and cleared after
 * it), one backward, and one in-place add per parameter into the trainer's buffers. The generated backward returns
 * fresh gradient tensors (the processor does not yet accumulate into existing ones), so those are the step's only
 * large allocations besides the activations.
 */
public final class CompiledModel<P> implements TrainableModel {
  /** What the adapter calls on a compiled module whose loss reads a batch of inputs and targets. */
  public interface Program<P> {
    /**
     * The generated {@code loss(ctx, params, ...)}: a 0-d tensor; saves what {@link #lossBackward} needs. Inputs and
     * targets are tensors of the device the program runs on.
     */
    Tensor loss(Context ctx, P params, Tensor inputs, Tensor targets);

    /** The parameter gradients of the generated {@code lossBackward(ctx, params, dLoss)}. */
    P lossBackward(Context ctx, P params, Tensor dLoss);

    /** The generated {@code stateDict(record)}: tensors by state-dict key. */
    Map<String, Tensor> stateDict(P record);
  }

  private record Route(String moduleKey, String name) {}

  private final Program<P> program;
  private final P params;
  private final ParameterSet parameters;
  private final List<Route> routes = new ArrayList<>();
  private final Context ctx = new Context();
  private final NdArray one;

  /**
   * Wraps {@code params} (a record of the compiled module's type, its tensors contiguous F32 or F64 {@link NdArray}s).
   *
   * @param names module state-dict key → trainer name; keys left out are parameters the model never reads
   * @throws IllegalArgumentException when {@code names} names a key the module does not have, or maps two keys that
   *     are different tensors to one name
   */
  public CompiledModel(Program<P> program, P params, Map<String, String> names) {
    this.program = Objects.requireNonNull(program, "program");
    this.params = Objects.requireNonNull(params, "params");
    Map<String, Tensor> sd = program.stateDict(params);
    Map<String, NdArray> byName = new LinkedHashMap<>();
    for (Map.Entry<String, String> e : names.entrySet()) {
      Tensor t = sd.get(e.getKey());
      if (t == null) {
        throw new IllegalArgumentException("the module has no parameter '" + e.getKey() + "' (it has " + sd.keySet()
            + ")");
      }
      if (!(t instanceof NdArray a)) {
        throw new IllegalArgumentException("parameter '" + e.getKey() + "' is a " + t.getClass().getName()
            + ", not an NdArray: the CPU adapter trains on the CPU device's tensors");
      }
      NdArray earlier = byName.putIfAbsent(e.getValue(), a);
      if (earlier != null && earlier != a) {
        throw new IllegalArgumentException("'" + e.getKey() + "' and another key both map to '" + e.getValue()
            + "' but are different tensors; a shared name needs one shared tensor (build the record with it)");
      }
      routes.add(new Route(e.getKey(), e.getValue()));
    }
    this.parameters = ParameterSet.of(byName);
    DType dtype = byName.isEmpty() ? DType.F32 : byName.values().iterator().next().dtype();
    this.one = NdArray.scalar(dtype, 1.0);
  }

  /** The module's parameter record (its tensors are the live parameters). */
  public P params() {
    return params;
  }

  @Override
  public ParameterSet parameters() {
    return parameters;
  }

  @Override
  public double accumulateGradients(NdArray inputs, NdArray targets, ParameterSet gradients) {
    try {
      double loss = ((NdArray) program.loss(ctx, params, inputs, targets)).item();
      Map<String, Tensor> g = program.stateDict(program.lossBackward(ctx, params, one));
      for (Route r : routes) {
        Elementwise.addInto(gradients.get(r.name()), (NdArray) g.get(r.moduleKey()));
      }
      return loss;
    } finally {
      ctx.clear();
    }
  }

  @Override
  public double loss(NdArray inputs, NdArray targets) {
    try {
      return ((NdArray) program.loss(ctx, params, inputs, targets)).item();
    } finally {
      ctx.clear();
    }
  }

  /** The mean loss of a batch and the gradient of every parameter by trainer name. */
  public record LossAndGradients(double loss, Map<String, NdArray> gradients) {}

  /**
   * Forward, loss and backward of one batch into fresh gradient arrays (no trainer buffer involved): what {@code kiln
   * forward --grads} writes.
   */
  public LossAndGradients lossAndGradients(NdArray inputs, NdArray targets) {
    ParameterSet g = ParameterSet.zerosLike(parameters);
    double loss = accumulateGradients(inputs, targets, g);
    return new LossAndGradients(loss, g.asMap());
  }
}
