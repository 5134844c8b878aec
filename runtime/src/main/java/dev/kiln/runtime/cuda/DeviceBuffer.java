package dev.kiln.runtime.cuda;

import jcuda.driver.CUdeviceptr;

/** A block of device memory from the {@link CachingAllocator}; closing returns it to the cache. */
public final class DeviceBuffer implements AutoCloseable {
  private final CachingAllocator allocator;
  private final DevicePointer pointer;
  private final long size;
  private final long requested;
  private final CudaStream stream;
  private boolean closed;

  DeviceBuffer(CachingAllocator allocator, DevicePointer pointer, long size, long requested, CudaStream stream) {
    this.allocator = allocator;
    this.pointer = pointer;
    this.size = size;
    this.requested = requested;
    this.stream = stream;
  }

  /** The device address of the first byte. */
  public long address() {
    checkOpen();
    return pointer.address();
  }

  DevicePointer pointer() {
    return pointer;
  }

  /** A JCuda pointer {@code offset} bytes in, for driver calls. */
  CUdeviceptr at(long offset) {
    checkOpen();
    return offset == 0 ? pointer : pointer.withByteOffset(offset);
  }

  /** The size class actually reserved. */
  public long size() {
    return size;
  }

  /** The bytes asked for. */
  public long requestedBytes() {
    return requested;
  }

  public CudaStream stream() {
    return stream;
  }

  public boolean isClosed() {
    return closed;
  }

  private void checkOpen() {
    if (closed) {
      throw new IllegalStateException("device buffer of " + requested + " bytes used after close()");
    }
  }

  @Override
  public void close() {
    if (!closed) {
      closed = true;
      allocator.release(this);
    }
  }
}
