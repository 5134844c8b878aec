package dev.kiln.runtime.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The bytes behind one or more tensors: an off-heap {@link MemorySegment}, 64-byte aligned when Kiln allocates it
 * (one AVX-512 register, one cache line), or a memory-mapped file region when a tensor is read from disk.
 *
 * <p>Storage allocated here lives in an automatic arena: it is freed when no tensor refers to it any more, so views
 * keep their base alive simply by holding the same {@code Storage}.
 */
public final class Storage {
  /** Alignment of every allocation Kiln makes. */
  public static final long ALIGNMENT = 64;

  private final MemorySegment segment;

  private Storage(MemorySegment segment) {
    this.segment = segment;
  }

  /** Allocates {@code bytes} zeroed, 64-byte aligned bytes. */
  public static Storage allocate(long bytes) {
    if (bytes < 0) {
      throw new IllegalArgumentException("cannot allocate a negative number of bytes: " + bytes);
    }
    // Arena.allocate zero-fills; a size of 0 still yields a valid (empty) segment.
    return new Storage(Arena.ofAuto().allocate(Math.max(bytes, 1), ALIGNMENT).asSlice(0, bytes));
  }

  /**
   * Allocates {@code bytes} 64-byte aligned bytes whose contents are <em>unspecified</em>, for outputs a kernel
   * overwrites completely. Zero-filling a fresh result costs a full extra pass over memory per op (measured: 40% of a
   * small model's CPU training step), so kernels that write every element ask for this instead of {@link #allocate}.
   *
   * <p>The memory comes from the C allocator and is tied to an automatic arena, exactly like {@link #allocate}'s: it
   * is freed when no segment of it is reachable, and a segment handed to native code keeps it alive. Because the
   * JVM does not count this memory against {@code -XX:MaxDirectMemorySize}, Kiln counts it itself: when the live
   * total would pass {@code kiln.cpu.memoryLimit} bytes (default: the maximum heap size) it asks for a garbage
   * collection first, so unreachable tensors are returned before more is taken, as the JDK does for direct buffers.
   */
  public static Storage allocateUninitialized(long bytes) {
    if (bytes < 0) {
      throw new IllegalArgumentException("cannot allocate a negative number of bytes: " + bytes);
    }
    if (bytes == 0) {
      return allocate(0);
    }
    long size = (bytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    reserve(size);
    MemorySegment raw;
    try {
      raw = (MemorySegment) ALIGNED_ALLOC.invokeExact(ALIGNMENT, size);
    } catch (Throwable t) {
      LIVE.addAndGet(-size);
      throw new IllegalStateException("aligned_alloc failed", t);
    }
    if (raw.equals(MemorySegment.NULL)) {
      LIVE.addAndGet(-size);
      throw new OutOfMemoryError("cannot allocate " + size + " bytes of native memory for a tensor");
    }
    MemorySegment seg =
        raw.reinterpret(
            size,
            Arena.ofAuto(),
            s -> {
              try {
                FREE.invokeExact(s);
              } catch (Throwable t) {
                throw new IllegalStateException("free failed", t);
              } finally {
                LIVE.addAndGet(-size);
              }
            });
    return new Storage(seg.asSlice(0, bytes));
  }

  /** Bytes currently held by {@link #allocateUninitialized} (for tests and diagnostics). */
  public static long uninitializedBytesLive() {
    return LIVE.get();
  }

  private static final MethodHandle ALIGNED_ALLOC;
  private static final MethodHandle FREE;
  private static final AtomicLong LIVE = new AtomicLong();
  private static final long LIMIT =
      Long.getLong("kiln.cpu.memoryLimit", Math.max(Runtime.getRuntime().maxMemory(), 1L << 30));

  static {
    Linker linker = Linker.nativeLinker();
    ALIGNED_ALLOC =
        linker.downcallHandle(
            linker.defaultLookup().find("aligned_alloc").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG));
    FREE =
        linker.downcallHandle(
            linker.defaultLookup().find("free").orElseThrow(), FunctionDescriptor.ofVoid(ValueLayout.ADDRESS));
  }

  /** Counts {@code size} as live, collecting garbage first (a few times, with growing pauses) when over the limit. */
  private static void reserve(long size) {
    if (LIVE.addAndGet(size) <= LIMIT) {
      return;
    }
    long pause = 1;
    for (int attempt = 0; attempt < 8 && LIVE.get() > LIMIT; attempt++) {
      System.gc();
      try {
        Thread.sleep(pause);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        break;
      }
      pause *= 2;
    }
    // Over the limit even after collecting: the tensors are live. Proceed (the C allocator is the real limit) rather
    // than fail a computation that may still fit in physical memory.
  }

  /** Wraps existing memory (a mapped file, a native buffer) without copying; the caller keeps it alive. */
  public static Storage wrap(MemorySegment segment) {
    return new Storage(segment);
  }

  public MemorySegment segment() {
    return segment;
  }

  public long byteSize() {
    return segment.byteSize();
  }

  public boolean isReadOnly() {
    return segment.isReadOnly();
  }
}
