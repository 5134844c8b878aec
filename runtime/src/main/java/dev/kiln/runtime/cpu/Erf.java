package dev.kiln.runtime.cpu;

/**
 * The error function in double precision (Java's {@code Math} has none), for the exact GeLU.
 *
 * <p>Below |x| = 3 a series with only positive terms, {@code erf(x) = 2/sqrt(pi) exp(-x^2) sum (2x^2)^n x /
 * (1*3*...*(2n+1))}, which has no cancellation; above it the Laplace continued fraction for {@code erfc}, which
 * converges fast there and keeps the relative accuracy of the tiny tail that {@code 1 - erf} would lose.
 */
final class Erf {
  private static final double TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);
  private static final double SWITCH = 3.0;

  private Erf() {}

  static double erf(double x) {
    if (Double.isNaN(x)) {
      return x;
    }
    double a = Math.abs(x);
    double r = a < SWITCH ? series(a) : 1 - erfcTail(a);
    return Math.copySign(r, x);
  }

  /** {@code 1 - erf(x)}, accurate in relative terms for large positive x. */
  static double erfc(double x) {
    if (Double.isNaN(x)) {
      return x;
    }
    if (x >= SWITCH) {
      return erfcTail(x);
    }
    if (x <= -SWITCH) {
      return 2 - erfcTail(-x);
    }
    return 1 - Math.copySign(series(Math.abs(x)), x);
  }

  private static double series(double a) {
    double a2 = 2 * a * a;
    double term = a;
    double sum = a;
    for (int n = 1; n < 400; n++) {
      term *= a2 / (2 * n + 1);
      sum += term;
      if (term <= sum * 1e-17) {
        break;
      }
    }
    return TWO_OVER_SQRT_PI * Math.exp(-a * a) * sum;
  }

  private static double erfcTail(double a) {
    if (a > 27) {
      return 0; // below the smallest double
    }
    // erfc(a) = exp(-a^2)/sqrt(pi) / (a + (1/2)/(a + (2/2)/(a + (3/2)/(a + ...)))), evaluated from the bottom.
    double f = a;
    for (int k = 120; k >= 1; k--) {
      f = a + (k / 2.0) / f;
    }
    return Math.exp(-a * a) / (Math.sqrt(Math.PI) * f);
  }

  /** Exact GeLU, {@code x * Phi(x)}; the negative side goes through erfc to avoid cancellation. */
  static double gelu(double x) {
    double z = x / Math.sqrt(2);
    return x >= 0 ? 0.5 * x * (1 + erf(z)) : 0.5 * x * erfc(-z);
  }
}
