package dev.kiln.runtime.cuda;

import java.util.ArrayList;
import java.util.List;
import jcuda.NativePointerObject;
import jcuda.Pointer;

/** Kernel parameters in declaration order, each with its C type made explicit (no guessing int vs long). */
public final class KernelArgs {
  private final List<NativePointerObject> args = new ArrayList<>();

  /** A device pointer parameter ({@code T*}). */
  public KernelArgs ptr(long address) {
    args.add(Pointer.to(new long[] {address}));
    return this;
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
    args.add(Pointer.to(new int[] {v}));
    return this;
  }

  public KernelArgs i64(long v) {
    args.add(Pointer.to(new long[] {v}));
    return this;
  }

  public KernelArgs f32(float v) {
    args.add(Pointer.to(new float[] {v}));
    return this;
  }

  public KernelArgs f64(double v) {
    args.add(Pointer.to(new double[] {v}));
    return this;
  }

  /** A struct passed by value, given as its bytes in 8-byte words (the kernel's signature sets how many it reads). */
  public KernelArgs struct(long[] words) {
    args.add(Pointer.to(words.clone()));
    return this;
  }

  Pointer toPointer() {
    return Pointer.to(args.toArray(new NativePointerObject[0]));
  }
}
