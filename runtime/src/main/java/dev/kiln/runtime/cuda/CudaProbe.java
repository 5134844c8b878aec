package dev.kiln.runtime.cuda;

import java.util.ArrayList;
import java.util.List;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.CUresult;
import jcuda.driver.JCudaDriver;

/**
 * Finds NVIDIA GPUs through the CUDA driver API (JCuda), for {@code kiln doctor} and device selection.
 *
 * <p>It never throws because there is no GPU: a machine without {@code libcuda.so.1}, without a device, or with a
 * broken driver yields a {@link Report} that says why. JCuda's driver binding links only {@code libcuda.so.1} (its CUDA
 * runtime is static), so the same jar works on CUDA 12 and 13 drivers.
 */
public final class CudaProbe {
  private CudaProbe() {}

  /** One device as the driver describes it. */
  public record Device(int ordinal, String name, int major, int minor, long totalMemoryBytes, int multiprocessors) {
    public String computeCapability() {
      return major + "." + minor;
    }
  }

  /**
   * What the probe found: the driver's CUDA version (e.g. 13000 for 13.0) and devices, or {@code problem} saying
   * why there are none.
   */
  public record Report(int driverVersion, List<Device> devices, String problem) {
    public boolean available() {
      return !devices.isEmpty();
    }

    /** The driver's CUDA version as {@code major.minor}. */
    public String driverVersionString() {
      return driverVersion / 1000 + "." + (driverVersion % 1000) / 10;
    }
  }

  /** Probes the driver once; cheap enough to call at start-up. */
  public static Report probe() {
    if (!driverLibraryPresent()) {
      return new Report(0, List.of(), "no NVIDIA driver (libcuda.so.1 not found)");
    }
    try {
      JCudaDriver.setExceptionsEnabled(false);
      int rc = JCudaDriver.cuInit(0);
      if (rc != CUresult.CUDA_SUCCESS) {
        return new Report(0, List.of(), "cuInit failed: " + CUresult.stringFor(rc));
      }
      int[] v = new int[1];
      JCudaDriver.cuDriverGetVersion(v);
      int[] count = new int[1];
      rc = JCudaDriver.cuDeviceGetCount(count);
      if (rc != CUresult.CUDA_SUCCESS) {
        return new Report(v[0], List.of(), "cuDeviceGetCount failed: " + CUresult.stringFor(rc));
      }
      List<Device> devices = new ArrayList<>();
      for (int i = 0; i < count[0]; i++) {
        CUdevice dev = new CUdevice();
        JCudaDriver.cuDeviceGet(dev, i);
        byte[] name = new byte[256];
        JCudaDriver.cuDeviceGetName(name, name.length, dev);
        long[] mem = new long[1];
        JCudaDriver.cuDeviceTotalMem(mem, dev);
        devices.add(
            new Device(
                i,
                cString(name),
                attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
                mem[0],
                attribute(dev, CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)));
      }
      return new Report(v[0], devices, devices.isEmpty() ? "the driver reports no CUDA devices" : null);
    } catch (LinkageError e) {
      // No libcuda.so.1 (no NVIDIA driver) or JCuda natives for another platform.
      String msg = String.valueOf(e.getMessage());
      return new Report(0, List.of(), "cannot load JCuda's driver binding: " + msg.lines().findFirst().orElse(msg));
    } catch (RuntimeException e) {
      return new Report(0, List.of(), "CUDA probe failed: " + e);
    }
  }

  /**
   * Looks for the driver library before touching JCuda, whose loader prints a page of nested stack traces when it is
   * missing.
   */
  private static boolean driverLibraryPresent() {
    try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
      java.lang.foreign.SymbolLookup.libraryLookup("libcuda.so.1", arena);
      return true;
    } catch (IllegalArgumentException | IllegalCallerException e) {
      return false;
    }
  }

  private static int attribute(CUdevice dev, int attr) {
    int[] out = new int[1];
    JCudaDriver.cuDeviceGetAttribute(out, attr, dev);
    return out[0];
  }

  private static String cString(byte[] b) {
    int n = 0;
    while (n < b.length && b[n] != 0) {
      n++;
    }
    return new String(b, 0, n, java.nio.charset.StandardCharsets.UTF_8);
  }
}
