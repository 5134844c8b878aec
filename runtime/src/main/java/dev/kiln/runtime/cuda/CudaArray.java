package dev.kiln.runtime.cuda;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Storage;
import java.util.Arrays;
import java.util.List;
import jcuda.driver.JCudaDriver;

/**
 * A strided n-dimensional array in device memory: the GPU twin of {@link NdArray}, with the same metadata (dtype,
 * shape and strides in elements, element offset) over a {@link DeviceBuffer}.
 *
 * <p>Views ({@link #view}, {@link #transpose}, {@link #permute}, {@link #narrow}, {@link #select}) share the
 * buffer and never copy; only the array that allocated the buffer returns it on {@link #close()}.
 */
public final class CudaArray implements AutoCloseable {
  private final CudaDevice device;
  private final DeviceBuffer buffer;
  private final boolean owner;
  private final DType dtype;
  private final long[] shape;
  private final long[] strides;
  private final long offset;

  private CudaArray(
      CudaDevice device, DeviceBuffer buffer, boolean owner, DType dtype, long[] shape, long[] strides, long offset) {
    this.device = device;
    this.buffer = buffer;
    this.owner = owner;
    this.dtype = dtype;
    this.shape = shape;
    this.strides = strides;
    this.offset = offset;
  }

  /** A new contiguous array with unspecified contents, allocated for use on the device's default stream. */
  public static CudaArray empty(CudaDevice device, DType dtype, long... shape) {
    return empty(device, device.defaultStream(), dtype, shape);
  }

  public static CudaArray empty(CudaDevice device, CudaStream stream, DType dtype, long... shape) {
    long n = NdArray.numel(shape);
    DeviceBuffer b = device.allocator().allocate(Math.multiplyExact(n, dtype.byteSize()), stream);
    return new CudaArray(device, b, true, dtype, shape.clone(), NdArray.contiguousStrides(shape), 0);
  }

  /** Slots of {@link #relocateEndToEnd} start on multiples of this many bytes, as the allocator's blocks do. */
  public static final long SLOT_ALIGNMENT = 256;

  /**
   * Moves the memory of {@code arrays} (each the whole of a buffer whose address nobody has been given yet, as a
   * GEMM's deferred result is; all of one dtype and shape) into one new allocation, the i-th at {@code i} slots, a
   * slot being an array's bytes rounded up to {@value #SLOT_ALIGNMENT}, and returns a view {@code [k, shape...]} over
   * the k slots. The arrays keep their identities; the allocation lives while any of their buffers does
   * ({@link DeviceBuffer#moveInto}), and the view, which owns nothing, is for work queued while they do.
   */
  public static CudaArray relocateEndToEnd(List<CudaArray> arrays) {
    CudaArray first = arrays.getFirst();
    for (CudaArray a : arrays) {
      if (!a.coversBuffer() || a.dtype != first.dtype || !Arrays.equals(a.shape, first.shape)
          || a.device != first.device || a.buffer.stream() != first.buffer.stream()) {
        throw new IllegalArgumentException("relocateEndToEnd takes whole buffers of one dtype and shape on one stream;"
            + " got " + a + " beside " + first);
      }
    }
    long slot = (first.byteSize() + SLOT_ALIGNMENT - 1) / SLOT_ALIGNMENT * SLOT_ALIGNMENT;
    DeviceBuffer host = first.device.allocator().allocate(Math.multiplyExact(slot, arrays.size()),
        first.buffer.stream());
    for (int i = 0; i < arrays.size(); i++) {
      arrays.get(i).buffer.moveInto(host, i * slot);
    }
    long[] s = new long[first.rank() + 1];
    long[] st = new long[s.length];
    s[0] = arrays.size();
    st[0] = slot / first.dtype.byteSize();
    System.arraycopy(first.shape, 0, s, 1, first.rank());
    System.arraycopy(first.strides, 0, st, 1, first.rank());
    return new CudaArray(first.device, host, false, first.dtype, s, st, 0);
  }

  /** A new zero-filled contiguous array. */
  public static CudaArray zeros(CudaDevice device, DType dtype, long... shape) {
    CudaArray a = empty(device, dtype, shape);
    a.fillBits(0);
    return a;
  }

  /** Copies {@code host} (any layout) to a new contiguous device array, through pinned staging buffers. */
  public static CudaArray fromHost(CudaDevice device, NdArray host) {
    NdArray c = host.contiguous();
    CudaArray a = empty(device, c.dtype(), c.shape());
    long bytes = c.byteSize();
    if (bytes > 0) {
      device.staging().upload(
          c.segment().asSlice(c.offset() * c.dtype().byteSize(), bytes), a.buffer, 0, bytes, device.defaultStream());
    }
    return a;
  }

