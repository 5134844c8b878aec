package dev.kiln.runtime.cuda;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import jcuda.NativePointerObject;
import jcuda.Pointer;

/**
 * Kernel parameters in declaration order, each with its C type made explicit (no guessing int vs long). Each is kept
 * twice: as the JCuda pointer {@code cuLaunchKernel} takes, and as its value's bits for {@link ProgrammaticLaunch},
 * which writes them into native memory itself.
 */
public final class KernelArgs {
  private final List<NativePointerObject> args = new ArrayList<>();
  /** Each argument's value: one word for a scalar or pointer, a struct's words in order. */
  private final List<long[]> values = new ArrayList<>();
  /** Whether the argument is a 4-byte scalar ({@code int}, {@code float}), written as the low half of its word. */
  private final List<Boolean> fourBytes = new ArrayList<>();
  private long valueBytes;

  private KernelArgs add(NativePointerObject jcuda, long[] words, boolean fourByteScalar) {
    args.add(jcuda);
    values.add(words);
    fourBytes.add(fourByteScalar);
    valueBytes += 8L * words.length;
    return this;
  }

  /** A device pointer parameter ({@code T*}). */
  public KernelArgs ptr(long address) {
    return add(Pointer.to(new long[] {address}), new long[] {address}, false);
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
    return add(Pointer.to(new int[] {v}), new long[] {v}, true);
  }

  public KernelArgs i64(long v) {
    return add(Pointer.to(new long[] {v}), new long[] {v}, false);
  }

  public KernelArgs f32(float v) {
    return add(Pointer.to(new float[] {v}), new long[] {Float.floatToRawIntBits(v)}, true);
  }

  public KernelArgs f64(double v) {
    return add(Pointer.to(new double[] {v}), new long[] {Double.doubleToRawLongBits(v)}, false);
  }

  /** A struct passed by value, given as its bytes in 8-byte words (the kernel's signature sets how many it reads). */
  public KernelArgs struct(long[] words) {
    long[] copy = words.clone();
    return add(Pointer.to(copy), copy, false);
  }

  Pointer toPointer() {
    return Pointer.to(args.toArray(new NativePointerObject[0]));
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
