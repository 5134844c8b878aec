package dev.kiln.dsl;

/**
 * The op vocabulary of Kiln modules. Statically import it ({@code import static dev.kiln.dsl.Ops.*;}).
 *
 * <p>Inside a {@link Forward} or {@link Loss} method, Kiln's annotation processor reads these calls and checks their
 * shapes; specs and patterns must then be string constants. Called anywhere else, an op runs on the eager backend
 * (the runtime's reference interpreter). Ops that work "over the last dim" keep the einops convention of naming
 * nothing: write a {@link #rearrange} first to bring the dim you mean last.
 */
public final class Ops {
  private Ops() {}

  /**
   * Einstein summation in einops style: {@code einsum("... d_in, d_out d_in -> ... d_out", x, weight)}. Names are
   * separated by spaces, operands by commas; {@code ...} broadcasts across operands.
   */
  public static Tensor einsum(String spec, Tensor... operands) {
    return EagerBackends.get("Ops.einsum").einsum(spec, operands);
  }

  /**
   * Reorders, splits and merges dims: {@code rearrange(x, "b s (h d) -> b h s d", size("h", heads))}. Sizes name
   * the dims a split cannot infer.
   */
  public static Tensor rearrange(Tensor x, String pattern, DimSize... sizes) {
    return EagerBackends.get("Ops.rearrange").rearrange(x, pattern, sizes);
  }

  /** Reduces the dims that appear only on the left: {@code reduce(x, "b s d -> b d", Reduction.MEAN)}. */
  public static Tensor reduce(Tensor x, String pattern, Reduction how, DimSize... sizes) {
    return EagerBackends.get("Ops.reduce").reduce(x, pattern, how, sizes);
  }

  /** Repeats along the dims that appear only on the right: {@code repeat(x, "d -> b d", size("b", 4))}. */
  public static Tensor repeat(Tensor x, String pattern, DimSize... sizes) {
    return EagerBackends.get("Ops.repeat").repeat(x, pattern, sizes);
  }

  /** A dim size for {@link #rearrange}, {@link #reduce} or {@link #repeat}. */
  public static DimSize size(String name, long value) {
    return new DimSize(name, value);
  }

  /** {@code e^x}. */
  public static Tensor exp(Tensor x) {
    return EagerBackends.get("Ops.exp").exp(x);
  }

  /** Natural logarithm. */
  public static Tensor log(Tensor x) {
    return EagerBackends.get("Ops.log").log(x);
  }

  /** Square root. */
  public static Tensor sqrt(Tensor x) {
    return EagerBackends.get("Ops.sqrt").sqrt(x);
  }

  /** {@code 1 / sqrt(x)}. */
  public static Tensor rsqrt(Tensor x) {
    return EagerBackends.get("Ops.rsqrt").rsqrt(x);
  }

  /** {@code x * x}. */
  public static Tensor square(Tensor x) {
    return EagerBackends.get("Ops.square").square(x);
  }

  /** Hyperbolic tangent. */
  public static Tensor tanh(Tensor x) {
    return EagerBackends.get("Ops.tanh").tanh(x);
  }

  /** Cosine. */
  public static Tensor cos(Tensor x) {
    return EagerBackends.get("Ops.cos").cos(x);
  }

  /** Sine. */
  public static Tensor sin(Tensor x) {
    return EagerBackends.get("Ops.sin").sin(x);
  }

  /** {@code 1 / (1 + e^-x)}. */
  public static Tensor sigmoid(Tensor x) {
    return EagerBackends.get("Ops.sigmoid").sigmoid(x);
  }

  /** {@code x * sigmoid(x)} (SiLU, also called swish). */
  public static Tensor silu(Tensor x) {
    return EagerBackends.get("Ops.silu").silu(x);
  }

  /** GeLU with the tanh approximation: {@code 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))}. */
  public static Tensor gelu(Tensor x) {
    return EagerBackends.get("Ops.gelu").gelu(x);
  }

