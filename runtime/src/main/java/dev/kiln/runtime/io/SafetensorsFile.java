package dev.kiln.runtime.io;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Storage;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * An open safetensors checkpoint: one file, or the shards of a {@code model.safetensors.index.json}, memory-mapped.
 *
 * <p><b>Zero copy.</b> {@link #get} returns a read-only {@link NdArray} over the mapped file bytes; nothing is read
 * until an element is touched, so opening a 100 GB checkpoint costs only its header. The views are valid until
 * {@link #close()}, which unmaps the file; touching a view afterwards throws {@link IllegalStateException} (never a
 * crash). Copy a tensor ({@link NdArray#copy()}) to keep it past {@code close}.
 *
 * <p>The whole header is validated when the file is opened (see {@link Safetensors} for the rules), so every
 * {@code get} afterwards succeeds.
 */
public final class SafetensorsFile implements AutoCloseable {
  /** Largest header the reference implementation accepts; a larger length field means a corrupt file. */
  public static final long MAX_HEADER_BYTES = 100_000_000L;

  /** Dtypes the safetensors spec defines that Kiln has no {@link DType} for. */
  private static final Set<String> SPEC_ONLY_DTYPES =
      Set.of("I8", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64");

  /**
   * Where one tensor lives: its dtype and shape, and its byte range {@code [begin, end)} within the data section of
   * {@code file} (the data section starts right after the header).
   */
  public record TensorInfo(String name, DType dtype, long[] shape, long begin, long end, Path file) {
    public TensorInfo {
      shape = shape.clone();
    }

    @Override
    public long[] shape() {
      return shape.clone();
    }

    public long byteSize() {
      return end - begin;
    }

    @Override
    public String toString() {
      return name + ": " + dtype + Arrays.toString(shape) + " bytes [" + begin + ", " + end + ") of " + file;
    }
  }

  private record Entry(TensorInfo info, NdArray array) {}

  private final Arena arena;
  private final Map<String, Entry> tensors;
  private final Map<String, String> metadata;

  private SafetensorsFile(Arena arena, Map<String, Entry> tensors, Map<String, String> metadata) {
    this.arena = arena;
    this.tensors = tensors;
    this.metadata = Collections.unmodifiableMap(metadata);
  }

  /**
   * Opens a checkpoint: a {@code .safetensors} file, a {@code *.index.json} of shards, or a folder holding
   * {@code model.safetensors.index.json} or {@code model.safetensors}.
   */
  public static SafetensorsFile open(Path path) throws IOException {
    if (Files.isDirectory(path)) {
      Path index = path.resolve("model.safetensors.index.json");
      Path single = path.resolve("model.safetensors");
      if (Files.isRegularFile(index)) {
        return openSharded(index);
      }
      if (Files.isRegularFile(single)) {
        return openSingle(single);
      }
      throw new SafetensorsException(
          "folder " + path + " holds neither model.safetensors.index.json nor model.safetensors");
    }
    if (path.getFileName() != null && path.getFileName().toString().endsWith(".index.json")) {
      return openSharded(path);
    }
    return openSingle(path);
  }

  private static SafetensorsFile openSingle(Path file) throws IOException {
    Arena arena = Arena.ofShared();
    try {
      MemorySegment whole = map(file, arena);
      Map<String, Entry> entries = new LinkedHashMap<>();
      Map<String, String> meta = parse(whole, file, entries);
      return new SafetensorsFile(arena, entries, meta);
    } catch (IOException | RuntimeException | Error e) {
      arena.close();
      throw e;
    }
  }

  /**
   * Reads a safetensors image already in memory (a download buffer, a test fixture). The views alias
   * {@code bytes}; the caller keeps it alive. {@code sourceName} appears in error messages.
   */
  public static SafetensorsFile of(MemorySegment bytes, String sourceName) throws SafetensorsException {
    Map<String, Entry> entries = new LinkedHashMap<>();
    Map<String, String> meta = parse(bytes, Path.of(sourceName), entries);
    return new SafetensorsFile(null, entries, meta);
  }

  private static MemorySegment map(Path file, Arena arena) throws IOException {
    try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
      return ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
    }
  }

  @SuppressWarnings("unchecked")
  private static SafetensorsFile openSharded(Path index) throws IOException {
    Object root;
    try {
      root = Json.parse(Files.readString(index, StandardCharsets.UTF_8));
    } catch (Json.ParseException e) {
      throw new SafetensorsException("index " + index + " is not valid JSON: " + e.getMessage(), e);
    } catch (java.nio.charset.MalformedInputException e) {
      throw new SafetensorsException("index " + index + " is not valid UTF-8", e);
    }
    if (!(root instanceof Map<?, ?> rootMap)) {
      throw new SafetensorsException("index " + index + " is not a JSON object");
    }
    Object wm = rootMap.get("weight_map");
    if (!(wm instanceof Map<?, ?> weightMap)) {
      throw new SafetensorsException(
          "index " + index + " has no \"weight_map\" object (tensor name -> shard file name)");
    }
    Map<String, String> meta = new LinkedHashMap<>();
    Object m = rootMap.get("metadata");
    if (m != null) {
      if (!(m instanceof Map<?, ?> mm)) {
        throw new SafetensorsException("index " + index + ": \"metadata\" is not an object");
      }
      // Hugging Face indexes hold numbers here ("total_size"); they are kept as their JSON text.
      for (Map.Entry<?, ?> e : mm.entrySet()) {
        meta.put((String) e.getKey(), e.getValue() instanceof String s ? s : Json.write(e.getValue()));
      }
    }
    Path dir = index.toAbsolutePath().getParent();
    Map<String, List<String>> byShard = new LinkedHashMap<>();
    for (Map.Entry<?, ?> e : weightMap.entrySet()) {
      String name = (String) e.getKey();
      if (!(e.getValue() instanceof String shard)) {
        throw new SafetensorsException(
            "index " + index + ": weight_map entry for tensor \"" + name + "\" is not a file name string");
      }
      if (shard.isEmpty() || shard.contains("/") || shard.contains("\\") || shard.equals("..") || shard.equals(".")) {
        throw new SafetensorsException(
            "index " + index + ": shard \"" + shard + "\" of tensor \"" + name
                + "\" must be a plain file name in the index's folder");
      }
      byShard.computeIfAbsent(shard, k -> new ArrayList<>()).add(name);
    }
    Arena arena = Arena.ofShared();
    try {
      Map<String, Entry> all = new LinkedHashMap<>();
      for (Map.Entry<String, List<String>> s : byShard.entrySet()) {
        Path shardPath = dir.resolve(s.getKey());
        if (!Files.isRegularFile(shardPath)) {
          throw new SafetensorsException(
              "index " + index + " names shard " + s.getKey() + " (for tensor \"" + s.getValue().get(0)
                  + "\") but " + shardPath + " does not exist");
        }
        Map<String, Entry> inShard = new LinkedHashMap<>();
        parse(map(shardPath, arena), shardPath, inShard);
        for (String name : s.getValue()) {
          Entry en = inShard.remove(name);
          if (en == null) {
            throw new SafetensorsException(
                "index " + index + " places tensor \"" + name + "\" in " + shardPath + ", which does not hold it");
          }
          all.put(name, en);
        }
        if (!inShard.isEmpty()) {
          throw new SafetensorsException(
              "shard " + shardPath + " holds tensor \"" + inShard.keySet().iterator().next()
                  + "\" that index " + index + " does not list for this shard (stale or mismatched index)");
        }
      }
      // Keep the weight_map's order for names().
      Map<String, Entry> ordered = new LinkedHashMap<>();
      for (Object name : weightMap.keySet()) {
        ordered.put((String) name, all.get((String) name));
      }
      return new SafetensorsFile(arena, ordered, meta);
    } catch (IOException | RuntimeException | Error e) {
      arena.close();
      throw e;
    }
  }

  // ---------------------------------------------------------------- header parsing

  /** Validates the whole image and fills {@code out} with views in data-offset order; returns the metadata. */
  private static Map<String, String> parse(MemorySegment whole, Path file, Map<String, Entry> out)
      throws SafetensorsException {
    long size = whole.byteSize();
    if (size < 8) {
      throw new SafetensorsException(
          "safetensors file " + file + " is " + size + " bytes long, shorter than its 8-byte header length field"
              + " (truncated, or not a safetensors file)");
    }
    long n = whole.get(dev.kiln.runtime.tensor.Layouts.I64, 0);
    if (n < 0 || n > MAX_HEADER_BYTES) {
      throw new SafetensorsException(
          "safetensors file " + file + " declares a header of " + Long.toUnsignedString(n) + " bytes, more than the "
              + MAX_HEADER_BYTES + "-byte limit (corrupt length field, or not a safetensors file)");
    }
    if (n > size - 8) {
      throw new SafetensorsException(
          "safetensors file " + file + " declares a " + n + "-byte header but only " + (size - 8)
              + " bytes follow the length field (truncated file)");
    }
    byte[] headerBytes = whole.asSlice(8, n).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
    String text;
    try {
      text =
          StandardCharsets.UTF_8
              .newDecoder()
              .onMalformedInput(CodingErrorAction.REPORT)
              .onUnmappableCharacter(CodingErrorAction.REPORT)
              .decode(java.nio.ByteBuffer.wrap(headerBytes))
              .toString();
    } catch (CharacterCodingException e) {
      throw new SafetensorsException("safetensors file " + file + ": header is not valid UTF-8", e);
    }
    Object root;
    try {
      root = Json.parse(text);
    } catch (Json.ParseException e) {
      String what = e.getMessage().startsWith("duplicate key") ? "header names a tensor twice: " : "header is not valid JSON: ";
      throw new SafetensorsException("safetensors file " + file + ": " + what + e.getMessage(), e);
    }
    if (!(root instanceof Map<?, ?> header)) {
      throw new SafetensorsException(
          "safetensors file " + file + ": header is JSON but not an object (a map of tensor name -> entry)");
    }
    long dataStart = 8 + n;
    long dataSize = size - dataStart;
    Map<String, String> meta = new LinkedHashMap<>();
    List<TensorInfo> infos = new ArrayList<>();
    for (Map.Entry<?, ?> e : header.entrySet()) {
      String name = (String) e.getKey();
      if (name.equals("__metadata__")) {
        readMetadata(e.getValue(), file, meta);
      } else {
        infos.add(readEntry(name, e.getValue(), file, dataSize));
      }
    }
    infos.sort((a, b) -> a.begin != b.begin ? Long.compare(a.begin, b.begin) : Long.compare(a.end, b.end));
    long expect = 0;
    TensorInfo prev = null;
    for (TensorInfo t : infos) {
      if (t.begin < expect) {
        throw new SafetensorsException(
            "safetensors file " + file + ": tensor \"" + t.name + "\" (bytes [" + t.begin + ", " + t.end
                + ")) overlaps tensor \"" + prev.name + "\" (bytes [" + prev.begin + ", " + prev.end + "))");
      }
      if (t.begin > expect) {
        throw new SafetensorsException(
            "safetensors file " + file + ": bytes [" + expect + ", " + t.begin + ") of the data section before tensor \""
                + t.name + "\" belong to no tensor; the format requires tensors to be packed without holes");
      }
      expect = t.end;
      prev = t;
    }
    if (expect != dataSize) {
      throw new SafetensorsException(
          "safetensors file " + file + ": the data section holds " + dataSize + " bytes but the tensors cover only "
              + expect + " (trailing bytes, or a tensor missing from the header)");
    }
    for (TensorInfo t : infos) {
      MemorySegment slice = whole.asSlice(dataStart + t.begin, t.end - t.begin);
      out.put(t.name, new Entry(t, NdArray.of(Storage.wrap(slice), t.dtype, t.shape)));
    }
    return meta;
  }

  private static void readMetadata(Object value, Path file, Map<String, String> meta) throws SafetensorsException {
    if (value == null) {
      return;
    }
    if (!(value instanceof Map<?, ?> m)) {
      throw new SafetensorsException(
          "safetensors file " + file + ": \"__metadata__\" must be an object of string values, found " + kind(value));
    }
    for (Map.Entry<?, ?> e : m.entrySet()) {
      if (!(e.getValue() instanceof String s)) {
        throw new SafetensorsException(
            "safetensors file " + file + ": metadata value for key \"" + e.getKey() + "\" is " + kind(e.getValue())
                + "; safetensors metadata values must be strings");
      }
      meta.put((String) e.getKey(), s);
    }
  }

  private static TensorInfo readEntry(String name, Object value, Path file, long dataSize)
      throws SafetensorsException {
    String where = "safetensors file " + file + ", tensor \"" + name + "\": ";
    if (!(value instanceof Map<?, ?> m)) {
      throw new SafetensorsException(where + "entry must be an object with dtype, shape and data_offsets, found "
          + kind(value));
    }
    for (Object k : m.keySet()) {
      if (!k.equals("dtype") && !k.equals("shape") && !k.equals("data_offsets")) {
        throw new SafetensorsException(where + "unknown field \"" + k + "\" (expected dtype, shape, data_offsets)");
      }
    }
    if (!(m.get("dtype") instanceof String dtypeName)) {
      throw new SafetensorsException(where + "missing or non-string \"dtype\"");
    }
    DType dtype = DType.fromSafetensors(dtypeName);
    if (dtype == null) {
      if (SPEC_ONLY_DTYPES.contains(dtypeName)) {
        throw new SafetensorsException(
            "unsupported dtype " + dtypeName + " for tensor \"" + name + "\" in file " + file
                + " (Kiln reads F32, F64, BF16, F16, I32, I64, U8, BOOL; convert the tensor before saving)");
      }
      throw new SafetensorsException(where + "unknown dtype \"" + dtypeName + "\"");
    }
    long[] shape = longList(m.get("shape"), "shape", where, -1);
    long[] offsets = longList(m.get("data_offsets"), "data_offsets", where, 2);
    long begin = offsets[0];
    long end = offsets[1];
    if (begin > end) {
      throw new SafetensorsException(
          where + "data_offsets [" + begin + ", " + end + "] end before they begin");
    }
    if (end > dataSize) {
      throw new SafetensorsException(
          where + "data_offsets [" + begin + ", " + end + "] run past the end of the data section (" + dataSize
              + " bytes)");
    }
    long bytes;
    try {
      bytes = Math.multiplyExact(NdArray.numel(shape), dtype.byteSize());
    } catch (ArithmeticException e) {
      throw new SafetensorsException(where + "shape " + Arrays.toString(shape) + " overflows 64-bit byte counts");
    }
    if (bytes != end - begin) {
      throw new SafetensorsException(
          where + "shape " + Arrays.toString(shape) + " of " + dtype + " needs " + bytes + " bytes but data_offsets ["
              + begin + ", " + end + "] span " + (end - begin));
    }
    return new TensorInfo(name, dtype, shape, begin, end, file);
  }

  /** A JSON array of non-negative integers ({@code length} of them, unless -1). */
  private static long[] longList(Object v, String field, String where, int length) throws SafetensorsException {
    if (!(v instanceof List<?> list)) {
      throw new SafetensorsException(where + "missing or non-array \"" + field + "\"");
    }
    if (length >= 0 && list.size() != length) {
      throw new SafetensorsException(where + "\"" + field + "\" must hold " + length + " integers, found " + list.size());
    }
    long[] out = new long[list.size()];
    for (int i = 0; i < out.length; i++) {
      if (!(list.get(i) instanceof Long x) || x < 0) {
        throw new SafetensorsException(
            where + "\"" + field + "\" element " + i + " is " + list.get(i) + ", not a non-negative integer");
      }
      out[i] = x;
    }
    return out;
  }

  private static String kind(Object v) {
    return switch (v) {
      case null -> "null";
      case String s -> "a string";
      case Map<?, ?> m -> "an object";
      case List<?> l -> "an array";
      case Boolean b -> "a boolean";
      default -> "a number";
    };
  }

  // ---------------------------------------------------------------- access

  /** Tensor names: in data-offset order for one file, in {@code weight_map} order for shards. */
  public List<String> names() {
    return List.copyOf(tensors.keySet());
  }

  public boolean contains(String name) {
    return tensors.containsKey(name);
  }

  /** The {@code __metadata__} map (for shards, the index's {@code metadata}); empty when there is none. */
  public Map<String, String> metadata() {
    return metadata;
  }

  /** A read-only, zero-copy view of the tensor, valid until {@link #close()}. */
  public NdArray get(String name) {
    return entry(name).array;
  }

  public TensorInfo info(String name) {
    return entry(name).info;
  }

  private Entry entry(String name) {
    Entry e = tensors.get(name);
    if (e == null) {
      throw new IllegalArgumentException(
          "no tensor \"" + name + "\" in this checkpoint (" + tensors.size() + " tensors"
              + (tensors.isEmpty() ? "" : ", e.g. \"" + tensors.keySet().iterator().next() + "\"") + ")");
    }
    return e;
  }

  /** Unmaps the file(s); views from {@link #get} must not be used afterwards. */
  @Override
  public void close() {
    if (arena != null && arena.scope().isAlive()) {
      arena.close();
    }
  }
}
