package dev.kiln.runtime.cuda;

import dev.kiln.dsl.DType;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * Fused scaled-dot-product attention on the GPU ({@code flash_attention.cu}, and {@code flash_attention_sm90a.cu}
 * on Hopper): {@code softmax(q k^T * scale) v} without materialising the score matrix, and its backward pass.
 *
 * <p>Inputs are {@code [..., n, d]} arrays (usually {@code [batch, heads, n, d]}), all of one shape and dtype, in any
 * layout whose last dim is contiguous and whose leading dims merge into {@code [batch, heads]} (see {@link Heads}):
 * a head-split view of a {@code [batch, n, heads·d]} projection is read where it lies. bf16 with head dim 32, 64,
 * 80 or 128 runs on tensor cores, and writes its results (output and gradients) as bf16 or, from the same fp32
 * accumulators, as fp32 (mixed precision then needs no cast of the results); fp32, and bf16 with any other head dim
 * up to 256, runs on a one-warp-per-row fp32 kernel that is exact but slow. The forward pass returns the per-row
 * log-sum-exp (natural log, fp32, {@code [..., n]}, contiguous) that the backward pass needs. Which tensor-core
 * kernel runs is {@link Tuning}'s choice: on compute capability 9.0 the warpgroup-MMA ({@code wgmma}) kernels at
 * head dims 64 and 128, elsewhere {@code mma.sync} ones; at head dim 32 and up to 256 rows, kernels that hold a whole
 * (batch, head) slab in one block.
 */
public final class FlashAttention {
  private static final int SIMT_MAX_HEAD_DIM = 256;
  /** Rows of {@code dot} each warp of {@code kiln_attn_bwd_dot_*} sums (KILN_DOT_ROWS in flash_attention.cu). */
  private static final int DOT_ROWS_PER_WARP = 4;
  /** Groups of rows each warp of {@code kiln_attn_bwd_dot_vec_d*} sums (KILN_DOT_VEC_STEPS). */
  private static final int DOT_VEC_STEPS = 4;

  /**
   * Whether {@code rowsum(dOut · out)} can take 16-byte loads ({@code kiln_attn_bwd_dot_vec_d*}): both bf16, the head
   * width a multiple of 8 up to 256, every row 16-byte aligned.
   */
  private static boolean dotVectorised(CudaArray out, Heads lo, CudaArray dOut, Heads ldo, long d) {
    return out.dtype() == DType.BF16 && dOut.dtype() == DType.BF16 && d >= 8 && d <= 256 && d % 8 == 0
        && out.address() % 16 == 0 && dOut.address() % 16 == 0 && lo.stridesMultipleOf(8)
        && ldo.stridesMultipleOf(8);
  }

  /** The output and the saved log-sum-exp of each query row. */
  public record Forward(CudaArray out, CudaArray lse) implements AutoCloseable {
    @Override
    public void close() {
      out.close();
      lse.close();
    }
  }

  /** Gradients with respect to q, k and v. */
  public record Gradients(CudaArray dq, CudaArray dk, CudaArray dv) implements AutoCloseable {
    @Override
    public void close() {
      dq.close();
      dk.close();
      dv.close();
    }
  }

  /**
   * Which compiled variant of each tensor-core kernel to launch, per pass and head dim. A variant's name is
   * {@code w<warps>[r32|wg][k<keys>][mb<blocks>]}: the warps per block, {@code r32} where each warp owns 32 query (or
   * key) rows instead of 16 — every K/V fragment read from shared memory then feeds two MMAs, which halves the
   * shared-memory traffic per MAC — {@code wg} for Hopper's warpgroup MMA ({@code flash_attention_sm90a.cu}: four
   * warps multiply 64 rows together, reading K and V from shared memory directly), {@code k32} or {@code k128}
   * where the forward pass takes that many keys at a time instead of 64, and the register cap that lets
   * {@code <blocks>} blocks share a multiprocessor (see the end of flash_attention.cu). A {@code wg} variant runs
   * on compute capability 9.0 only; elsewhere the head dim's {@link #PORTABLE} choice runs instead. {@link #DEFAULT}
   * is what measured fastest on an H200; {@code CudaBenchmark} times the others so the choice can be re-made on
   * other GPUs, and {@code KILN_ATTENTION_TUNING} applies it ({@link #configured}).
   *
   * @param forward variant of the forward kernel per head dim (32, 64, 80, 128)
   * @param backward variant of the dK/dV and dQ kernels per head dim (one name for both)
   * @param longForward variant of the forward kernel for sequences of at least {@link #LONG_SEQUENCE} query rows,
   *     for the head dims where it differs from {@code forward}
   */
  public record Tuning(Map<Integer, String> forward, Map<Integer, String> backward, Map<Integer, String> longForward) {
    /** Query rows from which {@link #longForward} applies. */
    public static final long LONG_SEQUENCE = 8192;

    /**
     * The compiled forward variants per head dim (flash_attention.cu's KILN_FWD lines, and flash_attention_sm90a.cu's
     * KILN_FWD_WGP lines for the {@code wg} ones).
     */
    public static final Map<Integer, List<String>> FORWARD_VARIANTS = Map.of(
        32, List.of("w4mb4", "w4r32", "w8wgp", "w8h256", "w8h256mb3"),
        64, List.of("w4mb4", "w8", "w8mb2", "w4r32", "w4r32k32", "w4wgp", "w8wgp", "w12wgpk128"),
        80, List.of("w4mb3", "w4r32", "w4r32k32", "w16h512kv"),
        128, List.of("w4mb2", "w8", "w4mb3", "w4r32", "w4r32k32", "w4wgp", "w8wgp", "w8wgpk128"));
    /**
     * The compiled backward variants per head dim (KILN_BWD and KILN_BWD_WG lines: a dK/dV and a dQ kernel each).
     * d128 has no {@code r32}: 32 keys a warp would hold 256 fp32 accumulators for dK and dV alone.
     */
    public static final Map<Integer, List<String>> BACKWARD_VARIANTS = Map.of(
        32, List.of("w4mb3", "w4r32", "w8wgk128", "w8h256"),
        64, List.of("w4mb3", "w4", "w8", "w4r32", "w4wg", "w8wg", "w8wgk128"),
        80, List.of("w4", "w4r32", "w8h512s"),
        128, List.of("w4", "w8", "w4wg", "w8wg", "w8wgk32"));

