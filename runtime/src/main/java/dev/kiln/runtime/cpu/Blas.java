package dev.kiln.runtime.cpu;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.openblas.global.openblas_nolapack;

/**
 * OpenBLAS, called through the Foreign Function &amp; Memory API.
 *
 * <p><b>Loading.</b> JavaCPP ({@code org.bytedeco:openblas}) ships the native library for each platform inside a
 * jar and knows how to unpack and load it with its dependencies (libgfortran, libquadmath, libgcc_s). We let it do
 * that ({@code Loader.load(openblas_nolapack.class)}: the variant without LAPACK, whose JNI glue is 0.3 MB rather than
 * 23 MB; both carry the same OpenBLAS build) and then open the very file it loaded, by path, with
 * {@link SymbolLookup#libraryLookup(Path, Arena)}. {@code dlopen} of a path that is already loaded returns the same
 * handle, so Kiln's calls and any JavaCPP call on {@code openblas_nolapack} share one OpenBLAS instance, one thread
 * pool and one thread-count setting. (Loading {@code org.bytedeco.openblas.global.openblas} instead unpacks a second
 * copy, {@code libopenblas.so.0}, which is a second instance with a second thread pool.)
 *
 * <p><b>Why FFM rather than JavaCPP's own binding.</b> JavaCPP's {@code cblas_sgemm} takes {@code FloatPointer}s (or
 * arrays or NIO buffers). Tensors live in {@link MemorySegment}s; wrapping one in a {@code FloatPointer} needs a
 * {@code Pointer} built from a raw address plus a deallocator-free "view" and a capacity, per call, per operand — an
 * allocation, and a second ownership model for the same memory that can outlive the arena. Through FFM a segment is
 * passed as it is: the downcall takes its address, the arena keeps it alive for the call, there is no JNI glue and
 * no copy. JavaCPP is kept only for what it does well: shipping and loading the natives.
 */
public final class Blas {
  static final int ROW_MAJOR = 101;
  static final int NO_TRANS = 111;
  static final int TRANS = 112;

  private static final String LIBRARY_PATH;
  private static final MethodHandle SGEMM;
  private static final MethodHandle DGEMM;
  private static final MethodHandle SGEMM_BATCH_STRIDED;
  private static final MethodHandle DGEMM_BATCH_STRIDED;
  private static final MethodHandle GET_NUM_THREADS;
  private static final MethodHandle SET_NUM_THREADS;
  private static final MethodHandle GET_CORENAME;
  private static final MethodHandle GET_CONFIG;

  static {
    String path;
    try {
      Loader.load(openblas_nolapack.class);
      path = Loader.getLoadedLibraries().get("openblas_nolapack@.0");
    } catch (Throwable e) {
      throw new IllegalStateException(
          "OpenBLAS natives could not be loaded for platform " + Loader.getPlatform()
              + "; the org.bytedeco:openblas jar with classifier " + Loader.getPlatform()
              + " must be on the class path (build with -Djavacpp.platform=" + Loader.getPlatform() + ")",
          e);
    }
    if (path == null) {
      throw new IllegalStateException(
          "JavaCPP loaded OpenBLAS but did not report its file; loaded libraries: " + Loader.getLoadedLibraries());
    }
    LIBRARY_PATH = path;
    SymbolLookup lib = SymbolLookup.libraryLookup(Path.of(path), Arena.global());
    ValueLayout i = ValueLayout.JAVA_INT;
    ValueLayout f = ValueLayout.JAVA_FLOAT;
    ValueLayout d = ValueLayout.JAVA_DOUBLE;
    ValueLayout p = ValueLayout.ADDRESS;
    SGEMM = handle(lib, "cblas_sgemm", FunctionDescriptor.ofVoid(i, i, i, i, i, i, f, p, i, p, i, f, p, i));
    DGEMM = handle(lib, "cblas_dgemm", FunctionDescriptor.ofVoid(i, i, i, i, i, i, d, p, i, p, i, d, p, i));
    SGEMM_BATCH_STRIDED =
        handle(
            lib,
            "cblas_sgemm_batch_strided",
            FunctionDescriptor.ofVoid(i, i, i, i, i, i, f, p, i, i, p, i, i, f, p, i, i, i));
    DGEMM_BATCH_STRIDED =
        handle(
            lib,
            "cblas_dgemm_batch_strided",
            FunctionDescriptor.ofVoid(i, i, i, i, i, i, d, p, i, i, p, i, i, d, p, i, i, i));
    GET_NUM_THREADS = handle(lib, "openblas_get_num_threads", FunctionDescriptor.of(i));
    SET_NUM_THREADS = handle(lib, "openblas_set_num_threads", FunctionDescriptor.ofVoid(i));
    GET_CORENAME = handle(lib, "openblas_get_corename", FunctionDescriptor.of(p));
    GET_CONFIG = handle(lib, "openblas_get_config", FunctionDescriptor.of(p));
  }

