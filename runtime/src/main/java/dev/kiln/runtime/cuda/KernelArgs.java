package dev.kiln.runtime.cuda;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * Kernel parameters in declaration order, each with its C type made explicit (no guessing int vs long), kept as their
 * values' bits, which {@link KernelLaunch} writes into native memory for the driver.
 */
public final class KernelArgs {
  /** Each argument's value: one word for a scalar or pointer, a struct's words in order. */
  private final List<long[]> values = new ArrayList<>();
  /** Whether the argument is a 4-byte scalar ({@code int}, {@code float}), written as the low half of its word. */
  private final List<Boolean> fourBytes = new ArrayList<>();
  private long valueBytes;

  private KernelArgs add(long[] words, boolean fourByteScalar) {
    values.add(words);
    fourBytes.add(fourByteScalar);
    valueBytes += 8L * words.length;
    return this;
  }

  /** A device pointer parameter ({@code T*}). */
  public KernelArgs ptr(long address) {
    return add(new long[] {address}, false);
  }

  public KernelArgs ptr(CudaArray a) {
    return ptr(a.address());
  }

  /** A null pointer, for optional outputs. */
  public KernelArgs nullPtr() {
    return ptr(0L);
  }

  /** {@code a}'s pointer, or a null one when {@code a} is null (an optional operand the kernel skips). */
  public KernelArgs ptrOrNull(CudaArray a) {
    return a == null ? nullPtr() : ptr(a);
  }

  public KernelArgs i32(int v) {
    return add(new long[] {v}, true);
  }

  public KernelArgs i64(long v) {
    return add(new long[] {v}, false);
  }

  public KernelArgs f32(float v) {
    return add(new long[] {Float.floatToRawIntBits(v)}, true);
  }

  public KernelArgs f64(double v) {
    return add(new long[] {Double.doubleToRawLongBits(v)}, false);
  }

  /** A struct passed by value, given as its bytes in 8-byte words (the kernel's signature sets how many it reads). */
  public KernelArgs struct(long[] words) {
    return add(words.clone(), false);
  }

  int count() {
    return values.size();
  }

  /** The bytes {@link #writeValue} takes for all arguments together (each rounded up to 8). */
  long valueBytes() {
    return valueBytes;
  }

  /** Writes argument {@code i}'s value at {@code offset} of {@code to}; returns the bytes taken (a multiple of 8). */
  long writeValue(int i, MemorySegment to, long offset) {
    long[] words = values.get(i);
    if (fourBytes.get(i)) {
      to.set(JAVA_INT, offset, (int) words[0]);
    } else {
      for (int w = 0; w < words.length; w++) {
        to.set(JAVA_LONG, offset + 8L * w, words[w]);
      }
    }
    return 8L * words.length;
  }
}