  /** {@code max(x, 0)}. */
  public static Tensor relu(Tensor x) {
    return EagerBackends.get("Ops.relu").relu(x);
  }

  /** Element-wise maximum, broadcasting. */
  public static Tensor maximum(Tensor a, Tensor b) {
    return EagerBackends.get("Ops.maximum").maximum(a, b);
  }

  /** {@code a > b} as a boolean tensor, broadcasting. */
  public static Tensor greater(Tensor a, Tensor b) {
    return EagerBackends.get("Ops.greater").greater(a, b);
  }

  /** {@code a < b} as a boolean tensor, broadcasting. */
  public static Tensor less(Tensor a, Tensor b) {
    return EagerBackends.get("Ops.less").less(a, b);
  }

  /** {@code cond ? a : b} element by element; the three broadcast together. */
  public static Tensor where(Tensor cond, Tensor a, Tensor b) {
    return EagerBackends.get("Ops.where").where(cond, a, b);
  }

  /** Softmax over the last dim, computed stably (subtracting the max). */
  public static Tensor softmax(Tensor x) {
    return EagerBackends.get("Ops.softmax").softmax(x);
  }

  /** {@code log(softmax(x))} over the last dim, computed stably. */
  public static Tensor logSoftmax(Tensor x) {
    return EagerBackends.get("Ops.logSoftmax").logSoftmax(x);
  }

  /** Sum over the last dim, kept as a dim of size 1 so the result broadcasts against {@code x}. */
  public static Tensor sum(Tensor x) {
    return EagerBackends.get("Ops.sum").sum(x);
  }

  /** Mean over the last dim, kept as a dim of size 1 so the result broadcasts against {@code x}. */
  public static Tensor mean(Tensor x) {
    return EagerBackends.get("Ops.mean").mean(x);
  }

  /**
   * RMSNorm over the last dim: {@code x / sqrt(mean(x^2) + eps) * weight}, with {@code x: ... d} and
   * {@code weight: d}.
   */
  public static Tensor rmsNorm(Tensor x, Tensor weight, double eps) {
    return EagerBackends.get("Ops.rmsNorm").rmsNorm(x, weight, eps);
  }

  /**
   * Rows of {@code table} picked by integer {@code ids} (embedding lookup): {@code table: n d}, {@code ids: ...}
   * gives {@code ... d}.
   */
  public static Tensor gather(Tensor table, Tensor ids) {
    return EagerBackends.get("Ops.gather").gather(table, ids);
  }

  /** The {@code k} largest values along the last dim and their positions: {@code ... n} gives {@code ... k}. */
  public static TopK topk(Tensor x, int k) {
    return EagerBackends.get("Ops.topk").topk(x, k);
  }

  /**
   * Scaled dot-product attention: {@code softmax(q k^T / sqrt(d) + mask) v} with {@code q: ... s d},
   * {@code k: ... t d}, {@code v: ... t e}, giving {@code ... s e}.
   */
  public static Tensor attention(Tensor q, Tensor k, Tensor v, Mask mask) {
    return EagerBackends.get("Ops.attention").attention(q, k, v, mask);
  }

  /**
   * Rotary position embedding (RoPE) with base {@code theta}: rotates each pair {@code (x[2i], x[2i+1])} of
   * {@code x: ... s d} by {@code position * theta^(-2i/d)}; {@code positions} (integers) broadcasts to {@code ... s}.
   */
  public static Tensor rope(Tensor x, Tensor positions, double theta) {
    return EagerBackends.get("Ops.rope").rope(x, positions, theta);
  }

  /**
   * Mean cross-entropy of {@code logits: ... v} against integer {@code targets: ...}; a scalar. Computed from
   * log-sum-exp, never through a materialised softmax.
   */
  public static Tensor crossEntropy(Tensor logits, Tensor targets) {
    return EagerBackends.get("Ops.crossEntropy").crossEntropy(logits, targets);
  }
}
