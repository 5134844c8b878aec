package dev.kiln.runtime.io;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Storage;
import dev.kiln.runtime.tensor.StridedWalk;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Reads and writes numpy's {@code .npy} format (versions 1.0, 2.0 and 3.0): the magic {@code \x93NUMPY}, two version
 * bytes, a little-endian header length (u16 in 1.0, u32 after), a Python-literal dict
 * {@code {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }} padded with spaces and a final newline so the
 * data starts on a 64-byte boundary, then the raw elements.
 *
 * <p><b>Dtypes.</b> {@code <f4 <f8 <f2 <i4 <i8 |u1 |b1} map to the matching {@link DType} and read with zero copy.
 * {@code |i1 <i2 <u2} widen to I32 and {@code <u4} to I64 (Kiln has no such dtypes), which costs a copy. Big-endian
 * data, structured dtypes and the rest are refused with a message that says how to convert them in numpy.
 *
 * <p><b>Layout.</b> A Fortran-order file becomes a view with column-major strides over the file's bytes (call
 * {@link NdArray#contiguous()} for row-major memory). Files are memory-mapped read-only; the mapping lives as long
 * as the array does.
 */
public final class Npy {
  private static final byte[] MAGIC = {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y'};
  /** numpy aligns the data to 64 bytes ({@code ARRAY_ALIGN}). */
  private static final int ALIGN = 64;
  /** numpy leaves room for the growing axis's size to reach 21 digits ({@code GROWTH_AXIS_MAX_DIGITS}). */
  private static final int GROWTH_DIGITS = 21;
  private static final int COPY_CHUNK = 1 << 16;

  private Npy() {}

  /** What a header says: the dtype on disk, what Kiln turns it into, the shape, the order, where data starts. */
  record Header(String descr, DType fileType, DType kilnType, int fileElementBytes, long[] shape, boolean fortran,
      long dataOffset) {
    long dataBytes() {
      return Math.multiplyExact(NdArray.numel(shape), fileElementBytes);
    }

    boolean converts() {
      return fileType == null;
    }
  }

  // ---------------------------------------------------------------- reading

  /** Reads a {@code .npy} file: a read-only memory-mapped view, or a widened copy for i1/i2/u2/u4 data. */
  public static NdArray read(Path file) throws IOException {
    try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
      long size = ch.size();
      Header h = readHeader(Channels.newInputStream(ch), file.toString());
      long need = dataBytes(h, file.toString());
      if (size - h.dataOffset != need) {
        throw new NpyException(
            file + ": shape " + Arrays.toString(h.shape) + " of " + h.descr + " needs " + need
                + " data bytes after the " + h.dataOffset + "-byte header, but the file has " + (size - h.dataOffset)
                + (size - h.dataOffset < need ? " (truncated file)" : " (trailing bytes: wrong shape?)"));
      }
      // An automatic arena unmaps the file once no array refers to it any more.
      MemorySegment data = ch.map(FileChannel.MapMode.READ_ONLY, h.dataOffset, need, Arena.ofAuto());
      return build(h, data);
    }
  }

  /** Reads one array from a stream (an {@code .npz} entry) into new off-heap memory; the stream must end there. */
  public static NdArray read(InputStream in, String source) throws IOException {
    return read(in, -1, source);
  }

  /**
   * Like {@link #read(InputStream, String)} for a stream of known length ({@code -1} if unknown), which lets a corrupt
   * shape be refused before memory is allocated for it.
   */
  public static NdArray read(InputStream in, long streamBytes, String source) throws IOException {
    Header h = readHeader(in, source);
    long need = dataBytes(h, source);
    if (streamBytes >= 0 && streamBytes - h.dataOffset != need) {
      throw new NpyException(
          source + ": shape " + Arrays.toString(h.shape) + " of " + h.descr + " needs " + need
              + " data bytes after the " + h.dataOffset + "-byte header, but the entry has "
              + (streamBytes - h.dataOffset) + (streamBytes - h.dataOffset < need ? " (truncated)" : " (trailing bytes)"));
    }
    Storage storage = Storage.allocate(need);
    MemorySegment seg = storage.segment();
    byte[] chunk = new byte[COPY_CHUNK];
    for (long done = 0; done < need; ) {
      int n = in.read(chunk, 0, (int) Math.min(chunk.length, need - done));
      if (n < 0) {
        throw new NpyException(
            source + ": truncated: shape " + Arrays.toString(h.shape) + " of " + h.descr + " needs " + need
                + " data bytes, found " + done);
      }
      MemorySegment.copy(chunk, 0, seg, Layouts.U8, done, n);
      done += n;
    }
    if (in.read() >= 0) {
      throw new NpyException(
          source + ": bytes follow the " + need + " data bytes that shape " + Arrays.toString(h.shape) + " of "
              + h.descr + " needs (wrong shape?)");
    }
    return build(h, seg);
  }

  private static long dataBytes(Header h, String source) throws NpyException {
    try {
      return h.dataBytes();
    } catch (ArithmeticException e) {
      throw new NpyException(source + ": shape " + Arrays.toString(h.shape) + " overflows 64-bit byte counts");
    }
  }

  private static NdArray build(Header h, MemorySegment data) {
    long[] strides = h.fortran ? fortranStrides(h.shape) : NdArray.contiguousStrides(h.shape);
    if (!h.converts()) {
      return NdArray.of(Storage.wrap(data), h.kilnType, h.shape, strides, 0);
    }
    // Widen element by element in storage order, so the strides still describe the copy.
    long n = NdArray.numel(h.shape);
    NdArray out = NdArray.zeros(h.kilnType, n);
    MemorySegment dst = out.segment();
    int kb = h.kilnType.byteSize();
    for (long i = 0; i < n; i++) {
      long v = switch (h.descr.substring(1)) {
        case "i1" -> data.get(Layouts.U8, i);
        case "i2" -> data.get(Layouts.I16, i * 2);
        case "u2" -> Short.toUnsignedInt(data.get(Layouts.I16, i * 2));
        case "u4" -> Integer.toUnsignedLong(data.get(Layouts.I32, i * 4));
        default -> throw new IllegalStateException("no widening for " + h.descr);
      };
      Layouts.setLong(dst, h.kilnType, i * kb, v);
    }
    return NdArray.of(out.storage(), h.kilnType, h.shape, strides, 0);
  }

  /** Column-major strides: the first index varies fastest. */
  static long[] fortranStrides(long[] shape) {
    long[] st = new long[shape.length];
    long acc = 1;
    for (int d = 0; d < shape.length; d++) {
      st[d] = acc;
      acc *= Math.max(shape[d], 1);
    }
    return st;
  }

  static Header readHeader(InputStream in, String source) throws IOException {
    byte[] pre = readN(in, 8, source, "the magic string and version");
    for (int k = 0; k < MAGIC.length; k++) {
      if (pre[k] != MAGIC[k]) {
        throw new NpyException(source + ": not a .npy file (it does not start with the magic \\x93NUMPY)");
      }
    }
    int major = pre[6] & 0xff;
    int minor = pre[7] & 0xff;
    long headerLen;
    int prefix;
    if (major == 1 && minor == 0) {
      byte[] l = readN(in, 2, source, "the header length");
      headerLen = (l[0] & 0xff) | (l[1] & 0xff) << 8;
      prefix = 10;
    } else if ((major == 2 || major == 3) && minor == 0) {
      byte[] l = readN(in, 4, source, "the header length");
      headerLen = (l[0] & 0xffL) | (l[1] & 0xffL) << 8 | (l[2] & 0xffL) << 16 | (l[3] & 0xffL) << 24;
      prefix = 12;
    } else {
      throw new NpyException(
          source + ": .npy format version " + major + "." + minor + " is not supported (Kiln reads 1.0, 2.0, 3.0)");
    }
    if (headerLen > 100_000_000) {
      throw new NpyException(source + ": header length " + headerLen + " is implausibly large (corrupt file?)");
    }
    byte[] hb = readN(in, (int) headerLen, source, "the " + headerLen + "-byte header");
    // 1.0 and 2.0 headers are latin-1; 3.0 allows UTF-8 (for non-ASCII field names in structured dtypes).
    String text = new String(hb, major == 3 ? StandardCharsets.UTF_8 : StandardCharsets.ISO_8859_1);
    Object lit;
    try {
      lit = PyLiteral.parse(text);
    } catch (IllegalArgumentException e) {
      throw new NpyException(source + ": header is not a Python dict literal: " + e.getMessage(), e);
    }
    if (!(lit instanceof Map<?, ?> dict)) {
      throw new NpyException(source + ": header is not a dict: " + text.strip());
    }
    if (!dict.keySet().equals(Set.of("descr", "fortran_order", "shape"))) {
      throw new NpyException(
          source + ": header keys are " + dict.keySet() + "; a .npy header has exactly descr, fortran_order, shape");
    }
    if (!(dict.get("fortran_order") instanceof Boolean fortran)) {
      throw new NpyException(source + ": fortran_order is " + dict.get("fortran_order") + ", not True or False");
    }
    if (!(dict.get("shape") instanceof List<?> shapeList)) {
      throw new NpyException(source + ": shape is " + dict.get("shape") + ", not a tuple of integers");
    }
    long[] shape = new long[shapeList.size()];
    for (int d = 0; d < shape.length; d++) {
      if (!(shapeList.get(d) instanceof Long s) || s < 0) {
        throw new NpyException(source + ": shape " + shapeList + " has a non-integer or negative size at dim " + d);
      }
      shape[d] = s;
    }
    Object descrObj = dict.get("descr");
    if (!(descrObj instanceof String descr)) {
      throw new NpyException(
          source + ": structured dtype " + descrObj + " is not supported; save each field as its own array");
    }
    return dtypeHeader(descr, shape, fortran, prefix + headerLen, source);
  }

  private static Header dtypeHeader(String descr, long[] shape, boolean fortran, long dataOffset, String source)
      throws NpyException {
    if (descr.length() < 3) {
      throw new NpyException(source + ": unknown dtype descr '" + descr + "'");
    }
    char order = descr.charAt(0);
    String kind = descr.substring(1);
    int size;
    try {
      size = Integer.parseInt(kind.substring(1));
    } catch (NumberFormatException e) {
      throw new NpyException(source + ": unknown dtype descr '" + descr + "'");
    }
    String lookup = switch (kind) {
      case "f4", "f8", "f2", "i4", "i8" -> "<" + kind;
      case "u1", "b1" -> "|" + kind;
      default -> null;
    };
    DType widened = switch (kind) {
      case "i1", "i2", "u2" -> DType.I32;
      case "u4" -> DType.I64;
      default -> null;
    };
    if (lookup != null || widened != null) {
      if (size > 1 && order == '>') {
        throw new NpyException(
            source + ": big-endian dtype '" + descr + "' is not supported; convert it in numpy with"
                + " a.astype(a.dtype.newbyteorder('<')) and save again");
      }
      if (size > 1 ? order != '<' : (order != '|' && order != '<' && order != '=' && order != '>')) {
        throw new NpyException(source + ": dtype '" + descr + "' has byte order '" + order + "'; expected '<'");
      }
      for (DType t : DType.values()) {
        if (lookup != null && lookup.equals(t.numpyDescr())) {
          return new Header(descr, t, t, t.byteSize(), shape, fortran, dataOffset);
        }
      }
      return new Header(descr, null, widened, size, shape, fortran, dataOffset);
    }
    String hint = kind.startsWith("V")
        ? " (a raw void type; bfloat16 from ml_dtypes is saved this way — use safetensors for bfloat16)"
        : kind.equals("u8") ? " (uint64 does not fit Kiln's I64; cast with a.astype('<i8') if the values allow)"
        : "; cast it in numpy to one of <f4 <f8 <f2 <i4 <i8 |u1 |b1";
    throw new NpyException(source + ": dtype '" + descr + "' is not supported" + hint);
  }

  private static byte[] readN(InputStream in, int n, String source, String what) throws IOException {
    byte[] b = in.readNBytes(n);
    if (b.length != n) {
      throw new NpyException(source + ": truncated while reading " + what, new EOFException());
    }
    return b;
  }

  // ---------------------------------------------------------------- writing

  /** Writes {@code a} as {@code .npy} (version 1.0, or 2.0 when the header passes 65535 bytes), C order, atomically. */
  public static void write(Path file, NdArray a) throws IOException {
    byte[] header = header(a, file.toString());
    AtomicFiles.write(file, out -> writeTo(out, a, header));
  }

  /** The magic, version, length and padded header numpy would write for {@code a}. */
  static byte[] header(NdArray a, String target) throws NpyException {
    String descr = a.dtype().numpyDescr();
    if (descr == null) {
      throw new NpyException(
          "cannot write " + target + ": numpy has no bfloat16 dtype; save it with Safetensors.write, or cast with"
              + " a.to(DType.F32) first");
    }
    long[] shape = a.shape();
    StringBuilder dict = new StringBuilder("{'descr': '").append(descr).append("', 'fortran_order': False, 'shape': (");
    for (int d = 0; d < shape.length; d++) {
      dict.append(shape[d]).append(d + 1 < shape.length ? ", " : shape.length == 1 ? "," : "");
    }
    dict.append("), }");
    if (shape.length > 0) {
      dict.append(" ".repeat(Math.max(0, GROWTH_DIGITS - Long.toString(shape[0]).length())));
    }
    byte[] text = dict.toString().getBytes(StandardCharsets.ISO_8859_1);
    int hlen = text.length + 1; // the final newline
    for (int major = 1; major <= 2; major++) {
      int lenBytes = major == 1 ? 2 : 4;
      int pad = ALIGN - ((8 + lenBytes + hlen) % ALIGN);
      long total = (long) hlen + pad;
      if (major == 1 && total > 0xffff) {
        continue;
      }
      byte[] out = new byte[8 + lenBytes + (int) total];
      System.arraycopy(MAGIC, 0, out, 0, 6);
      out[6] = (byte) major;
      out[7] = 0;
      for (int k = 0; k < lenBytes; k++) {
        out[8 + k] = (byte) (total >>> (8 * k));
      }
      System.arraycopy(text, 0, out, 8 + lenBytes, text.length);
      Arrays.fill(out, 8 + lenBytes + text.length, out.length - 1, (byte) ' ');
      out[out.length - 1] = '\n';
      return out;
    }
    throw new IllegalStateException("unreachable: a v2.0 header holds 4 GiB");
  }

  /** Writes header then elements in C order, through a small heap chunk (never the whole array). */
  static void writeTo(OutputStream out, NdArray a, byte[] header) throws IOException {
    out.write(header);
    int es = a.dtype().byteSize();
    MemorySegment src = a.segment();
    byte[] chunk = new byte[COPY_CHUNK];
    if (a.isContiguous()) {
      long start = a.offset() * es;
      long len = a.byteSize();
      for (long done = 0; done < len; ) {
        int n = (int) Math.min(chunk.length, len - done);
        MemorySegment.copy(src, Layouts.U8, start + done, chunk, 0, n);
        out.write(chunk, 0, n);
        done += n;
      }
      return;
    }
    int[] fill = {0};
    IOException[] failure = {null};
    StridedWalk.forEach(a.shape(), a.strides(), a.offset(), e -> {
      if (failure[0] != null) {
        return;
      }
      MemorySegment.copy(src, Layouts.U8, e * es, chunk, fill[0], es);
      fill[0] += es;
      if (fill[0] + es > chunk.length) {
        try {
          out.write(chunk, 0, fill[0]);
        } catch (IOException ex) {
          failure[0] = ex;
        }
        fill[0] = 0;
      }
    });
    if (failure[0] != null) {
      throw failure[0];
    }
    out.write(chunk, 0, fill[0]);
  }
}
