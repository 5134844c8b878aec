package dev.kiln.runtime.tensor;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.kiln.dsl.DType;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class NdArrayTest {
  private static NdArray iota(long... shape) {
    return NdArray.arange(DType.F32, NdArray.numel(shape)).view(shape);
  }

  @Test
  void stridedCopyOfOneDTypeKeepsEveryBitIncludingNaNPayloads() {
    // Raw bits are the oracle: a same-dtype copy must not round-trip through double, which would canonicalise NaN
    // payloads of bf16/f16 and could not hold every int64 exactly.
    for (DType t : DType.values()) {
      NdArray a = NdArray.zeros(t, 3, 5);
      Random rnd = new Random(7);
      long[] raw = new long[15];
      for (int i = 0; i < 15; i++) {
        long bits = rnd.nextLong();
        raw[i] = bits;
        MemorySegment seg = a.segment();
        switch (t.byteSize()) {
          case 1 -> seg.set(Layouts.U8, i, (byte) bits);
          case 2 -> seg.set(Layouts.I16, 2L * i, (short) bits);
          case 4 -> seg.set(Layouts.I32, 4L * i, (int) bits);
          default -> seg.set(Layouts.I64, 8L * i, bits);
        }
      }
      NdArray tCopy = a.transpose(0, 1).contiguous();
      assertFalse(tCopy.sharesStorageWith(a));
      for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 5; j++) {
          long want = raw[i * 5 + j];
          long at = (long) (j * 3 + i) * t.byteSize();
          long got =
              switch (t.byteSize()) {
                case 1 -> tCopy.segment().get(Layouts.U8, at);
                case 2 -> tCopy.segment().get(Layouts.I16, at);
                case 4 -> tCopy.segment().get(Layouts.I32, at);
                default -> tCopy.segment().get(Layouts.I64, at);
              };
          long mask = t.byteSize() == 8 ? -1L : (1L << (8 * t.byteSize())) - 1;
          assertEquals(want & mask, got & mask, t + " element [" + i + "," + j + "]");
        }
      }
    }
  }

  @Test
  void viewsAliasTheirBase() {
    NdArray base = iota(2, 3, 4);
    NdArray[] views = {
      base.view(6, 4), base.permute(2, 0, 1), base.transpose(0, 2), base.slice(2, 1, 4, 2), base.select(1, -1),
      base.narrow(0, 1, 1), base.unsqueeze(0), base.select(0, 0).unsqueeze(0).expand(5, 3, 4), base.squeeze()
    };
    for (NdArray v : views) {
      assertTrue(v.sharesStorageWith(base));
    }
    base.slice(2, 1, 4, 2).setDouble(-7, 1, 2, 1); // base[1, 2, 3]
    assertEquals(-7, base.getDouble(1, 2, 3));
    base.permute(2, 0, 1).setDouble(-8, 0, 1, 1); // base[1, 1, 0]
    assertEquals(-8, base.getDouble(1, 1, 0));
    base.select(1, -1).setDouble(-9, 0, 0); // base[0, 2, 0]
    assertEquals(-9, base.getDouble(0, 2, 0));
    assertFalse(base.copy().sharesStorageWith(base));
    assertSame(base, base.contiguous());
  }

  @Test
  void viewOpsIndexLikeNumpy() {
    NdArray a = iota(3, 4, 5);
    NdArray p = a.permute(2, 0, 1);
    assertArrayEquals(new long[] {5, 3, 4}, p.shape());
    assertEquals(a.getDouble(1, 2, 3), p.getDouble(3, 1, 2));
    NdArray t = a.transpose(-1, 0);
    assertEquals(a.getDouble(2, 1, 4), t.getDouble(4, 1, 2));
    NdArray s = a.slice(2, -4, -1, 2); // a[:, :, 1:4:2] -> indices 1, 3
    assertArrayEquals(new long[] {3, 4, 2}, s.shape());
    assertEquals(a.getDouble(2, 3, 3), s.getDouble(2, 3, 1));
    assertEquals(0, a.slice(0, 2, 1, 1).shape(0), "an empty slice");
    NdArray sel = a.select(0, -1);
    assertEquals(a.getDouble(2, 0, 4), sel.getDouble(0, 4));
    NdArray e = a.select(2, 0).unsqueeze(-1).expand(-1, -1, 6);
    assertEquals(0, e.stride(2));
    assertEquals(a.getDouble(1, 2, 0), e.getDouble(1, 2, 5));
    NdArray sq = iota(1, 3, 1, 2).squeeze();
    assertArrayEquals(new long[] {3, 2}, sq.shape());
    assertThrows(IllegalArgumentException.class, () -> iota(2, 3).squeeze(0));
    assertArrayEquals(new long[] {2, 1, 3}, iota(2, 3).unsqueeze(1).shape());
    assertArrayEquals(new long[] {2, 3, 1}, iota(2, 3).unsqueeze(-1).shape());
    NdArray c = a.permute(1, 2, 0).contiguous();
    assertTrue(c.isContiguous());
    assertEquals(a.getDouble(2, 1, 4), c.getDouble(1, 4, 2));
    assertTrue(NdArray.zeros(DType.F32, 3, 0).isContiguous(), "an empty array is contiguous");
    assertEquals(Double.doubleToRawLongBits(-0.0),
        Double.doubleToRawLongBits(NdArray.full(DType.F32, -0.0, 2).getDouble(1)), "full(-0.0) keeps the sign");
  }

  /**
   * reshape is a view exactly when canView says so. Oracle: a view exists iff the flat-order element offsets of
   * the source are an affine function of the target index, i.e. iff strides derived from unit steps reproduce every
   * offset.
   */
  @Test
  void reshapeIsAViewExactlyWhenStridesAllowIt() {
    Random rnd = new Random(3);
    long[][] targets = {{24}, {2, 12}, {4, 6}, {6, 4}, {2, 3, 4}, {4, 3, 2}, {1, 24}, {2, 1, 12, 1}, {3, 8}, {12, 2}};
    for (int trial = 0; trial < 200; trial++) {
      NdArray base = iota(2, 3, 4);
      NdArray src = switch (trial % 5) {
        case 0 -> base;
        case 1 -> base.permute(2, 1, 0);
        case 2 -> base.transpose(rnd.nextInt(3), rnd.nextInt(3));
        case 3 -> base.permute(1, 0, 2);
        default -> iota(2, 3, 8).slice(2, 0, 8, 2);
      };
      long[] target = targets[rnd.nextInt(targets.length)];
      boolean oracle = viewExists(src, target);
      assertEquals(oracle, src.canView(target), "canView of strides " + java.util.Arrays.toString(src.strides())
          + " to " + java.util.Arrays.toString(target));
      NdArray r = src.reshape(target);
      assertEquals(oracle, r.sharesStorageWith(src), "reshape aliases exactly when canView");
      assertArrayEquals(src.toFloatArray(), r.toFloatArray(), "reshape keeps row-major order");
      if (oracle) {
        r.setDouble(1000 + trial, new long[target.length]);
        assertEquals(1000 + trial, src.getDouble(new long[src.rank()]));
      } else {
        NdArray s = src;
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> s.view(target));
        assertTrue(e.getMessage().contains("reshape") && e.getMessage().contains("contiguous()"), e.getMessage());
      }
    }
  }

  private static boolean viewExists(NdArray src, long[] target) {
    long n = src.numel();
    long[] offs = new long[(int) n];
    long[] idx = new long[src.rank()];
    long[] shape = src.shape();
    for (int k = 0; k < n; k++) {
      long rem = k;
      for (int d = shape.length - 1; d >= 0; d--) {
        idx[d] = rem % shape[d];
        rem /= shape[d];
      }
      offs[k] = src.byteOffset(idx) / src.dtype().byteSize();
    }
    long[] ts = NdArray.contiguousStrides(target);
    long[] strides = new long[target.length];
    for (int d = 0; d < target.length; d++) {
      strides[d] = target[d] > 1 ? offs[(int) ts[d]] - offs[0] : 0;
    }
    long[] t = new long[target.length];
    for (int k = 0; k < n; k++) {
      long rem = k;
      long off = offs[0];
      for (int d = target.length - 1; d >= 0; d--) {
        t[d] = rem % target[d];
        rem /= target[d];
        off += t[d] * strides[d];
      }
      if (off != offs[k]) {
        return false;
      }
    }
    return true;
  }

  @Test
  void errorsNameTheProblem() {
    NdArray a = iota(2, 3);
    IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, () -> a.getDouble(1, 3));
    assertTrue(e.getMessage().contains("index 3") && e.getMessage().contains("size 3"), e.getMessage());
    assertThrows(IndexOutOfBoundsException.class, () -> a.getDouble(-3, 0));
    assertEquals(a.getDouble(1, 2), a.getDouble(-1, -1));
    assertThrows(IllegalArgumentException.class, () -> a.getDouble(1));
    IllegalArgumentException r = assertThrows(IllegalArgumentException.class, () -> a.reshape(4, 2));
    assertTrue(r.getMessage().contains("[2, 3]") && r.getMessage().contains("[4, 2]"), r.getMessage());
    IllegalArgumentException v = assertThrows(IllegalArgumentException.class, () -> a.transpose(0, 1).view(6));
    assertTrue(v.getMessage().contains("cannot view"), v.getMessage());
    assertThrows(IllegalArgumentException.class, () -> a.expand(2, 4));
    assertThrows(IllegalArgumentException.class, () -> a.permute(0, 0));
    assertThrows(IndexOutOfBoundsException.class, () -> a.select(0, 2));
    assertThrows(IndexOutOfBoundsException.class, () -> a.narrow(1, 2, 2), "narrow past the end is an error");
    assertThrows(IndexOutOfBoundsException.class,
        () -> NdArray.of(Storage.allocate(16), DType.F32, new long[] {5}, new long[] {1}, 0));
  }

  @Test
  void dtypeConversionsRound() {
    // bf16 keeps the top 16 bits of a float32, rounding to nearest, ties to even.
    float one = 1f;
    float halfUlp = Float.intBitsToFloat(Float.floatToRawIntBits(one) + 0x8000); // exactly between 1 and next bf16
    float aboveHalf = Float.intBitsToFloat(Float.floatToRawIntBits(one) + 0x8001);
    float oddTie = Float.intBitsToFloat(0x3F818000); // between 0x3F81 (odd) and 0x3F82: ties to even -> 0x3F82
    NdArray f = NdArray.fromFloats(new float[] {halfUlp, aboveHalf, oddTie, Float.NaN, Float.POSITIVE_INFINITY,
        3.4e38f, -0f});
    NdArray b = f.to(DType.BF16);
    MemorySegment s = b.segment();
    assertEquals((short) 0x3F80, s.get(Layouts.I16, 0), "tie rounds to even (down)");
    assertEquals((short) 0x3F81, s.get(Layouts.I16, 2), "above half rounds up");
    assertEquals((short) 0x3F82, s.get(Layouts.I16, 4), "tie rounds to even (up)");
    assertTrue(Float.isNaN(b.getFloat(3)));
    assertEquals(Float.POSITIVE_INFINITY, b.getFloat(4));
    assertEquals(Float.POSITIVE_INFINITY, b.getFloat(5), "3.4e38 rounds past bf16's max to inf");
    assertEquals((short) 0x8000, s.get(Layouts.I16, 12), "-0 keeps its sign");
    // f16: 1 + 2^-11 is a tie between 1 and 1 + 2^-10: ties to even gives 1; 65520 overflows to inf.
    NdArray h = NdArray.fromFloats(new float[] {1f + 0x1p-11f, 1f + 0x1p-11f + 0x1p-20f, 65520f, 1e-8f}).to(DType.F16);
    assertEquals(1.0, h.getDouble(0));
    assertEquals(1.0 + 0x1p-10, h.getDouble(1));
    assertEquals(Double.POSITIVE_INFINITY, h.getDouble(2));
    assertEquals(Float.float16ToFloat(Float.floatToFloat16(1e-8f)), h.getFloat(3), "subnormal f16");
    // Floats to ints truncate toward zero; ints to floats are exact.
    assertArrayEquals(new long[] {2, -2, 0}, NdArray.fromFloats(new float[] {2.9f, -2.9f, 0.4f}).to(DType.I64)
        .toLongArray());
    assertEquals(16777217L, NdArray.fromLongs(new long[] {16777217L}).to(DType.F64).getLong(0));
    assertEquals(1, NdArray.fromFloats(new float[] {0.5f}).to(DType.BOOL).getLong(0), "non-zero is true");
  }

  /** An array past 2^31 elements: a sparse memory-mapped file, so the test touches only two pages. */
  @Test
  void arraysPastTwoToThe31Elements(@TempDir Path dir) throws IOException {
    long n = (1L << 31) + 16;
    Path file = dir.resolve("big.u8");
    try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.READ,
        StandardOpenOption.WRITE, StandardOpenOption.SPARSE);
        Arena arena = Arena.ofConfined()) {
      ch.write(java.nio.ByteBuffer.allocate(1), n - 1);
      MemorySegment seg = ch.map(FileChannel.MapMode.READ_WRITE, 0, n, arena);
      NdArray a = NdArray.of(Storage.wrap(seg), DType.U8, n);
      assertEquals(n, a.numel());
      a.setLong(200, n - 1);
      a.setLong(7, (1L << 31) + 3);
      assertEquals(200, a.getLong(n - 1));
      assertEquals(200, a.getLong(-1));
      NdArray tail = a.narrow(0, 1L << 31, 16);
      assertTrue(tail.sharesStorageWith(a));
      assertEquals(7, tail.getLong(3));
      assertEquals(200, tail.getLong(15));
      NdArray grid = a.view(n / 16, 16);
      assertEquals(200, grid.getLong(n / 16 - 1, 15));
      tail.setLong(9, 0);
      assertEquals(9, a.getLong(1L << 31));
      assertThrows(IndexOutOfBoundsException.class, () -> a.getLong(n));
    }
    Files.deleteIfExists(file);
  }

  @Test
  void copyFromBroadcastsConvertsAndHandlesOverlap() {
    NdArray dst = NdArray.zeros(DType.F64, 2, 3);
    dst.copyFrom(NdArray.fromInts(new int[] {1, 2, 3}));
    assertArrayEquals(new double[] {1, 2, 3, 1, 2, 3}, dst.toDoubleArray());
    NdArray m = iota(3, 3);
    m.copyFrom(m.transpose(0, 1)); // overlapping source: copied first
    assertArrayEquals(new float[] {0, 3, 6, 1, 4, 7, 2, 5, 8}, m.toFloatArray());
    NdArray c = m.copy();
    assertNotSame(c.storage(), m.storage());
  }
}
