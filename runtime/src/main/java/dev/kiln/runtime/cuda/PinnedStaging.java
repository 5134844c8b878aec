package dev.kiln.runtime.cuda;

import java.lang.foreign.MemorySegment;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.JCudaDriver;

/**
 * Host-device copies through two page-locked (pinned) staging buffers: the DMA engine copies one while the CPU
 * fills or drains the other, and the caller's memory never has to be pinned itself.
 */
final class PinnedStaging {
  static final int CHUNK = 8 << 20;

  private final CudaDevice device;
  private Pointer[] buffers;
  private MemorySegment[] segments;
  private CudaEvent[] done;
  private boolean[] pending;

  PinnedStaging(CudaDevice device) {
    this.device = device;
  }

  private void init() {
    if (buffers != null) {
      return;
    }
    device.makeCurrent();
    buffers = new Pointer[2];
    segments = new MemorySegment[2];
    done = new CudaEvent[2];
    pending = new boolean[2];
    for (int i = 0; i < 2; i++) {
      buffers[i] = new Pointer();
      CudaException.check(JCudaDriver.cuMemHostAlloc(buffers[i], CHUNK, 0), "cuMemHostAlloc(" + CHUNK + " bytes)");
      segments[i] = MemorySegment.ofBuffer(buffers[i].getByteBuffer(0, CHUNK));
      done[i] = new CudaEvent(device);
    }
  }

  private void waitFree(int i) {
    if (pending[i]) {
      done[i].synchronize();
      pending[i] = false;
    }
  }

  /** Queues a copy of {@code bytes} from host {@code src} to {@code dst} on {@code stream}; src is free on return. */
  synchronized void upload(MemorySegment src, DeviceBuffer dst, long dstOffset, long bytes, CudaStream stream) {
    init();
    device.makeCurrent();
    int b = 0;
    for (long off = 0; off < bytes; off += CHUNK, b ^= 1) {
      int n = (int) Math.min(CHUNK, bytes - off);
      waitFree(b);
      MemorySegment.copy(src, off, segments[b], 0, n);
      CUdeviceptr d = dst.at(dstOffset + off);
      CudaException.check(
          JCudaDriver.cuMemcpyHtoDAsync(d, buffers[b], n, stream.handle()), "cuMemcpyHtoDAsync(" + n + " bytes)");
      done[b].record(stream);
      pending[b] = true;
    }
  }

  /** Copies {@code bytes} from {@code src} to host {@code dst}, after the work already queued on {@code stream}. */
  synchronized void download(DeviceBuffer src, long srcOffset, MemorySegment dst, long bytes, CudaStream stream) {
    init();
    device.makeCurrent();
    long prevOff = -1;
    int prevLen = 0;
    int b = 0;
    for (long off = 0; off < bytes; off += CHUNK, b ^= 1) {
      int n = (int) Math.min(CHUNK, bytes - off);
      waitFree(b);
      CudaException.check(
          JCudaDriver.cuMemcpyDtoHAsync(buffers[b], src.at(srcOffset + off), n, stream.handle()),
          "cuMemcpyDtoHAsync(" + n + " bytes)");
      done[b].record(stream);
      pending[b] = true;
      if (prevOff >= 0) {
        drain(b ^ 1, dst, prevOff, prevLen);
      }
      prevOff = off;
      prevLen = n;
    }
    if (prevOff >= 0) {
      drain(b ^ 1, dst, prevOff, prevLen);
    }
  }

  private void drain(int b, MemorySegment dst, long off, int n) {
    waitFree(b);
    MemorySegment.copy(segments[b], 0, dst, off, n);
  }
}