    /**
     * Fastest of the compiled variants on an H200 (CudaBenchmark's BENCHVAR lines, docs/cuda.md has the table).
     * Forward: warpgroup MMA with the softmax overlapped (wgp) at d64 and d128 (16k, thirteenth session: d64 3.22 ms
     * with w12wgpk128, 3.58 with w4wgp, 4.76 at 32 rows a warp on mma.sync; d128 2.60 against w8wgp's 2.83); at d80
     * one block a slab of up to 512 rows, k and v in shared memory and q from global (w16h512kv; xl's attention at its
     * training shape, CudaBenchmark shapes, twenty-seventh session: forward 0.0301 ms against 0.0451 for w4r32, 32 rows
     * a warp, which longer sequences take); at d32 one block a whole head (w8h256mb3) up to 256 rows, TinyStories'
     * context (ncu, one layer: 75 us against w4mb4's 97; longer sequences take BEYOND_WHOLE_HEAD's w8wgp). Backward:
     * warpgroup MMA at d64 and d128 (forward+backward at 16k: d64 11.8 ms, 12.4 with w8wg; d128 10.3 against 11.6
     * with w4wg); at d32 the whole-head kernel (188 us a layer against 307 for the row sums, dK/dV and dQ kernels of
     * w4mb3); at d80 one block a slab of up to 512 rows, dK/dV with q and dO resident and dQ with k and v resident
     * (w8h512s; xl's shape, CudaBenchmark shapes, twenty-eighth session: forward and backward 0.1183 ms against 0.1666
     * with w4, which longer sequences take); elsewhere 16 rows a warp, as 32 was 5% faster at 16k but 1% slower at n
     * = 512, and training runs short sequences.
     */
    public static final Tuning DEFAULT = new Tuning(
        Map.of(32, "w8h256mb3", 64, "w8wgp", 80, "w16h512kv", 128, "w8wgpk128"),
        Map.of(32, "w8h256", 64, "w8wgk128", 80, "w8h512s", 128, "w8wg"),
        // Three warpgroups and 128-key tiles at d64 from 8k rows: at 16k 3.97 ms against w8wgp's 4.30, at 2k 0.647
        // against 0.617 and at 512 0.285 against 0.215 (BENCHVAR lines of one call, twelfth session; thirteenth:
        // 3.22 at 16k, 0.53 at 2k against w8wgp's 0.46).
        Map.of(64, "w12wgpk128"));

    /** Tunings of one variant per pass and head dim, whatever the length. */
    public Tuning(Map<Integer, String> forward, Map<Integer, String> backward) {
      this(forward, backward, Map.of());
    }

    /**
     * The fastest variants that run on every supported GPU (sm_80 and up): what replaces a {@code wg} choice off
     * Hopper, or where a kernel's assumption does not hold (the wgmma forward needs a positive scale).
     */
    public static final Tuning PORTABLE = new Tuning(
        Map.of(32, "w4mb4", 64, "w4r32", 80, "w4r32", 128, "w4r32"),
        Map.of(32, "w4mb3", 64, "w4mb3", 80, "w4", 128, "w4"));

    /**
     * What a whole-head variant ({@link #wholeHeadRows}) hands the sequences it cannot take (longer than its rows, or a
     * scale it cannot fold): the head dim's fastest tiled variants on an H200 (CudaBenchmark, fifteenth session, d32
     * at n = 512 / 2048 / 16k: forward w8wgp 0.237 / 0.651 / 4.47 ms against w4mb4's 0.279 / 0.882 / 6.45;
     * forward+backward with w8wgk128 1.04 / 2.88 / 19.9 against w4mb3's 1.09 / 3.45 / 25.3). Off Hopper, or where a
     * {@code wg} kernel's assumption fails, {@link #PORTABLE}'s choice runs instead, as for any {@code wg} choice.
     */
    public static final Tuning BEYOND_WHOLE_HEAD = new Tuning(
        Map.of(32, "w8wgp", 64, "w8wgp", 80, "w4r32", 128, "w8wgpk128"),
        Map.of(32, "w8wgk128", 64, "w8wgk128", 80, "w4", 128, "w8wg"));

    /** The environment variable {@link #configured} reads. */
    public static final String ENVIRONMENT = "KILN_ATTENTION_TUNING";
    private static final java.util.regex.Pattern ENTRY =
        java.util.regex.Pattern.compile("\\s*(fwdlong|fwd|bwd)(\\d+)=(\\w+)\\s*");

    /**
     * {@link #DEFAULT} with the choices of {@code KILN_ATTENTION_TUNING} applied: a comma-separated list of
     * {@code fwd<d>=<variant>} (every length), {@code fwdlong<d>=<variant>} (from {@link #LONG_SEQUENCE} rows) and
     * {@code bwd<d>=<variant>} (e.g. {@code bwd64=w4wg,fwd128=w8wgp}), so a choice re-made with CudaBenchmark on
     * another GPU can be used without a rebuild.
     *
     * @throws IllegalArgumentException naming the entry and the accepted form when the variable is malformed, and
     *     the compiled choices when a variant is unknown
     */
    public static Tuning configured() {
      return DEFAULT.with(System.getenv(ENVIRONMENT));
    }

