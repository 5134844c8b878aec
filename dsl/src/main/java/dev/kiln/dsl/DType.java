package dev.kiln.dsl;

/**
 * Element types of Kiln tensors.
 *
 * <p>Names follow the safetensors header ({@code F32}, {@code BF16}, ...) so a checkpoint's dtype maps to one
 * constant without a lookup table; {@link #numpyDescr()} gives the {@code .npy} spelling.
 */
public enum DType {
  F32(4, true, "F32", "<f4"),
  F64(8, true, "F64", "<f8"),
  BF16(2, true, "BF16", null),
  F16(2, true, "F16", "<f2"),
  I32(4, false, "I32", "<i4"),
  I64(8, false, "I64", "<i8"),
  U8(1, false, "U8", "|u1"),
  BOOL(1, false, "BOOL", "|b1");

  private final int byteSize;
  private final boolean floating;
  private final String safetensorsName;
  private final String numpyDescr;

  DType(int byteSize, boolean floating, String safetensorsName, String numpyDescr) {
    this.byteSize = byteSize;
    this.floating = floating;
    this.safetensorsName = safetensorsName;
    this.numpyDescr = numpyDescr;
  }

  /** Bytes per element. */
  public int byteSize() {
    return byteSize;
  }

  /** True for the four floating-point types. */
  public boolean isFloating() {
    return floating;
  }

  /** The dtype string of the safetensors header. */
  public String safetensorsName() {
    return safetensorsName;
  }

  /**
   * The little-endian {@code .npy} descr, or {@code null} for bfloat16, which numpy has no dtype for.
   */
  public String numpyDescr() {
    return numpyDescr;
  }

  /** The dtype named in a safetensors header, or {@code null} when Kiln has no such dtype. */
  public static DType fromSafetensors(String name) {
    for (DType t : values()) {
      if (t.safetensorsName.equals(name)) {
        return t;
      }
    }
    return null;
  }
}
