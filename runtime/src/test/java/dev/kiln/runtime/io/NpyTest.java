package dev.kiln.runtime.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The base64 fixtures below were produced once by numpy 2.4.6 ({@code np.save} / {@code np.savez} /
 * {@code np.savez_compressed} into a BytesIO), so they pin Kiln to what numpy really writes and reads.
 */
class NpyTest {
  @TempDir Path dir;

  /** np.arange(6, dtype='<f4').reshape(2, 3) / 4 */
  static final String F4_2x3 = "k05VTVBZAQB2AHsnZGVzY3InOiAnPGY0JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDIsIDMpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAAAAAACAPgAAAD8AAEA/AACAPwAAoD8=";
  /** np.asfortranarray(np.arange(6, dtype='<f8').reshape(2, 3)) */
  static final String F8_FORTRAN_2x3 = "k05VTVBZAQB2AHsnZGVzY3InOiAnPGY4JywgJ2ZvcnRyYW5fb3JkZXInOiBUcnVlLCAnc2hhcGUnOiAoMiwgMyksIH0gICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAAAAAAAAAAAAAAAAAAhAAAAAAAAA8D8AAAAAAAAQQAAAAAAAAABAAAAAAAAAFEA=";
  /** np.array(True) (0-d) */
  static final String B1_SCALAR = "k05VTVBZAQB2AHsnZGVzY3InOiAnfGIxJywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKCksIH0gICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoB";
  /** np.array([-1, 2, -32768], dtype='<i2') */
  static final String I2_3 = "k05VTVBZAQB2AHsnZGVzY3InOiAnPGkyJywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDMsKSwgfSAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAr//wIAAIA=";
  /** np.array([4294967295, 7], dtype='<u4') */
  static final String U4_2 = "k05VTVBZAQB2AHsnZGVzY3InOiAnPHU0JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDIsKSwgfSAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAr/////BwAAAA==";
  /** np.array([1.5], dtype='>f4') */
  static final String BE_F4 = "k05VTVBZAQB2AHsnZGVzY3InOiAnPmY0JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDEsKSwgfSAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAo/wAAA";
  /** np.zeros((0, 3), dtype='<f2') */
  static final String F2_EMPTY_0x3 = "k05VTVBZAQB2AHsnZGVzY3InOiAnPGYyJywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDAsIDMpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAo=";
  /** np.savez(f, a=np.array([1, 2, 3], dtype='<i8'), b=np.eye(2, dtype='<f4')) */
  static final String NPZ_STORED = "UEsDBC0AAAAAAAAAIQC8kVWO//////////8FABQAYS5ucHkBABAAmAAAAAAAAACYAAAAAAAAAJNOVU1QWQEAdgB7J2Rlc2NyJzogJzxpOCcsICdmb3J0cmFuX29yZGVyJzogRmFsc2UsICdzaGFwZSc6ICgzLCksIH0gICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAKAQAAAAAAAAACAAAAAAAAAAMAAAAAAAAAUEsDBC0AAAAAAAAAIQDBxqM8//////////8FABQAYi5ucHkBABAAkAAAAAAAAACQAAAAAAAAAJNOVU1QWQEAdgB7J2Rlc2NyJzogJzxmNCcsICdmb3J0cmFuX29yZGVyJzogRmFsc2UsICdzaGFwZSc6ICgyLCAyKSwgfSAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAKAACAPwAAAAAAAAAAAACAP1BLAQItAy0AAAAAAAAAIQC8kVWOmAAAAJgAAAAFAAAAAAAAAAAAAACAAQAAAABhLm5weVBLAQItAy0AAAAAAAAAIQDBxqM8kAAAAJAAAAAFAAAAAAAAAAAAAACAAc8AAABiLm5weVBLBQYAAAAAAgACAGYAAACWAQAAAAA=";
  /** np.savez_compressed with the same arrays (deflated entries) */
  static final String NPZ_DEFLATED = "UEsDBC0AAAAIAAAAIQC8kVWO//////////8FABQAYS5ucHkBABAAmAAAAAAAAABNAAAAAAAAAJvsF+obEMnIUMZQrZ6SWpxcpG6loG6TaaGuo6Cell9UUpSYF59flJIKEndLzClOBYoXZyQWpAL5GsY6mjoKtQoUAC5GBghggtLMUBoAUEsDBC0AAAAIAAAAIQDBxqM8//////////8FABQAYi5ucHkBABAAkAAAAAAAAABPAAAAAAAAAJvsF+obEMnIUMZQrZ6SWpxcpG6loG6TZqKuo6Cell9UUpSYF59flJIKEndLzClOBYoXZyQWpAL5GkY6CkaaOgq1CmQDLgaGBnsGOGiwBwBQSwECLQMtAAAACAAAACEAvJFVjk0AAACYAAAABQAAAAAAAAAAAAAAgAEAAAAAYS5ucHlQSwECLQMtAAAACAAAACEAwcajPE8AAACQAAAABQAAAAAAAAAAAAAAgAGEAAAAYi5ucHlQSwUGAAAAAAIAAgBmAAAACgEAAAAA";

