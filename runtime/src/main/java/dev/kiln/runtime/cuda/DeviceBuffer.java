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
  /**
   * Work deferred until the buffer's memory is first used ({@link #deferProducer}): run by {@link #address} and
   * {@link #at}, so no kernel or copy can see the memory before it.
   */
  private Runnable producer;

  DeviceBuffer(CachingAllocator allocator, DevicePointer pointer, long size, long requested, CudaStream stream) {
    this.allocator = allocator;
    this.pointer = pointer;
    this.size = size;
    this.requested = requested;
    this.stream = stream;
  }

  /** The device address of the first byte; runs the deferred producer first, if there is one. */
  public long address() {
    checkOpen();
    produce();
    return pointer.address();
  }

  /**
   * Defers {@code work}, which writes this buffer, until the buffer's address is first asked for (a kernel, a copy or
   * a library call about to touch the memory). The caller may instead {@link #dropProducer drop} it while nothing has
   * asked, or run it with {@link #produce}. The work is run once, with the producer cleared first, so it may ask for
   * the address itself.
   */
  public void deferProducer(Runnable work) {
    checkOpen();
    if (producer != null) {
      throw new IllegalStateException("device buffer of " + requested + " bytes: a producer is already deferred");
    }
    producer = work;
  }

  /** Runs the deferred producer now, if there is one. */
  public void produce() {
    Runnable work = producer;
    if (work != null) {
      producer = null;
      work.run();
    }
  }

  /** Forgets the deferred producer without running it: the memory's contents are then undefined. */
  public void dropProducer() {
    producer = null;
  }

  /** Whether a producer is deferred. */
  public boolean hasProducer() {
    return producer != null;
  }

  DevicePointer pointer() {
    return pointer;
  }

  /** A JCuda pointer {@code offset} bytes in, for driver calls. */
  CUdeviceptr at(long offset) {
    checkOpen();
    produce();
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
      producer = null; // nobody can see the memory any more
      allocator.release(this);
    }
  }
}
