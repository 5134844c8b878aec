package dev.kiln.runtime.tensor;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;

/**
 * A strided n-dimensional array over off-heap {@link Storage}: the runtime's tensor.
 *
 * <p>Shape and strides are in elements; {@code offset} is the element index of {@code [0, 0, ...]} in the storage.
 * All sizes are {@code long}, so arrays past 2^31 elements work.
 *
 * <p><b>Views never copy.</b> {@link #view}, {@link #permute}, {@link #transpose}, {@link #narrow}, {@link #slice},
 * {@link #select}, {@link #expand}, {@link #squeeze}, {@link #unsqueeze} return arrays over the same storage:
 * writes through one are seen by the other. {@link #reshape} is a view when the strides allow it and a copy
 * otherwise; {@link #canView} says in advance which, and {@link #sharesStorageWith} says afterwards.
 * {@link #contiguous()} returns {@code this} when already contiguous.
 *
 * <p>An {@code NdArray} is the CPU implementation of the DSL's {@link Tensor}: a module's forward method called
 * directly (the eager reference interpreter) receives and returns {@code NdArray}s.
 */
public final class NdArray implements Tensor {
  private final Storage storage;
  private final DType dtype;
  private final long[] shape;
  private final long[] strides;
  private final long offset;

  private NdArray(Storage storage, DType dtype, long[] shape, long[] strides, long offset) {
    this.storage = storage;
    this.dtype = dtype;
    this.shape = shape;
    this.strides = strides;
    this.offset = offset;
  }

  // ---------------------------------------------------------------- construction

  /**
   * An array over existing storage. Checks that every element the shape and strides can reach lies inside the
   * storage, so a bad view fails here rather than reading foreign memory later.
   */
  public static NdArray of(Storage storage, DType dtype, long[] shape, long[] strides, long offset) {
    if (shape.length != strides.length) {
      throw new IllegalArgumentException(
          "shape " + Arrays.toString(shape) + " and strides " + Arrays.toString(strides) + " differ in rank");
    }
    checkShape(shape);
    long lo = offset;
    long hi = offset;
    boolean empty = false;
    for (int d = 0; d < shape.length; d++) {
      if (shape[d] == 0) {
        empty = true;
      } else if (strides[d] >= 0) {
        hi += strides[d] * (shape[d] - 1);
      } else {
        lo += strides[d] * (shape[d] - 1);
      }
    }
    if (!empty && (lo < 0 || (hi + 1) * dtype.byteSize() > storage.byteSize())) {
      throw new IndexOutOfBoundsException(
          "view with shape " + Arrays.toString(shape) + ", strides " + Arrays.toString(strides) + ", offset "
              + offset + " reaches elements [" + lo + ", " + hi + "] but the storage holds "
              + storage.byteSize() / dtype.byteSize() + " " + dtype + " elements");
    }
    return new NdArray(storage, dtype, shape.clone(), strides.clone(), offset);
  }

  /** A contiguous array of the given shape over existing storage, starting at element 0. */
  public static NdArray of(Storage storage, DType dtype, long... shape) {
    return of(storage, dtype, shape, contiguousStrides(shape), 0);
  }

  /** A new zero-filled contiguous array. */
  public static NdArray zeros(DType dtype, long... shape) {
    checkShape(shape);
    long n = numel(shape);
    return new NdArray(
        Storage.allocate(Math.multiplyExact(n, dtype.byteSize())), dtype, shape.clone(), contiguousStrides(shape), 0);
  }

  /**
   * A new contiguous array whose elements are <em>unspecified</em> (not zeroed): for results that are written in
   * full before they are read. Saves the zero-filling pass of {@link #zeros}.
   */
  public static NdArray empty(DType dtype, long... shape) {
    checkShape(shape);
    long n = numel(shape);
    return new NdArray(
        Storage.allocateUninitialized(Math.multiplyExact(n, dtype.byteSize())), dtype, shape.clone(),
        contiguousStrides(shape), 0);
  }