  private Path fixture(String name, String b64) throws IOException {
    Path p = dir.resolve(name);
    Files.write(p, Base64.getDecoder().decode(b64));
    return p;
  }

  @Test
  void writesWhatNumpyWritesByteForByte() throws IOException {
    assertWrites(F4_2x3, NdArray.fromFloats(new float[] {0, .25f, .5f, .75f, 1, 1.25f}, 2, 3));
    assertWrites(B1_SCALAR, NdArray.scalar(DType.BOOL, 1));
    assertWrites(F2_EMPTY_0x3, NdArray.zeros(DType.F16, 0, 3));
    // Fortran input is written in C order, as np.save(np.ascontiguousarray(...)) would: same bytes as the C fixture.
    NdArray fortranView = NdArray.fromFloats(new float[] {0, 1, .25f, 1.25f, .5f, .75f}, 3, 2).transpose(0, 1);
    // [[0, .25, .5], [1, 1.25, .75]]: different values, so compare element order against a C copy.
    Path p = dir.resolve("t.npy");
    Npy.write(p, fortranView);
    assertArrayEquals(new float[] {0, .25f, .5f, 1, 1.25f, .75f}, Npy.read(p).toFloatArray());
  }

  private void assertWrites(String b64, NdArray a) throws IOException {
    Path p = dir.resolve("w.npy");
    Npy.write(p, a);
    assertArrayEquals(Base64.getDecoder().decode(b64), Files.readAllBytes(p));
  }

  @Test
  void readsNumpyFixtures() throws IOException {
    NdArray f4 = Npy.read(fixture("f4.npy", F4_2x3));
    assertEquals(DType.F32, f4.dtype());
    assertArrayEquals(new long[] {2, 3}, f4.shape());
    assertArrayEquals(new float[] {0, .25f, .5f, .75f, 1, 1.25f}, f4.toFloatArray()); // exact binary fractions
    assertTrue(f4.segment().isMapped(), "read is a mapped view, not a copy");

    NdArray f8 = Npy.read(fixture("f8.npy", F8_FORTRAN_2x3));
    assertArrayEquals(new long[] {2, 3}, f8.shape());
    assertArrayEquals(new long[] {1, 2}, f8.strides(), "Fortran order: column-major strides");
    assertArrayEquals(new double[] {0, 1, 2, 3, 4, 5}, f8.toDoubleArray());

    NdArray b = Npy.read(fixture("b.npy", B1_SCALAR));
    assertEquals(DType.BOOL, b.dtype());
    assertEquals(0, b.rank());
    assertEquals(1.0, b.item());

    NdArray i2 = Npy.read(fixture("i2.npy", I2_3));
    assertEquals(DType.I32, i2.dtype(), "int16 widens to I32");
    assertArrayEquals(new int[] {-1, 2, -32768}, i2.toIntArray());

    NdArray u4 = Npy.read(fixture("u4.npy", U4_2));
    assertEquals(DType.I64, u4.dtype(), "uint32 widens to I64");
    assertArrayEquals(new long[] {4294967295L, 7}, u4.toLongArray());

    NdArray e = Npy.read(fixture("e.npy", F2_EMPTY_0x3));
    assertEquals(DType.F16, e.dtype());
    assertArrayEquals(new long[] {0, 3}, e.shape());

    NpyException be = assertThrows(NpyException.class, () -> Npy.read(fixture("be.npy", BE_F4)));
    assertTrue(be.getMessage().contains("big-endian") && be.getMessage().contains("be.npy"), be.getMessage());
  }

