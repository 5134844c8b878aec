package dev.kiln.runtime.cuda;

import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUfunction;
import jcuda.driver.CUstream;

/**
 * JCuda keeps raw handles in a protected field; these subclasses read them, because cuBLAS, NVRTC and
 * {@code cuLaunchKernelEx} are called through FFM (their JCuda bindings do not load on CUDA 13 or do not exist, see
 * docs/cuda.md) and need plain addresses.
 */
final class DevicePointer extends CUdeviceptr {
  DevicePointer() {}

  /** {@code byteOffset} bytes into {@code base}'s memory (a slot of another buffer, {@link DeviceBuffer#moveInto}). */
  DevicePointer(DevicePointer base, long byteOffset) {
    super(base, byteOffset);
  }

  /** The device address this pointer holds. */
  long address() {
    return getNativePointer() + getByteOffset();
  }

  /** A stream whose raw {@code CUstream} handle can be handed to cuBLAS. */
  static final class Stream extends CUstream {
    long handle() {
      return getNativePointer();
    }
  }

  /** A kernel function whose raw {@code CUfunction} handle can be handed to {@code cuLaunchKernelEx}. */
  static final class Function extends CUfunction {
    long handle() {
      return getNativePointer();
    }
  }
}