  /** A new contiguous array with every element {@code value}. */
  public static NdArray full(DType dtype, double value, long... shape) {
    NdArray a = zeros(dtype, shape);
    if (Double.doubleToRawLongBits(value) != 0) { // -0.0 must be written too: zeros() holds +0.0
      a.fill(value);
    }
    return a;
  }

  public static NdArray ones(DType dtype, long... shape) {
    return full(dtype, 1.0, shape);
  }

  /** {@code [0, 1, ..., n-1]} as a 1-d array. */
  public static NdArray arange(DType dtype, long n) {
    NdArray a = empty(dtype, n);
    MemorySegment s = a.segment();
    for (long i = 0; i < n; i++) {
      Layouts.setLong(s, dtype, i * dtype.byteSize(), i);
    }
    return a;
  }

  /** A float32 array holding a copy of {@code data}, shaped as given (1-d when no shape is given). */
  public static NdArray fromFloats(float[] data, long... shape) {
    NdArray a = empty(DType.F32, shapeFor(data.length, shape));
    MemorySegment.copy(data, 0, a.segment(), Layouts.F32, 0, data.length);
    return a;
  }

  /** A float64 array holding a copy of {@code data}. */
  public static NdArray fromDoubles(double[] data, long... shape) {
    NdArray a = empty(DType.F64, shapeFor(data.length, shape));
    MemorySegment.copy(data, 0, a.segment(), Layouts.F64, 0, data.length);
    return a;
  }

  /** An int32 array holding a copy of {@code data}. */
  public static NdArray fromInts(int[] data, long... shape) {
    NdArray a = empty(DType.I32, shapeFor(data.length, shape));
    MemorySegment.copy(data, 0, a.segment(), Layouts.I32, 0, data.length);
    return a;
  }

  /** An int64 array holding a copy of {@code data}. */
  public static NdArray fromLongs(long[] data, long... shape) {
    NdArray a = empty(DType.I64, shapeFor(data.length, shape));
    MemorySegment.copy(data, 0, a.segment(), Layouts.I64, 0, data.length);
    return a;
  }

  /** A 0-d array holding one value. */
  public static NdArray scalar(DType dtype, double value) {
    NdArray a = empty(dtype);
    Layouts.setDouble(a.segment(), dtype, 0, value);
    return a;
  }

  private static long[] shapeFor(int length, long[] shape) {
    if (shape.length == 0) {
      return new long[] {length};
    }
    if (numel(shape) != length) {
      throw new IllegalArgumentException(
          "shape " + Arrays.toString(shape) + " holds " + numel(shape) + " elements but " + length + " were given");
    }
    return shape;
  }

  // ---------------------------------------------------------------- accessors

  @Override
  public DType dtype() {
    return dtype;
  }

  public Storage storage() {
    return storage;
  }

  /** The storage's whole segment (not just the part this view reaches); index it with {@link #offset()}. */
  public MemorySegment segment() {
    return storage.segment();
  }

  /** A copy of the shape. */
  @Override
  public long[] shape() {
    return shape.clone();
  }

  public long shape(int dim) {
    return shape[normDim(dim)];
  }

  /** A copy of the strides, in elements. */
  public long[] strides() {
    return strides.clone();
  }

  public long stride(int dim) {
    return strides[normDim(dim)];
  }

  /** Element index of the first element within the storage. */
  public long offset() {
    return offset;
  }

  public int rank() {
    return shape.length;
  }

  public long numel() {
    return numel(shape);
  }

  /** Bytes that the elements occupy (not the storage's size). */
  public long byteSize() {
    return numel() * dtype.byteSize();
  }

  /** Row-major contiguous: element {@code i} of the flat order lies at {@code offset + i}. */
  public boolean isContiguous() {
    if (numel() == 0) {
      return true; // no element is out of place; strides of an empty array are arbitrary
    }
    long expect = 1;
    for (int d = shape.length - 1; d >= 0; d--) {
      if (shape[d] != 1 && strides[d] != expect) {
        return false;
      }
      expect *= shape[d];
    }
    return true;
  }

  /** True when both arrays read and write the same bytes' storage (so a write through one may show in the other). */
  public boolean sharesStorageWith(NdArray other) {
    return storage == other.storage;
  }