    /** This tuning with the choices of {@code spec} (the form of {@link #configured}) applied; null or blank: none. */
    public Tuning with(String spec) {
      Tuning t = this;
      if (spec == null || spec.isBlank()) {
        return t;
      }
      for (String entry : spec.split(",")) {
        java.util.regex.Matcher m = ENTRY.matcher(entry);
        if (!m.matches()) {
          throw new IllegalArgumentException(ENVIRONMENT + " entry '" + entry + "' is not of the form fwd<d>=<variant>,"
              + " fwdlong<d>=<variant> or bwd<d>=<variant> (e.g. bwd64=w4wg)");
        }
        int d = Integer.parseInt(m.group(2));
        t = switch (m.group(1)) {
          case "fwd" -> t.withForward(d, m.group(3));
          case "fwdlong" -> t.withLongForward(d, m.group(3));
          default -> t.withBackward(d, m.group(3));
        };
      }
      return t;
    }

    public Tuning {
      forward = Map.copyOf(forward);
      backward = Map.copyOf(backward);
      longForward = Map.copyOf(longForward);
      check("forward", forward, FORWARD_VARIANTS);
      check("backward", backward, BACKWARD_VARIANTS);
      for (Map.Entry<Integer, String> e : longForward.entrySet()) {
        List<String> options = FORWARD_VARIANTS.get(e.getKey());
        if (options == null || !options.contains(e.getValue())) {
          throw new IllegalArgumentException("attention long-sequence forward kernel variant " + e.getValue()
              + " is not compiled for head dim " + e.getKey() + "; choose one of "
              + (options == null ? "the head dims " + new TreeSet<>(FORWARD_VARIANTS.keySet()) : options));
        }
      }
    }

    private static void check(String pass, Map<Integer, String> chosen, Map<Integer, List<String>> compiled) {
      if (!chosen.keySet().equals(compiled.keySet())) {
        throw new IllegalArgumentException("attention " + pass + " tuning must name a variant for each head dim "
            + new TreeSet<>(compiled.keySet()) + ", got " + new TreeSet<>(chosen.keySet()));
      }
      for (Map.Entry<Integer, String> e : chosen.entrySet()) {
        List<String> options = compiled.get(e.getKey());
        if (!options.contains(e.getValue())) {
          throw new IllegalArgumentException("attention " + pass + " kernel variant " + e.getValue() + " is not"
              + " compiled for head dim " + e.getKey() + "; choose one of " + options);
        }
      }
    }

    /** This tuning with the forward variant of head dim {@code d} replaced, for every length. */
    public Tuning withForward(int d, String variant) {
      Map<Integer, String> f = new HashMap<>(forward);
      f.put(d, variant);
      Map<Integer, String> l = new HashMap<>(longForward);
      l.remove(d);
      return new Tuning(f, backward, l);
    }

    /** This tuning with the forward variant of head dim {@code d} from {@link #LONG_SEQUENCE} rows replaced. */
    public Tuning withLongForward(int d, String variant) {
      Map<Integer, String> l = new HashMap<>(longForward);
      l.put(d, variant);
      return new Tuning(forward, backward, l);
    }

    /** This tuning with the backward variant of head dim {@code d} replaced. */
    public Tuning withBackward(int d, String variant) {
      Map<Integer, String> b = new HashMap<>(backward);
      b.put(d, variant);
      return new Tuning(forward, b, longForward);
    }

    /** The forward variant for head dim {@code d} over {@code n} query rows. */
    public String forward(long d, long n) {
      String longer = n >= LONG_SEQUENCE ? longForward.get((int) d) : null;
      return longer != null ? longer : forward.get((int) d);
    }

    String forward(long d) {
      return forward.get((int) d);
    }

    String backward(long d) {
      return backward.get((int) d);
    }

    static int warps(String variant) {
      int end = 1;
      while (end < variant.length() && Character.isDigit(variant.charAt(end))) {
        end++;
      }
      return Integer.parseInt(variant.substring(1, end));
    }

    private static final java.util.regex.Pattern WHOLE_HEAD = java.util.regex.Pattern.compile("w\\d+h(\\d+).*");

    /**
     * The most rows of a whole-head variant ({@code w<warps>h<rows>}: one block a (batch, head) slab, q, k and v
     * loaded into shared memory once; the KILN_FWD_HEAD and KILN_BWD_HEAD lines), or 0 for a tiled one. Longer
     * sequences run the head dim's {@link #BEYOND_WHOLE_HEAD} variant instead.
     */
    static int wholeHeadRows(String variant) {
      java.util.regex.Matcher m = WHOLE_HEAD.matcher(variant);
      return m.matches() ? Integer.parseInt(m.group(1)) : 0;
    }

    /**
     * Whether a whole-head forward variant keeps only k and v in shared memory ({@code w<warps>h<rows>kv}, fwd_head's
     * QG form), each warp reading its query rows from global memory: a slab of 512 rows at d80 fits in 180 KB.
     */
    static boolean queryFromGlobal(String variant) {
      return wholeHeadRows(variant) > 0 && variant.endsWith("kv");
    }

    /**
     * Whether a backward variant is the slab form ({@code w<warps>h<rows>s}, KILN_BWD_SLAB): a dK/dV and a dQ kernel
     * with the tiled ones' arguments, after the same row-sum kernel, one block a (batch, head) slab of up to {@code
     * rows} rows; dK/dV keeps q and dO resident, dQ keeps k and v.
     */
    static boolean slabBackward(String variant) {
      return wholeHeadRows(variant) > 0 && variant.endsWith("s");
    }