  /** Copies this array to a new contiguous host array (waits for the work queued before it). */
  public NdArray toHost() {
    long lo = offset;
    long hi = offset;
    for (int d = 0; d < shape.length; d++) {
      if (shape[d] == 0) {
        return NdArray.zeros(dtype, shape);
      }
      if (strides[d] >= 0) {
        hi += strides[d] * (shape[d] - 1);
      } else {
        lo += strides[d] * (shape[d] - 1);
      }
    }
    long es = dtype.byteSize();
    long bytes = (hi - lo + 1) * es;
    Storage s = Storage.allocate(bytes);
    device.staging().download(buffer, lo * es, s.segment(), bytes, device.defaultStream());
    NdArray span = NdArray.of(s, dtype, shape, strides, offset - lo);
    return span.isContiguous() ? span : span.contiguous();
  }

  /** Copies a host array of the same shape and dtype into this (contiguous) array. */
  public CudaArray copyFromHost(NdArray host) {
    requireContiguous("copyFromHost");
    if (!Arrays.equals(host.shape(), shape) || host.dtype() != dtype) {
      throw new IllegalArgumentException(
          "copyFromHost: host " + host.dtype() + Arrays.toString(host.shape()) + " into device " + this);
    }
    NdArray c = host.contiguous();
    device.staging().upload(
        c.segment().asSlice(c.offset() * dtype.byteSize(), c.byteSize()),
        buffer,
        offset * dtype.byteSize(),
        c.byteSize(),
        device.defaultStream());
    return this;
  }

  /**
   * Copies {@code src} (contiguous, of this array's shape and dtype) into this contiguous array on {@code stream}
   * with the driver's device-to-device copy ({@code cuMemcpyDtoDAsync}).
   */
  public CudaArray copyFrom(CudaArray src, CudaStream stream) {
    requireContiguous("copyFrom");
    src.requireContiguous("copyFrom");
    if (!Arrays.equals(src.shape, shape) || src.dtype != dtype) {
      throw new IllegalArgumentException("copyFrom: device " + src + " into device " + this);
    }
    long bytes = byteSize();
    if (bytes > 0) {
      device.makeCurrent();
      CudaException.check(JCudaDriver.cuMemcpyDtoDAsync(devicePointer(), src.devicePointer(), bytes,
          stream.handle()), "cuMemcpyDtoDAsync(" + bytes + " bytes)");
    }
    return this;
  }

  /**
   * Fills every element with NaN (floats) or all-ones bits (integers): tests call this on outputs before a kernel
   * runs, so an element the kernel forgot to write cannot pass for a right answer.
   */
  public CudaArray poison() {
    // The poison is moot once anything writes the whole buffer, so it leaves the memory free to move
    // (DeviceBuffer.moveInto): a deferred GEMM's result, poisoned when allocated, may still join its siblings'.
    switch (dtype) {
      case F32 -> fillBits(0x7FC00000, true);
      case BF16 -> fill16((short) 0x7FC0, true);
      case F16 -> fill16((short) 0x7E00, true);
      case F64 -> fillBits(0x7FF80000, true); // each 8-byte element reads 0x7FF800007FF80000: a NaN
      default -> fillBits(0xFFFFFFFF, true);
    }
    return this;
  }

  private void fillBits(int pattern) {
    fillBits(pattern, false);
  }

  private void fillBits(int pattern, boolean moot) {
    requireContiguous("fill");
    long bytes = byteSize();
    if (bytes % 4 != 0) {
      fill16((short) pattern, moot);
      return;
    }
    device.makeCurrent();
    CudaException.check(
        JCudaDriver.cuMemsetD32Async(fillPointer(moot), pattern, bytes / 4, device.defaultStream().handle()),
        "cuMemsetD32Async");
  }

  private void fill16(short pattern, boolean moot) {
    requireContiguous("fill");
    device.makeCurrent();
    CudaException.check(
        JCudaDriver.cuMemsetD16Async(fillPointer(moot), pattern, byteSize() / 2, device.defaultStream().handle()),
        "cuMemsetD16Async");
  }

  private jcuda.driver.CUdeviceptr fillPointer(boolean moot) {
    long bytes = offset * dtype.byteSize();
    return moot ? buffer.atUnpinned(bytes) : buffer.at(bytes);
  }

  // ---------------------------------------------------------------- metadata

  public CudaDevice device() {
    return device;
  }

  public DType dtype() {
    return dtype;
  }

  public long[] shape() {
    return shape.clone();
  }

