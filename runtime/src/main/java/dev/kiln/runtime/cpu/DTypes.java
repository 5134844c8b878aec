package dev.kiln.runtime.cpu;

import dev.kiln.dsl.DType;

/** Result-dtype rules shared by the CPU kernels; {@link Elementwise}'s javadoc states them for users. */
final class DTypes {
  private DTypes() {}

  /** How a kernel computes: in float (F32, BF16, F16), in double (F64), or in long (integer types, BOOL). */
  enum Kind {
    FLOAT,
    DOUBLE,
    LONG
  }

  static Kind kindOf(DType t) {
    return switch (t) {
      case F64 -> Kind.DOUBLE;
      case F32, BF16, F16 -> Kind.FLOAT;
      case I32, I64, U8, BOOL -> Kind.LONG;
    };
  }

  /** The dtype two operands promote to. */
  static DType promote(DType a, DType b) {
    if (a == b) {
      return a;
    }
    if (a.isFloating() && b.isFloating()) {
      if (a == DType.F64 || b == DType.F64) {
        return DType.F64;
      }
      // F32 with a narrow float, or BF16 with F16 (neither holds the other): F32.
      return DType.F32;
    }
    if (a.isFloating()) {
      return a;
    }
    if (b.isFloating()) {
      return b;
    }
    return intRank(a) >= intRank(b) ? a : b;
  }

  private static int intRank(DType t) {
    return switch (t) {
      case BOOL -> 0;
      case U8 -> 1;
      case I32 -> 2;
      default -> 3;
    };
  }

  /** Float dtype for an op that only makes sense in floating point: floats keep theirs, integers become F32. */
  static DType floatOf(DType t) {
    return t.isFloating() ? t : DType.F32;
  }
}
