package dev.kiln.runtime.cuda;

import jcuda.driver.JCudaDriver;

/** A CUDA driver, cuBLAS or NVRTC call failed; the message names the call, the error code and its meaning. */
public final class CudaException extends RuntimeException {
  private static final long serialVersionUID = 1L;
  private final String call;
  private final int code;

  public CudaException(String call, int code, String detail) {
    super(call + " failed: " + detail);
    this.call = call;
    this.code = code;
  }

  /** The API call that failed, e.g. {@code cuMemAlloc(1073741824 bytes)}. */
  public String call() {
    return call;
  }

  /** The library's status code (CUresult, cublasStatus_t or nvrtcResult). */
  public int code() {
    return code;
  }

  /** Throws when a driver call returned anything but CUDA_SUCCESS. */
  public static void check(int result, String call) {
    if (result != 0) {
      throw new CudaException(call, result, describe(result));
    }
  }

  /** {@code CUDA_ERROR_OUT_OF_MEMORY (2): out of memory}, from the driver's own tables. */
  public static String describe(int result) {
    String[] name = new String[1];
    String[] text = new String[1];
    try {
      JCudaDriver.cuGetErrorName(result, name);
      JCudaDriver.cuGetErrorString(result, text);
    } catch (RuntimeException | LinkageError e) {
      return "CUresult " + result;
    }
    return (name[0] == null ? "CUresult" : name[0]) + " (" + result + ")" + (text[0] == null ? "" : ": " + text[0]);
  }
}