  // ---------------------------------------------------------------- views

  /** A view with a new shape ({@code -1} once, to infer a size); throws when the strides cannot express it. */
  public NdArray view(long... newShape) {
    long[] target = inferShape(newShape);
    long[] newStrides = viewStrides(target);
    if (newStrides == null) {
      throw new IllegalArgumentException(
          "cannot view shape " + Arrays.toString(shape) + " with strides " + Arrays.toString(strides) + " as "
              + Arrays.toString(target) + " without a copy; call reshape(...) to copy, or contiguous() first");
    }
    return new NdArray(storage, dtype, target, newStrides, offset);
  }

  /** Whether {@link #reshape} to {@code newShape} is a view (true) or needs a copy (false). */
  public boolean canView(long... newShape) {
    return viewStrides(inferShape(newShape)) != null;
  }

  /** A view when the strides allow it ({@link #canView}), else a contiguous copy with the new shape. */
  public NdArray reshape(long... newShape) {
    long[] target = inferShape(newShape);
    long[] newStrides = viewStrides(target);
    if (newStrides != null) {
      return new NdArray(storage, dtype, target, newStrides, offset);
    }
    return contiguousCopy().view(target);
  }

  /** Reorders the dims: result dim {@code i} is this array's dim {@code order[i]}. */
  public NdArray permute(int... order) {
    if (order.length != shape.length) {
      throw new IllegalArgumentException(
          "permute got " + order.length + " dims for an array of rank " + shape.length);
    }
    long[] ns = new long[order.length];
    long[] nt = new long[order.length];
    boolean[] seen = new boolean[order.length];
    for (int i = 0; i < order.length; i++) {
      int d = normDim(order[i]);
      if (seen[d]) {
        throw new IllegalArgumentException("permute order " + Arrays.toString(order) + " repeats dim " + d);
      }
      seen[d] = true;
      ns[i] = shape[d];
      nt[i] = strides[d];
    }
    return new NdArray(storage, dtype, ns, nt, offset);
  }

  /** Swaps two dims. */
  public NdArray transpose(int a, int b) {
    int[] order = new int[shape.length];
    for (int i = 0; i < order.length; i++) {
      order[i] = i;
    }
    a = normDim(a);
    b = normDim(b);
    order[a] = b;
    order[b] = a;
    return permute(order);
  }

  /** Elements {@code [start, start+length)} along {@code dim}; unlike {@link #slice}, out-of-range is an error. */
  public NdArray narrow(int dim, long start, long length) {
    int d = normDim(dim);
    if (start < 0 || length < 0 || start + length > shape[d]) {
      throw new IndexOutOfBoundsException(
          "narrow(" + dim + ", " + start + ", " + length + ") reaches past dim " + d + " of size " + shape[d]
              + " (shape " + Arrays.toString(shape) + ")");
    }
    return slice(dim, start, start + length, 1);
  }

  /**
   * Elements {@code start, start+step, ...} below {@code end} along {@code dim}, as Python's {@code a[start:end:step]}
   * with a positive step; negative {@code start}/{@code end} count from the end.
   */
  public NdArray slice(int dim, long start, long end, long step) {
    int d = normDim(dim);
    long n = shape[d];
    if (step <= 0) {
      throw new IllegalArgumentException("slice step must be positive, got " + step);
    }
    if (start < 0) {
      start += n;
    }
    if (end < 0) {
      end += n;
    }
    start = Math.clamp(start, 0, n);
    end = Math.clamp(end, start, n);
    long len = (end - start + step - 1) / step;
    long[] ns = shape.clone();
    long[] nt = strides.clone();
    ns[d] = len;
    nt[d] = strides[d] * step;
    return new NdArray(storage, dtype, ns, nt, offset + (len == 0 ? 0 : start * strides[d]));
  }

  /** Removes {@code dim} by fixing it at {@code index} (negative counts from the end). */
  public NdArray select(int dim, long index) {
    int d = normDim(dim);
    long i = index < 0 ? index + shape[d] : index;
    if (i < 0 || i >= shape[d]) {
      throw new IndexOutOfBoundsException(
          "index " + index + " out of range for dim " + d + " of size " + shape[d]);
    }
    return new NdArray(storage, dtype, remove(shape, d), remove(strides, d), offset + i * strides[d]);
  }

