package dev.kiln.runtime.cuda;

import jcuda.driver.CUdeviceptr;

/** A block of device memory from the {@link CachingAllocator}; closing returns it to the cache. */
public final class DeviceBuffer implements AutoCloseable {
  private final CachingAllocator allocator;
  private DevicePointer pointer;
  private final long size;
  private final long requested;
  private final CudaStream stream;
  private boolean closed;
  /**
   * Work deferred until the buffer's memory is first used ({@link #deferProducer}): run by {@link #address} and
   * {@link #at}, so no kernel or copy can see the memory before it.
   */
  private Runnable producer;
  /** Whether anyone has been given the address ({@link #address}, {@link #at}): the memory may then not move. */
  private boolean addressGiven;
  /** Whether moot work (a poison fill, {@link #atUnpinned}) was given the address. */
  private boolean mootWorkQueued;
  /** Set by {@link #moveInto}: the memory is a slot of {@code host}, which this buffer holds a share of. */
  private DeviceBuffer host;
  /** The memory a move left, where moot work still writes it: kept until the buffer closes. */
  private DevicePointer left;
  /** For a host of moved buffers: how many still hold a share; the last to close closes the host. */
  private int shares;

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
    addressGiven = true;
    return pointer.address();
  }

  /**
   * Moves this buffer, whose address nobody has been given yet, into the bytes of {@code host} from
   * {@code byteOffset} on, and returns the memory it had to the cache (at its close instead, where moot work was
   * queued on that memory: {@link #atUnpinned}). Why: a GEMM deferred to its first reader can
   * find, when it runs, siblings that share its operand and whose results should lie at one stride in one allocation
   * (the q, k and v projections: one batched GEMM), though each result was allocated on its own. The buffer then
   * holds a share of {@code host}, which closes with the last of its shares; its identity, size and producer
   * stay as they were. Every slot must be moved in before any share is given back.
   */
  public void moveInto(DeviceBuffer host, long byteOffset) {
    checkOpen();
    host.checkOpen();
    if (!movable()) {
      throw new IllegalStateException("device buffer of " + requested + " bytes: its memory is in use and cannot move");
    }
    if (byteOffset < 0 || byteOffset + requested > host.requested || host.host != null) {
      throw new IllegalArgumentException("device buffer of " + requested + " bytes does not fit at " + byteOffset
          + " in a buffer of " + host.requested);
    }
    if (mootWorkQueued) {
      // A captured graph replays that work on this memory: it must not go to anyone else while the buffer lives.
      left = pointer;
    } else {
      allocator.release(this);
    }
    pointer = new DevicePointer(host.pointer, byteOffset);
    this.host = host;
    host.shares++;
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
    addressGiven = true;
    return offset == 0 ? pointer : pointer.withByteOffset(offset);
  }

  /** Whether {@link #moveInto} may move this buffer: open, nobody given its address, not moved already. */
  public boolean movable() {
    return !closed && !addressGiven && host == null;
  }

  /**
   * {@link #at} for work that the buffer's next whole write makes moot (a test's poison fill): it leaves the memory
   * free to {@link #moveInto move}. The memory it leaves stays reserved until the buffer closes, because a captured
   * graph would replay the work on it.
   */
  CUdeviceptr atUnpinned(long offset) {
    checkOpen();
    produce();
    mootWorkQueued = true;
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
      if (host == null) {
        allocator.release(this);
        return;
      }
      if (left != null) {
        allocator.release(left, size, stream);
      }
      if (--host.shares == 0) {
        host.close();
      }
    }
  }
}
