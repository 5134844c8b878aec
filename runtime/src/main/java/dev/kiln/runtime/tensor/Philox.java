package dev.kiln.runtime.tensor;

/**
 * Philox 4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy
 * as 1, 2, 3" (SC'11), as in the Random123 library, cuRAND and PyTorch's CUDA generator. Output block {@code n} is a
 * pure function of (key, counter = n): there is no sequential state, so any element of a stream can be computed
 * independently, on any thread or device, and always gives the same bits.
 *
 * <p>A round multiplies two of the four 32-bit words by fixed constants, swaps the high and low halves of the
 * products with the other words and mixes in the key; the key is bumped by the Weyl constants between rounds.
 */
public final class Philox {
  private static final long M0 = 0xD2511F53L;
  private static final long M1 = 0xCD9E8D57L;
  private static final int W0 = 0x9E3779B9;
  private static final int W1 = 0xBB67AE85;
  public static final int ROUNDS = 10;

  private Philox() {}

  /**
   * One 128-bit output block for counter words {@code c0..c3} (c0 least significant) and key words {@code k0, k1},
   * written to {@code out[0..3]}.
   */
  public static void block(int c0, int c1, int c2, int c3, int k0, int k1, int[] out) {
    for (int r = 0; r < ROUNDS; r++) {
      if (r > 0) {
        k0 += W0;
        k1 += W1;
      }
      long p0 = M0 * (c0 & 0xffffffffL);
      long p1 = M1 * (c2 & 0xffffffffL);
      int n0 = (int) (p1 >>> 32) ^ c1 ^ k0;
      int n1 = (int) p1;
      int n2 = (int) (p0 >>> 32) ^ c3 ^ k1;
      int n3 = (int) p0;
      c0 = n0;
      c1 = n1;
      c2 = n2;
      c3 = n3;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
  }

  /**
   * The block for a 64-bit {@code counter} in words 0-1 and a 64-bit {@code stream} in words 2-3, keyed by a 64-bit
   * {@code key} (low word first) — the layout {@link Rng} uses.
   */
  public static void block(long counter, long stream, long key, int[] out) {
    block((int) counter, (int) (counter >>> 32), (int) stream, (int) (stream >>> 32), (int) key, (int) (key >>> 32),
        out);
  }
}