  /**
   * Broadcasts to {@code newShape} (numpy rules: leading dims are added, size-1 dims stretch with stride 0;
   * {@code -1} keeps a size). The result aliases: do not write through it where dims were stretched.
   */
  public NdArray expand(long... newShape) {
    int lead = newShape.length - shape.length;
    if (lead < 0) {
      throw new IllegalArgumentException(
          "cannot expand " + Arrays.toString(shape) + " to fewer dims " + Arrays.toString(newShape));
    }
    long[] ns = new long[newShape.length];
    long[] nt = new long[newShape.length];
    for (int i = 0; i < newShape.length; i++) {
      int src = i - lead;
      long want = newShape[i];
      if (src < 0) {
        if (want < 0) {
          throw new IllegalArgumentException("-1 is not allowed for a new leading dim in expand");
        }
        ns[i] = want;
        nt[i] = 0;
      } else if (want == -1 || want == shape[src]) {
        ns[i] = shape[src];
        nt[i] = strides[src];
      } else if (shape[src] == 1) {
        ns[i] = want;
        nt[i] = 0;
      } else {
        throw new IllegalArgumentException(
            "cannot broadcast shape " + Arrays.toString(shape) + " to " + Arrays.toString(newShape) + ": dim " + src
                + " has size " + shape[src] + ", not 1 or " + want);
      }
    }
    return new NdArray(storage, dtype, ns, nt, offset);
  }

  /** Removes every size-1 dim. */
  public NdArray squeeze() {
    int keep = 0;
    for (long s : shape) {
      if (s != 1) {
        keep++;
      }
    }
    long[] ns = new long[keep];
    long[] nt = new long[keep];
    int j = 0;
    for (int d = 0; d < shape.length; d++) {
      if (shape[d] != 1) {
        ns[j] = shape[d];
        nt[j++] = strides[d];
      }
    }
    return new NdArray(storage, dtype, ns, nt, offset);
  }

  /** Removes {@code dim}, which must have size 1. */
  public NdArray squeeze(int dim) {
    int d = normDim(dim);
    if (shape[d] != 1) {
      throw new IllegalArgumentException("cannot squeeze dim " + d + " of size " + shape[d] + " (must be 1)");
    }
    return new NdArray(storage, dtype, remove(shape, d), remove(strides, d), offset);
  }

  /** Inserts a size-1 dim at position {@code dim} (0..rank; negative counts from the end of the new rank). */
  public NdArray unsqueeze(int dim) {
    int d = dim < 0 ? dim + shape.length + 1 : dim;
    if (d < 0 || d > shape.length) {
      throw new IndexOutOfBoundsException("unsqueeze dim " + dim + " out of range for rank " + shape.length);
    }
    long[] ns = new long[shape.length + 1];
    long[] nt = new long[shape.length + 1];
    for (int i = 0, j = 0; i < ns.length; i++) {
      if (i == d) {
        ns[i] = 1;
        nt[i] = d < shape.length ? strides[d] * shape[d] : 1;
      } else {
        ns[i] = shape[j];
        nt[i] = strides[j++];
      }
    }
    return new NdArray(storage, dtype, ns, nt, offset);
  }

  /** {@code this} when contiguous, else a contiguous copy. */
  public NdArray contiguous() {
    return isContiguous() ? this : contiguousCopy();
  }

  /** A new contiguous array with the same elements, always a copy. */
  public NdArray copy() {
    return contiguousCopy();
  }

  /** A contiguous copy converted to {@code target} ({@code this} is never returned, even for the same dtype). */
  public NdArray to(DType target) {
    NdArray out = empty(target, shape);
    out.copyFrom(this);
    return out;
  }

  private NdArray contiguousCopy() {
    NdArray out = empty(dtype, shape);
    out.copyFrom(this);
    return out;
  }

  // ---------------------------------------------------------------- element access