    /** Whether {@code variant} is a warpgroup-MMA kernel of {@code flash_attention_sm90a.cu} (Hopper only). */
    static boolean hopperOnly(String variant) {
      return variant.contains("wg");
    }

    /** Query (forward, dQ) or key (dK/dV) rows each warp owns. */
    static int rowsPerWarp(String variant) {
      return variant.contains("r32") ? 32 : 16;
    }

    /** Key tile of the forward pass (the KILN_FWD and KILN_FWD_WGP lines): 32 or 128 where the name says, else 64. */
    static int forwardKeyTile(String variant) {
      return variant.contains("k128") ? 128 : variant.contains("k32") ? 32 : 64;
    }

    /**
     * Query tile of dK/dV and key tile of dQ (KILN_BWD lines): 32 where a warp owns 32 rows or d is 128
     * (to stay under 255 registers), else 64; for {@code wg} variants (KILN_BWD_WG lines) 64, or 128 for
     * {@code k128}.
     */
    static int backwardTile(long d, String variant) {
      if (hopperOnly(variant)) {
        return forwardKeyTile(variant);
      }
      return rowsPerWarp(variant) == 32 || d > 80 ? 32 : 64;
    }
  }

  private final CudaDevice device;
  private final CudaStream stream;
  private final Tuning tuning;

  public FlashAttention(CudaDevice device) {
    this(device.defaultStream());
  }

  /** With {@link Tuning#configured()}: the measured defaults, and the environment's overrides. */
  public FlashAttention(CudaStream stream) {
    this(stream, Tuning.configured());
  }

  public FlashAttention(CudaStream stream, Tuning tuning) {
    this.device = stream.device();
    this.stream = stream;
    this.tuning = tuning;
  }

  /** True when {@code dtype} and head dim {@code d} take the tensor-core kernels. */
  public static boolean usesTensorCores(DType dtype, long d) {
    return dtype == DType.BF16 && (d == 32 || d == 64 || d == 80 || d == 128);
  }

  /**
   * Where a {@code [..., n, d]} array's rows lie: its leading dims as {@code [batches, heads]} (heads = dim -3, 1
   * below rank 3; the dims before it merged into one) with strides {@code sb}, {@code sh}, and row stride
   * {@code sr}; the last dim is contiguous. Element {@code (b, h, r, c)} is at {@code b·sb + h·sh + r·sr + c}.
   */
  public record Heads(long batches, long heads, long sb, long sh, long sr) {
    /** {@code a}'s layout, or null when its last dim is strided or its batch dims do not merge into one stride. */
    public static Heads of(CudaArray a) {
      int r = a.rank();
      if (r < 2 || (a.shape(-1) > 1 && a.stride(r - 1) != 1)) {
        return null;
      }
      long heads = r >= 3 ? a.shape(r - 3) : 1;
      long sh = r >= 3 ? a.stride(r - 3) : 0;
      long batches = 1;
      long sb = 0;
      int inner = -1; // the innermost batch dim of size > 1 seen so far
      for (int i = r - 4; i >= 0; i--) {
        if (a.shape(i) == 1) {
          continue;
        }
        if (inner >= 0 && a.stride(i) != a.stride(inner) * a.shape(inner)) {
          return null;
        }
        if (inner < 0) {
          sb = a.stride(i);
        }
        inner = i;
        batches *= a.shape(i);
      }
      return new Heads(batches, heads, sb, sh, a.stride(r - 2));
    }

    long[] words() {
      return new long[] {sb, sh, sr};
    }

    /** Every (b, h) slab and row starts a multiple of {@code elements} past the first. */
    public boolean stridesMultipleOf(long elements) {
      return (batches == 1 || sb % elements == 0) && (heads == 1 || sh % elements == 0) && sr % elements == 0;
    }
  }

  /**
   * RoPE for the whole-head kernels to apply as they load q and k (their {@code _rope} entry points; see
   * {@link #forwardRotatingInto}): int64 {@code positions} whose element for row (b, h, r) of q's [batches, heads, n]
   * (merged as {@link Heads} merges them) lies at {@code b·sb + h·sh + r·sr} of {@code layout}, and {@code invFreq}
   * the {@code d / 2} frequencies {@code theta^(-i / half)} in double, as the RoPE kernels take them.
   */
  public record Rope(CudaArray positions, Heads layout, CudaArray invFreq) {
    long[] words() {
      return new long[] {positions.address(), layout.sb(), layout.sh(), layout.sr(), invFreq.address()};
    }

    /** Shared memory the kernels add for the rotation: a slab's positions and the frequencies (rope_stage). */
    static int sharedBytes(int rows, int d) {
      return rows * 8 + d / 2 * 8;
    }

    /**
     * Shared memory the backward adds beyond {@link #sharedBytes}: each row's (cos, sin) pairs as fp16, rows of
     * {@code d / 2 + 4} words (flash_attention.cu, kiln_rope_cs_ld), for the stores that turn dq and dk back.
     */
    static int backwardTableBytes(int rows, int d) {
      return rows * (d / 2 + 4) * 4;
    }
  }

  /**
   * Whether attention at head dim {@code d} over {@code n} rows of bf16 runs whole-head kernels forward and backward
   * (the slab forms included), which alone can apply RoPE as they load q and k ({@link #forwardRotatingInto},
   * {@link #backwardRotatingInto}), with the shared memory for it on this device.
   */
  public boolean rotatesOnLoad(long d, long n) {
    String forward = usesTensorCores(DType.BF16, d) ? tuning.forward(d, n) : null;
    String backward = forward != null ? tuning.backward(d) : null;
    int rows = backward == null ? 0 : Tuning.wholeHeadRows(backward);
    return backward != null && n > 0 && n <= Tuning.wholeHeadRows(forward) && n <= rows
        && wholeHeadForwardFits(forward, (int) d, true)
        && (!Tuning.slabBackward(backward) || slabBackwardFits(rows, (int) d, true));
  }

