package dev.kiln.runtime.cuda;

import java.lang.foreign.MemorySegment;
import jcuda.Pointer;
import jcuda.driver.JCudaDriver;

/**
 * A small page-locked host buffer whose copies to and from device arrays are only queued: the host goes on while the
 * GPU is still busy with earlier work. {@link PinnedStaging} waits for each copy's buffer to drain before the next
 * call, which costs a round trip to the GPU per copy and, behind a running CUDA graph, waits for the whole graph; a
 * pipelined training step (the host queues step k + 1 while the GPU runs step k) cannot afford either.
 *
 * <p>The owner writes {@link #segment()}, queues uploads and downloads, then {@link #fence}s; before touching the
 * segment again it calls {@link #await}, which waits for the fenced copies only. Not thread-safe.
 */
public final class PinnedBuffer implements AutoCloseable {
  private final CudaDevice device;
  private final Pointer host = new Pointer();
  private final MemorySegment segment;
  private final CudaEvent done;
  private boolean pending;
  private boolean closed;

  public PinnedBuffer(CudaDevice device, long bytes) {
    if (bytes <= 0 || bytes > Integer.MAX_VALUE) {
      throw new IllegalArgumentException("pinned buffer of " + bytes + " bytes: need 1 to 2^31 - 1");
    }
    this.device = device;
    device.makeCurrent();
    CudaException.check(JCudaDriver.cuMemHostAlloc(host, bytes, 0), "cuMemHostAlloc(" + bytes + " bytes)");
    segment = MemorySegment.ofBuffer(host.getByteBuffer(0, bytes));
    done = new CudaEvent(device);
  }

  /** The host memory: write it before an upload, read it after {@link #await} following a download. */
  public MemorySegment segment() {
    check();
    return segment;
  }

  /** Queues a copy of {@code dst.byteSize()} bytes from {@code segment()} at {@code hostOffset} into {@code dst}. */
  public void upload(long hostOffset, CudaArray dst, CudaStream stream) {
    dst.requireContiguous("PinnedBuffer.upload");
    long bytes = range(hostOffset, dst);
    device.makeCurrent();
    CudaException.check(JCudaDriver.cuMemcpyHtoDAsync(dst.devicePointer(), host.withByteOffset(hostOffset), bytes,
        stream.handle()), "cuMemcpyHtoDAsync(" + bytes + " bytes)");
  }

  /** Queues a copy of all of {@code src} into {@code segment()} at {@code hostOffset}. */
  public void download(CudaArray src, long hostOffset, CudaStream stream) {
    src.requireContiguous("PinnedBuffer.download");
    long bytes = range(hostOffset, src);
    device.makeCurrent();
    CudaException.check(JCudaDriver.cuMemcpyDtoHAsync(host.withByteOffset(hostOffset), src.devicePointer(), bytes,
        stream.handle()), "cuMemcpyDtoHAsync(" + bytes + " bytes)");
  }

  /** Marks the end of the copies queued so far on {@code stream}: {@link #await} waits for them. */
  public void fence(CudaStream stream) {
    check();
    done.record(stream);
    pending = true;
  }

  /** Waits for the fenced copies (returns at once when none are pending). */
  public void await() {
    check();
    if (pending) {
      done.synchronize();
      pending = false;
    }
  }

  private long range(long hostOffset, CudaArray a) {
    check();
    long bytes = a.byteSize();
    if (hostOffset < 0 || hostOffset + bytes > segment.byteSize()) {
      throw new IllegalArgumentException("pinned buffer of " + segment.byteSize() + " bytes: no room for " + bytes
          + " bytes at offset " + hostOffset);
    }
    return bytes;
  }

  private void check() {
    if (closed) {
      throw new IllegalStateException("pinned buffer used after close()");
    }
  }

  /** Waits for pending copies, then frees the host memory. */
  @Override
  public void close() {
    if (!closed) {
      await();
      closed = true;
      device.makeCurrent();
      done.close();
      JCudaDriver.cuMemFreeHost(host);
    }
  }
}
