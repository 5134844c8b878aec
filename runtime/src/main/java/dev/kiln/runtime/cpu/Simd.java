package dev.kiln.runtime.cpu;

/**
 * Whether kernels use the Vector API path ({@code jdk.incubator.vector}, in {@link VectorKernels}) or the plain-Java
 * path that the JIT auto-vectorises.
 *
 * <p>Chosen once at start-up: on when the incubator module is in the boot layer (the {@code kiln} launcher and the
 * tests add it with {@code --add-modules jdk.incubator.vector}) and the system property {@code kiln.simd} is not
 * {@code false}. {@code VectorKernels} is only ever touched behind {@link #enabled()}, so without the module its
 * class is never loaded and nothing breaks. Tests flip {@link #setEnabled} to cover both paths.
 */
public final class Simd {
  private static final boolean AVAILABLE = ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent();
  private static volatile boolean enabled = AVAILABLE && !"false".equalsIgnoreCase(System.getProperty("kiln.simd"));

  private Simd() {}

  /** True when {@code jdk.incubator.vector} is present in this JVM. */
  public static boolean available() {
    return AVAILABLE;
  }

  /** True when kernels currently take the Vector API path. */
  public static boolean enabled() {
    return enabled;
  }

  /**
   * Switches the Vector API path on or off (off forces the plain path); turning it on without the module throws.
   *
   * @return the previous setting, so callers can restore it
   */
  public static boolean setEnabled(boolean on) {
    if (on && !AVAILABLE) {
      throw new IllegalStateException(
          "the Vector API path needs the jdk.incubator.vector module; start the JVM with "
              + "--add-modules jdk.incubator.vector");
    }
    boolean old = enabled;
    enabled = on;
    return old;
  }
}
