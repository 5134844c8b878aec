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
import jcuda.driver.CUdeviceptr;
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
 * A module whose name ends in {@code _sm90a} uses Hopper-only instructions: its fatbin holds sm_90a code alone, NVRTC
 * compiles it for {@code sm_90a}, and it loads on compute capability 9.0 only ({@link #hopper}).
 */
public final class KernelLoader {
  private static final String RESOURCE_DIR = "/dev/kiln/runtime/cuda/kernels/";
  /** Headers the kernels include; NVRTC gets them by name. */
  private static final List<String> HEADERS = List.of("kiln_common.cuh", "kiln_attention.cuh", "kiln_wgmma.cuh");
  private static final String HOPPER_SUFFIX = "_sm90a";
  /** The device global by which a module says its kernels wait at entry (kiln_common.cuh, kiln_pdl_enter). */
  static final String WAITS_AT_ENTRY = "kiln_waits_at_entry";
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
    private final Map<String, Boolean> present = new ConcurrentHashMap<>();

    private final boolean waitsAtEntry;

    /** @param source the module's CUDA C where it is on the class path, else null */
    Module(CUmodule module, String name, Origin origin, String source) {
      this.module = module;
      this.name = name;
      this.origin = origin;
      // Kiln's kernels and those its processor generates define this marker and wait for the previous grid at their
      // entry (kiln_common.cuh); a module built before that, such as a model jar from an older processor, does not.
      // Where the source is at hand, each kernel is checked for the wait as well: one without it would race with the
      // kernel before it under a programmatic launch.
      boolean marked = JCudaDriver.cuModuleGetGlobal(new CUdeviceptr(), new long[1], module, WAITS_AT_ENTRY) == 0;
      List<String> missing = marked && source != null ? KernelEntries.withoutWait(source) : List.of();
      if (!missing.isEmpty()) {
        System.err.println("[kiln] CUDA module " + name + ": launched without programmatic dependent launch, since"
            + " these kernels do not begin with kiln_pdl_enter(): " + missing);
      }
      this.waitsAtEntry = marked && missing.isEmpty();
    }

    /** Whether every kernel of the module waits for the previous grid before it touches memory. */
    public boolean waitsAtEntry() {
      return waitsAtEntry;
    }

    public Origin origin() {
      return origin;
    }

    /** The kernel {@code symbol}; throws naming the module when absent. */
    /** Whether the module has a function named {@code symbol} (a form that an older processor did not generate). */
    public boolean has(String symbol) {
      return present.computeIfAbsent(symbol, sym -> {
        device.makeCurrent();
        return JCudaDriver.cuModuleGetFunction(new CUfunction(), module, sym) == 0;
      });
    }

    public CudaKernel kernel(String symbol) {
      return functions.computeIfAbsent(symbol, s -> {
        device.makeCurrent();
        DevicePointer.Function f = new DevicePointer.Function();
        CudaException.check(JCudaDriver.cuModuleGetFunction(f, module, s),
            "cuModuleGetFunction(" + name + ", " + s + ")");
        return new CudaKernel(device, f, s, waitsAtEntry);
      });
    }
  }

  private final CudaDevice device;
  private final Map<String, Module> modules = new ConcurrentHashMap<>();

  KernelLoader(CudaDevice device) {
    this.device = device;
  }

  /** Whether this device runs the Hopper-only ({@code _sm90a}) modules: compute capability 9.0. */
  public boolean hopper() {
    return device.computeCapability() == 90;
  }

  /** The module {@code name} (file name without {@code .cu}), loaded once per device. */
  public Module module(String name) {
    return modules.computeIfAbsent(name, n -> load(RESOURCE_DIR, n, forceNvrtc()));
  }

  /**
   * A module generated by Kiln's processor, by the class-path resource of its CUDA C ({@code
   * META-INF/kiln/cuda/pkg.Module.cu}, as {@link dev.kiln.dsl.spi.Kernel#cudaResource()} names it): its {@code
   * .fatbin} sibling when the build had nvcc, else the source through NVRTC, as for Kiln's own kernels.
   */
  public Module generated(String cudaResource) {
    if (!cudaResource.endsWith(".cu")) {
      throw new IllegalArgumentException("generated CUDA resource '" + cudaResource + "' does not end in .cu");
    }
    String path = cudaResource.startsWith("/") ? cudaResource : "/" + cudaResource;
    int slash = path.lastIndexOf('/');
    String dir = path.substring(0, slash + 1);
    String name = path.substring(slash + 1, path.length() - 3);
    return modules.computeIfAbsent(path, p -> load(dir, name, forceNvrtc()));
  }

  private static boolean forceNvrtc() {
    return "1".equals(System.getenv("KILN_CUDA_NVRTC"));
  }

  /** Loads {@code name} afresh, bypassing this loader's memory (not the disk cache); for tests. */
  public Module loadFresh(String name, boolean forceNvrtc) {
    return load(RESOURCE_DIR, name, forceNvrtc);
  }

  private Module load(String dir, String name, boolean forceNvrtc) {
    device.makeCurrent();
    String fatbinProblem = "skipped (KILN_CUDA_NVRTC=1)";
    if (!forceNvrtc) {
      byte[] fatbin = resource(dir, name + ".fatbin");
      if (fatbin == null) {
        fatbinProblem = "no " + name + ".fatbin on the class path (built without nvcc)";
      } else {
        CUmodule m = new CUmodule();
        int rc = JCudaDriver.cuModuleLoadData(m, fatbin);
        if (rc == 0) {
          byte[] src = resource(dir, name + ".cu");
          return new Module(m, name, Origin.FATBIN, src == null ? null : new String(src, StandardCharsets.UTF_8));
        }
        fatbinProblem = "cuModuleLoadData(" + name + ".fatbin) failed: " + CudaException.describe(rc);
      }
    }
    byte[] src = resource(dir, name + ".cu");
    if (src == null) {
      throw new IllegalStateException("CUDA module " + name + " not found: no " + dir + name + ".cu on the class"
          + " path");
    }
    String source = new String(src, StandardCharsets.UTF_8);
    Map<String, String> headers = new java.util.LinkedHashMap<>();
    for (String h : HEADERS) {
      byte[] header = resource(RESOURCE_DIR, h);
      headers.put(h, header == null ? "" : new String(header, StandardCharsets.UTF_8));
    }
    int cc = device.computeCapability();
    boolean hopperOnly = name.endsWith(HOPPER_SUFFIX);
    if (hopperOnly && cc != 90) {
      throw new IllegalStateException("CUDA module " + name + " uses Hopper-only instructions (sm_90a) and cannot run"
          + " on " + device + "; use the portable kernels");
    }
    String arch = hopperOnly ? "sm_90a" : "sm_" + cc;
    int nvrtcVersion;
    try {
      nvrtcVersion = Nvrtc.version();
    } catch (IllegalStateException e) {
      throw new IllegalStateException(
          "cannot load CUDA module " + name + ": " + fatbinProblem + ", and NVRTC is unavailable: " + e.getMessage(),
          e);
    }
    String key = sha256(source + "\0" + headers + "\0" + NVRTC_OPTIONS + "\0" + nvrtcVersion).substring(0, 20);
    Path cached = cacheDir().resolve(name + "-" + key + "-" + arch.replace("_", "") + ".cubin");
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
      cubin = Nvrtc.compileToCubin(name + ".cu", source, headers, arch, NVRTC_OPTIONS);
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
    return new Module(m, name, origin, source);
  }

  /** {@code KILN_CUDA_CACHE}, else {@code ~/.cache/kiln/cuda}. */
  public static Path cacheDir() {
    String env = System.getProperty("kiln.cuda.cache", System.getenv("KILN_CUDA_CACHE"));
    if (env != null && !env.isBlank()) {
      return Path.of(env);
    }
    return Path.of(System.getProperty("user.home"), ".cache", "kiln", "cuda");
  }

  private static byte[] resource(String dir, String file) {
    try (InputStream in = KernelLoader.class.getResourceAsStream(dir + file)) {
      return in == null ? null : in.readAllBytes();
    } catch (IOException e) {
      throw new UncheckedIOException("reading resource " + dir + file, e);
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