  @Test
  void readsVersion2And3Headers() throws IOException {
    byte[] v1 = Base64.getDecoder().decode(F4_2x3);
    int hlen = (v1[8] & 0xff) | (v1[9] & 0xff) << 8;
    for (int major = 2; major <= 3; major++) {
      ByteBuffer b = ByteBuffer.allocate(v1.length + 2).order(ByteOrder.LITTLE_ENDIAN);
      b.put(v1, 0, 6).put((byte) major).put((byte) 0).putInt(hlen).put(v1, 10, v1.length - 10);
      Path p = dir.resolve("v" + major + ".npy");
      Files.write(p, b.array());
      assertArrayEquals(new float[] {0, .25f, .5f, .75f, 1, 1.25f}, Npy.read(p).toFloatArray());
    }
  }

  @Test
  void writesVersion2WhenTheHeaderOutgrows64KiB() throws IOException {
    long[] shape = new long[25_000]; // "1, " per dim: a ~75 KB header
    java.util.Arrays.fill(shape, 1);
    NdArray a = NdArray.full(DType.I32, 42, shape);
    Path p = dir.resolve("v2.npy");
    Npy.write(p, a);
    byte[] bytes = Files.readAllBytes(p);
    assertEquals(2, bytes[6]);
    long hl = ByteBuffer.wrap(bytes, 8, 4).order(ByteOrder.LITTLE_ENDIAN).getInt() & 0xffffffffL;
    assertEquals(0, (12 + hl) % 64, "data starts 64-byte aligned");
    NdArray back = Npy.read(p);
    assertArrayEquals(shape, back.shape());
    assertEquals(42, back.toIntArray()[0]);
  }

  /** Every numpy-representable dtype, random shapes (0-d and empty included), strided sources: bits round-trip. */
  @Test
  void roundTripsEveryDtype() throws IOException {
    Random rnd = new Random(11);
    for (DType t : DType.values()) {
      if (t == DType.BF16) {
        continue; // refused on purpose, tested below
      }
      for (int trial = 0; trial < 12; trial++) {
        int rank = rnd.nextInt(5);
        long[] shape = new long[rank];
        for (int d = 0; d < rank; d++) {
          shape[d] = rnd.nextInt(4);
        }
        NdArray a = SafetensorsTest.randomArray(t, shape, rnd);
        if (rank >= 2 && trial % 2 == 0) {
          long[] sw = shape.clone();
          sw[0] = shape[1];
          sw[1] = shape[0];
          a = SafetensorsTest.randomArray(t, sw, rnd).transpose(0, 1);
        }
        Path p = dir.resolve(t + "-" + trial + ".npy");
        Npy.write(p, a);
        assertEquals(0, (10 + (Files.readAllBytes(p)[8] & 0xff | (Files.readAllBytes(p)[9] & 0xff) << 8)) % 64);
        NdArray back = Npy.read(p);
        assertEquals(t, back.dtype());
        assertArrayEquals(shape, back.shape());
        assertArrayEquals(SafetensorsTest.bytesOf(a), SafetensorsTest.bytesOf(back), t + " " + List.of(shape));
      }
    }
  }

  /** A Fortran-order file built by hand from the spec reads as the same logical array as its C-order twin. */
  @Test
  void readsRandomFortranOrderFiles() throws IOException {
    Random rnd = new Random(5);
    for (int trial = 0; trial < 10; trial++) {
      long[] shape = {1 + rnd.nextInt(4), 1 + rnd.nextInt(4), 1 + rnd.nextInt(3)};
      NdArray c = SafetensorsTest.randomArray(DType.I64, shape, rnd);
      // Column-major bytes: element (i, j, k) at i + j*s0 + k*s0*s1.
      NdArray colMajor = c.permute(2, 1, 0).contiguous();
      String dict = "{'descr': '<i8', 'fortran_order': True, 'shape': (" + shape[0] + ", " + shape[1] + ", "
          + shape[2] + "), }";
      byte[] data = SafetensorsTest.bytesOf(colMajor);
      Path p = dir.resolve("f" + trial + ".npy");
      Files.write(p, SafetensorsTest.concat(v1Prefix(dict), data));
      NdArray back = Npy.read(p);
      assertArrayEquals(c.toLongArray(), back.toLongArray());
    }
  }

