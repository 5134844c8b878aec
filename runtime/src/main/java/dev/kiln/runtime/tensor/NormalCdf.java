package dev.kiln.runtime.tensor;

/**
 * The standard normal distribution function Φ and its inverse, to near double precision, computed with
 * {@link StrictMath} so that every machine gets the same bits (the truncated-normal sampler depends on it).
 *
 * <p>Φ uses the all-positive series {@code erf(z) = 2/√π e^{-z²} Σ 2ⁿ z^{2n+1} / (2n+1)!!} for {@code z < 2}
 * (no cancellation) and the Laplace continued fraction for {@code erfc} in the tail. Φ⁻¹ starts from Acklam's
 * rational approximation (relative error about 1e-9) and polishes it with one Halley step against Φ.
 */
public final class NormalCdf {
  private static final double SQRT2 = 1.4142135623730951;
  private static final double SQRT_PI = 1.7724538509055159;
  private static final double SQRT_2PI = 2.5066282746310002;

  private NormalCdf() {}

  /** Φ(x) = P(Z ≤ x) for a standard normal Z. */
  public static double cdf(double x) {
    if (Double.isNaN(x)) {
      return Double.NaN;
    }
    double z = Math.abs(x) / SQRT2;
    double halfErfc; // 0.5 * erfc(z) = Φ(-|x|)
    if (z < 2) {
      double term = z;
      double sum = z;
      double z2 = z * z;
      for (int n = 1; n < 200 && term > 1e-17 * sum; n++) {
        term *= 2 * z2 / (2 * n + 1);
        sum += term;
      }
      double erf = 2 / SQRT_PI * StrictMath.exp(-z2) * sum;
      halfErfc = 0.5 * (1 - erf);
    } else {
      // erfc(z) = e^{-z²}/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + ...)))), evaluated bottom-up.
      double f = z;
      for (int k = 120; k >= 1; k--) {
        f = z + (k / 2.0) / f;
      }
      halfErfc = 0.5 * StrictMath.exp(-z * z) / SQRT_PI / f;
    }
    return x < 0 ? halfErfc : 1 - halfErfc;
  }

  /** The standard normal density φ(x). */
  public static double pdf(double x) {
    return StrictMath.exp(-0.5 * x * x) / SQRT_2PI;
  }

  /** Φ⁻¹(p) for {@code 0 < p < 1}; ±∞ at 0 and 1, NaN outside. */
  public static double inverse(double p) {
    if (!(p >= 0 && p <= 1)) {
      return Double.NaN;
    }
    if (p == 0) {
      return Double.NEGATIVE_INFINITY;
    }
    if (p == 1) {
      return Double.POSITIVE_INFINITY;
    }
    double x = acklam(p);
    // One Halley step: cubic convergence takes Acklam's 1e-9 to the limit of double arithmetic.
    double e = cdf(x) - p;
    double u = e * SQRT_2PI * StrictMath.exp(0.5 * x * x);
    return x - u / (1 + 0.5 * x * u);
  }

  private static double acklam(double p) {
    final double plow = 0.02425;
    if (p < plow) {
      double q = StrictMath.sqrt(-2 * StrictMath.log(p));
      return (((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q - 2.400758277161838e+00) * q
              - 2.549732539343734e+00) * q + 4.374664141464968e+00) * q + 2.938163982698783e+00)
          / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q + 2.445134137142996e+00) * q
              + 3.754408661907416e+00) * q + 1);
    }
    if (p > 1 - plow) {
      return -acklam(1 - p);
    }
    double q = p - 0.5;
    double r = q * q;
    return (((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r - 2.759285104469687e+02) * r
            + 1.383577518672690e+02) * r - 3.066479806614716e+01) * r + 2.506628277459239e+00) * q
        / (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r - 1.556989798598866e+02) * r
            + 6.680131188771972e+01) * r - 1.328068155288572e+01) * r + 1);
  }
}
