package dev.kiln.dsl.spi;

import dev.kiln.dsl.Tensor;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * What one forward call saves for its backward call: tensors (activations, row statistics), shapes of values whose
 * contents backward does not need, and one child context per sub-module call ({@code w1}, {@code layers.3}).
 *
 * <p>Generated {@code forward} fills it; the matching {@code backward} reads it. Use a fresh context per forward call
 * (or {@link #clear()} it); a context is not thread-safe.
 */
public final class Context {
  private final Map<String, Tensor> tensors = new LinkedHashMap<>();
  private final Map<String, long[]> shapes = new LinkedHashMap<>();
  private final Map<String, Context> children = new LinkedHashMap<>();
  private boolean resultForGemms;
  private boolean resultInBf16;
  private long inputGradientsInBf16;

  /** Saves {@code value} under {@code key}, replacing what was there. */
  public void save(String key, Tensor value) {
    tensors.put(key, value);
  }

  /**
   * The tensor saved under {@code key}.
   *
   * @throws IllegalStateException when nothing was saved there (backward called without its forward)
   */
  public Tensor saved(String key) {
    Tensor t = tensors.get(key);
    if (t == null) {
      throw new IllegalStateException("nothing saved under '" + key + "': call forward with this context before"
          + " backward (saved: " + tensors.keySet() + ")");
    }
    return t;
  }

  /** Saves a shape (copied). */
  public void saveShape(String key, long[] shape) {
    shapes.put(key, shape.clone());
  }

  /**
   * The shape saved under {@code key} (a copy).
   *
   * @throws IllegalStateException when none was saved
   */
  public long[] savedShape(String key) {
    long[] s = shapes.get(key);
    if (s == null) {
      throw new IllegalStateException("no shape saved under '" + key + "': call forward with this context before"
          + " backward");
    }
    return s.clone();
  }

  /**
   * The context of a sub-module call, made on first use. An existing child keeps what its forward call was told
   * ({@link #child(String, boolean, boolean, long)}): backward asks for it by name alone.
   */
  public Context child(String name) {
    return children.computeIfAbsent(name, n -> new Context());
  }

  /**
   * {@link #child(String)} for a call whose result the caller reads only in GEMMs (the processor knows: a norm's
   * output going into projections). The callee's forward may then allocate its result with {@link
   * Device#emptyGemmOperand}, so a mixed-precision device stores it as the bf16 those GEMMs read.
   */
  public Context child(String name, boolean resultForGemms) {
    return child(name, resultForGemms, false, 0L);
  }

  /**
   * {@link #child(String, boolean)} that also says which of the call's GEMM outputs the caller takes in bf16
   * (the processor knows from the caller's reads: fused kernels, GEMMs, attention, cross-entropy). The callee's
   * forward may then allocate its result, and its backward the gradient of input {@code i} (bit i of {@code
   * inputGradientsInBf16}), with {@link Device#emptyGemmResult} where a GEMM writes them.
   */
  public Context child(String name, boolean resultForGemms, boolean resultInBf16, long inputGradientsInBf16) {
    Context c = child(name);
    c.resultForGemms = resultForGemms;
    c.resultInBf16 = resultInBf16;
    c.inputGradientsInBf16 = inputGradientsInBf16;
    return c;
  }

  /** Whether the caller reads this call's result only in GEMMs (see {@link #child(String, boolean)}). */
  public boolean resultForGemms() {
    return resultForGemms;
  }

  /** Whether the caller takes this call's result in bf16 (see {@link #child(String, boolean, boolean, long)}). */
  public boolean resultInBf16() {
    return resultInBf16;
  }

  /** Whether the caller takes the gradient of input {@code i} in bf16 (see {@link #child(String, boolean, boolean, long)}). */
  public boolean inputGradientInBf16(int i) {
    return i < 64 && (inputGradientsInBf16 >>> i & 1) != 0;
  }

  /** Number of tensors saved here and in every child: what a forward keeps alive for backward. */
  public int savedCount() {
    int n = tensors.size();
    for (Context c : children.values()) {
      n += c.savedCount();
    }
    return n;
  }

  /** Forgets everything, so the saved activations can be freed. */
  public void clear() {
    tensors.clear();
    shapes.clear();
    children.clear();
  }
}