  /** Byte offset within the storage of the element at {@code index}, with bounds checks. */
  public long byteOffset(long... index) {
    if (index.length != shape.length) {
      throw new IllegalArgumentException(
          "index " + Arrays.toString(index) + " has " + index.length + " dims; array has rank " + shape.length);
    }
    long e = offset;
    for (int d = 0; d < index.length; d++) {
      long i = index[d] < 0 ? index[d] + shape[d] : index[d];
      if (i < 0 || i >= shape[d]) {
        throw new IndexOutOfBoundsException(
            "index " + index[d] + " out of range for dim " + d + " of size " + shape[d]
                + " (shape " + Arrays.toString(shape) + ")");
      }
      e += i * strides[d];
    }
    return e * dtype.byteSize();
  }

  public double getDouble(long... index) {
    return Layouts.getDouble(segment(), dtype, byteOffset(index));
  }

  public float getFloat(long... index) {
    return (float) getDouble(index);
  }

  public long getLong(long... index) {
    return Layouts.getLong(segment(), dtype, byteOffset(index));
  }

  public void setDouble(double value, long... index) {
    Layouts.setDouble(segment(), dtype, byteOffset(index), value);
  }

  public void setLong(long value, long... index) {
    Layouts.setLong(segment(), dtype, byteOffset(index), value);
  }

  /** The only element of a one-element array, as a double. */
  public double item() {
    if (numel() != 1) {
      throw new IllegalStateException("item() needs exactly one element; shape is " + Arrays.toString(shape));
    }
    return Layouts.getDouble(segment(), dtype, offset * dtype.byteSize());
  }

  /** Sets every element to {@code value}. */
  public NdArray fill(double value) {
    MemorySegment s = segment();
    int es = dtype.byteSize();
    StridedWalk.forEach(shape, strides, offset, e -> Layouts.setDouble(s, dtype, e * es, value));
    return this;
  }

  /**
   * Copies {@code src} into this array, broadcasting {@code src} to this shape and converting dtypes.
   * Overlapping source and destination in the same storage are handled by copying the source first.
   */
  public NdArray copyFrom(NdArray src) {
    NdArray s = src.expand(shape);
    if (s.storage == storage && !(s.offset == offset && Arrays.equals(s.strides, strides))) {
      s = s.contiguousCopy();
    }
    MemorySegment dst = segment();
    MemorySegment from = s.segment();
    if (s.dtype == dtype && isContiguous() && s.isContiguous()) {
      MemorySegment.copy(from, s.offset * dtype.byteSize(), dst, offset * dtype.byteSize(), byteSize());
      return this;
    }
    if (s.dtype == dtype) {
      copySameDType(s);
      return this;
    }
    int des = dtype.byteSize();
    int ses = s.dtype.byteSize();
    DType st = s.dtype;
    boolean integral = !dtype.isFloating() && !st.isFloating();
    StridedWalk.forEach2(
        shape,
        strides,
        offset,
        s.strides,
        s.offset,
        (d, e) -> {
          if (integral) {
            Layouts.setLong(dst, dtype, d * des, Layouts.getLong(from, st, e * ses));
          } else {
            Layouts.setDouble(dst, dtype, d * des, Layouts.getDouble(from, st, e * ses));
          }
        });
    return this;
  }

