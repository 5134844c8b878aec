package dev.kiln.runtime.optim;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.BiConsumer;

/**
 * Named floating-point tensors in a fixed order: a model's parameters by state-dict name ({@code
 * layers.0.attn.q_proj.weight}), or gradients / optimizer state of the same names and shapes.
 *
 * <p>Every tensor is contiguous, writable-in-place and F32 or F64, so optimizers can walk it as one flat run of
 * elements. The arrays are the live tensors, not copies: writing into them changes the model.
 */
public final class ParameterSet {
  private final Map<String, NdArray> tensors;

  private ParameterSet(Map<String, NdArray> tensors) {
    this.tensors = Collections.unmodifiableMap(tensors);
  }

  /** Wraps {@code tensors} in their iteration order (use a {@link LinkedHashMap}); checks dtype and layout. */
  public static ParameterSet of(Map<String, NdArray> tensors) {
    LinkedHashMap<String, NdArray> copy = new LinkedHashMap<>();
    for (Map.Entry<String, NdArray> e : tensors.entrySet()) {
      String name = e.getKey();
      NdArray a = e.getValue();
      if (name == null || name.isEmpty()) {
        throw new IllegalArgumentException("a parameter needs a non-empty name");
      }
      if (a.dtype() != DType.F32 && a.dtype() != DType.F64) {
        throw new IllegalArgumentException(
            "parameter " + name + " is " + a.dtype() + "; training keeps parameters in F32 or F64 (convert with"
                + " .to(DType.F32))");
      }
      if (!a.isContiguous()) {
        throw new IllegalArgumentException(
            "parameter " + name + " is a strided view " + Arrays.toString(a.shape()) + "; pass a contiguous array"
                + " (.contiguous()) so optimizers can update it in place");
      }
      if (a.storage().isReadOnly()) {
        throw new IllegalArgumentException(
            "parameter " + name + " is read-only (a memory-mapped checkpoint?); copy it (.copy()) before training");
      }
      copy.put(name, a);
    }
    return new ParameterSet(copy);
  }

  /** New zero tensors with the names, shapes and dtypes of {@code like} (gradient buffers, optimizer moments). */
  public static ParameterSet zerosLike(ParameterSet like) {
    LinkedHashMap<String, NdArray> out = new LinkedHashMap<>();
    like.tensors.forEach((n, a) -> out.put(n, NdArray.zeros(a.dtype(), a.shape())));
    return new ParameterSet(out);
  }

  public List<String> names() {
    return List.copyOf(tensors.keySet());
  }

  public int size() {
    return tensors.size();
  }

  public boolean contains(String name) {
    return tensors.containsKey(name);
  }

  /** The tensor called {@code name}; throws naming the known names when there is none. */
  public NdArray get(String name) {
    NdArray a = tensors.get(name);
    if (a == null) {
      throw new IllegalArgumentException("no tensor named " + name + " (known: " + tensors.keySet() + ")");
    }
    return a;
  }

  /** Name → tensor, in order, unmodifiable. */
  public Map<String, NdArray> asMap() {
    return tensors;
  }

  public void forEach(BiConsumer<String, NdArray> action) {
    tensors.forEach(action);
  }

  /** Total number of elements over all tensors. */
  public long numel() {
    long n = 0;
    for (NdArray a : tensors.values()) {
      n += a.numel();
    }
    return n;
  }

  /** Sets every element of every tensor to zero. */
  public void zero() {
    for (NdArray a : tensors.values()) {
      a.segment().asSlice(a.offset() * a.dtype().byteSize(), a.byteSize()).fill((byte) 0);
    }
  }

  /**
   * Throws unless {@code other} holds exactly these names, in any order, with the same shapes and dtypes; {@code
   * what} names the other side in the message ("gradients", "checkpoint").
   */
  public void requireSameLayout(ParameterSet other, String what) {
    requireSameLayout(other.tensors, what);
  }

  /** As {@link #requireSameLayout(ParameterSet, String)}, for a plain map (e.g. tensors read from a file). */
  public void requireSameLayout(Map<String, NdArray> other, String what) {
    for (Map.Entry<String, NdArray> e : tensors.entrySet()) {
      NdArray o = other.get(e.getKey());
      if (o == null) {
        throw new IllegalArgumentException(what + " has no tensor " + e.getKey());
      }
      NdArray a = e.getValue();
      if (!Arrays.equals(a.shape(), o.shape()) || a.dtype() != o.dtype()) {
        throw new IllegalArgumentException(
            what + " tensor " + e.getKey() + " is " + o.dtype() + Arrays.toString(o.shape()) + " but the parameter is "
                + a.dtype() + Arrays.toString(a.shape()));
      }
    }
    for (String name : other.keySet()) {
      if (!tensors.containsKey(name)) {
        throw new IllegalArgumentException(
            what + " has a tensor " + name + " that is not a parameter (parameters: " + tensors.keySet() + ")");
      }
    }
  }
}