  private Blas() {}

  private static MethodHandle handle(SymbolLookup lib, String name, FunctionDescriptor fd) {
    MemorySegment symbol =
        lib.find(name)
            .orElseThrow(
                () -> new IllegalStateException("OpenBLAS at " + LIBRARY_PATH + " has no symbol " + name));
    return Linker.nativeLinker().downcallHandle(symbol, fd);
  }

  /** The CPU kernel set OpenBLAS picked at start-up, e.g. {@code SkylakeX} or {@code Haswell}. */
  public static String corename() {
    try {
      return cString((MemorySegment) GET_CORENAME.invokeExact());
    } catch (Throwable e) {
      throw rethrow(e);
    }
  }

  /** OpenBLAS's build description, e.g. {@code OpenBLAS 0.3.31 DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64}. */
  public static String config() {
    try {
      return cString((MemorySegment) GET_CONFIG.invokeExact()).strip();
    } catch (Throwable e) {
      throw rethrow(e);
    }
  }

  /** Threads OpenBLAS uses for one call. */
  public static int threads() {
    try {
      return (int) GET_NUM_THREADS.invokeExact();
    } catch (Throwable e) {
      throw rethrow(e);
    }
  }

  /** Sets the threads OpenBLAS uses for one call (at least 1; OpenBLAS caps it at its build's maximum). */
  public static void setThreads(int n) {
    if (n < 1) {
      throw new IllegalArgumentException("OpenBLAS thread count must be at least 1, got " + n);
    }
    try {
      SET_NUM_THREADS.invokeExact(n);
    } catch (Throwable e) {
      throw rethrow(e);
    }
  }

  /** The file the OpenBLAS natives were loaded from. */
  public static String libraryPath() {
    return LIBRARY_PATH;
  }

  // ---------------------------------------------------------------- raw calls for Gemm (row-major, int sizes)

  static void sgemm(
      int transA, int transB, int m, int n, int k, float alpha, MemorySegment a, int lda, MemorySegment b, int ldb,
      float beta, MemorySegment c, int ldc) {
    try {
      SGEMM.invokeExact(ROW_MAJOR, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } catch (Throwable e) {
      throw rethrow(e);
    }
  }

  static void dgemm(
      int transA, int transB, int m, int n, int k, double alpha, MemorySegment a, int lda, MemorySegment b, int ldb,
      double beta, MemorySegment c, int ldc) {
    try {
      DGEMM.invokeExact(ROW_MAJOR, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } catch (Throwable e) {
      throw rethrow(e);
    }
  }

  static void sgemmBatchStrided(
      int transA, int transB, int m, int n, int k, float alpha, MemorySegment a, int lda, int strideA,
      MemorySegment b, int ldb, int strideB, float beta, MemorySegment c, int ldc, int strideC, int batch) {
    try {
      SGEMM_BATCH_STRIDED.invokeExact(
          ROW_MAJOR, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);
    } catch (Throwable e) {
      throw rethrow(e);
    }
  }

  static void dgemmBatchStrided(
      int transA, int transB, int m, int n, int k, double alpha, MemorySegment a, int lda, int strideA,
      MemorySegment b, int ldb, int strideB, double beta, MemorySegment c, int ldc, int strideC, int batch) {
    try {
      DGEMM_BATCH_STRIDED.invokeExact(
          ROW_MAJOR, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);
    } catch (Throwable e) {
      throw rethrow(e);
    }
  }

  private static String cString(MemorySegment p) {
    return p.equals(MemorySegment.NULL) ? "" : p.reinterpret(Long.MAX_VALUE).getString(0);
  }

  private static RuntimeException rethrow(Throwable e) {
    if (e instanceof RuntimeException r) {
      return r;
    }
    if (e instanceof Error err) {
      throw err;
    }
    return new IllegalStateException(e);
  }
}
