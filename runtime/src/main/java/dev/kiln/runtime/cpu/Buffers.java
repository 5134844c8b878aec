package dev.kiln.runtime.cpu;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.Layouts;
import dev.kiln.runtime.tensor.NdArray;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;

/**
 * Moves runs of elements between an array of any dtype and stride and a Java scratch array ({@code float[]},
 * {@code double[]} or {@code long[]}), converting on the way. Kernels compute on scratch blocks of
 * {@link #BLOCK} elements, which stay in L1 cache, so every dtype and stride shares one compute loop and the
 * loop itself is a plain array loop the JIT vectorises.
 *
 * <p>Narrow floats load exactly into float and store with one round-to-nearest-even (no double rounding through
 * double); integers convert with Java's casts (float to int truncates toward zero).
 */
final class Buffers {
  /** Elements per scratch block: 3 float blocks take 12 KiB, well inside a 32-48 KiB L1 data cache. */
  static final int BLOCK = 1024;

  private Buffers() {}

  static void load(NdArray x, long at, long stride, int n, float[] dst) {
    MemorySegment s = x.segment();
    DType t = x.dtype();
    if (stride == 0) {
      Arrays.fill(dst, 0, n, getFloat(s, t, at));
      return;
    }
    switch (t) {
      case F32 -> {
        if (stride == 1) {
          MemorySegment.copy(s, Layouts.F32, at * 4, dst, 0, n);
        } else {
          for (int i = 0; i < n; i++) {
            dst[i] = s.get(Layouts.F32, (at + i * stride) * 4);
          }
        }
      }
      case BF16 -> {
        for (int i = 0; i < n; i++) {
          dst[i] = Layouts.bf16ToFloat(s.get(Layouts.I16, (at + i * stride) * 2));
        }
      }
      case F16 -> {
        for (int i = 0; i < n; i++) {
          dst[i] = Float.float16ToFloat(s.get(Layouts.I16, (at + i * stride) * 2));
        }
      }
      default -> {
        for (int i = 0; i < n; i++) {
          dst[i] = getFloat(s, t, at + i * stride);
        }
      }
    }
  }

  private static float getFloat(MemorySegment s, DType t, long at) {
    return switch (t) {
      case F32 -> s.get(Layouts.F32, at * 4);
      case BF16 -> Layouts.bf16ToFloat(s.get(Layouts.I16, at * 2));
      case F16 -> Float.float16ToFloat(s.get(Layouts.I16, at * 2));
      case I32, I64, U8, BOOL -> (float) Layouts.getLong(s, t, at * t.byteSize());
      case F64 -> (float) s.get(Layouts.F64, at * 8);
    };
  }

  static void store(float[] src, int n, NdArray out, long at, long stride) {
    MemorySegment s = out.segment();
    DType t = out.dtype();
    switch (t) {
      case F32 -> {
        if (stride == 1) {
          MemorySegment.copy(src, 0, s, Layouts.F32, at * 4, n);
        } else {
          for (int i = 0; i < n; i++) {
            s.set(Layouts.F32, (at + i * stride) * 4, src[i]);
          }
        }
      }
      case BF16 -> {
        for (int i = 0; i < n; i++) {
          s.set(Layouts.I16, (at + i * stride) * 2, Layouts.floatToBf16(src[i]));
        }
      }
      case F16 -> {
        for (int i = 0; i < n; i++) {
          s.set(Layouts.I16, (at + i * stride) * 2, Float.floatToFloat16(src[i]));
        }
      }
      default -> {
        int es = t.byteSize();
        for (int i = 0; i < n; i++) {
          Layouts.setDouble(s, t, (at + i * stride) * es, src[i]);
        }
      }
    }
  }

  static void load(NdArray x, long at, long stride, int n, double[] dst) {
    MemorySegment s = x.segment();
    DType t = x.dtype();
    int es = t.byteSize();
    if (stride == 0) {
      Arrays.fill(dst, 0, n, Layouts.getDouble(s, t, at * es));
      return;
    }
    switch (t) {
      case F64 -> {
        if (stride == 1) {
          MemorySegment.copy(s, Layouts.F64, at * 8, dst, 0, n);
        } else {
          for (int i = 0; i < n; i++) {
            dst[i] = s.get(Layouts.F64, (at + i * stride) * 8);
          }
        }
      }
      case F32 -> {
        for (int i = 0; i < n; i++) {
          dst[i] = s.get(Layouts.F32, (at + i * stride) * 4);
        }
      }
      default -> {
        for (int i = 0; i < n; i++) {
          dst[i] = Layouts.getDouble(s, t, (at + i * stride) * es);
        }
      }
    }
  }

  static void store(double[] src, int n, NdArray out, long at, long stride) {
    MemorySegment s = out.segment();
    DType t = out.dtype();
    switch (t) {
      case F64 -> {
        if (stride == 1) {
          MemorySegment.copy(src, 0, s, Layouts.F64, at * 8, n);
        } else {
          for (int i = 0; i < n; i++) {
            s.set(Layouts.F64, (at + i * stride) * 8, src[i]);
          }
        }
      }
      case F32 -> {
        for (int i = 0; i < n; i++) {
          s.set(Layouts.F32, (at + i * stride) * 4, (float) src[i]);
        }
      }
      default -> {
        int es = t.byteSize();
        for (int i = 0; i < n; i++) {
          Layouts.setDouble(s, t, (at + i * stride) * es, src[i]);
        }
      }
    }
  }

  static void load(NdArray x, long at, long stride, int n, long[] dst) {
    MemorySegment s = x.segment();
    DType t = x.dtype();
    int es = t.byteSize();
    if (stride == 0) {
      Arrays.fill(dst, 0, n, Layouts.getLong(s, t, at * es));
      return;
    }
    switch (t) {
      case I64 -> {
        for (int i = 0; i < n; i++) {
          dst[i] = s.get(Layouts.I64, (at + i * stride) * 8);
        }
      }
      case I32 -> {
        for (int i = 0; i < n; i++) {
          dst[i] = s.get(Layouts.I32, (at + i * stride) * 4);
        }
      }
      default -> {
        for (int i = 0; i < n; i++) {
          dst[i] = Layouts.getLong(s, t, (at + i * stride) * es);
        }
      }
    }
  }

  static void store(long[] src, int n, NdArray out, long at, long stride) {
    MemorySegment s = out.segment();
    DType t = out.dtype();
    switch (t) {
      case I64 -> {
        for (int i = 0; i < n; i++) {
          s.set(Layouts.I64, (at + i * stride) * 8, src[i]);
        }
      }
      case I32 -> {
        for (int i = 0; i < n; i++) {
          s.set(Layouts.I32, (at + i * stride) * 4, (int) src[i]);
        }
      }
      default -> {
        int es = t.byteSize();
        for (int i = 0; i < n; i++) {
          Layouts.setLong(s, t, (at + i * stride) * es, src[i]);
        }
      }
    }
  }
}
