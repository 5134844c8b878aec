package dev.kiln.runtime.cuda;

import jcuda.driver.CUevent;
import jcuda.driver.JCudaDriver;

/** A CUDA event: a marker in a stream, for ordering between streams and for timing. */
public final class CudaEvent implements AutoCloseable {
  private final CudaDevice device;
  private final CUevent event = new CUevent();
  private boolean closed;

  public CudaEvent(CudaDevice device) {
    this.device = device;
    device.makeCurrent();
    CudaException.check(JCudaDriver.cuEventCreate(event, 0), "cuEventCreate");
  }

  CUevent handle() {
    return event;
  }

  /** Records this event at the current end of {@code stream}. */
  public CudaEvent record(CudaStream stream) {
    device.makeCurrent();
    CudaException.check(JCudaDriver.cuEventRecord(event, stream.handle()), "cuEventRecord");
    return this;
  }

  public void synchronize() {
    device.makeCurrent();
    CudaException.check(JCudaDriver.cuEventSynchronize(event), "cuEventSynchronize");
  }

  /** Milliseconds between {@code start} and this event, both recorded and this one completed. */
  public float elapsedMillisSince(CudaEvent start) {
    synchronize();
    float[] ms = new float[1];
    CudaException.check(JCudaDriver.cuEventElapsedTime(ms, start.event, event), "cuEventElapsedTime");
    return ms[0];
  }

  @Override
  public void close() {
    if (!closed) {
      closed = true;
      device.makeCurrent();
      JCudaDriver.cuEventDestroy(event);
    }
  }
}