  /** Forward pass with the usual scale {@code 1 / sqrt(d)}. */
  public Forward forward(CudaArray q, CudaArray k, CudaArray v, AttentionMask mask) {
    return forward(q, k, v, mask, (float) (1.0 / Math.sqrt(q.shape(-1))));
  }

  public Forward forward(CudaArray q, CudaArray k, CudaArray v, AttentionMask mask, float scale) {
    Geometry g = check(q, k, v);
    CudaArray out = CudaArray.empty(device, stream, q.dtype(), q.shape());
    CudaArray lse = CudaArray.empty(device, stream, DType.F32, Arrays.copyOf(q.shape(), q.rank() - 1));
    forwardInto(q, k, v, mask, scale, out, lse, g, null);
    return new Forward(out, lse);
  }

  /** Forward pass into existing {@code out} (like q) and {@code lse} ({@code [..., n]} fp32) arrays. */
  public void forwardInto(CudaArray q, CudaArray k, CudaArray v, AttentionMask mask, float scale, CudaArray out,
      CudaArray lse) {
    forwardInto(q, k, v, mask, scale, out, lse, check(q, k, v), null);
  }

  /**
   * {@link #forwardInto} of {@code rope(q)} and {@code rope(k)}, given q and k before RoPE: the whole-head kernel
   * turns their rows in shared memory as they land, so the turned q and k are never written. Where another variant
   * would run (longer sequences, another head dim, a scale it cannot fold) it launches nothing and returns false, and
   * the caller applies RoPE itself.
   */
  public boolean forwardRotatingInto(CudaArray q, CudaArray k, CudaArray v, AttentionMask mask, float scale,
      CudaArray out, CudaArray lse, Rope rope) {
    return forwardInto(q, k, v, mask, scale, out, lse, check(q, k, v), java.util.Objects.requireNonNull(rope));
  }

  private boolean forwardInto(CudaArray q, CudaArray k, CudaArray v, AttentionMask mask, float scale, CudaArray out,
      CudaArray lse, Geometry g, Rope rope) {
    Heads lo = checkResult(out, q, g, "out");
    checkRows(lse, g, "lse");
    if (g.bh == 0) {
      return true; // nothing to compute (and a grid may not be empty)
    }
    int causal = mask == AttentionMask.CAUSAL ? 1 : 0;
    KernelLoader.Module m = device.kernels().module("flash_attention");
    if (rope != null && !rotatingForward(g, scale)) {
      return false;
    }
    KernelArgs args = new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(out).ptr(lse).i32((int) g.n).i32((int) g.heads);
    if (g.tensorCores) {
      int d = (int) g.d;
      String variant = tuning.forward(d, g.n);
      int rows = Tuning.wholeHeadRows(variant);
      // A whole-head kernel holds at most `rows` rows of q, k and v, in shared memory the device must have: the d80
      // slab's 180 KB fit Hopper's 227 KB a block but not an A100's 163.
      if (rows > 0 && (g.n > rows
          || !wholeHeadForwardFits(variant, d, rope != null))) {
        variant = Tuning.BEYOND_WHOLE_HEAD.forward(d);
        rows = 0;
      }
      // The wgmma and whole-head forwards fold the scale into their exponentials after taking the maximum of the raw
      // scores, which only a positive scale allows.
      if ((Tuning.hopperOnly(variant) && !device.kernels().hopper()) || ((rows > 0 || Tuning.hopperOnly(variant))
          && !(scale > 0))) {
        variant = Tuning.PORTABLE.forward(d);
        rows = 0;
      }
      int warps = Tuning.warps(variant);
      int bm = warps * Tuning.rowsPerWarp(variant);
      int bn = Tuning.forwardKeyTile(variant);
      int smem;
      long blocks = ceilDiv(g.n, bm);
      if (rows > 0) {
        smem = wholeHeadForwardBytes(variant, d, rope != null);
        blocks = 1;
      } else if (Tuning.hopperOnly(variant)) {
        // Unpadded swizzled tiles (Q, then two K and two V buffers), plus slack to align them to 1024 bytes.
        m = device.kernels().module("flash_attention_sm90a");
        smem = (bm + 4 * bn) * d * 2 + 1024;
      } else {
        smem = (bm + 4 * bn) * (d + 8) * 2;
      }
      args.f32(scale).i32(causal).struct(g.q.words()).struct(g.k.words()).struct(g.v.words()).struct(lo.words());
      if (rope != null) {
        args.struct(rope.words());
      }
      m.kernel("kiln_attn_fwd_bf16_d" + d + "_" + variant + resultSuffix(out) + (rope != null ? "_rope" : ""))
          .launch(stream, blocks, g.bh, warps * 32, smem, args);
    } else {
      m.kernel("kiln_attn_fwd_simt_" + suffix(q.dtype())).launch(stream, ceilDiv(g.n, 4), g.bh, 128, 0,
          args.i32((int) g.d).f32(scale).i32(causal).struct(g.q.words()).struct(g.k.words()).struct(g.v.words())
              .struct(lo.words()));
    }
    return true;
  }

  /** Shared memory of the slab backward's dK/dV kernel: q and dO of {@code rows} padded rows, their lse and dot. */
  static int slabBackwardBytes(int rows, int d) {
    return 2 * rows * (d + 8) * 2 + 2 * rows * 4;
  }

  /**
   * Whether the slab backward over {@code rows} rows at head dim {@code d} fits this device's shared memory: its
   * dK/dV kernel, the larger of the two, with RoPE's positions and frequencies where {@code rope}.
   */
  private boolean slabBackwardFits(int rows, int d, boolean rope) {
    return slabBackwardBytes(rows, d) + (rope ? Rope.sharedBytes(rows, d) : 0) <= device.maxSharedMemoryPerBlock();
  }

