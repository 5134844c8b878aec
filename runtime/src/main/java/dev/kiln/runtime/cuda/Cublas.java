package dev.kiln.runtime.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import dev.kiln.dsl.DType;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.util.Arrays;
import java.util.List;

/**
 * cuBLAS through the FFM API (JCuda's cuBLAS binding needs {@code libcublas.so.12} and does not load on CUDA 13).
 *
 * <p>A handle is bound to one stream: its GEMMs are queued there in order with the kernels Kiln launches on it.
 * {@link #matmul} has {@link dev.kiln.runtime.tensor.NdArray}-style row-major semantics; see {@link GemmPlan} for
 * how that maps onto column-major cuBLAS without copies. Inputs fp32, bf16 or fp16; accumulation always fp32
 * ({@code CUBLAS_COMPUTE_32F}); fp32 GEMMs stay in full fp32 (no TF32).
 *
 * <p>GEMMs go through cuBLASLt ({@link CublasLt}: per problem, the heuristic's best candidates with a workspace,
 * timed once on the first call and the fastest kept) and fall back to {@code cublasGemmEx} where Lt's heuristic
 * finds no kernel, or always with {@code KILN_GEMM_API=gemmex}.
 * Both use one 32 MiB workspace owned by the handle, so neither allocates while a CUDA graph is being captured.
 *
 * <p>The library is {@code libcublas.so.13}, else {@code libcublas.so.12}; {@code KILN_CUBLAS=/path/to/libcublas.so}
 * overrides the search.
 */
public final class Cublas implements AutoCloseable {
  static final int CUDA_R_32F = 0;
  private static final int CUDA_R_16F = 2;
  private static final int CUDA_R_16BF = 14;
  private static final int CUBLAS_COMPUTE_32F = 68;
  /** fp32 operands rounded to bf16 inside the GEMM, tensor cores, fp32 accumulation and output. */
  private static final int CUBLAS_COMPUTE_32F_FAST_16BF = 75;
  private static final int CUBLAS_GEMM_DEFAULT = -1;
  /** The workspace cuBLAS and cuBLASLt share: PyTorch gives cuBLAS 32 MiB on Hopper too. */
  private static final long WORKSPACE_BYTES = 32L << 20;

  /** Which cuBLAS entry point runs the GEMMs. */
  public enum GemmApi {
    /** {@code cublasLtMatmul} with a heuristic-chosen algorithm per problem (the default). */
    LT,
    /** {@code cublasGemmEx} / {@code cublasGemmStridedBatchedEx} with {@code CUBLAS_GEMM_DEFAULT}. */
    GEMMEX;

    /** {@code KILN_GEMM_API}: {@code lt} (default) or {@code gemmex}; anything else is an error naming both. */
    public static GemmApi fromEnvironment() {
      String v = System.getenv("KILN_GEMM_API");
      if (v == null || v.isBlank() || v.equalsIgnoreCase("lt")) {
        return LT;
      }
      if (v.equalsIgnoreCase("gemmex")) {
        return GEMMEX;
      }
      throw new IllegalArgumentException("KILN_GEMM_API=" + v + " is not a GEMM API; use lt (cuBLASLt, the default)"
          + " or gemmex (cublasGemmEx)");
    }
  }

  private static volatile Api api;

  private final CudaDevice device;
  private final CudaStream stream;
  private final MemorySegment handle;
  private final Arena scalars = Arena.ofShared();
  private final MemorySegment alphaBeta = scalars.allocate(JAVA_FLOAT, 2);
  private final CudaArray workspace;
  private CublasLt lt;
  private GemmApi gemmApi;
  private boolean closed;
  private boolean fp32AsBf16;

  /** A handle whose work is queued on {@code stream}, its GEMM API from {@code KILN_GEMM_API}. */
  public Cublas(CudaStream stream) {
    this(stream, GemmApi.fromEnvironment());
  }

