package dev.kiln.runtime.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.Optional;

/**
 * Every kernel launch: the driver's {@code cuLaunchKernelEx} through FFM, plain or with programmatic dependent
 * launch ({@code CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION}, Hopper and later), which JCuda 12.6 does not
 * bind. A driver older than CUDA 12.0, which lacks it, gets {@code cuLaunchKernel} for plain launches.
 *
 * <p>With the attribute, a kernel's blocks may be scheduled once every block of the kernel before it in the stream
 * has started and signalled ({@code griddepcontrol.launch_dependents}), instead of after that kernel has drained and
 * its writes have been flushed; the kernel itself waits ({@code griddepcontrol.wait}) before it touches memory. What
 * that saves is the gap between two kernels, which a CUDA graph already makes short: on an H200 about 0.5 µs where
 * a cuBLAS GEMM is followed by one of Kiln's kernels (docs/cuda.md, "Programmatic dependent launch"). It is correct
 * only for kernels that wait at their entry, so {@link CudaKernel} asks for it only for the modules that say they do
 * ({@code kiln_waits_at_entry}, kiln_common.cuh).
 *
 * <p>The CUDA structs are written by offset, as {@code cuda.h} (12.x and 13.x) lays them out on a 64-bit host:
 * {@code CUlaunchConfig} is 7 unsigned ints, then the stream at 32, the attribute array at 40 and their count at 48
 * (56 bytes); a {@code CUlaunchAttribute} is its id, 4 bytes of padding and a 64-byte value union (72 bytes). The
 * parameters are {@code void* kernelParams[]}, a pointer to each argument's value; the driver copies the values at
 * the launch (or into the node of a graph being captured), so one buffer a thread serves every launch.
 */
final class KernelLaunch {
  private static final int CONFIG_BYTES = 56;
  private static final int ATTRIBUTE_BYTES = 72;
  /** {@code CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION}. */
  private static final int PROGRAMMATIC_STREAM_SERIALIZATION = 6;

  private static final SymbolLookup DRIVER = driver();
  private static final MethodHandle LAUNCH_KERNEL_EX =
      bind("cuLaunchKernelEx", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS));
  private static final MethodHandle LAUNCH_KERNEL = bind("cuLaunchKernel", FunctionDescriptor.of(JAVA_INT, ADDRESS,
      JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, ADDRESS));

  /** Native scratch for one launch at a time per thread: the config, its attribute, the parameters. */
  private static final ThreadLocal<Scratch> SCRATCH = ThreadLocal.withInitial(Scratch::new);

  private KernelLaunch() {}

  /** Whether the driver has {@code cuLaunchKernelEx} (CUDA 12.0 and later), which programmatic launches need. */
  static boolean hasLaunchKernelEx() {
    return LAUNCH_KERNEL_EX != null;
  }

  /** The driver function launches go through, for messages. */
  static String call() {
    return LAUNCH_KERNEL_EX != null ? "cuLaunchKernelEx" : "cuLaunchKernel";
  }

  /**
   * Queues {@code function} on {@code stream}, with the programmatic-serialization attribute when {@code
   * programmatic}; returns the driver's result code.
   */
  static int launch(long function, long stream, long gridX, long gridY, int blockX, int blockY, int sharedBytes,
      KernelArgs args, boolean programmatic) {
    Scratch s = SCRATCH.get();
    MemorySegment params = s.params(args);
    try {
      if (LAUNCH_KERNEL_EX == null) {
        if (programmatic) {
          throw new IllegalStateException("programmatic launch asked of a driver without cuLaunchKernelEx");
        }
        return (int) LAUNCH_KERNEL.invokeExact(MemorySegment.ofAddress(function), (int) gridX, (int) gridY, 1, blockX,
            blockY, 1, sharedBytes, MemorySegment.ofAddress(stream), params, MemorySegment.NULL);
      }
      MemorySegment config = s.config;
      config.set(JAVA_INT, 0, (int) gridX);
      config.set(JAVA_INT, 4, (int) gridY);
      config.set(JAVA_INT, 8, 1);
      config.set(JAVA_INT, 12, blockX);
      config.set(JAVA_INT, 16, blockY);
      config.set(JAVA_INT, 20, 1);
      config.set(JAVA_INT, 24, sharedBytes);
      config.set(JAVA_LONG, 32, stream);
      config.set(JAVA_LONG, 40, s.attribute.address());
      config.set(JAVA_INT, 48, programmatic ? 1 : 0);
      return (int) LAUNCH_KERNEL_EX.invokeExact(config, MemorySegment.ofAddress(function), params,
          MemorySegment.NULL);
    } catch (RuntimeException | Error e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("the CUDA driver's launch could not be called: " + t, t);
    }
  }

  private static SymbolLookup driver() {
    try {
      return SymbolLookup.libraryLookup("libcuda.so.1", Arena.global());
    } catch (IllegalArgumentException e) {
      return null; // no driver: CudaDevice never gets as far as a launch
    }
  }

  private static MethodHandle bind(String name, FunctionDescriptor descriptor) {
    Optional<MemorySegment> symbol = DRIVER == null ? Optional.empty() : DRIVER.find(name);
    return symbol.map(s -> Linker.nativeLinker().downcallHandle(s, descriptor)).orElse(null);
  }

  /** A thread's native buffers, grown when a launch has more parameter bytes than they hold. */
  private static final class Scratch {
    final MemorySegment config;
    final MemorySegment attribute;
    private MemorySegment params;

    Scratch() {
      Arena arena = Arena.ofAuto();
      config = arena.allocate(CONFIG_BYTES, 8);
      attribute = arena.allocate(ATTRIBUTE_BYTES, 8);
      attribute.set(JAVA_INT, 0, PROGRAMMATIC_STREAM_SERIALIZATION);
      attribute.set(JAVA_INT, 8, 1); // value.programmaticStreamSerializationAllowed
      params = arena.allocate(4096, 8);
    }

    /** {@code void* kernelParams[]}: a pointer per argument, then the arguments' values, each 8-byte aligned. */
    MemorySegment params(KernelArgs args) {
      int count = args.count();
      long needed = 8L * count + args.valueBytes();
      if (needed > params.byteSize()) {
        params = Arena.ofAuto().allocate(Math.max(needed, 2 * params.byteSize()), 8);
      }
      long value = 8L * count;
      for (int i = 0; i < count; i++) {
        params.set(JAVA_LONG, 8L * i, params.address() + value);
        value += args.writeValue(i, params, value);
      }
      return params;
    }
  }
}