  /** Whether a whole-head forward {@code variant} at head dim {@code d} fits this device's shared memory. */
  private boolean wholeHeadForwardFits(String variant, int d, boolean rope) {
    return wholeHeadForwardBytes(variant, d, rope) <= device.maxSharedMemoryPerBlock();
  }

  /**
   * Shared memory of a whole-head forward {@code variant} at head dim {@code d}: q, k and v of one (batch, head) slab
   * in padded rows, k and v only for the kv variants (whose warps take their q rows from global memory), and RoPE's
   * positions and frequencies where it turns q and k.
   */
  static int wholeHeadForwardBytes(String variant, int d, boolean rope) {
    int rows = Tuning.wholeHeadRows(variant);
    return (Tuning.queryFromGlobal(variant) ? 2 : 3) * rows * (d + 8) * 2 + (rope ? Rope.sharedBytes(rows, d) : 0);
  }

  /** Whether the forward of {@code g} at {@code scale} runs a whole-head variant (the variant choice below). */
  private boolean rotatingForward(Geometry g, float scale) {
    String variant = g.tensorCores ? tuning.forward(g.d, g.n) : "";
    return g.tensorCores && scale > 0 && g.n <= Tuning.wholeHeadRows(variant)
        && wholeHeadForwardFits(variant, (int) g.d, true);
  }

  /** Backward pass with the usual scale. */
  public Gradients backward(CudaArray q, CudaArray k, CudaArray v, CudaArray out, CudaArray lse, CudaArray dOut,
      AttentionMask mask) {
    return backward(q, k, v, out, lse, dOut, mask, (float) (1.0 / Math.sqrt(q.shape(-1))));
  }

  /**
   * Gradients of {@code sum(out * dOut)}. Three kernels: {@code dot = rowsum(dOut * out)}, then dK/dV (one block
   * per key tile, walking query tiles) and dQ (one block per query tile, walking key tiles) — each output written by
   * exactly one block, so no atomics and deterministic results. A whole-head variant ({@link Tuning#wholeHeadRows})
   * does all three in one kernel, one block a (batch, head) slab.
   */
  public Gradients backward(CudaArray q, CudaArray k, CudaArray v, CudaArray out, CudaArray lse, CudaArray dOut,
      AttentionMask mask, float scale) {
    check(q, k, v);
    CudaArray dq = CudaArray.empty(device, stream, q.dtype(), q.shape());
    CudaArray dk = CudaArray.empty(device, stream, q.dtype(), q.shape());
    CudaArray dv = CudaArray.empty(device, stream, q.dtype(), q.shape());
    backwardInto(q, k, v, out, lse, dOut, mask, scale, dq, dk, dv);
    return new Gradients(dq, dk, dv);
  }

  public void backwardInto(CudaArray q, CudaArray k, CudaArray v, CudaArray out, CudaArray lse, CudaArray dOut,
      AttentionMask mask, float scale, CudaArray dq, CudaArray dk, CudaArray dv) {
    backwardInto(q, k, v, out, lse, dOut, mask, scale, dq, dk, dv, null);
  }

  /**
   * {@link #backwardInto} of attention over {@code rope(q)} and {@code rope(k)}, given q and k before RoPE, writing the
   * gradients with respect to q and k before RoPE: the whole-head kernel turns q's and k's rows as they land and turns
   * dq and dk back (RoPE's backward) as it stores them. Where another variant would run it launches nothing and
   * returns false.
   */
  public boolean backwardRotatingInto(CudaArray q, CudaArray k, CudaArray v, CudaArray out, CudaArray lse,
      CudaArray dOut, AttentionMask mask, float scale, CudaArray dq, CudaArray dk, CudaArray dv, Rope rope) {
    return backwardInto(q, k, v, out, lse, dOut, mask, scale, dq, dk, dv, java.util.Objects.requireNonNull(rope));
  }

