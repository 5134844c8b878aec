package dev.kiln.runtime.cuda;

import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

/** A CUDA stream of one device: work queued on it runs in order. */
public final class CudaStream implements AutoCloseable {
  private final CudaDevice device;
  private final DevicePointer.Stream stream = new DevicePointer.Stream();
  private boolean closed;

  CudaStream(CudaDevice device) {
    this.device = device;
    device.makeCurrent();
    CudaException.check(JCudaDriver.cuStreamCreate(stream, 0), "cuStreamCreate");
  }

  public CudaDevice device() {
    return device;
  }

  /** The JCuda handle, for driver calls. */
  public CUstream handle() {
    return stream;
  }

  /** The raw {@code CUstream} value, for libraries called through FFM. */
  public long rawHandle() {
    return stream.handle();
  }

  /** Blocks until everything queued so far has finished; kernel faults surface here. */
  public void synchronize() {
    device.makeCurrent();
    CudaException.check(JCudaDriver.cuStreamSynchronize(stream), "cuStreamSynchronize");
  }

  /** Whether a CUDA-graph capture is recording this stream's work (nothing may wait on the GPU then). */
  public boolean isCapturing() {
    int[] status = new int[1];
    CudaException.check(JCudaDriver.cuStreamIsCapturing(stream, status), "cuStreamIsCapturing");
    return status[0] != 0;
  }

  /** Makes later work on this stream wait for {@code event}. */
  public void waitFor(CudaEvent event) {
    CudaException.check(JCudaDriver.cuStreamWaitEvent(stream, event.handle(), 0), "cuStreamWaitEvent");
  }

  @Override
  public void close() {
    if (!closed) {
      closed = true;
      device.makeCurrent();
      JCudaDriver.cuStreamDestroy(stream);
    }
  }
}
