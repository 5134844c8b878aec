package dev.kiln.runtime.cuda;

import jcuda.driver.CUfunction_attribute;
import jcuda.driver.JCudaDriver;

/** One {@code extern "C" __global__} function of a loaded module. */
public final class CudaKernel {
  private final CudaDevice device;
  private final DevicePointer.Function function;
  private final String name;
  private final boolean waitsAtEntry;
  private int dynamicSharedLimit = 48 * 1024;

  /**
   * @param waitsAtEntry whether the kernel waits for the grid before it ({@code kiln_pdl_enter()}) before it touches
   *     memory, so that it may be launched programmatically ({@link KernelLaunch})
   */
  CudaKernel(CudaDevice device, DevicePointer.Function function, String name, boolean waitsAtEntry) {
    this.device = device;
    this.function = function;
    this.name = name;
    this.waitsAtEntry = waitsAtEntry;
  }

  public String name() {
    return name;
  }

  /** Whether the kernel's module waits for the previous grid at every kernel's entry (kiln_common.cuh). */
  public boolean waitsAtEntry() {
    return waitsAtEntry;
  }

  /** Registers per thread, from the compiled code. */
  public int registers() {
    int[] out = new int[1];
    device.makeCurrent();
    CudaException.check(
        JCudaDriver.cuFuncGetAttribute(out, CUfunction_attribute.CU_FUNC_ATTRIBUTE_NUM_REGS, function),
        "cuFuncGetAttribute(" + name + ")");
    return out[0];
  }

  /** How many blocks of {@code block} threads and {@code sharedBytes} of dynamic shared memory an SM holds at once. */
  public int residentBlocks(int block, int sharedBytes) {
    int[] out = new int[1];
    device.makeCurrent();
    CudaException.check(JCudaDriver.cuOccupancyMaxActiveBlocksPerMultiprocessor(out, function, block, sharedBytes),
        "cuOccupancyMaxActiveBlocksPerMultiprocessor(" + name + ", " + block + " threads, " + sharedBytes + " bytes)");
    return out[0];
  }

  /** Queues the kernel on {@code stream}; raises the dynamic shared memory limit first when needed. */
  public void launch(CudaStream stream, long gridX, long gridY, int block, int sharedBytes, KernelArgs args) {
    launch(stream, gridX, gridY, block, 1, sharedBytes, args);
  }

  /** As {@link #launch(CudaStream, long, long, int, int, KernelArgs)}, with a block of {@code blockX × blockY}. */
  public void launch(CudaStream stream, long gridX, long gridY, int blockX, int blockY, int sharedBytes,
      KernelArgs args) {
    if (gridX <= 0 || gridY <= 0) {
      return;
    }
    if (gridX > Integer.MAX_VALUE || gridY > 65535) {
      throw new IllegalArgumentException(name + ": grid " + gridX + " x " + gridY + " exceeds CUDA's limits");
    }
    device.makeCurrent();
    if (sharedBytes > dynamicSharedLimit) {
      if (sharedBytes > device.maxSharedMemoryPerBlock()) {
        throw new IllegalArgumentException(name + " needs " + sharedBytes + " bytes of shared memory; "
            + device + " allows " + device.maxSharedMemoryPerBlock() + " per block");
      }
      CudaException.check(JCudaDriver.cuFuncSetAttribute(function,
              CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, sharedBytes),
          "cuFuncSetAttribute(" + name + ", max dynamic shared memory " + sharedBytes + ")");
      dynamicSharedLimit = sharedBytes;
    }
    boolean programmatic = waitsAtEntry && device.programmaticLaunch();
    int rc = KernelLaunch.launch(function.handle(), stream.rawHandle(), gridX, gridY, blockX, blockY, sharedBytes,
        args, programmatic);
    if (rc != 0) { // the message is built only on failure: launches are the hot path of a training step
      CudaException.check(rc, KernelLaunch.call() + "(" + name + ", grid " + gridX + "x" + gridY + ", block "
          + blockX + "x" + blockY + ", smem " + sharedBytes + (programmatic ? ", programmatic" : "") + ")");
    }
  }
}