  private boolean backwardInto(CudaArray q, CudaArray k, CudaArray v, CudaArray out, CudaArray lse, CudaArray dOut,
      AttentionMask mask, float scale, CudaArray dq, CudaArray dk, CudaArray dv, Rope rope) {
    Geometry g = check(q, k, v);
    Heads lo = checkResult(out, q, g, "out");
    Heads ldo = checkInput(dOut, q, g.tensorCores, "dOut");
    Heads ldq = checkResult(dq, q, g, "dq");
    Heads ldk = checkResult(dk, q, g, "dk");
    Heads ldv = checkResult(dv, q, g, "dv");
    if (dq.dtype() != dk.dtype() || dq.dtype() != dv.dtype()) {
      throw new IllegalArgumentException("attention dq, dk and dv must have one dtype, got " + dq.dtype() + ", "
          + dk.dtype() + ", " + dv.dtype());
    }
    checkRows(lse, g, "lse");
    if (g.bh == 0) {
      return true; // nothing to compute (and a grid may not be empty)
    }
    int causal = mask == AttentionMask.CAUSAL ? 1 : 0;
    KernelLoader.Module m = device.kernels().module("flash_attention");
    int d = (int) g.d;
    String chosen = g.tensorCores ? tuning.backward(d) : null;
    int rows = chosen == null ? 0 : Tuning.wholeHeadRows(chosen);
    boolean slab = rows > 0 && Tuning.slabBackward(chosen);
    // A whole-head kernel holds at most `rows` rows and reads `out` in 16-byte pieces for its row sums; a slab kernel
    // holds two of q, k, v and dO, in shared memory the device must have.
    if (rows > 0 && (g.n > rows || (slab ? !slabBackwardFits(rows, d, rope != null)
        : out.address() % 16 != 0 || !lo.stridesMultipleOf(16 / out.dtype().byteSize())))) {
      chosen = Tuning.BEYOND_WHOLE_HEAD.backward(d);
      rows = 0;
      slab = false;
    }
    if (chosen != null && Tuning.hopperOnly(chosen) && !device.kernels().hopper()) {
      chosen = Tuning.PORTABLE.backward(d);
    }
    if (rope != null && rows == 0) {
      return false;
    }
    if (rows > 0 && !slab) {
      // q, k, v and dOut of one (batch, head) slab in padded rows and its rows' lse and dot: one kernel computes
      // dot = rowsum(dOut · out) and writes dq, dk and dv.
      int smem = 4 * rows * (d + 8) * 2 + 2 * rows * 4
          + (rope != null ? Rope.sharedBytes(rows, d) + Rope.backwardTableBytes(rows, d) : 0);
      KernelArgs args = new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(out).ptr(dOut).ptr(lse).ptr(dq).ptr(dk).ptr(dv)
          .i32((int) g.n).i32((int) g.heads).f32(scale).i32(causal).struct(g.q.words()).struct(g.k.words())
          .struct(g.v.words()).struct(lo.words()).struct(ldo.words()).struct(ldq.words()).struct(ldk.words())
          .struct(ldv.words());
      if (rope != null) {
        args.struct(rope.words());
      }
      m.kernel("kiln_attn_bwd_head_bf16_d" + d + "_" + chosen + resultSuffix(dq) + "_i" + suffix(out.dtype())
          + (rope != null ? "_rope" : "")).launch(stream, 1, g.bh, Tuning.warps(chosen) * 32, smem, args);
      return true;
    }
    try (CudaArray dot = CudaArray.empty(device, stream, DType.F32, g.bh * g.n)) {
      if (dotVectorised(out, lo, dOut, ldo, g.d)) {
        // d / 8 lanes a row, 16 bytes a lane, DOT_VEC_STEPS groups of 32 / (d / 8) rows a warp, 8 warps a block.
        long rowsPerWarp = DOT_VEC_STEPS * (32 / (g.d / 8));
        m.kernel("kiln_attn_bwd_dot_vec_d" + g.d).launch(stream, ceilDiv(g.n, 8 * rowsPerWarp), g.bh, 256, 0,
            new KernelArgs().ptr(out).ptr(dOut).ptr(dot).i32((int) g.n).i32((int) g.heads).struct(lo.words())
                .struct(ldo.words()));
      } else {
        m.kernel("kiln_attn_bwd_dot_" + suffix(out.dtype()) + "_" + suffix(dOut.dtype())).launch(stream,
            ceilDiv(g.n, 8 * DOT_ROWS_PER_WARP), g.bh, 256, 0, new KernelArgs().ptr(out).ptr(dOut).ptr(dot)
                .i32((int) g.n).i32((int) g.heads).i32((int) g.d).struct(lo.words()).struct(ldo.words()));
      }
      if (g.tensorCores) {
        String variant = "_" + chosen;
        int warps = Tuning.warps(chosen);
        int tile = Tuning.backwardTile(d, chosen); // query tile of dK/dV, key tile of dQ
        int block = warps * Tuning.rowsPerWarp(chosen);
        // Tiles: K and V of the block, two buffers of the other pass's two tiles; padded rows (mma.sync), or
        // unpadded swizzled ones aligned to 1024 bytes (wgmma, flash_attention_sm90a.cu).
        boolean wg = Tuning.hopperOnly(chosen);
        int tiles = (2 * block + 4 * tile) * (wg ? d : d + 8) * 2 + (wg ? 1024 : 0);
        if (wg) {
          m = device.kernels().module("flash_attention_sm90a");
        }
        int smemDkdv = tiles + 4 * tile * 4;
        long grid = ceilDiv(g.n, block);
        int smemDq = tiles;
        if (slab) {
          // One block a slab: q and dO (with lse and dot) for dK/dV, k and v for dQ, and RoPE's positions and
          // frequencies after them.
          grid = 1;
          int ropeBytes = rope != null ? Rope.sharedBytes(rows, d) : 0;
          smemDkdv = slabBackwardBytes(rows, d) + ropeBytes;
          smemDq = 2 * rows * (d + 8) * 2 + ropeBytes;
        }
        String ropeSuffix = rope != null ? "_rope" : "";
        KernelArgs dkdvArgs = new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(dOut).ptr(lse).ptr(dot).ptr(dk).ptr(dv)
            .i32((int) g.n).i32((int) g.heads).f32(scale).i32(causal).struct(g.q.words()).struct(g.k.words())
            .struct(g.v.words()).struct(ldo.words()).struct(ldk.words()).struct(ldv.words());
        KernelArgs dqArgs = new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(dOut).ptr(lse).ptr(dot).ptr(dq)
            .i32((int) g.n).i32((int) g.heads).f32(scale).i32(causal).struct(g.q.words()).struct(g.k.words())
            .struct(g.v.words()).struct(ldo.words()).struct(ldq.words());
        if (rope != null) {
          dkdvArgs.struct(rope.words());
          dqArgs.struct(rope.words());
        }
        m.kernel("kiln_attn_bwd_dkdv_bf16_d" + d + variant + resultSuffix(dk) + ropeSuffix).launch(stream, grid,
            g.bh, warps * 32, smemDkdv, dkdvArgs);
        m.kernel("kiln_attn_bwd_dq_bf16_d" + d + variant + resultSuffix(dq) + ropeSuffix).launch(stream, grid,
            g.bh, warps * 32, smemDq, dqArgs);
      } else {
        String sfx = suffix(q.dtype());
        m.kernel("kiln_attn_bwd_dkdv_simt_" + sfx).launch(stream, ceilDiv(g.n, 4), g.bh, 128, 0,
            new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(dOut).ptr(lse).ptr(dot).ptr(dk).ptr(dv).i32((int) g.n)
                .i32((int) g.heads).i32((int) g.d).f32(scale).i32(causal).struct(g.q.words())
                .struct(g.k.words()).struct(g.v.words()).struct(ldo.words()).struct(ldk.words())
                .struct(ldv.words()));
        m.kernel("kiln_attn_bwd_dq_simt_" + sfx).launch(stream, ceilDiv(g.n, 4), g.bh, 128, 0,
            new KernelArgs().ptr(q).ptr(k).ptr(v).ptr(dOut).ptr(lse).ptr(dot).ptr(dq).i32((int) g.n)
                .i32((int) g.heads).i32((int) g.d).f32(scale).i32(causal).struct(g.q.words())
                .struct(g.k.words()).struct(g.v.words()).struct(ldo.words()).struct(ldq.words()));
      }
    }
    return true;
  }