  public long shape(int dim) {
    return shape[dim < 0 ? dim + shape.length : dim];
  }

  public long[] strides() {
    return strides.clone();
  }

  public long stride(int dim) {
    return strides[dim < 0 ? dim + strides.length : dim];
  }

  public long offset() {
    return offset;
  }

  public int rank() {
    return shape.length;
  }

  public long numel() {
    return NdArray.numel(shape);
  }

  public long byteSize() {
    return numel() * dtype.byteSize();
  }

  /** The device pointer of element {@code [0, 0, ...]}, for driver calls of this package. */
  jcuda.driver.CUdeviceptr devicePointer() {
    return buffer.at(offset * dtype.byteSize());
  }

  /** The device address of element {@code [0, 0, ...]}. */
  public long address() {
    return buffer.address() + offset * dtype.byteSize();
  }

  public boolean isContiguous() {
    return Arrays.equals(strides, NdArray.contiguousStrides(shape)) || numel() <= 1;
  }

  void requireContiguous(String op) {
    if (!isContiguous()) {
      throw new IllegalArgumentException(
          op + " needs a contiguous array, got " + this + "; copy it with toHost().contiguous() or lay it out so");
    }
  }

  // ---------------------------------------------------------------- views

  /** The same elements with a new shape (contiguous arrays only; one dim may be -1). */
  public CudaArray view(long... newShape) {
    requireContiguous("view");
    long[] s = newShape.clone();
    int infer = -1;
    long known = 1;
    for (int i = 0; i < s.length; i++) {
      if (s[i] == -1) {
        if (infer >= 0) {
          throw new IllegalArgumentException("view " + Arrays.toString(newShape) + ": only one dim may be -1");
        }
        infer = i;
      } else {
        known *= s[i];
      }
    }
    if (infer >= 0) {
      s[infer] = known == 0 ? 0 : numel() / known;
    }
    if (NdArray.numel(s) != numel()) {
      throw new IllegalArgumentException("cannot view " + this + " as " + Arrays.toString(newShape));
    }
    return new CudaArray(device, buffer, false, dtype, s, NdArray.contiguousStrides(s), offset);
  }

  public CudaArray permute(int... order) {
    if (order.length != shape.length) {
      throw new IllegalArgumentException("permute " + Arrays.toString(order) + " of rank-" + shape.length + " array");
    }
    long[] s = new long[order.length];
    long[] st = new long[order.length];
    boolean[] seen = new boolean[order.length];
    for (int i = 0; i < order.length; i++) {
      int d = order[i] < 0 ? order[i] + order.length : order[i];
      if (d < 0 || d >= order.length || seen[d]) {
        throw new IllegalArgumentException("permute " + Arrays.toString(order) + " is not a permutation");
      }
      seen[d] = true;
      s[i] = shape[d];
      st[i] = strides[d];
    }
    return new CudaArray(device, buffer, false, dtype, s, st, offset);
  }

  public CudaArray transpose(int a, int b) {
    int[] order = new int[shape.length];
    for (int i = 0; i < order.length; i++) {
      order[i] = i;
    }
    a = a < 0 ? a + order.length : a;
    b = b < 0 ? b + order.length : b;
    order[a] = b;
    order[b] = a;
    return permute(order);
  }

  public CudaArray narrow(int dim, long start, long length) {
    int d = dim < 0 ? dim + shape.length : dim;
    if (start < 0 || length < 0 || start + length > shape[d]) {
      throw new IndexOutOfBoundsException(
          "narrow(dim " + dim + ", " + start + ", " + length + ") of " + Arrays.toString(shape));
    }
    long[] s = shape.clone();
    s[d] = length;
    return new CudaArray(device, buffer, false, dtype, s, strides.clone(), offset + start * strides[d]);
  }

  public CudaArray select(int dim, long index) {
    int d = dim < 0 ? dim + shape.length : dim;
    if (index < 0 || index >= shape[d]) {
      throw new IndexOutOfBoundsException("select(dim " + dim + ", " + index + ") of " + Arrays.toString(shape));
    }
    long[] s = new long[shape.length - 1];
    long[] st = new long[shape.length - 1];
    for (int i = 0, j = 0; i < shape.length; i++) {
      if (i != d) {
        s[j] = shape[i];
        st[j++] = strides[i];
      }
    }
    return new CudaArray(device, buffer, false, dtype, s, st, offset + index * strides[d]);
  }