  /**
   * Strided copy between arrays of one dtype: moves raw element bytes (never through {@code double}, so NaN payloads
   * and -0.0 of every dtype survive), a whole row at a time when both innermost strides are 1.
   */
  private void copySameDType(NdArray s) {
    if (numel() == 0) {
      return;
    }
    MemorySegment dst = segment();
    MemorySegment from = s.segment();
    int es = dtype.byteSize();
    int r = shape.length;
    if (r == 0) {
      MemorySegment.copy(from, s.offset * es, dst, offset * es, es);
      return;
    }
    long inner = shape[r - 1];
    long dInner = strides[r - 1];
    long sInner = s.strides[r - 1];
    long[] outerShape = Arrays.copyOf(shape, r - 1);
    long[] outerD = Arrays.copyOf(strides, r - 1);
    long[] outerS = Arrays.copyOf(s.strides, r - 1);
    StridedWalk.forEach2(
        outerShape,
        outerD,
        offset,
        outerS,
        s.offset,
        (d, e) -> {
          if (dInner == 1 && sInner == 1) {
            MemorySegment.copy(from, e * es, dst, d * es, inner * es);
            return;
          }
          for (long i = 0; i < inner; i++) {
            long at = (d + i * dInner) * es;
            long from$ = (e + i * sInner) * es;
            switch (es) {
              case 1 -> dst.set(Layouts.U8, at, from.get(Layouts.U8, from$));
              case 2 -> dst.set(Layouts.I16, at, from.get(Layouts.I16, from$));
              case 4 -> dst.set(Layouts.I32, at, from.get(Layouts.I32, from$));
              default -> dst.set(Layouts.I64, at, from.get(Layouts.I64, from$));
            }
          }
        });
  }

  /** All elements in row-major order, converted to float. */
  public float[] toFloatArray() {
    NdArray c = dtype == DType.F32 ? contiguous() : to(DType.F32);
    return c.segment().asSlice(c.offset * 4, c.numel() * 4L).toArray(Layouts.F32);
  }

  /** All elements in row-major order, converted to double. */
  public double[] toDoubleArray() {
    NdArray c = dtype == DType.F64 ? contiguous() : to(DType.F64);
    return c.segment().asSlice(c.offset * 8, c.numel() * 8L).toArray(Layouts.F64);
  }

  /** All elements in row-major order, converted to long (floats truncate toward zero). */
  public long[] toLongArray() {
    NdArray c = dtype == DType.I64 ? contiguous() : to(DType.I64);
    return c.segment().asSlice(c.offset * 8, c.numel() * 8L).toArray(Layouts.I64);
  }

  /** All elements in row-major order, converted to int. */
  public int[] toIntArray() {
    NdArray c = dtype == DType.I32 ? contiguous() : to(DType.I32);
    return c.segment().asSlice(c.offset * 4, c.numel() * 4L).toArray(Layouts.I32);
  }

  @Override
  public String toString() {
    StringBuilder b = new StringBuilder("NdArray(").append(dtype).append(", ").append(Arrays.toString(shape));
    long n = numel();
    if (n <= 64) {
      b.append(", ");
      if (dtype.isFloating()) {
        b.append(Arrays.toString(toDoubleArray()));
      } else {
        b.append(Arrays.toString(toLongArray()));
      }
    }
    return b.append(')').toString();
  }

  // ---------------------------------------------------------------- shape helpers

  /** Product of sizes, with overflow checked. */
  public static long numel(long[] shape) {
    long n = 1;
    for (long s : shape) {
      n = Math.multiplyExact(n, s);
    }
    return n;
  }

  /** Row-major strides for a contiguous array of this shape. */
  public static long[] contiguousStrides(long[] shape) {
    long[] st = new long[shape.length];
    long acc = 1;
    for (int d = shape.length - 1; d >= 0; d--) {
      st[d] = acc;
      acc *= Math.max(shape[d], 1);
    }
    return st;
  }

  /** The numpy broadcast of two shapes; throws naming both when they conflict. */
  public static long[] broadcastShapes(long[] a, long[] b) {
    int r = Math.max(a.length, b.length);
    long[] out = new long[r];
    for (int i = 0; i < r; i++) {
      long x = i - (r - a.length) >= 0 ? a[i - (r - a.length)] : 1;
      long y = i - (r - b.length) >= 0 ? b[i - (r - b.length)] : 1;
      if (x != y && x != 1 && y != 1) {
        throw new IllegalArgumentException(
            "shapes " + Arrays.toString(a) + " and " + Arrays.toString(b) + " do not broadcast: dim " + i
                + " (counted from the right-aligned start) is " + x + " vs " + y);
      }
      out[i] = x == 1 ? y : x;
    }
    return out;
  }

  private static void checkShape(long[] shape) {
    for (long s : shape) {
      if (s < 0) {
        throw new IllegalArgumentException("negative size in shape " + Arrays.toString(shape));
      }
    }
    numel(shape);
  }