  /** Sizes, whether the tensor-core kernels run, and the layouts of q, k and v. */
  private record Geometry(long bh, long heads, long n, long d, boolean tensorCores, Heads q, Heads k, Heads v) {}

  private static Geometry check(CudaArray q, CudaArray k, CudaArray v) {
    if (q.rank() < 2) {
      throw new IllegalArgumentException("attention q must be [..., n, d], got " + q);
    }
    if (q.dtype() != DType.BF16 && q.dtype() != DType.F32) {
      throw new IllegalArgumentException("attention supports BF16 and F32, got " + q.dtype());
    }
    long n = q.shape(-2);
    long d = q.shape(-1);
    if (d < 1 || d > SIMT_MAX_HEAD_DIM) {
      throw new IllegalArgumentException("attention head dim " + d + " is not supported (at most "
          + SIMT_MAX_HEAD_DIM + ")");
    }
    if (n > Integer.MAX_VALUE) {
      throw new IllegalArgumentException("attention sequence length " + n + " exceeds 2^31 - 1");
    }
    long bh = n == 0 ? 0 : q.numel() / (n * d);
    if (bh > 65535) {
      throw new IllegalArgumentException("attention batch*heads " + bh + " exceeds the grid's 65535");
    }
    boolean tc = usesTensorCores(q.dtype(), d);
    return new Geometry(bh, q.rank() >= 3 ? q.shape(-3) : 1, n, d, tc, checkInput(q, q, tc, "q"),
        checkInput(k, q, tc, "k"), checkInput(v, q, tc, "v"));
  }

  /**
   * An input's layout. The tensor-core kernels copy 16-byte row chunks into shared memory, so there every slab and
   * row must start on a 16-byte boundary.
   */
  private static Heads checkInput(CudaArray a, CudaArray q, boolean tensorCores, String name) {
    if (!Arrays.equals(a.shape(), q.shape()) || a.dtype() != q.dtype()) {
      throw new IllegalArgumentException("attention " + name + " must match q " + q.dtype()
          + Arrays.toString(q.shape()) + ", got " + a.dtype() + Arrays.toString(a.shape()));
    }
    Heads h = layoutOf(a, name);
    if (tensorCores && (a.address() % 16 != 0 || !h.stridesMultipleOf(8))) {
      throw new IllegalArgumentException("attention " + name + " must start on 16 bytes and have batch, head and row"
          + " strides that are multiples of 8 elements for the tensor-core kernels, got " + a + " at address "
          + a.address() + "; copy it into a new array");
    }
    return h;
  }

  /**
   * A result's layout: q's shape, and q's dtype or, from the tensor-core kernels, fp32. Results are written two
   * columns at a time, so there every slab and row must start on a 4-byte (bf16) or 8-byte (fp32) boundary.
   */
  private static Heads checkResult(CudaArray a, CudaArray q, Geometry g, String name) {
    boolean f32FromBf16 = g.tensorCores && a.dtype() == DType.F32;
    if (!Arrays.equals(a.shape(), q.shape()) || (a.dtype() != q.dtype() && !f32FromBf16)) {
      throw new IllegalArgumentException("attention " + name + " must have q's shape " + Arrays.toString(q.shape())
          + " and dtype " + q.dtype() + (g.tensorCores ? " (or F32)" : "") + ", got " + a.dtype()
          + Arrays.toString(a.shape()));
    }
    Heads h = layoutOf(a, name);
    if (g.tensorCores && (a.address() % (2L * a.dtype().byteSize()) != 0 || !h.stridesMultipleOf(2))) {
      throw new IllegalArgumentException("attention " + name + " must start on " + 2 * a.dtype().byteSize()
          + " bytes and have even batch, head and row strides for the tensor-core kernels, got " + a);
    }
    return h;
  }

  private static Heads layoutOf(CudaArray a, String name) {
    Heads h = Heads.of(a);
    if (h == null) {
      throw new IllegalArgumentException("attention " + name + " must have a contiguous last dim and leading dims"
          + " that merge into [batch, heads], got " + a + "; copy it into a contiguous array");
    }
    return h;
  }

  private static String resultSuffix(CudaArray a) {
    return a.dtype() == DType.F32 ? "_of32" : "_obf16";
  }

  private static void checkRows(CudaArray lse, Geometry g, String name) {
    if (lse.dtype() != DType.F32 || lse.numel() != g.bh * g.n) {
      throw new IllegalArgumentException("attention " + name + " must be F32 with " + g.bh * g.n + " elements (one per"
          + " query row), got " + lse);
    }
    lse.requireContiguous("attention " + name);
  }

  private static String suffix(DType t) {
    return t == DType.BF16 ? "bf16" : "f32";
  }

  private static long ceilDiv(long a, long b) {
    return (a + b - 1) / b;
  }
}