  /** magic, version 1.0, u16 length, the dict padded with spaces and a newline to a multiple of 64. */
  static byte[] v1Prefix(String dict) {
    int total = 10 + dict.length() + 1;
    int padded = (total + 63) / 64 * 64;
    String text = dict + " ".repeat(padded - total) + "\n";
    ByteBuffer b = ByteBuffer.allocate(10 + text.length()).order(ByteOrder.LITTLE_ENDIAN);
    b.put(new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0}).putShort((short) text.length());
    b.put(text.getBytes(StandardCharsets.ISO_8859_1));
    return b.array();
  }

  @Test
  void rejectsBadFilesWithClearMessages() throws IOException {
    String ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    byte[] eight = new byte[8];
    expectError(new byte[] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "not a .npy file");
    expectError(new byte[] {(byte) 0x93, 'N', 'U', 'M'}, "truncated");
    expectError(SafetensorsTest.concat(new byte[] {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', 4, 0, 0, 0}), "version 4.0");
    expectError(java.util.Arrays.copyOf(v1Prefix(ok), 30), "truncated while reading the");
    expectError(SafetensorsTest.concat(v1Prefix(ok), new byte[4]), "truncated file");
    expectError(SafetensorsTest.concat(v1Prefix(ok), new byte[12]), "trailing bytes");
    expectError(SafetensorsTest.concat(v1Prefix("[1, 2]"), eight), "not a dict");
    expectError(SafetensorsTest.concat(v1Prefix("{'descr': '<f4', "), eight), "not a Python dict literal");
    expectError(SafetensorsTest.concat(v1Prefix("{'descr': '<f4', 'shape': (2,)}"), eight), "exactly descr, fortran_order, shape");
    expectError(SafetensorsTest.concat(v1Prefix("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}"), eight), "fortran_order");
    expectError(SafetensorsTest.concat(v1Prefix("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}"), eight), "negative size");
    expectError(SafetensorsTest.concat(v1Prefix("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}"), eight), "structured dtype");
    expectError(SafetensorsTest.concat(v1Prefix("{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}"), eight), "'<c8' is not supported");
    expectError(SafetensorsTest.concat(v1Prefix("{'descr': '<V2', 'fortran_order': False, 'shape': (4,)}"), eight), "bfloat16");
    expectError(SafetensorsTest.concat(v1Prefix("{'descr': '<u8', 'fortran_order': False, 'shape': (1,)}"), eight), "uint64");
    expectError(SafetensorsTest.concat(v1Prefix("{'descr': '|f4', 'fortran_order': False, 'shape': (2,)}"), eight), "byte order");
  }

  private void expectError(byte[] file, String fragment) throws IOException {
    Path p = dir.resolve("bad.npy");
    Files.write(p, file);
    NpyException e = assertThrows(NpyException.class, () -> Npy.read(p));
    assertTrue(e.getMessage().contains(fragment) && e.getMessage().contains("bad.npy"), e.getMessage());
  }

  @Test
  void refusesBf16WithAHint() {
    Path p = dir.resolve("bf.npy");
    NpyException e = assertThrows(NpyException.class, () -> Npy.write(p, NdArray.zeros(DType.BF16, 2)));
    assertTrue(e.getMessage().contains("Safetensors") && e.getMessage().contains("DType.F32"), e.getMessage());
    assertFalse(Files.exists(p));
  }

  // ---------------------------------------------------------------- npz

  @Test
  void readsNumpyNpzStoredAndDeflated() throws IOException {
    for (String b64 : List.of(NPZ_STORED, NPZ_DEFLATED)) {
      Map<String, NdArray> m = Npz.read(fixture("x.npz", b64));
      assertEquals(List.of("a", "b"), List.copyOf(m.keySet()));
      assertArrayEquals(new long[] {1, 2, 3}, m.get("a").toLongArray());
      assertArrayEquals(new long[] {2, 2}, m.get("b").shape());
      assertArrayEquals(new float[] {1, 0, 0, 1}, m.get("b").toFloatArray());
    }
  }

  @Test
  void npzRoundTrips() throws IOException {
    Random rnd = new Random(3);
    Map<String, NdArray> in = new LinkedHashMap<>();
    in.put("weights", SafetensorsTest.randomArray(DType.F32, new long[] {3, 4}, rnd));
    in.put("scalar", SafetensorsTest.randomArray(DType.F64, new long[] {}, rnd));
    in.put("empty", NdArray.zeros(DType.I64, 0));
    in.put("mask", SafetensorsTest.randomArray(DType.BOOL, new long[] {5}, rnd).transpose(0, 0));
    in.put("nested/name", SafetensorsTest.randomArray(DType.U8, new long[] {2, 2}, rnd).transpose(0, 1));
    Path p = dir.resolve("rt.npz");
    Npz.write(p, in);
    Map<String, NdArray> back = Npz.read(p);
    assertEquals(List.copyOf(in.keySet()), List.copyOf(back.keySet()));
    for (String k : in.keySet()) {
      assertEquals(in.get(k).dtype(), back.get(k).dtype());
      assertArrayEquals(in.get(k).shape(), back.get(k).shape());
      assertArrayEquals(SafetensorsTest.bytesOf(in.get(k)), SafetensorsTest.bytesOf(back.get(k)), k);
    }
  }

  @Test
  void npzRejectsCorruptArchives() throws IOException {
    Path p = dir.resolve("bad.npz");
    Files.write(p, new byte[] {1, 2, 3});
    NpyException e = assertThrows(NpyException.class, () -> Npz.read(p));
    assertTrue(e.getMessage().contains("bad.npz"), e.getMessage());
    byte[] valid = Base64.getDecoder().decode(NPZ_DEFLATED);
    valid[100] ^= 0x55; // inside the first deflated stream
    Files.write(p, valid);
    assertThrows(NpyException.class, () -> Npz.read(p));
    byte[] stored = Base64.getDecoder().decode(NPZ_STORED);
    stored[191] ^= 1; // the low byte of a[1] (a's data spans bytes 183..206): only the CRC can tell
    Files.write(p, stored);
    NpyException crc = assertThrows(NpyException.class, () -> Npz.read(p));
    assertTrue(crc.getMessage().contains("CRC"), crc.getMessage());
  }

  /**
   * Mutations of a valid file (bit flips, truncations, header character edits) read from memory must give an array
   * or an NpyException, never another exception type. Seeded.
   */
  @Test
  void fuzzNeverThrowsAnythingElse() throws IOException {
    Random rnd = new Random(77);
    Path p = dir.resolve("valid.npy");
    Npy.write(p, SafetensorsTest.randomArray(DType.I32, new long[] {3, 5}, rnd));
    byte[] valid = Files.readAllBytes(p);
    int parsed = 0;
    int rejected = 0;
    for (int c = 0; c < 3000; c++) {
      byte[] img = valid.clone();
      switch (c % 4) {
        case 0 -> img = java.util.Arrays.copyOf(img, rnd.nextInt(img.length));
        case 1 -> img[rnd.nextInt(img.length)] ^= (byte) (1 << rnd.nextInt(8));
        case 2 -> img[10 + rnd.nextInt(60)] = (byte) "{}()[]',:0123456789-LTrueFalse <>|fiub".charAt(rnd.nextInt(38));
        default -> {
          img = new byte[rnd.nextInt(120)];
          rnd.nextBytes(img);
          if (img.length > 10) {
            System.arraycopy(valid, 0, img, 0, 8);
          }
        }
      }
      try {
        NdArray a = Npy.read(new java.io.ByteArrayInputStream(img), img.length, "fuzz" + c);
        a.toDoubleArray(); // every element readable
        parsed++;
      } catch (NpyException expected) {
        rejected++;
      } catch (RuntimeException | Error other) {
        throw new AssertionError("case " + c + " threw " + other, other);
      }
    }
    assertTrue(parsed > 100 && rejected > 100, "parsed=" + parsed + " rejected=" + rejected);
  }
}
