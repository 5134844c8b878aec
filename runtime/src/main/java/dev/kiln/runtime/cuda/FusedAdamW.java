package dev.kiln.runtime.cuda;

import dev.kiln.dsl.DType;
import dev.kiln.runtime.tensor.NdArray;
import dev.kiln.runtime.tensor.Storage;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;

/**
 * AdamW over many parameter tensors in one kernel launch ({@code adamw.cu}), with fp32 master weights (an fp32
 * array, or two 16-bit planes whose upper one is the bf16 copy: {@link MasterPlanes}) and fp32 moments, as
 * {@code torch.optim.AdamW(fused=True)} computes it (decoupled weight decay; bias corrections from the step number).
 */
public final class FusedAdamW {
  /** Elements of a chunk, the descriptor table's unit; must match KILN_ADAM_CHUNK in adamw.cu. */
  static final int CHUNK = 4096;
  /**
   * Blocks a chunk and their threads (KILN_ADAM_SPLIT and KILN_ADAM_THREADS in adamw.cu): a quarter chunk a block of
   * 128 threads, eight blocks a multiprocessor, moved AdamW's bytes at 0.984-0.988 of the driver's device-to-device
   * copy against 0.953 for a chunk a block of 256 (CudaBenchmark memory, twenty-ninth session); a graphed step held at
   * the card's power limit ran the same either way. {@code KILN_ADAM_SPLIT=1} launches the chunk-a-block kernels
   * ({@code _whole}), for comparisons.
   */
  private static final boolean WHOLE_CHUNKS = "1".equals(System.getenv("KILN_ADAM_SPLIT"));
  private static final int SPLIT = WHOLE_CHUNKS ? 1 : 4;
  private static final int THREADS = WHOLE_CHUNKS ? 256 : 128;
  private static final String SUFFIX = WHOLE_CHUNKS ? "_whole" : "";
  private static final int DESCRIPTOR_BYTES = 72;

  /**
   * One parameter: fp32 {@code param}, {@code m}, {@code v} of one size; {@code grad} fp32 or bf16 of that size;
   * {@code paramBf16} (or null) receives a bf16 copy of the updated parameter. With {@code paramLow} the master weight
   * is two planes ({@link MasterPlanes}): {@code paramBf16} its upper plane, {@code paramLow} its lower, both read and
   * written in place of {@code param}, whose memory the update does not touch (its shape only is used here; the
   * caller joins the planes into it when something reads it).
   */
  public record Param(CudaArray param, CudaArray grad, CudaArray m, CudaArray v, CudaArray paramBf16,
      CudaArray paramLow) {
    public Param {
      long n = param.numel();
      if (param.dtype() != DType.F32 || m.dtype() != DType.F32 || v.dtype() != DType.F32) {
        throw new IllegalArgumentException("AdamW keeps fp32 params and moments; got param " + param.dtype()
            + ", m " + m.dtype() + ", v " + v.dtype());
      }
      if (grad.dtype() != DType.F32 && grad.dtype() != DType.BF16) {
        throw new IllegalArgumentException("AdamW gradients must be F32 or BF16, got " + grad.dtype());
      }
      if (grad.numel() != n || m.numel() != n || v.numel() != n || (paramBf16 != null && paramBf16.numel() != n)
          || (paramLow != null && paramLow.numel() != n)) {
        throw new IllegalArgumentException("AdamW param of " + n + " elements with grad " + grad.numel() + ", m "
            + m.numel() + ", v " + v.numel() + (paramBf16 == null ? "" : ", bf16 copy " + paramBf16.numel())
            + (paramLow == null ? "" : ", lower plane " + paramLow.numel()));
      }
      if (paramBf16 != null && paramBf16.dtype() != DType.BF16) {
        throw new IllegalArgumentException("AdamW's parameter copy must be BF16, got " + paramBf16.dtype());
      }
      if (paramLow != null && (paramBf16 == null || paramLow.dtype() != DType.BF16)) {
        throw new IllegalArgumentException("a two-plane master weight needs its upper plane (the bf16 copy) and a"
            + " BF16-sized lower plane; got " + (paramBf16 == null ? "no upper plane" : "a lower plane of "
            + paramLow.dtype()));
      }
      for (CudaArray a : new CudaArray[] {param, grad, m, v, paramBf16, paramLow}) {
        if (a != null) {
          a.requireContiguous("AdamW");
        }
      }
    }

    /** A parameter with an fp32 master weight. */
    public Param(CudaArray param, CudaArray grad, CudaArray m, CudaArray v, CudaArray paramBf16) {
      this(param, grad, m, v, paramBf16, null);
    }

    /** Whether the master weight is two planes. */
    public boolean inPlanes() {
      return paramLow != null;
    }
  }

  /**
   * Hyper-parameters of one step; {@code step} counts from 1. {@code cs336} selects CS336's form of the update
   * (Adam step, then decay; ε added to sqrt(v)), else {@code torch.optim.AdamW}'s (see {@code
   * dev.kiln.runtime.optim.AdamW.Formula}).
   */
  public record Hyper(float lr, float beta1, float beta2, float eps, float weightDecay, long step, float gradScale,
      boolean cs336) {
    public Hyper {
      if (step < 1) {
        throw new IllegalArgumentException("AdamW step counts from 1, got " + step);
      }
    }

    /** {@code torch.optim.AdamW}'s update. */
    public Hyper(float lr, float beta1, float beta2, float eps, float weightDecay, long step, float gradScale) {
      this(lr, beta1, beta2, eps, weightDecay, step, gradScale, false);
    }
  }

