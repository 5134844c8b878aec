package dev.kiln.runtime.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

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
