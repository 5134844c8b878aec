package dev.kiln.runtime.cuda;

import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;
import jcuda.driver.JCudaDriver;

/**
 * Device memory with a cache in front of {@code cuMemAlloc}, so a training step that allocates the same sizes as
 * the last one calls the driver not at all.
 *
 * <p>Requests are rounded up to a size class (powers of two from 512 bytes up to 1 MiB, then multiples of 2 MiB) and
 * freed blocks go onto a free list per (size class, stream). A block is only reused on the stream that freed it:
 * work queued on one stream runs in order, so the next user cannot overtake the last one. When the driver runs out
 * of memory the cache is emptied and the allocation retried once.
 */
public final class CachingAllocator {
  private static final long SMALL_LIMIT = 1L << 20;
  private static final long LARGE_GRANULE = 2L << 20;
  private static final int CUDA_ERROR_OUT_OF_MEMORY = 2;

  /** Bytes in live buffers, bytes held in free lists, the most ever in use, and driver calls made. */
  public record Stats(long bytesInUse, long bytesCached, long peakBytesInUse, long driverAllocations, long cacheHits) {}

  private record Key(long sizeClass, long stream) {}

  private final CudaDevice device;
  private final Map<Key, ArrayDeque<DevicePointer>> free = new HashMap<>();
  private long inUse;
  private long cached;
  private long peak;
  private long driverAllocations;
  private long cacheHits;

  CachingAllocator(CudaDevice device) {
    this.device = device;
  }

  /** The size class a request of {@code bytes} is served from. */
  public static long sizeClass(long bytes) {
    if (bytes <= 0) {
      return 512;
    }
    if (bytes <= SMALL_LIMIT) {
      return Math.max(512, Long.highestOneBit(bytes - 1) << 1);
    }
    return (bytes + LARGE_GRANULE - 1) / LARGE_GRANULE * LARGE_GRANULE;
  }

  /** A buffer of at least {@code bytes}, for use on {@code stream}; close it to return it to the cache. */
  public synchronized DeviceBuffer allocate(long bytes, CudaStream stream) {
    if (bytes < 0) {
      throw new IllegalArgumentException("negative allocation size " + bytes);
    }
    long size = sizeClass(bytes);
    Key key = new Key(size, stream.rawHandle());
    ArrayDeque<DevicePointer> list = free.get(key);
    DevicePointer p = list == null ? null : list.poll();
    if (p != null) {
      cached -= size;
      cacheHits++;
    } else {
      p = driverAllocate(size);
    }
    inUse += size;
    peak = Math.max(peak, inUse);
    return new DeviceBuffer(this, p, size, bytes, stream);
  }

  private DevicePointer driverAllocate(long size) {
    device.makeCurrent();
    DevicePointer p = new DevicePointer();
    int rc = JCudaDriver.cuMemAlloc(p, size);
    if (rc == CUDA_ERROR_OUT_OF_MEMORY) {
      emptyCache();
      rc = JCudaDriver.cuMemAlloc(p, size);
    }
    if (rc != 0) {
      throw new CudaException(
          "cuMemAlloc(" + size + " bytes)",
          rc,
          CudaException.describe(rc) + "; " + stats() + "; device memory free/total " + freeTotal());
    }
    driverAllocations++;
    return p;
  }

  private String freeTotal() {
    try {
      long[] ft = device.memoryInfo();
      return ft[0] + "/" + ft[1];
    } catch (CudaException e) {
      return "unknown";
    }
  }

  synchronized void release(DeviceBuffer buffer) {
    release(buffer.pointer(), buffer.size(), buffer.stream());
  }

  /** Returns a block of {@code size} (its size class) allocated for {@code stream} to the cache. */
  synchronized void release(DevicePointer pointer, long size, CudaStream stream) {
    inUse -= size;
    cached += size;
    free.computeIfAbsent(new Key(size, stream.rawHandle()), k -> new ArrayDeque<>()).push(pointer);
  }

  /** Gives every cached block back to the driver (waits for the device first). */
  public synchronized void emptyCache() {
    device.synchronize();
    for (Map.Entry<Key, ArrayDeque<DevicePointer>> e : free.entrySet()) {
      for (DevicePointer p : e.getValue()) {
        CudaException.check(JCudaDriver.cuMemFree(p), "cuMemFree");
      }
    }
    free.clear();
    cached = 0;
  }

  public synchronized Stats stats() {
    return new Stats(inUse, cached, peak, driverAllocations, cacheHits);
  }
}
