package dev.kiln.runtime.tensor;

import dev.kiln.dsl.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Reads and writes single elements of any dtype at a byte offset, converting through {@code double} or
 * {@code long}. Kernels use typed fast paths; this is the one slow path every dtype shares.
 *
 * <p>Layouts are little-endian (every file format Kiln reads is) and unaligned, because a memory-mapped
 * safetensors payload need not be aligned to its element size.
 */
public final class Layouts {
  public static final ValueLayout.OfFloat F32 =
      ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
  public static final ValueLayout.OfDouble F64 =
      ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
  public static final ValueLayout.OfShort I16 =
      ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
  public static final ValueLayout.OfInt I32 =
      ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
  public static final ValueLayout.OfLong I64 =
      ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
  public static final ValueLayout.OfByte U8 = ValueLayout.JAVA_BYTE;

  private Layouts() {}

  /** The element at byte offset {@code at}, as a double (integers convert exactly up to 2^53). */
  public static double getDouble(MemorySegment s, DType t, long at) {
    return switch (t) {
      case F32 -> s.get(F32, at);
      case F64 -> s.get(F64, at);
      case BF16 -> bf16ToFloat(s.get(I16, at));
      case F16 -> Float.float16ToFloat(s.get(I16, at));
      case I32 -> s.get(I32, at);
      case I64 -> s.get(I64, at);
      case U8 -> Byte.toUnsignedInt(s.get(U8, at));
      case BOOL -> s.get(U8, at) != 0 ? 1.0 : 0.0;
    };
  }

  /** Stores {@code v} at byte offset {@code at}, rounding to nearest-even for narrow floats, truncating for ints. */
  public static void setDouble(MemorySegment s, DType t, long at, double v) {
    switch (t) {
      case F32 -> s.set(F32, at, (float) v);
      case F64 -> s.set(F64, at, v);
      case BF16 -> s.set(I16, at, floatToBf16((float) v));
      case F16 -> s.set(I16, at, Float.floatToFloat16((float) v));
      case I32 -> s.set(I32, at, (int) v);
      case I64 -> s.set(I64, at, (long) v);
      case U8 -> s.set(U8, at, (byte) (int) v);
      case BOOL -> s.set(U8, at, (byte) (v != 0 ? 1 : 0));
    }
  }

  /** The element as a long: exact for integer dtypes, truncated toward zero for floats. */
  public static long getLong(MemorySegment s, DType t, long at) {
    return switch (t) {
      case I32 -> s.get(I32, at);
      case I64 -> s.get(I64, at);
      case U8 -> Byte.toUnsignedInt(s.get(U8, at));
      case BOOL -> s.get(U8, at) != 0 ? 1 : 0;
      default -> (long) getDouble(s, t, at);
    };
  }

  /** Stores an integer exactly (for integer dtypes) or converted to the float type. */
  public static void setLong(MemorySegment s, DType t, long at, long v) {
    switch (t) {
      case I32 -> s.set(I32, at, (int) v);
      case I64 -> s.set(I64, at, v);
      case U8 -> s.set(U8, at, (byte) v);
      case BOOL -> s.set(U8, at, (byte) (v != 0 ? 1 : 0));
      default -> setDouble(s, t, at, (double) v);
    }
  }

  /** bfloat16 is the upper half of a float32. */
  public static float bf16ToFloat(short bits) {
    return Float.intBitsToFloat((bits & 0xffff) << 16);
  }

  /** Rounds to nearest, ties to even, as PyTorch does; NaN stays a (quiet) NaN. */
  public static short floatToBf16(float f) {
    int bits = Float.floatToRawIntBits(f);
    if (Float.isNaN(f)) {
      return (short) ((bits >>> 16) | 0x40);
    }
    int lsb = (bits >>> 16) & 1;
    int rounded = bits + 0x7fff + lsb;
    return (short) (rounded >>> 16);
  }
}
