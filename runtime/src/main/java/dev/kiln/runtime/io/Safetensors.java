package dev.kiln.runtime.io;

import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.StridedWalk;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads and writes the Hugging Face safetensors format: an 8-byte little-endian header length {@code N}, {@code N}
 * bytes of UTF-8 JSON ({@code {"__metadata__": {...}, "name": {"dtype", "shape", "data_offsets": [begin, end]}}},
 * offsets relative to the first byte after the header), then the tensor bytes, packed.
 *
 * <p>Reading ({@link #open}) validates everything the spec constrains before handing out a single view: the length
 * field, UTF-8, JSON, field types, known dtypes, shape-vs-byte-count, offsets within the data, no overlaps, no holes,
 * no trailing bytes, unique names, string-valued metadata. Each failure is a {@link SafetensorsException} naming
 * the file, the tensor and the problem.
 */
public final class Safetensors {
  private static final int STAGING_BYTES = 1 << 20;
  /** Largest slice handed to the channel at once: ByteBuffers are int-indexed. */
  private static final long MAX_WRITE = 1L << 30;

  private Safetensors() {}

  /** Same as {@link SafetensorsFile#open}. */
  public static SafetensorsFile open(Path path) throws IOException {
    return SafetensorsFile.open(path);
  }

  /**
   * Writes {@code tensors} in iteration order (use a {@link LinkedHashMap}), packed one after the other, with the
   * header padded with spaces to a multiple of 8 bytes as the reference implementation pads it. {@code metadata} may
   * be null or empty, in which case no {@code __metadata__} key is written. The file appears atomically; tensor bytes
   * stream from their storage (strided tensors through a 1 MiB staging buffer), never through a heap copy.
   *
   * <p>A tensor may be a view of a file being replaced: the old file stays mapped until the rename.
   */
  public static void write(Path path, Map<String, NdArray> tensors, Map<String, String> metadata)
      throws IOException {
    byte[] header = header(path, tensors, metadata);
    List<NdArray> arrays = new ArrayList<>(tensors.values());
    AtomicFiles.writeChannel(
        path,
        ch -> {
          ByteBuffer head = ByteBuffer.allocate(8 + header.length).order(ByteOrder.LITTLE_ENDIAN);
          head.putLong(header.length).put(header).flip();
          writeFully(ch, head);
          try (Arena staging = Arena.ofConfined()) {
            MemorySegment buf = staging.allocate(STAGING_BYTES, 64);
            for (NdArray a : arrays) {
              writeTensor(ch, a, buf);
            }
          }
        });
  }

  /** The padded header bytes the writer puts after the length field. */
  static byte[] header(Path path, Map<String, NdArray> tensors, Map<String, String> metadata)
      throws SafetensorsException {
    Map<String, Object> root = new LinkedHashMap<>();
    if (metadata != null && !metadata.isEmpty()) {
      for (Map.Entry<String, String> e : metadata.entrySet()) {
        if (e.getKey() == null || e.getValue() == null) {
          throw new SafetensorsException(
              "cannot write " + path + ": metadata key \"" + e.getKey() + "\" has a null key or value");
        }
      }
      root.put("__metadata__", new LinkedHashMap<>(metadata));
    }
    long offset = 0;
    for (Map.Entry<String, NdArray> e : tensors.entrySet()) {
      String name = e.getKey();
      NdArray a = e.getValue();
      if (name == null || name.equals("__metadata__")) {
        throw new SafetensorsException(
            "cannot write " + path + ": tensor name \"" + name + "\" is reserved or null");
      }
      if (a == null) {
        throw new SafetensorsException("cannot write " + path + ": tensor \"" + name + "\" is null");
      }
      Map<String, Object> info = new LinkedHashMap<>();
      info.put("dtype", a.dtype().safetensorsName());
      List<Long> shape = new ArrayList<>();
      for (long s : a.shape()) {
        shape.add(s);
      }
      info.put("shape", shape);
      long end = offset + a.byteSize();
      info.put("data_offsets", List.of(offset, end));
      root.put(name, info);
      offset = end;
    }
    byte[] json = Json.write(root).getBytes(StandardCharsets.UTF_8);
    int padded = (json.length + 7) / 8 * 8;
    byte[] out = new byte[padded];
    System.arraycopy(json, 0, out, 0, json.length);
    for (int i = json.length; i < padded; i++) {
      out[i] = ' ';
    }
    return out;
  }

  private static void writeTensor(FileChannel ch, NdArray a, MemorySegment staging) throws IOException {
    int es = a.dtype().byteSize();
    MemorySegment src = a.segment();
    if (a.isContiguous()) {
      long start = a.offset() * es;
      long len = a.byteSize();
      for (long done = 0; done < len; done += MAX_WRITE) {
        writeFully(ch, src.asSlice(start + done, Math.min(MAX_WRITE, len - done)).asByteBuffer());
      }
      return;
    }
    // Strided: gather elements into the staging buffer in row-major order, flushing when it fills.
    long[] fill = {0};
    IOException[] failure = {null};
    StridedWalk.forEach(
        a.shape(),
        a.strides(),
        a.offset(),
        e -> {
          if (failure[0] != null) {
            return;
          }
          MemorySegment.copy(src, e * es, staging, fill[0], es);
          fill[0] += es;
          if (fill[0] + es > staging.byteSize()) {
            try {
              writeFully(ch, staging.asSlice(0, fill[0]).asByteBuffer());
            } catch (IOException ex) {
              failure[0] = ex;
            }
            fill[0] = 0;
          }
        });
    if (failure[0] != null) {
      throw failure[0];
    }
    if (fill[0] > 0) {
      writeFully(ch, staging.asSlice(0, fill[0]).asByteBuffer());
    }
  }

  private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
    while (b.hasRemaining()) {
      ch.write(b);
    }
  }
}