  /** A handle whose work is queued on {@code stream}, running GEMMs through {@code gemmApi}. */
  public Cublas(CudaStream stream, GemmApi gemmApi) {
    this.device = stream.device();
    this.stream = stream;
    device.makeCurrent();
    Api a = api();
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment out = arena.allocate(ADDRESS);
      check((int) a.create.invokeExact(out), "cublasCreate_v2");
      handle = out.get(ADDRESS, 0);
      check((int) a.setStream.invokeExact(handle, MemorySegment.ofAddress(stream.rawHandle())), "cublasSetStream_v2");
    } catch (CudaException e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("cuBLAS call failed", t);
    }
    CudaArray w = null;
    try {
      w = CudaArray.empty(device, stream, DType.U8, WORKSPACE_BYTES);
      setWorkspace(w);
      workspace = w;
      setGemmApi(gemmApi);
    } catch (RuntimeException | Error e) {
      // No half-made handle: the caller gets the error, not a leaked cuBLAS handle and workspace.
      try {
        check((int) a.destroy.invokeExact(handle), "cublasDestroy_v2");
      } catch (Throwable t) {
        e.addSuppressed(t);
      }
      if (w != null) {
        w.close();
      }
      throw e;
    }
  }

  /** Switches the GEMM entry point (benchmarks compare the two on one handle); Lt is created on first use. */
  public synchronized void setGemmApi(GemmApi choice) {
    if (choice == GemmApi.LT && lt == null) {
      device.makeCurrent();
      lt = new CublasLt();
    }
    this.gemmApi = choice;
  }

  public synchronized GemmApi gemmApi() {
    return gemmApi;
  }

  /** The GEMM path in words, for {@code kiln doctor} and benchmark headers. */
  public synchronized String gemmPath() {
    return gemmApi == GemmApi.LT ? "cuBLASLt (" + CublasLt.librarySource() + "), the heuristic's candidates timed"
        + " once per problem, " + (WORKSPACE_BYTES >> 20) + " MiB workspace" : "cublasGemmEx";
  }

  /** Where the cuBLAS library was found (a file or a soname), loading it if needed. */
  public static String librarySource() {
    return api().source;
  }

  public CudaStream stream() {
    return stream;
  }

  /**
   * Gives cuBLAS {@code workspace} (kept alive by the handle) instead of memory it would allocate itself: cuBLAS may
   * not allocate inside a CUDA-graph capture.
   */
  private void setWorkspace(CudaArray workspace) {
    device.makeCurrent();
    try {
      check((int) api().setWorkspace.invokeExact(handle, MemorySegment.ofAddress(workspace.address()),
          workspace.byteSize()), "cublasSetWorkspace_v2(" + workspace.byteSize() + " bytes)");
    } catch (CudaException e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("cuBLAS call failed", t);
    }
  }

  /** {@code c = a @ b} with row-major semantics; rank-2 or rank-3 (batched, size-1 batches broadcast). */
  public void matmul(CudaArray a, CudaArray b, CudaArray c) {
    gemm(1f, a, b, 0f, c);
  }

  /**
   * With {@code on}, GEMMs of fp32 operands round them to bf16 inside cuBLAS ({@code CUBLAS_COMPUTE_32F_FAST_16BF})
   * and run on the tensor cores, accumulating in fp32: mixed precision without a separate cast of each operand.
   */
  public synchronized void setFp32InputsAsBf16(boolean on) {
    this.fp32AsBf16 = on;
  }

  /** {@code c = alpha * (a @ b) + beta * c}. */
  public synchronized void gemm(float alpha, CudaArray a, CudaArray b, float beta, CudaArray c) {
    gemm(alpha, a, b, beta, c, c);
  }

  /**
   * {@code c = alpha * (a @ b) + addend} in one cuBLASLt call, {@code addend} (not changed) laid out as {@code c}: the
   * GEMM's epilogue reads it, so a residual add after a projection costs no pass of its own. Returns false, queuing
   * nothing, where cuBLASLt cannot take it (the {@code gemmex} API, or no kernel for the problem); the caller then
   * adds on its own.
   */
  public synchronized boolean gemmAdding(float alpha, CudaArray a, CudaArray b, CudaArray addend, CudaArray c) {
    if (addend.dtype() != c.dtype() || !Arrays.equals(addend.shape(), c.shape())
        || !Arrays.equals(addend.strides(), c.strides())) {
      throw new IllegalArgumentException("gemmAdding: the addend " + addend + " must be laid out as the output " + c);
    }
    if (gemmApi != GemmApi.LT || addend.sharesBufferWith(c)) {
      return false;
    }
    return gemm(alpha, a, b, 1f, addend, c);
  }

  /**
   * {@code c = alpha * (a @ b) + beta * addend}; an {@code addend} other than {@code c} is taken through cuBLASLt
   * only, and false is returned, with nothing queued, where it cannot be.
   */
  private boolean gemm(float alpha, CudaArray a, CudaArray b, float beta, CudaArray addend, CudaArray c) {
    if (closed) {
      throw new IllegalStateException("cuBLAS handle used after close()");
    }
    // Work deferred on an operand's memory (a GEMM of its own, CudaArray.deferProducer) is queued first, before this
    // call fills the shared scalars, so it cannot run in the middle of them.
    for (CudaArray o : new CudaArray[] {a, b, addend, c}) {
      o.produce();
    }
    if (a.dtype() != b.dtype()) {
      throw new IllegalArgumentException("matmul inputs differ in dtype: A is " + a.dtype() + ", B is " + b.dtype());
    }
    int inType = dataType(a.dtype(), "A");
    int outType = dataType(c.dtype(), "C");
    if (a.dtype() == DType.F32 && c.dtype() != DType.F32) {
      throw new IllegalArgumentException("fp32 matmul writes fp32, got C of " + c.dtype());
    }
    GemmPlan p = GemmPlan.of(a.shape(), a.strides(), b.shape(), b.strides(), c.shape(), c.strides());
    if ((long) p.m() * p.n() == 0) {
      return true;
    }
    device.makeCurrent();
    // An empty sum (k = 0) still scales C by beta: cuBLAS with k = 1, alpha = 0 does exactly that.
    int k = Math.max(p.k(), 1);
    alphaBeta.setAtIndex(JAVA_FLOAT, 0, p.k() == 0 ? 0f : alpha);
    alphaBeta.setAtIndex(JAVA_FLOAT, 1, beta);
    MemorySegment alphaPtr = alphaBeta;
    MemorySegment betaPtr = alphaBeta.asSlice(4);
    MemorySegment first = MemorySegment.ofAddress(b.address());
    MemorySegment second = MemorySegment.ofAddress(a.address());
    MemorySegment out = MemorySegment.ofAddress(c.address());
    int ldFirst = (int) Math.max(p.ldFirst(), p.opFirst() == 0 ? p.m() : k);
    int ldSecond = (int) Math.max(p.ldSecond(), p.opSecond() == 0 ? k : p.n());
    Api x = api();
    int compute = fp32AsBf16 && a.dtype() == DType.F32 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
    if (gemmApi == GemmApi.LT && p.k() > 0) {
      // Batch strides mean nothing for one product: left out of the key, so equal problems share one plan.
      boolean batched = p.batch() > 1;
      CublasLt.Problem problem = new CublasLt.Problem(p.opFirst(), p.opSecond(), p.m(), p.n(), k, ldFirst, ldSecond,
          p.ldc(), batched ? p.strideFirst() : 0, batched ? p.strideSecond() : 0, batched ? p.strideC() : 0,
          p.batch(), inType, outType, compute, CublasLt.alignment(b.address()), CublasLt.alignment(a.address()),
          Math.min(CublasLt.alignment(c.address()), CublasLt.alignment(addend.address())), addend != c);
      if (lt.matmul(problem, alphaPtr, betaPtr, b.address(), a.address(), addend.address(), c.address(), workspace,
          stream)) {
        return true;
      }
    }
    if (addend != c) {
      return false;
    }
    try {
      int rc;
      if (p.batch() == 1) {
        rc = (int) x.gemmEx.invokeExact(handle, p.opFirst(), p.opSecond(), p.m(), p.n(), k, alphaPtr, first, inType,
            ldFirst, second, inType, ldSecond, betaPtr, out, outType,
            (int) p.ldc(), compute, CUBLAS_GEMM_DEFAULT);
        check(rc, "cublasGemmEx(m=" + p.m() + ", n=" + p.n() + ", k=" + p.k() + ")");
      } else {
        rc = (int) x.gemmStridedBatchedEx.invokeExact(handle, p.opFirst(), p.opSecond(), p.m(), p.n(), k, alphaPtr,
            first, inType, ldFirst, p.strideFirst(), second, inType,
            ldSecond, p.strideSecond(), betaPtr, out, outType, (int) p.ldc(), p.strideC(),
            p.batch(), compute, CUBLAS_GEMM_DEFAULT);
        check(rc, "cublasGemmStridedBatchedEx(m=" + p.m() + ", n=" + p.n() + ", k=" + p.k() + ", batch=" + p.batch()
            + ")");
      }
    } catch (CudaException e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("cuBLAS call failed", t);
    }
    return true;
  }

  private static int dataType(DType t, String which) {
    return switch (t) {
      case F32 -> CUDA_R_32F;
      case BF16 -> CUDA_R_16BF;
      case F16 -> CUDA_R_16F;
      default -> throw new IllegalArgumentException(
          "cuBLAS matmul supports F32, BF16 and F16; " + which + " is " + t);
    };
  }

  /** Throws, naming {@code call} and cuBLAS's text for {@code status} (cuBLASLt returns the same status codes). */
  static void check(int status, String call) {
    if (status != 0) {
      String text;
      try {
        MemorySegment s = (MemorySegment) api().statusString.invokeExact(status);
        text = s.reinterpret(256).getString(0);
      } catch (Throwable t) {
        text = "cublasStatus_t " + status;
      }
      throw new CudaException(call, status, text + " (" + status + ")");
    }
  }

  @Override
  public synchronized void close() {
    if (!closed) {
      closed = true;
      device.makeCurrent();
      try (CudaArray w = workspace; CublasLt l = lt) {
        check((int) api().destroy.invokeExact(handle), "cublasDestroy_v2");
      } catch (CudaException e) {
        throw e;
      } catch (Throwable t) {
        throw new IllegalStateException("cuBLAS call failed", t);
      } finally {
        scalars.close();
      }
    }
  }

  private static Api api() {
    Api a = api;
    if (a == null) {
      synchronized (Cublas.class) {
        if (api == null) {
          api = new Api(NativeLibrary.load("cuBLAS", "KILN_CUBLAS", List.of("libcublas.so.13", "libcublas.so.12")));
        }
        a = api;
      }
    }
    return a;
  }

  private static final class Api {
    final String source;
    final MethodHandle create;
    final MethodHandle destroy;
    final MethodHandle setStream;
    final MethodHandle setWorkspace;
    final MethodHandle statusString;
    final MethodHandle gemmEx;
    final MethodHandle gemmStridedBatchedEx;

    Api(NativeLibrary.Loaded lib) {
      this.source = lib.source();
      SymbolLookup l = lib.lookup();
      Linker linker = Linker.nativeLinker();
      create = find(linker, l, "cublasCreate_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS));
      destroy = find(linker, l, "cublasDestroy_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS));
      setStream = find(linker, l, "cublasSetStream_v2", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
      setWorkspace = find(linker, l, "cublasSetWorkspace_v2",
          FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG));
      statusString = find(linker, l, "cublasGetStatusString", FunctionDescriptor.of(ADDRESS, JAVA_INT));
      gemmEx = find(linker, l, "cublasGemmEx", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT,
          JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS,
          JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT));
      gemmStridedBatchedEx = find(linker, l, "cublasGemmStridedBatchedEx", FunctionDescriptor.of(JAVA_INT, ADDRESS,
          JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS,
          JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS, ADDRESS, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT,
          JAVA_INT));
    }

    private static MethodHandle find(Linker linker, SymbolLookup l, String name, FunctionDescriptor fd) {
      MemorySegment sym = l.find(name).orElseThrow(
          () -> new IllegalStateException("cuBLAS library has no symbol " + name + "; is it cuBLAS 12 or 13?"));
      return linker.downcallHandle(sym, fd);
    }
  }
}
