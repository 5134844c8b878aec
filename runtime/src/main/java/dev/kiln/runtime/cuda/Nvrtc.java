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
import java.util.List;
import java.util.Map;

/**
 * NVRTC (run-time CUDA C++ compilation) through the FFM API: {@code libnvrtc.so.13}, else {@code .so.12};
 * {@code KILN_NVRTC=/path/to/libnvrtc.so} overrides. Compiles a source with named in-memory headers to a cubin for
 * one GPU architecture. Needs no GPU, only the library.
 */
public final class Nvrtc {
  private static volatile Api api;

  private Nvrtc() {}

  /** NVRTC's version as {@code major * 1000 + minor * 10}, e.g. 13000. */
  public static int version() {
    Api a = api();
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment major = arena.allocate(JAVA_INT);
      MemorySegment minor = arena.allocate(JAVA_INT);
      check((int) a.version.invokeExact(major, minor), "nvrtcVersion", null);
      return major.get(JAVA_INT, 0) * 1000 + minor.get(JAVA_INT, 0) * 10;
    } catch (CudaException e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("NVRTC call failed", t);
    }
  }

  /** Where the library was found. */
  public static String librarySource() {
    return api().source;
  }

  /**
   * Compiles {@code source} to a cubin for {@code sm_<computeCapability>}; see
   * {@link #compileToCubin(String, String, Map, String, List)}.
   */
  public static byte[] compileToCubin(String name, String source, Map<String, String> headers, int computeCapability,
      List<String> options) {
    return compileToCubin(name, source, headers, "sm_" + computeCapability, options);
  }

  /**
   * Compiles {@code source} to a cubin for the GPU architecture {@code arch} ({@code sm_90}, or {@code sm_90a} for
   * Hopper-only instructions).
   *
   * @param name the program name used in diagnostics, e.g. {@code flash_attention.cu}
   * @param headers include name to header text, resolvable by {@code #include "name"}
   * @param options extra compiler options (the architecture is added here)
   * @throws CudaException with NVRTC's log when compilation fails
   */
  public static byte[] compileToCubin(String name, String source, Map<String, String> headers, String arch,
      List<String> options) {
    Api a = api();
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment progOut = arena.allocate(ADDRESS);
      int nh = headers.size();
      MemorySegment headerTexts = arena.allocate(ADDRESS, Math.max(1, nh));
      MemorySegment headerNames = arena.allocate(ADDRESS, Math.max(1, nh));
      int i = 0;
      for (Map.Entry<String, String> h : headers.entrySet()) {
        headerTexts.setAtIndex(ADDRESS, i, arena.allocateFrom(h.getValue()));
        headerNames.setAtIndex(ADDRESS, i, arena.allocateFrom(h.getKey()));
        i++;
      }
      MemorySegment texts = nh == 0 ? MemorySegment.NULL : headerTexts;
      MemorySegment names = nh == 0 ? MemorySegment.NULL : headerNames;
      check((int) a.create.invokeExact(progOut, arena.allocateFrom(source), arena.allocateFrom(name), nh, texts,
          names),
          "nvrtcCreateProgram(" + name + ")", null);
      MemorySegment prog = progOut.get(ADDRESS, 0);
      try {
        List<String> all = new java.util.ArrayList<>(options);
        all.add("--gpu-architecture=" + arch);
        MemorySegment opts = arena.allocate(ADDRESS, all.size());
        for (int j = 0; j < all.size(); j++) {
          opts.setAtIndex(ADDRESS, j, arena.allocateFrom(all.get(j)));
        }
        int rc = (int) a.compile.invokeExact(prog, all.size(), opts);
        if (rc != 0) {
          check(rc, "nvrtcCompileProgram(" + name + ", " + all + ")", log(a, prog, arena));
        }
        MemorySegment size = arena.allocate(JAVA_LONG);
        check((int) a.cubinSize.invokeExact(prog, size), "nvrtcGetCUBINSize", null);
        MemorySegment cubin = arena.allocate(size.get(JAVA_LONG, 0));
        check((int) a.cubin.invokeExact(prog, cubin), "nvrtcGetCUBIN", null);
        return cubin.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
      } finally {
        progOut.set(ADDRESS, 0, prog);
        int ignored = (int) a.destroy.invokeExact(progOut);
      }
    } catch (CudaException e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("NVRTC call failed", t);
    }
  }

  private static String log(Api a, MemorySegment prog, Arena arena) throws Throwable {
    MemorySegment size = arena.allocate(JAVA_LONG);
    if ((int) a.logSize.invokeExact(prog, size) != 0) {
      return "(no log)";
    }
    MemorySegment buf = arena.allocate(Math.max(1, size.get(JAVA_LONG, 0)));
    if ((int) a.log.invokeExact(prog, buf) != 0) {
      return "(no log)";
    }
    return buf.getString(0);
  }

  private static void check(int rc, String call, String log) {
    if (rc != 0) {
      String text;
      try {
        text = ((MemorySegment) api().errorString.invokeExact(rc)).reinterpret(256).getString(0);
      } catch (Throwable t) {
        text = "nvrtcResult " + rc;
      }
      throw new CudaException(call, rc, text + (log == null || log.isBlank() ? "" : "\n" + log));
    }
  }

  private static Api api() {
    Api a = api;
    if (a == null) {
      synchronized (Nvrtc.class) {
        if (api == null) {
          api = new Api(NativeLibrary.load("NVRTC", "KILN_NVRTC", List.of("libnvrtc.so.13", "libnvrtc.so.12")));
        }
        a = api;
      }
    }
    return a;
  }

  private static final class Api {
    final String source;
    final MethodHandle version;
    final MethodHandle create;
    final MethodHandle compile;
    final MethodHandle destroy;
    final MethodHandle logSize;
    final MethodHandle log;
    final MethodHandle cubinSize;
    final MethodHandle cubin;
    final MethodHandle errorString;

    Api(NativeLibrary.Loaded lib) {
      source = lib.source();
      SymbolLookup l = lib.lookup();
      Linker k = Linker.nativeLinker();
      version = find(k, l, "nvrtcVersion", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
      create = find(k, l, "nvrtcCreateProgram",
          FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, JAVA_INT, ADDRESS, ADDRESS));
      compile = find(k, l, "nvrtcCompileProgram", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS));
      destroy = find(k, l, "nvrtcDestroyProgram", FunctionDescriptor.of(JAVA_INT, ADDRESS));
      logSize = find(k, l, "nvrtcGetProgramLogSize", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
      log = find(k, l, "nvrtcGetProgramLog", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
      cubinSize = find(k, l, "nvrtcGetCUBINSize", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
      cubin = find(k, l, "nvrtcGetCUBIN", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
      errorString = find(k, l, "nvrtcGetErrorString", FunctionDescriptor.of(ADDRESS, JAVA_INT));
    }

    private static MethodHandle find(Linker linker, SymbolLookup l, String name, FunctionDescriptor fd) {
      MemorySegment sym = l.find(name).orElseThrow(
          () -> new IllegalStateException("NVRTC library has no symbol " + name));
      return linker.downcallHandle(sym, fd);
    }
  }
}