  private final CudaDevice device;
  private final CudaStream stream;

  public FusedAdamW(CudaDevice device) {
    this.device = device;
    this.stream = device.defaultStream();
  }

  /**
   * The tensor table of one parameter list uploaded once, for {@link #step(Prepared, CudaArray)}: what a CUDA graph
   * needs, since it cannot copy from the host. Close it when the tensors go.
   */
  public record Prepared(CudaArray table, int count, long chunks) implements AutoCloseable {
    @Override
    public void close() {
      table.close();
    }
  }

  /** Uploads the descriptor table of {@code params} for later steps. */
  public Prepared prepare(List<Param> params) {
    if (params.isEmpty()) {
      throw new IllegalArgumentException("AdamW over no parameters");
    }
    Storage table = Storage.allocate((long) params.size() * DESCRIPTOR_BYTES);
    long chunks = describe(params, table.segment());
    return new Prepared(CudaArray.fromHost(device, bytes(table, params)), params.size(), chunks);
  }

  /**
   * Rewrites {@code p}'s descriptors in place for {@code params} (the same sizes, in the same order, other memory):
   * a launch captured in a CUDA graph reads the table at its address, so the graph's step then updates these. A
   * gradient's dtype may change (each descriptor says its own).
   */
  public void refill(Prepared p, List<Param> params) {
    if (params.size() != p.count()) {
      throw new IllegalArgumentException("AdamW table of " + p.count() + " parameters refilled with "
          + params.size());
    }
    Storage table = Storage.allocate((long) params.size() * DESCRIPTOR_BYTES);
    if (describe(params, table.segment()) != p.chunks()) {
      throw new IllegalArgumentException("AdamW table refilled with parameters of other sizes");
    }
    p.table().copyFromHost(bytes(table, params));
  }

  /** {@code table}, the descriptors of {@code params}, as the U8 array the device copy is made from. */
  private static NdArray bytes(Storage table, List<Param> params) {
    return NdArray.of(table, DType.U8, (long) params.size() * DESCRIPTOR_BYTES);
  }

  /**
   * One step with every scalar read from {@code hyper} in device memory (F32: lr, beta1, beta2, eps, weight decay,
   * bc1, bc2, gradient scale, skip, cs336), so the launch can be captured in a CUDA graph and the scalars changed
   * between replays. A non-zero skip leaves everything unchanged.
   */
  public void step(Prepared p, CudaArray hyper) {
    if (hyper.dtype() != DType.F32 || hyper.numel() < 10) {
      throw new IllegalArgumentException("AdamW's device scalars are 10 F32 values, got " + hyper);
    }
    device.kernels().module("adamw").kernel("kiln_adamw_multi_dev" + SUFFIX).launch(stream, p.chunks() * SPLIT, 1,
        THREADS, 0,
        new KernelArgs().ptr(p.table()).i32(p.count()).ptr(hyper));
  }

  /**
   * Fills the 72-byte descriptors of {@code params} into {@code t} (each with its gradient's dtype: fp32 and bf16
   * gradients mix in one launch); returns the number of chunks.
   */
  private static long describe(List<Param> params, MemorySegment t) {
    long chunks = 0;
    for (int i = 0; i < params.size(); i++) {
      Param p = params.get(i);
      long base = (long) i * DESCRIPTOR_BYTES;
      // A two-plane master's fp32 array is not read: asking its address would join the planes into it.
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, base, p.inPlanes() ? 0L : p.param().address());
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, base + 8, p.grad().address());
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, base + 16, p.m().address());
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, base + 24, p.v().address());
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, base + 32, p.paramBf16() == null ? 0L : p.paramBf16().address());
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, base + 40, p.inPlanes() ? p.paramLow().address() : 0L);
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, base + 48, p.param().numel());
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, base + 56, chunks);
      t.set(ValueLayout.JAVA_LONG_UNALIGNED, base + 64, p.grad().dtype() == DType.BF16 ? 1L : 0L);
      chunks += (p.param().numel() + CHUNK - 1) / CHUNK;
    }
    return chunks;
  }

  /** Updates every parameter in place, in one launch; gradients may be fp32 or bf16, each its own. */
  public void step(List<Param> params, Hyper h) {
    if (params.isEmpty()) {
      return;
    }
    Storage table = Storage.allocate((long) params.size() * DESCRIPTOR_BYTES);
    long chunks = describe(params, table.segment());
    if (chunks == 0) {
      return;
    }
    float bc1 = (float) (1 - Math.pow(h.beta1(), h.step()));
    float bc2 = (float) (1 - Math.pow(h.beta2(), h.step()));
    try (CudaArray dTable = CudaArray.fromHost(device, bytes(table, params))) {
      device.kernels().module("adamw").kernel("kiln_adamw_multi" + SUFFIX).launch(stream, chunks * SPLIT, 1, THREADS,
          0, new KernelArgs().ptr(dTable).i32(params.size()).f32(h.lr())
              .f32(h.beta1()).f32(h.beta2()).f32(h.eps()).f32(h.weightDecay()).f32(bc1).f32(bc2)
              .f32(h.gradScale()).i32(h.cs336() ? 1 : 0));
    }
  }
}
