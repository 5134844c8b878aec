package dev.kiln.runtime.cuda;

import java.util.concurrent.ConcurrentHashMap;
import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.JCudaDriver;

/**
 * One GPU in use: its primary context (the one the CUDA runtime and PyTorch share), a caching allocator, a default
 * stream, pinned staging buffers for host copies and the loaded kernel modules.
 *
 * <p>Every public entry point of the CUDA package makes the context current on the calling thread, so callers never
 * deal with contexts.
 */
public final class CudaDevice {
  private static final ConcurrentHashMap<Integer, CudaDevice> DEVICES = new ConcurrentHashMap<>();

  private final int ordinal;
  private final CUdevice device = new CUdevice();
  private final CUcontext context = new CUcontext();
  private final ThreadLocal<Boolean> current = ThreadLocal.withInitial(() -> false);
  private final String name;
  private final int major;
  private final int minor;
  private final int multiprocessors;
  private final int maxSharedMemoryPerBlock;
  private final CachingAllocator allocator;
  private final PinnedStaging staging;
  private final KernelLoader kernels;
  private volatile CudaStream defaultStream;
  private volatile boolean programmaticLaunch;

  private CudaDevice(int ordinal) {
    CudaProbe.Report report = CudaProbe.probe();
    if (!report.available()) {
      throw new IllegalStateException("no CUDA device: " + report.problem());
    }
    if (ordinal < 0 || ordinal >= report.devices().size()) {
      throw new IllegalArgumentException(
          "CUDA device " + ordinal + " does not exist; the driver reports " + report.devices().size());
    }
    this.ordinal = ordinal;
    CudaException.check(JCudaDriver.cuDeviceGet(device, ordinal), "cuDeviceGet(" + ordinal + ")");
    CudaException.check(JCudaDriver.cuDevicePrimaryCtxRetain(context, device), "cuDevicePrimaryCtxRetain");
    makeCurrent();
    CudaProbe.Device d = report.devices().get(ordinal);
    this.name = d.name();
    this.major = d.major();
    this.minor = d.minor();
    this.multiprocessors = d.multiprocessors();
    this.maxSharedMemoryPerBlock = attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
    this.allocator = new CachingAllocator(this);
    this.staging = new PinnedStaging(this);
    this.kernels = new KernelLoader(this);
    this.programmaticLaunch = supportsProgrammaticLaunch() && !"0".equals(System.getenv("KILN_PDL"));
  }

  /** Whether kernels can be launched programmatically here: compute capability 9.0 or later and a CUDA 12+ driver. */
  public boolean supportsProgrammaticLaunch() {
    return computeCapability() >= 90 && KernelLaunch.hasLaunchKernelEx();
  }

  /**
   * Whether the kernels of modules that wait at their entry are launched programmatically ({@link KernelLaunch}): on
   * by default where supported; {@code KILN_PDL=0} turns it off.
   */
  public boolean programmaticLaunch() {
    return programmaticLaunch;
  }

  /** Turns programmatic launches on (where {@link #supportsProgrammaticLaunch supported}) or off, for later launches. */
  public void programmaticLaunch(boolean on) {
    programmaticLaunch = on && supportsProgrammaticLaunch();
  }

  /** Device {@code ordinal}, opened on first use; throws {@link IllegalStateException} with the reason if absent. */
  public static CudaDevice get(int ordinal) {
    return DEVICES.computeIfAbsent(ordinal, CudaDevice::new);
  }

  /** Device 0. */
  public static CudaDevice first() {
    return get(0);
  }

  /** Binds this device's primary context to the calling thread (once per thread). */
  public void makeCurrent() {
    if (!current.get()) {
      CudaException.check(JCudaDriver.cuCtxSetCurrent(context), "cuCtxSetCurrent(device " + ordinal + ")");
      current.set(true);
    }
  }

  public int ordinal() {
    return ordinal;
  }

  public String name() {
    return name;
  }

  /** Compute capability as one number, e.g. 90 for 9.0. */
  public int computeCapability() {
    return major * 10 + minor;
  }

  public int multiprocessors() {
    return multiprocessors;
  }

  /** The most dynamic shared memory one block may ask for (after raising the kernel's limit). */
  public int maxSharedMemoryPerBlock() {
    return maxSharedMemoryPerBlock;
  }

  public CachingAllocator allocator() {
    return allocator;
  }

  PinnedStaging staging() {
    return staging;
  }

  public KernelLoader kernels() {
    return kernels;
  }

  /** A stream owned by the device, used where the caller names none. */
  public CudaStream defaultStream() {
    CudaStream s = defaultStream;
    if (s == null) {
      synchronized (this) {
        if (defaultStream == null) {
          defaultStream = new CudaStream(this);
        }
        s = defaultStream;
      }
    }
    return s;
  }

  /** A new stream; close it when done. */
  public CudaStream newStream() {
    return new CudaStream(this);
  }

  /** Waits for all work on the device, on every stream. */
  public void synchronize() {
    makeCurrent();
    CudaException.check(JCudaDriver.cuCtxSynchronize(), "cuCtxSynchronize");
  }

  /** Free and total device memory in bytes, as the driver sees it. */
  public long[] memoryInfo() {
    makeCurrent();
    long[] free = new long[1];
    long[] total = new long[1];
    CudaException.check(JCudaDriver.cuMemGetInfo(free, total), "cuMemGetInfo");
    return new long[] {free[0], total[0]};
  }

  private int attribute(int attr) {
    int[] out = new int[1];
    CudaException.check(JCudaDriver.cuDeviceGetAttribute(out, attr, device), "cuDeviceGetAttribute(" + attr + ")");
    return out[0];
  }

  @Override
  public String toString() {
    return "cuda:" + ordinal + " (" + name + ", sm_" + computeCapability() + ", " + multiprocessors + " SMs)";
  }
}
