package dev.kiln.runtime.cuda;

import dev.kiln.runtime.io.AtomicFiles;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import jcuda.driver.CUfunction;
import jcuda.driver.CUmodule;
import jcuda.driver.JCudaDriver;

/**
 * Loads Kiln's CUDA modules ({@code dev/kiln/runtime/cuda/kernels/NAME.cu} on the class path).
 *
 * <p>Order: the fatbin that nvcc built at build time ({@code NAME.fatbin}: sm_80 and sm_90 code plus compute_90
 * PTX); when there is none, or the driver rejects it, the {@code .cu} source compiled by NVRTC for this device,
 * cached on disk under {@code ~/.cache/kiln/cuda} ({@code KILN_CUDA_CACHE} or the system property {@code kiln.cuda.cache} override) keyed by the SHA-256 of source,
 * headers, options and NVRTC version plus the compute capability. {@code KILN_CUDA_NVRTC=1} skips the fatbins.
 */
public final class KernelLoader {
  private static final String RESOURCE_DIR = "/dev/kiln/runtime/cuda/kernels/";
  private static final String COMMON_HEADER = "kiln_common.cuh";
  private static final List<String> NVRTC_OPTIONS = List.of("-std=c++17");

  /** Where a module's code came from. */
  public enum Origin {
    FATBIN,
    NVRTC_COMPILED,
    NVRTC_DISK_CACHE
  }

  /** A loaded module. */
  public final class Module {
    private final CUmodule module;
    private final String name;
    private final Origin origin;
    private final Map<String, CudaKernel> functions = new ConcurrentHashMap<>();

    Module(CUmodule module, String name, Origin origin) {
      this.module = module;
      this.name = name;
      this.origin = origin;
    }

    public Origin origin() {
      return origin;
    }

    /** The kernel {@code symbol}; throws naming the module when absent. */
    public CudaKernel kernel(String symbol) {
      return functions.computeIfAbsent(symbol, s -> {
        device.makeCurrent();
        CUfunction f = new CUfunction();
        CudaException.check(JCudaDriver.cuModuleGetFunction(f, module, s),
            "cuModuleGetFunction(" + name + ", " + s + ")");
        return new CudaKernel(device, f, s);
      });
    }
  }

  private final CudaDevice device;
  private final Map<String, Module> modules = new ConcurrentHashMap<>();

  KernelLoader(CudaDevice device) {
    this.device = device;
  }

  /** The module {@code name} (file name without {@code .cu}), loaded once per device. */
  public Module module(String name) {
    return modules.computeIfAbsent(name, n -> load(n, "1".equals(System.getenv("KILN_CUDA_NVRTC"))));
  }

  /** Loads {@code name} afresh, bypassing this loader's memory (not the disk cache); for tests. */
  public Module loadFresh(String name, boolean forceNvrtc) {
    return load(name, forceNvrtc);
  }

  private Module load(String name, boolean forceNvrtc) {
    device.makeCurrent();
    String fatbinProblem = "skipped (KILN_CUDA_NVRTC=1)";
    if (!forceNvrtc) {
      byte[] fatbin = resource(name + ".fatbin");
      if (fatbin == null) {
        fatbinProblem = "no " + name + ".fatbin on the class path (built without nvcc)";
      } else {
        CUmodule m = new CUmodule();
        int rc = JCudaDriver.cuModuleLoadData(m, fatbin);
        if (rc == 0) {
          return new Module(m, name, Origin.FATBIN);
        }
        fatbinProblem = "cuModuleLoadData(" + name + ".fatbin) failed: " + CudaException.describe(rc);
      }
    }
    byte[] src = resource(name + ".cu");
    if (src == null) {
      throw new IllegalStateException("CUDA module " + name + " not found: no " + RESOURCE_DIR + name + ".cu");
    }
    String source = new String(src, StandardCharsets.UTF_8);
    byte[] header = resource(COMMON_HEADER);
    String headerText = header == null ? "" : new String(header, StandardCharsets.UTF_8);
    int cc = device.computeCapability();
    int nvrtcVersion;
    try {
      nvrtcVersion = Nvrtc.version();
    } catch (IllegalStateException e) {
      throw new IllegalStateException(
          "cannot load CUDA module " + name + ": " + fatbinProblem + ", and NVRTC is unavailable: " + e.getMessage(),
          e);
    }
    String key = sha256(source + "\0" + headerText + "\0" + NVRTC_OPTIONS + "\0" + nvrtcVersion).substring(0, 20);
    Path cached = cacheDir().resolve(name + "-" + key + "-sm" + cc + ".cubin");
    Origin origin = Origin.NVRTC_DISK_CACHE;
    byte[] cubin = null;
    if (Files.isRegularFile(cached)) {
      try {
        cubin = Files.readAllBytes(cached);
      } catch (IOException e) {
        cubin = null; // unreadable cache entry: compile again and overwrite it
      }
    }
    if (cubin == null) {
      origin = Origin.NVRTC_COMPILED;
      cubin = Nvrtc.compileToCubin(name + ".cu", source, Map.of(COMMON_HEADER, headerText), cc, NVRTC_OPTIONS);
      try {
        Files.createDirectories(cached.getParent());
        byte[] bytes = cubin;
        AtomicFiles.write(cached, out -> out.write(bytes));
      } catch (IOException e) {
        // A read-only home still runs; it just compiles again next time.
        System.err.println("[kiln] cannot cache " + cached + ": " + e.getMessage());
      }
    }
    CUmodule m = new CUmodule();
    CudaException.check(JCudaDriver.cuModuleLoadData(m, cubin), "cuModuleLoadData(" + cached.getFileName() + ")");
    return new Module(m, name, origin);
  }

  /** {@code KILN_CUDA_CACHE}, else {@code ~/.cache/kiln/cuda}. */
  public static Path cacheDir() {
    String env = System.getProperty("kiln.cuda.cache", System.getenv("KILN_CUDA_CACHE"));
    if (env != null && !env.isBlank()) {
      return Path.of(env);
    }
    return Path.of(System.getProperty("user.home"), ".cache", "kiln", "cuda");
  }

  private static byte[] resource(String file) {
    try (InputStream in = KernelLoader.class.getResourceAsStream(RESOURCE_DIR + file)) {
      return in == null ? null : in.readAllBytes();
    } catch (IOException e) {
      throw new UncheckedIOException("reading resource " + RESOURCE_DIR + file, e);
    }
  }

  private static String sha256(String s) {
    try {
      return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8)));
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }
}
