package dev.kiln.runtime.eager;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Init;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.spi.Sizes;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Rng;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Eager use of Kiln modules: the precision the interpreter computes in, and parameter handling for records —
 * initialise from a config, list as a state dict, load from a state dict.
 *
 * <pre>{@code
 * Map<String, Object> config = Map.of("d_model", 64, "d_ff", 172);
 * SwiGlu ffn = Eager.init(SwiGlu.class, config, 42);
 * Tensor y = ffn.apply(x);                           // runs on the eager interpreter
 * try (var f64 = Eager.precision(DType.F64)) {
 *   Tensor exact = ffn.apply(x);                     // the same forward, every op in float64
 * }
 * Map<String, NdArray> sd = Eager.stateDict(ffn);    // "w1.weight", "w2.weight", "w3.weight"
 * }</pre>
 *
 * <p><b>Names</b> are the record component path in snake_case joined with {@code .}, list elements by index:
 * {@code layers.0.attn.q_proj.weight} — the CS336 / PyTorch names, so a PyTorch state dict loads name for name.
 *
 * <p><b>Initialisation</b> follows CS336: {@link Init#TRUNC_NORMAL_FAN_IN_OUT} draws from N(0, σ²) with
 * σ = sqrt(2 / (fan_in + fan_out)) cut at ±3σ (fan_in the last dim, fan_out the product of the others),
 * {@link Init#TRUNC_NORMAL_UNIT} from N(0, 1) cut at ±3, {@link Init#ONES} and {@link Init#ZEROS} are constants.
 * The parameter with state-dict key {@code k} is drawn from Philox stream {@code Sizes.stream(k)} (FNV-1a of the
 * key) of {@code seed} at offset 0 — what generated {@code Compiled<M>.init(config, seed)} draws through the device
 * SPI's {@code fillTruncatedNormal} — so a seed gives the same model eagerly and compiled, on every device and
 * thread count, and adding a parameter does not change the others.
 */
public final class Eager {
  private static final ThreadLocal<DType> PRECISION = new ThreadLocal<>();

  private Eager() {}

  // ================================================================ precision

  /**
   * Makes every op on this thread compute in {@code dtype} (F32 or F64) until the returned scope is closed:
   * floating operands — inputs and parameters alike — are converted as they enter each op, so a module built
   * with float32 parameters runs entirely in float64. Scopes nest; closing restores the previous setting.
   */
  public static Scope precision(DType dtype) {
    if (dtype != DType.F32 && dtype != DType.F64) {
      throw new IllegalArgumentException(
          "the eager interpreter computes in F32 or F64, not " + dtype + "; convert narrow dtypes by computing in F32");
    }
    DType previous = PRECISION.get();
    PRECISION.set(dtype);
    return new Scope(previous);
  }

  /** The precision set by the innermost open {@link #precision} scope on this thread, or null (operands' own). */
  public static DType currentPrecision() {
    return PRECISION.get();
  }

  static DType precisionOrNull() {
    return PRECISION.get();
  }

  /** An open {@link #precision} setting; {@link #close()} restores the one before. */
  public static final class Scope implements AutoCloseable {
    private final DType previous;
    private boolean closed;

    private Scope(DType previous) {
      this.previous = previous;
    }

    @Override
    public void close() {
      if (!closed) {
        closed = true;
        if (previous == null) {
          PRECISION.remove();
        } else {
          PRECISION.set(previous);
        }
      }
    }
  }

  // ================================================================ parameters

  /** A parameter of a module built from a config: its state-dict name, shape and initialiser. */
  public record ParamInfo(String name, long[] shape, Init init, String declaredShape, String owner) {
    @Override
    public String toString() {
      return name + " " + Arrays.toString(shape) + " '" + declaredShape + "' " + init + " (" + owner + ")";
    }
  }

  /** {@link #init(Class, Map, long, DType)} with float32 parameters. */
  public static <R extends Record> R init(Class<R> moduleType, Map<String, ?> config, long seed) {
    return init(moduleType, config, seed, DType.F32);
  }

  /**
   * A new module record with every {@code @Param} tensor allocated in {@code dtype} and initialised as CS336 does
   * (see the class comment). Shapes come from the config's dims and the {@code @Bind} bindings on the way down,
   * {@code @Repeat} lists from their config key, hyper-parameters from their config key.
   *
   * @throws IllegalArgumentException naming the component and the config key when the config lacks something
   */
  public static <R extends Record> R init(Class<R> moduleType, Map<String, ?> config, long seed, DType dtype) {
    if (!dtype.isFloating()) {
      throw new IllegalArgumentException("parameters are floating tensors, not " + dtype);
    }
    Rng root = new Rng(seed);
    ModuleWalker w =
        new ModuleWalker("Eager.init", slot -> initialise(slot, dtype, root.stream(Sizes.stream(slot.name()))));
    return w.build(moduleType, config);
  }

  private static NdArray initialise(ModuleWalker.ParamSlot slot, DType dtype, Rng rng) {
    long[] shape = slot.shape();
    NdArray p = NdArray.zeros(dtype, shape);
    switch (slot.init()) {
      case TRUNC_NORMAL_FAN_IN_OUT -> {
        long fanIn = shape.length == 0 ? 1 : shape[shape.length - 1];
        long fanOut = NdArray.numel(Arrays.copyOf(shape, Math.max(0, shape.length - 1)));
        rng.truncNormal(p, 0, Math.sqrt(2.0 / (fanIn + fanOut)));
      }
      case TRUNC_NORMAL_UNIT -> rng.truncNormal(p, 0, 1);
      case ONES -> p.fill(1);
      case ZEROS -> {}
    }
    return p;
  }

  /** The parameter table of {@code moduleType} under {@code config}, in state-dict order; allocates nothing. */
  public static List<ParamInfo> parameters(Class<? extends Record> moduleType, Map<String, ?> config) {
    List<ParamInfo> out = new ArrayList<>();
    new ModuleWalker("Eager.parameters", slot -> {
      out.add(new ParamInfo(slot.name(), slot.shape(), slot.init(), slot.declaredShape(), slot.owner()));
      return null;
    }).build(moduleType, config);
    return out;
  }

  /**
   * The parameters of a module record, by state-dict name, in declaration order. The arrays are the record's own
   * (not copies).
   */
  public static Map<String, NdArray> stateDict(Record module) {
    Map<String, NdArray> out = new LinkedHashMap<>();
    ModuleWalker.forEachParam(module, "", (name, value) -> {
      if (!(value instanceof NdArray a)) {
        throw new IllegalArgumentException(
            "Eager.stateDict: parameter '" + name + "' of " + module.getClass().getSimpleName() + " is "
                + (value == null ? "null" : "a " + value.getClass().getName() + ", not an NdArray"));
      }
      out.put(name, a);
    });
    return out;
  }

  /**
   * A module record whose parameters are the arrays of {@code stateDict} (not copied; any dtype), checked name for
   * name and shape for shape against what {@code config} makes of {@code moduleType}'s declaration. Missing and
   * unexpected names are reported together.
   */
  public static <R extends Record> R load(
      Class<R> moduleType, Map<String, ?> config, Map<String, ? extends Tensor> stateDict) {
    List<ParamInfo> table = parameters(moduleType, config);
    Set<String> expected = new LinkedHashSet<>();
    for (ParamInfo p : table) {
      expected.add(p.name());
    }
    List<String> missing = expected.stream().filter(n -> !stateDict.containsKey(n)).toList();
    List<String> unexpected = stateDict.keySet().stream().filter(n -> !expected.contains(n)).toList();
    if (!missing.isEmpty() || !unexpected.isEmpty()) {
      throw new IllegalArgumentException(
          "Eager.load " + moduleType.getSimpleName() + ": the state dict does not match the module"
              + (missing.isEmpty() ? "" : "; missing " + missing)
              + (unexpected.isEmpty() ? "" : "; unexpected " + unexpected)
              + "; the module's names are " + expected);
    }
    return new ModuleWalker("Eager.load", slot -> {
      Tensor t = stateDict.get(slot.name());
      if (!(t instanceof NdArray a)) {
        throw new IllegalArgumentException(
            "Eager.load: '" + slot.name() + "' is " + (t == null ? "null" : "a " + t.getClass().getName())
                + ", not an NdArray");
      }
      if (!Arrays.equals(a.shape(), slot.shape())) {
        throw new EagerShapeException(
            "ShapeMismatch",
            "Eager.load: '" + slot.name() + "' has shape " + Arrays.toString(a.shape()) + " but " + slot.owner()
                + " '" + slot.declaredShape() + "' is " + Arrays.toString(slot.shape()) + " here (" + slot.dims() + ")",
            "the config must match the one the state dict was saved with");
      }
      if (!a.dtype().isFloating()) {
        throw new IllegalArgumentException(
            "Eager.load: '" + slot.name() + "' is " + a.dtype() + "; parameters are floating tensors");
      }
      return a;
    }).build(moduleType, config);
  }
}
