package dev.kiln.runtime.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SafetensorsTest {
  @TempDir Path dir;

  /** A safetensors image: length field, header text (padded by the caller if wanted), data. */
  static byte[] image(String header, byte[] data) {
    byte[] h = header.getBytes(StandardCharsets.UTF_8);
    ByteBuffer b = ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
    b.putLong(h.length).put(h).put(data);
    return b.array();
  }

  /**
   * The file the reference implementation writes for {"x": float32 [1.0, 2.0]}, spelled out byte by byte from the
   * spec: u64 LE 56, the 54-byte JSON header padded with 2 spaces to a multiple of 8, then two LE floats.
   * (torch/safetensors are not installed here, so this fixture is derived by hand, not dumped.)
   */
  static final byte[] FIXTURE_X = concat(
      new byte[] {56, 0, 0, 0, 0, 0, 0, 0},
      "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ".getBytes(StandardCharsets.US_ASCII),
      new byte[] {0, 0, (byte) 0x80, 0x3f, 0, 0, 0, 0x40});

  /** The same with metadata {"format": "pt"}: 85 header bytes padded with 3 spaces to 88. */
  static final byte[] FIXTURE_X_META = concat(
      new byte[] {88, 0, 0, 0, 0, 0, 0, 0},
      ("{\"__metadata__\":{\"format\":\"pt\"},\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}   ")
          .getBytes(StandardCharsets.US_ASCII),
      new byte[] {0, 0, (byte) 0x80, 0x3f, 0, 0, 0, 0x40});

  static byte[] concat(byte[]... parts) {
    int n = 0;
    for (byte[] p : parts) {
      n += p.length;
    }
    byte[] out = new byte[n];
    int at = 0;
    for (byte[] p : parts) {
      System.arraycopy(p, 0, out, at, p.length);
      at += p.length;
    }
    return out;
  }

  @Test
  void writesTheReferenceBytesExactly() throws IOException {
    Path p = dir.resolve("x.safetensors");
    Safetensors.write(p, Map.of("x", NdArray.fromFloats(new float[] {1f, 2f})), Map.of());
    assertArrayEquals(FIXTURE_X, Files.readAllBytes(p));
    Path q = dir.resolve("xm.safetensors");
    Safetensors.write(q, Map.of("x", NdArray.fromFloats(new float[] {1f, 2f})), Map.of("format", "pt"));
    assertArrayEquals(FIXTURE_X_META, Files.readAllBytes(q));
  }

  @Test
  void readsTheReferenceBytes() throws IOException {
    Path p = dir.resolve("x.safetensors");
    Files.write(p, FIXTURE_X_META);
    try (SafetensorsFile f = Safetensors.open(p)) {
      assertEquals(List.of("x"), f.names());
      assertEquals(Map.of("format", "pt"), f.metadata());
      NdArray x = f.get("x");
      assertEquals(DType.F32, x.dtype());
      assertArrayEquals(new long[] {2}, x.shape());
      assertArrayEquals(new float[] {1f, 2f}, x.toFloatArray()); // exact: the bytes are the floats
      SafetensorsFile.TensorInfo info = f.info("x");
      assertEquals(0, info.begin());
      assertEquals(8, info.end());
    }
  }

  /** Random arrays of every dtype, 0-d, empty and strided sources; the bits must come back unchanged. */
  @Test
  void roundTripsEveryDtypeBitExactly() throws IOException {
    Random rnd = new Random(7);
    for (int trial = 0; trial < 20; trial++) {
      Map<String, NdArray> in = new LinkedHashMap<>();
      int k = 0;
      for (DType t : DType.values()) {
        int rank = rnd.nextInt(4);
        long[] shape = new long[rank];
        for (int d = 0; d < rank; d++) {
          shape[d] = rnd.nextInt(5); // includes 0: empty tensors
        }
        NdArray a = randomArray(t, shape, rnd);
        if (rank >= 2 && rnd.nextBoolean()) {
          a = randomArray(t, new long[] {shape[1], shape[0]}, rnd).transpose(0, 1); // strided source
        }
        in.put("t" + (k++) + "." + t.name().toLowerCase(), a);
      }
      Path p = dir.resolve("r" + trial + ".safetensors");
      Safetensors.write(p, in, Map.of("trial", Integer.toString(trial)));
      long h = ByteBuffer.wrap(Files.readAllBytes(p), 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
      assertEquals(0, h % 8, "header padded to a multiple of 8");
      try (SafetensorsFile f = Safetensors.open(p)) {
        assertEquals(List.copyOf(in.keySet()), f.names());
        for (Map.Entry<String, NdArray> e : in.entrySet()) {
          NdArray got = f.get(e.getKey());
          assertEquals(e.getValue().dtype(), got.dtype());
          assertArrayEquals(e.getValue().shape(), got.shape());
          assertArrayEquals(bytesOf(e.getValue()), bytesOf(got), e.getKey());
        }
      }
    }
  }

  static NdArray randomArray(DType t, long[] shape, Random rnd) {
    NdArray a = NdArray.zeros(t, shape);
    MemorySegment s = a.segment();
    for (long i = 0; i < s.byteSize(); i++) {
      byte b = (byte) rnd.nextInt();
      s.set(Layouts.U8, i, t == DType.BOOL ? (byte) (b & 1) : b);
    }
    return a;
  }

  /** Row-major element bytes of any (strided) array. */
  static byte[] bytesOf(NdArray a) {
    // Gathers raw bytes itself: NdArray.contiguous() converts strided copies through double, which
    // canonicalises NaN payloads, so it cannot serve as a bit-exact oracle.
    int es = a.dtype().byteSize();
    byte[] out = new byte[(int) a.byteSize()];
    int[] at = {0};
    dev.kiln.runtime.tensor.StridedWalk.forEach(a.shape(), a.strides(), a.offset(), e -> {
      MemorySegment.copy(a.segment(), Layouts.U8, e * es, out, at[0], es);
      at[0] += es;
    });
    return out;
  }

  @Test
  void viewsAliasTheMappedFile() throws IOException {
    Path p = dir.resolve("m.safetensors");
    Map<String, NdArray> in = new LinkedHashMap<>();
    in.put("a", NdArray.fromFloats(new float[] {1, 2, 3}));
    in.put("b", NdArray.fromLongs(new long[] {4, 5}));
    Safetensors.write(p, in, null);
    long headerLen = ByteBuffer.wrap(Files.readAllBytes(p), 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
    try (SafetensorsFile f = Safetensors.open(p)) {
      NdArray a = f.get("a");
      NdArray b = f.get("b");
      assertTrue(a.storage().isReadOnly(), "mapped read-only");
      // Both views sit in one mapping at exactly the file offsets: b starts 12 bytes after a.
      assertEquals(12, b.segment().address() - a.segment().address());
      assertEquals(8 + headerLen + 12, f.info("b").begin() + 8 + headerLen);
      assertTrue(a.segment().isMapped(), "storage is the file mapping, not a copy");
    }
  }

  /**
   * A 3 GiB tensor (sparse on disk, so cheap) opens under a 2 GiB heap: reading it cannot have copied it. The last
   * byte, written by hand, must be readable through the view.
   */
  @Test
  void opensATensorLargerThanTheHeap() throws IOException {
    long n = 3L << 30;
    assertTrue(Runtime.getRuntime().maxMemory() < n, "test assumes a heap below 3 GiB");
    String header = "{\"big\":{\"dtype\":\"U8\",\"shape\":[" + n + "],\"data_offsets\":[0," + n + "]}}";
    Path p = dir.resolve("big.safetensors");
    byte[] head = image(header, new byte[0]);
    try (RandomAccessFile raf = new RandomAccessFile(p.toFile(), "rw")) {
      raf.write(head);
      raf.setLength(head.length + n);
      raf.seek(head.length + n - 1);
      raf.write(42);
    }
    try (SafetensorsFile f = Safetensors.open(p)) {
      NdArray big = f.get("big");
      assertEquals(n, big.numel());
      assertEquals(42, big.getLong(n - 1));
      assertEquals(0, big.getLong(n / 2));
    }
  }

  @Test
  void viewsFailCleanlyAfterClose() throws IOException {
    Path p = dir.resolve("c.safetensors");
    Files.write(p, FIXTURE_X);
    NdArray x;
    try (SafetensorsFile f = Safetensors.open(p)) {
      x = f.get("x");
    }
    assertThrows(IllegalStateException.class, () -> x.getDouble(0));
  }

  @Test
  void overwritesAFileItsTensorsAreMappedFrom() throws IOException {
    Path p = dir.resolve("self.safetensors");
    Files.write(p, FIXTURE_X);
    try (SafetensorsFile f = Safetensors.open(p)) {
      Map<String, NdArray> out = new LinkedHashMap<>();
      out.put("x", f.get("x"));
      out.put("y", NdArray.fromInts(new int[] {7}));
      Safetensors.write(p, out, null);
    }
    try (SafetensorsFile f = Safetensors.open(p)) {
      assertArrayEquals(new float[] {1, 2}, f.get("x").toFloatArray());
      assertArrayEquals(new int[] {7}, f.get("y").toIntArray());
    }
  }

  @Test
  void readsShardedCheckpoints() throws IOException {
    Safetensors.write(dir.resolve("model-00001-of-00002.safetensors"),
        ordered("a", NdArray.fromFloats(new float[] {1, 2}), "b", NdArray.fromInts(new int[] {3})), null);
    Safetensors.write(dir.resolve("model-00002-of-00002.safetensors"),
        ordered("c", NdArray.fromDoubles(new double[] {4.5})), null);
    AtomicFiles.writeString(dir.resolve("model.safetensors.index.json"),
        "{\"metadata\": {\"total_size\": 20}, \"weight_map\": {\"c\": \"model-00002-of-00002.safetensors\","
            + " \"a\": \"model-00001-of-00002.safetensors\", \"b\": \"model-00001-of-00002.safetensors\"}}");
    try (SafetensorsFile f = Safetensors.open(dir)) {
      assertEquals(List.of("c", "a", "b"), f.names());
      assertEquals("20", f.metadata().get("total_size"));
      assertArrayEquals(new float[] {1, 2}, f.get("a").toFloatArray());
      assertArrayEquals(new int[] {3}, f.get("b").toIntArray());
      assertEquals(4.5, f.get("c").item());
      assertTrue(f.info("c").file().endsWith("model-00002-of-00002.safetensors"));
    }
  }

  @Test
  void rejectsInconsistentShardIndexes() throws IOException {
    Safetensors.write(dir.resolve("s1.safetensors"),
        ordered("a", NdArray.fromFloats(new float[] {1}), "b", NdArray.fromFloats(new float[] {2})), null);
    Path idx = dir.resolve("x.index.json");
    assertShardError(idx, "{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"s1.safetensors\", \"z\": \"s1.safetensors\"}}",
        "places tensor \"z\"");
    assertShardError(idx, "{\"weight_map\": {\"a\": \"s1.safetensors\"}}", "does not list");
    assertShardError(idx, "{\"weight_map\": {\"a\": \"missing.safetensors\"}}", "does not exist");
    assertShardError(idx, "{\"weight_map\": {\"a\": \"../s1.safetensors\"}}", "plain file name");
    assertShardError(idx, "{\"weight_map\": {\"a\": 3}}", "not a file name string");
    assertShardError(idx, "{\"metadata\": {}}", "no \"weight_map\"");
    assertShardError(idx, "[1]", "not a JSON object");
    assertShardError(idx, "{\"weight_map\": ", "not valid JSON");
  }

  private void assertShardError(Path idx, String json, String expected) throws IOException {
    AtomicFiles.writeString(idx, json);
    SafetensorsException e = assertThrows(SafetensorsException.class, () -> Safetensors.open(idx).close());
    assertTrue(e.getMessage().contains(expected), e.getMessage());
    assertTrue(e.getMessage().contains(idx.toString()) || e.getMessage().contains("s1.safetensors"), e.getMessage());
  }

  static Map<String, NdArray> ordered(Object... kv) {
    Map<String, NdArray> m = new LinkedHashMap<>();
    for (int i = 0; i < kv.length; i += 2) {
      m.put((String) kv[i], (NdArray) kv[i + 1]);
    }
    return m;
  }

  // ---------------------------------------------------------------- validation

  private static final String OK_ENTRY = "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";

  /** Each malformed image must fail with a message containing every expected fragment. */
  @Test
  void rejectsMalformedFilesWithClearMessages() {
    byte[] data8 = new byte[8];
    expectError(new byte[5], "shorter than its 8-byte header length");
    expectError(concat(longLe(1000), "{}".getBytes()), "truncated");
    expectError(concat(longLe(-1), new byte[16]), "more than the 100000000-byte limit");
    expectError(concat(longLe(200_000_000), new byte[16]), "limit");
    expectError(image("{\"x\":", data8), "not valid JSON");
    expectError(image("[1,2]", data8), "not an object");
    expectError(concat(longLe(2), new byte[] {(byte) 0xff, (byte) 0xfe}), "not valid UTF-8");
    expectError(image("{\"x\":" + OK_ENTRY + ",\"x\":" + OK_ENTRY + "}", data8), "names a tensor twice", "\"x\"");
    expectError(image("{\"x\":3}", data8), "tensor \"x\"", "must be an object");
    expectError(image("{\"x\":{\"shape\":[2],\"data_offsets\":[0,8]}}", data8), "tensor \"x\"", "dtype");
    expectError(image("{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", data8), "tensor \"x\"", "\"shape\"");
    expectError(image("{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", data8), "tensor \"x\"", "\"data_offsets\"");
    expectError(image("{\"x\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", data8), "not a non-negative integer");
    expectError(image("{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", data8), "not a non-negative integer");
    expectError(image("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", data8), "must hold 2 integers");
    expectError(image("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1}}", data8), "unknown field \"extra\"");
    expectError(image("{\"x\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", data8), "unknown dtype \"Q7\"");
    expectError(image("{\"w\":{\"dtype\":\"I8\",\"shape\":[8],\"data_offsets\":[0,8]}}", data8),
        "unsupported dtype I8 for tensor \"w\" in file mem.safetensors");
    expectError(image("{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", data8), "needs 12 bytes", "span 8");
    expectError(image("{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data8), "run past the end of the data section");
    expectError(image("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", data8), "end before they begin");
    expectError(image("{\"x\":{\"dtype\":\"F32\",\"shape\":[99999999999,99999999999],\"data_offsets\":[0,8]}}", data8), "overflow");
    expectError(image("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        + "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data8), "\"b\"", "overlaps tensor \"a\"");
    expectError(image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data8), "belong to no tensor", "\"a\"");
    expectError(image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data8), "cover only 4");
    expectError(image("{\"__metadata__\":{\"k\":1},\"x\":" + OK_ENTRY + "}", data8), "metadata value for key \"k\"", "must be strings");
    expectError(image("{\"__metadata__\":[],\"x\":" + OK_ENTRY + "}", data8), "\"__metadata__\" must be an object");
  }

  private static byte[] longLe(long v) {
    return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array();
  }

  private static void expectError(byte[] image, String... fragments) {
    SafetensorsException e =
        assertThrows(SafetensorsException.class, () -> SafetensorsFile.of(MemorySegment.ofArray(image), "mem.safetensors"));
    assertTrue(e.getMessage().contains("mem.safetensors"), e.getMessage());
    for (String f : fragments) {
      assertTrue(e.getMessage().contains(f), "expected \"" + f + "\" in: " + e.getMessage());
    }
  }

  @Test
  void acceptsNullMetadataAndEmptyTensors() throws IOException {
    byte[] img = image("{\"__metadata__\":null,\"e\":{\"dtype\":\"BF16\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
        + "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}", longLe(-5));
    SafetensorsFile f = SafetensorsFile.of(MemorySegment.ofArray(img), "mem");
    assertEquals(Map.of(), f.metadata());
    assertEquals(0, f.get("e").numel());
    assertEquals(-5, f.get("s").getLong());
  }

  @Test
  void writerRejectsReservedNames() {
    SafetensorsException e = assertThrows(SafetensorsException.class,
        () -> Safetensors.write(dir.resolve("bad.safetensors"), Map.of("__metadata__", NdArray.fromFloats(new float[] {1})), null));
    assertTrue(e.getMessage().contains("reserved"), e.getMessage());
    assertTrue(Files.notExists(dir.resolve("bad.safetensors")));
  }

  // ---------------------------------------------------------------- fuzz

  /**
   * Random bytes and mutations of a valid file (bit flips, truncations, byte edits inside the header, length-field
   * edits): each must parse into tensors that lie inside the data and partition it, or throw SafetensorsException.
   * Any other exception type fails the test. Seeded, so a failure reproduces.
   */
  @Test
  void fuzzNeverThrowsAnythingElse() throws IOException {
    Random rnd = new Random(20240611L);
    Map<String, NdArray> in = new LinkedHashMap<>();
    in.put("w", randomArray(DType.F32, new long[] {3, 2}, rnd));
    in.put("b", randomArray(DType.BF16, new long[] {5}, rnd));
    in.put("i", randomArray(DType.I64, new long[] {}, rnd));
    in.put("e", randomArray(DType.U8, new long[] {0}, rnd));
    Path p = dir.resolve("valid.safetensors");
    Safetensors.write(p, in, Map.of("format", "pt"));
    byte[] valid = Files.readAllBytes(p);
    int parsed = 0;
    int rejected = 0;
    for (int c = 0; c < 4000; c++) {
      byte[] img = mutate(valid, rnd, c % 6);
      try {
        SafetensorsFile f = SafetensorsFile.of(MemorySegment.ofArray(img), "fuzz" + c);
        long headerEnd = 8 + ByteBuffer.wrap(img, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        long covered = 0;
        for (String name : f.names()) {
          NdArray a = f.get(name);
          SafetensorsFile.TensorInfo info = f.info(name);
          assertEquals(info.end() - info.begin(), a.byteSize());
          assertEquals(covered, info.begin(), "packed in order");
          covered = info.end();
          if (a.numel() > 0) {
            a.getDouble(new long[a.rank()]); // first and last element must be readable
            long[] last = a.shape();
            for (int d = 0; d < last.length; d++) {
              last[d]--;
            }
            a.getDouble(last);
          }
        }
        assertEquals(img.length - headerEnd, covered, "case " + c);
        parsed++;
      } catch (SafetensorsException expected) {
        rejected++;
      } catch (RuntimeException | Error other) {
        throw new AssertionError("case " + c + " (mutation " + c % 6 + ") threw " + other, other);
      }
    }
    assertTrue(parsed > 100 && rejected > 100, "both outcomes exercised: parsed=" + parsed + " rejected=" + rejected);
  }

  private static byte[] mutate(byte[] valid, Random rnd, int kind) {
    byte[] img = valid.clone();
    int headerLen = (int) ByteBuffer.wrap(valid, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
    switch (kind) {
      case 0 -> { // pure noise, sometimes with a plausible length field
        img = new byte[rnd.nextInt(200)];
        rnd.nextBytes(img);
        if (img.length >= 8 && rnd.nextBoolean()) {
          System.arraycopy(longLe(rnd.nextInt(img.length)), 0, img, 0, 8);
        }
      }
      case 1 -> { // bit flips anywhere (data flips keep the file valid)
        for (int k = 1 + rnd.nextInt(3); k > 0; k--) {
          int at = rnd.nextInt(img.length);
          img[at] ^= (byte) (1 << rnd.nextInt(8));
        }
      }
      case 2 -> img = java.util.Arrays.copyOf(img, rnd.nextInt(img.length)); // truncation
      case 3 -> { // a header byte replaced by a JSON-significant character
        String specials = "{}[]\",:0123456789-. e\\";
        img[8 + rnd.nextInt(headerLen)] = (byte) specials.charAt(rnd.nextInt(specials.length()));
      }
      case 4 -> { // length field edited
        long n = switch (rnd.nextInt(3)) {
          case 0 -> headerLen + rnd.nextInt(17) - 8;
          case 1 -> rnd.nextLong();
          default -> rnd.nextInt(img.length + 10);
        };
        System.arraycopy(longLe(n), 0, img, 0, 8);
      }
      default -> { // digits in the header changed (shapes, offsets)
        String h = new String(img, 8, headerLen, StandardCharsets.UTF_8);
        StringBuilder sb = new StringBuilder(h);
        for (int k = 0; k < sb.length(); k++) {
          if (Character.isDigit(sb.charAt(k)) && rnd.nextInt(8) == 0) {
            sb.setCharAt(k, (char) ('0' + rnd.nextInt(10)));
          }
        }
        byte[] nh = sb.toString().getBytes(StandardCharsets.UTF_8);
        System.arraycopy(nh, 0, img, 8, headerLen);
      }
    }
    return img;
  }
}