  /**
   * A view of the same buffer with any {@code shape}, {@code strides} (in elements, 0 to broadcast) and element
   * {@code offset} from the buffer's start; the elements it can reach must lie inside the buffer.
   */
  public CudaArray strided(long[] shape, long[] strides, long offset) {
    if (shape.length != strides.length) {
      throw new IllegalArgumentException("strided view: shape " + Arrays.toString(shape) + " and strides "
          + Arrays.toString(strides) + " differ in rank");
    }
    long lo = offset;
    long hi = offset;
    for (int d = 0; d < shape.length; d++) {
      if (shape[d] == 0) {
        lo = hi = offset;
        break;
      }
      long span = strides[d] * (shape[d] - 1);
      if (span >= 0) {
        hi += span;
      } else {
        lo += span;
      }
    }
    long capacity = buffer.requestedBytes() / dtype.byteSize();
    if (lo < 0 || (NdArray.numel(shape) > 0 && hi >= capacity)) {
      throw new IllegalArgumentException("strided view " + Arrays.toString(shape) + " strides "
          + Arrays.toString(strides) + " offset " + offset + " reaches elements " + lo + ".." + hi + " of a buffer of "
          + capacity);
    }
    return new CudaArray(device, buffer, false, dtype, shape.clone(), strides.clone(), offset);
  }

  /** A view that broadcasts size-1 dims (stride 0), as {@link NdArray#expand}. */
  public CudaArray expand(long... newShape) {
    if (newShape.length < shape.length) {
      throw new IllegalArgumentException("expand " + this + " to fewer dims " + Arrays.toString(newShape));
    }
    int lead = newShape.length - shape.length;
    long[] st = new long[newShape.length];
    for (int i = 0; i < newShape.length; i++) {
      int j = i - lead;
      if (j < 0) {
        st[i] = 0;
      } else if (shape[j] == newShape[i]) {
        st[i] = strides[j];
      } else if (shape[j] == 1) {
        st[i] = 0;
      } else {
        throw new IllegalArgumentException("cannot expand " + this + " to " + Arrays.toString(newShape));
      }
    }
    return new CudaArray(device, buffer, false, dtype, newShape.clone(), st, offset);
  }

  /** Whether this array and {@code other} are views of one device buffer. */
  public boolean sharesBufferWith(CudaArray other) {
    return buffer == other.buffer;
  }

  /**
   * Whether this array and {@code other} may touch a common byte: views of one buffer whose spans (lowest to highest
   * element they reach) intersect. Two slots of one allocation laid end to end do not overlap.
   */
  public boolean overlaps(CudaArray other) {
    if (!sharesBufferWith(other) || numel() == 0 || other.numel() == 0) {
      return false;
    }
    return byteSpan(false) < other.byteSpan(true) && other.byteSpan(false) < byteSpan(true);
  }

  /** The first byte this array reaches, or ({@code end}) the byte after the last one. */
  private long byteSpan(boolean end) {
    long element = offset;
    for (int i = 0; i < shape.length; i++) {
      long span = (shape[i] - 1) * strides[i];
      if (span > 0 == end) {
        element += span;
      }
    }
    return (element + (end ? 1 : 0)) * dtype.byteSize();
  }

  /**
   * Defers {@code work}, which writes this array's buffer, until any view of the buffer is first touched
   * ({@link DeviceBuffer#deferProducer}).
   */
  public void deferProducer(Runnable work) {
    buffer.deferProducer(work);
  }

  /** Runs the buffer's deferred producer now, if there is one. */
  public void produce() {
    buffer.produce();
  }

  /** Forgets the buffer's deferred producer without running it. */
  public void dropProducer() {
    buffer.dropProducer();
  }

  /** Whether the buffer's contents wait on a deferred producer. */
  public boolean producerPending() {
    return buffer.hasProducer();
  }

  /** Whether this array is the whole of its buffer, laid out contiguously from its first byte. */
  public boolean coversBuffer() {
    return offset == 0 && isContiguous() && byteSize() == buffer.requestedBytes();
  }

  /** Whether {@link #relocateEndToEnd} may move this array's memory ({@link DeviceBuffer#movable}). */
  public boolean movable() {
    return buffer.movable();
  }

  /** The buffer's identity (equal for every view of one allocation), for caches keyed by memory. */
  public Object bufferIdentity() {
    return buffer;
  }

  /** Whether this array allocated its buffer (and returns it on {@link #close()}); views do not. */
  public boolean ownsBuffer() {
    return owner;
  }

  /** Returns the buffer to the allocator's cache if this array allocated it; views do nothing. */
  @Override
  public void close() {
    if (owner) {
      buffer.close();
    }
  }

  @Override
  public String toString() {
    return "CudaArray(" + dtype + Arrays.toString(shape) + ", strides " + Arrays.toString(strides) + ", offset "
        + offset + ", " + device + ")";
  }
}