  private int normDim(int dim) {
    int d = dim < 0 ? dim + shape.length : dim;
    if (d < 0 || d >= shape.length) {
      throw new IndexOutOfBoundsException("dim " + dim + " out of range for rank " + shape.length);
    }
    return d;
  }

  private long[] inferShape(long[] newShape) {
    int infer = -1;
    long known = 1;
    for (int i = 0; i < newShape.length; i++) {
      if (newShape[i] == -1) {
        if (infer >= 0) {
          throw new IllegalArgumentException("only one -1 allowed in shape " + Arrays.toString(newShape));
        }
        infer = i;
      } else if (newShape[i] < 0) {
        throw new IllegalArgumentException("negative size in shape " + Arrays.toString(newShape));
      } else {
        known = Math.multiplyExact(known, newShape[i]);
      }
    }
    long n = numel();
    long[] out = newShape.clone();
    if (infer >= 0) {
      if (known == 0 || n % known != 0) {
        throw new IllegalArgumentException(
            "cannot infer -1 in " + Arrays.toString(newShape) + " for " + n + " elements");
      }
      out[infer] = n / known;
    } else if (known != n) {
      throw new IllegalArgumentException(
          "cannot reshape " + Arrays.toString(shape) + " (" + n + " elements) to " + Arrays.toString(newShape)
              + " (" + known + " elements)");
    }
    return out;
  }

  private long[] viewStrides(long[] target) {
    return viewStrides(shape, strides, target);
  }

  /**
   * Strides that express {@code target} (same element count) over the memory of an array of {@code shape} and
   * {@code strides}, or null when that needs a copy. Walks both shapes in chunks of equal element count; each chunk
   * of the old shape must be internally contiguous (PyTorch's computeStride). Shared with the device arrays.
   */
  public static long[] viewStrides(long[] shape, long[] strides, long[] target) {
    long[] out = new long[target.length];
    if (numel(shape) == 0) {
      return contiguousStrides(target);
    }
    int oldD = shape.length - 1;
    int newD = target.length - 1;
    while (newD >= 0 || oldD >= 0) {
      // Skip size-1 dims on both sides: they take any stride.
      if (newD >= 0 && target[newD] == 1) {
        out[newD] = newD + 1 < target.length ? out[newD + 1] * target[newD + 1] : 1;
        newD--;
        continue;
      }
      if (oldD >= 0 && shape[oldD] == 1) {
        oldD--;
        continue;
      }
      if (newD < 0 || oldD < 0) {
        return null;
      }
      // One chunk: grow the old side until its element count equals the new side's.
      long chunkStride = strides[oldD];
      long oldCount = shape[oldD];
      int oldStart = oldD;
      long newCount = target[newD];
      int newStart = newD;
      while (oldCount != newCount) {
        if (oldCount < newCount) {
          oldStart--;
          while (oldStart >= 0 && shape[oldStart] == 1) {
            oldStart--;
          }
          if (oldStart < 0) {
            return null;
          }
          int next = oldStart + nextNonUnit(shape, oldStart);
          if (strides[oldStart] != strides[next] * shape[next]) {
            return null;
          }
          oldCount *= shape[oldStart];
        } else {
          newStart--;
          if (newStart < 0) {
            return null;
          }
          newCount *= target[newStart];
        }
      }
      long acc = chunkStride;
      for (int d = newD; d >= newStart; d--) {
        out[d] = acc;
        acc *= target[d];
      }
      oldD = oldStart - 1;
      newD = newStart - 1;
    }
    return out;
  }

  /** Distance from {@code d} to the next dim to its right with size != 1. */
  private static int nextNonUnit(long[] shape, int d) {
    int k = 1;
    while (shape[d + k] == 1) {
      k++;
    }
    return k;
  }

  private static long[] remove(long[] a, int i) {
    long[] out = new long[a.length - 1];
    System.arraycopy(a, 0, out, 0, i);
    System.arraycopy(a, i + 1, out, i, a.length - i - 1);
    return out;
  }
}
