package dev.kiln.dsl.spi;

import dev.kiln.dsl.DType;
import java.lang.foreign.MemorySegment;

/**
 * A fused kernel the processor generated for one module, as {@link Device#launch} runs it. The same kernel exists
 * twice: as a static Java method ({@link #cpu()}) in the module's {@code <Module>Kernels} class and as
 * {@code extern "C"} CUDA functions {@code <name>_f32} / {@code <name>_f64} in the resource {@link #cudaResource()}.
 *
 * @param name deterministic name, unique within the module: {@code <module>_<forward|backward>_<n>}
 * @param kind how the iteration space {@code [rows, cols]} is walked
 * @param inputs number of input tensors (they come first in {@link Device#launch}'s {@code tensors})
 * @param outputs number of output tensors, written with {@code =}
 * @param cudaResource class-path resource of the module's CUDA C, e.g. {@code META-INF/kiln/cuda/cs336.SwiGlu.cu}
 * @param cpu the Java implementation
 * @param gemmOperands the outputs only GEMMs read, as a bit mask (bit i: output i). The generated code allocates them
 *     with {@link Device#emptyGemmOperand}; a device that stores them in bf16 launches
 *     {@code <name>_f32_bf16}, which writes those outputs rounded to bf16 (to nearest even) and the others in fp32
 * @param elementsPerThread for a {@link Kind#POINTWISE} kernel, how many elements each CUDA thread computes
 *     ({@code blockDim.x} apart): the launch has {@code ceil(rows * cols / (elementsPerThread * blockDim.x))} blocks
 * @param bf16Inputs the inputs that may be GEMM outputs stored in bf16 ({@link Device#emptyGemmResult}), as a bit
 *     mask (bit i: input i). The CUDA kernel exists as {@code <name>_f32_in16} (and {@code <name>_f32_bf16_in16} with
 *     {@code gemmOperands}), which reads them as bf16 and computes in fp32
 * @param columnSums the outputs of a {@link Kind#ROWS} kernel that only a sum over the rows reads (a norm's weight
 *     gradient), as a bit mask (bit i: output i). Such an output is {@code [partials, cols]}, with
 *     {@code partials = Device.columnSumRows(kernel, rows, cols)} rows ({@code 1 <= partials <= rows}): row {@code p} holds the
 *     sums, column by column, of the run of {@code per = ceil(rows / partials)} rows starting at {@code p * per}. The
 *     generated code sums the partial rows after the launch. With {@code partials == rows} it is the full output
 * @param twinOutput the output (counted from the first output) that the CUDA kernel's {@code _tw} variants
 *     ({@code <name>[_w<J>]_f32[_in16]_tw}) also write rounded to bf16, through one more pointer argument after the
 *     scalars; -1 where there are none. A {@link Kind#ROWS} kernel with one full output and no {@code gemmOperands}
 *     has them: a mixed-precision device that sees that output cast for GEMMs (a norm backward's input gradient, the
 *     residual stream's) may launch them to write the copy from registers instead
 * @param sumOfInputs whether the kernel is a {@link Kind#POINTWISE} sum: one full output that is the sum of its
 *     inputs, every one full and added once, no scalars (the input gradient of a module whose input feeds several
 *     GEMMs: {@code x Wqᵀ}, {@code x Wkᵀ}, {@code x Wvᵀ}). A device may compute it any way that adds the inputs up: a
 *     mixed-precision GPU device runs the GEMMs that produce the inputs as one GEMM over their stacked operands
 * @param gemmOperandRowStride whether the CUDA kernel takes the row stride of its {@code gemmOperands} outputs, in
 *     elements, as one more {@code long long} argument after {@code cols} (before the scalars): a
 *     {@link Kind#POINTWISE} kernel of two or more such outputs, which the generated code allocates together with
 *     {@link Device#emptyGemmOperands}. A device that lays them side by side in the rows of one matrix passes that
 *     matrix's row stride (the SwiGLU backward's two gradients, each then a block of columns of one GEMM operand);
 *     for contiguous outputs it passes {@code cols}. The Java implementation sees contiguous outputs only
 */
public record Kernel(String name, Kind kind, int inputs, int outputs, String cudaResource, Cpu cpu,
    long gemmOperands, int elementsPerThread, long bf16Inputs, long columnSums, int twinOutput,
    boolean sumOfInputs, boolean gemmOperandRowStride) {

  public Kernel {
    if (elementsPerThread < 1) {
      throw new IllegalArgumentException("kernel " + name + ": elementsPerThread must be at least 1, got "
          + elementsPerThread);
    }
    if (sumOfInputs && (kind != Kind.POINTWISE || outputs != 1 || inputs < 2)) {
      throw new IllegalArgumentException("kernel " + name + ": a sum of inputs is a pointwise kernel of two or more"
          + " inputs and one output, got " + kind + " with " + inputs + " inputs and " + outputs + " outputs");
    }
    if (gemmOperandRowStride && (kind != Kind.POINTWISE || Long.bitCount(gemmOperands) < 2)) {
      throw new IllegalArgumentException("kernel " + name + ": a row stride for GEMM-only outputs is for a pointwise"
          + " kernel of two or more of them, got " + kind + " with " + Long.bitCount(gemmOperands));
    }
  }

  /** A kernel whose GEMM-only outputs are contiguous (an older processor's). */
  public Kernel(String name, Kind kind, int inputs, int outputs, String cudaResource, Cpu cpu, long gemmOperands,
      int elementsPerThread, long bf16Inputs, long columnSums, int twinOutput, boolean sumOfInputs) {
    this(name, kind, inputs, outputs, cudaResource, cpu, gemmOperands, elementsPerThread, bf16Inputs, columnSums,
        twinOutput, sumOfInputs, false);
  }

  /** A kernel that is not known to be a plain sum of its inputs. */
  public Kernel(String name, Kind kind, int inputs, int outputs, String cudaResource, Cpu cpu, long gemmOperands,
      int elementsPerThread, long bf16Inputs, long columnSums, int twinOutput) {
    this(name, kind, inputs, outputs, cudaResource, cpu, gemmOperands, elementsPerThread, bf16Inputs, columnSums,
        twinOutput, false);
  }

  /** A kernel of one element a thread whose outputs are all stored in the compute dtype (an older processor's). */
  public Kernel(String name, Kind kind, int inputs, int outputs, String cudaResource, Cpu cpu) {
    this(name, kind, inputs, outputs, cudaResource, cpu, 0L, 1, 0L, 0L, -1);
  }

  /** A kernel without bf16-twin variants. */
  public Kernel(String name, Kind kind, int inputs, int outputs, String cudaResource, Cpu cpu, long gemmOperands,
      int elementsPerThread, long bf16Inputs, long columnSums) {
    this(name, kind, inputs, outputs, cudaResource, cpu, gemmOperands, elementsPerThread, bf16Inputs, columnSums, -1);
  }

  /** A kernel without column-sum outputs. */
  public Kernel(String name, Kind kind, int inputs, int outputs, String cudaResource, Cpu cpu, long gemmOperands,
      int elementsPerThread, long bf16Inputs) {
    this(name, kind, inputs, outputs, cudaResource, cpu, gemmOperands, elementsPerThread, bf16Inputs, 0L, -1);
  }

  /** A kernel whose inputs are all in the compute dtype. */
  public Kernel(String name, Kind kind, int inputs, int outputs, String cudaResource, Cpu cpu, long gemmOperands,
      int elementsPerThread) {
    this(name, kind, inputs, outputs, cudaResource, cpu, gemmOperands, elementsPerThread, 0L, 0L, -1);
  }

  /** Whether input {@code i} may arrive as a GEMM output stored in bf16. */
  public boolean isBf16Input(int i) {
    return i < 64 && (bf16Inputs >>> i & 1) != 0;
  }

  /** Whether output {@code i} (counted from the first output) is one only GEMMs read. */
  public boolean isGemmOperand(int i) {
    return i < 64 && (gemmOperands >>> i & 1) != 0;
  }

  /** Whether output {@code i} (counted from the first output) is summed over the rows ({@link #columnSums()}). */
  public boolean isColumnSum(int i) {
    return i < 64 && (columnSums >>> i & 1) != 0;
  }

  /** How a kernel walks its iteration space. */
  public enum Kind {
    /**
     * Every element {@code (row, col)} independently: {@link #elementsPerThread()} elements a CUDA thread (the launch
     * geometry; which elements is the kernel's affair: consecutive ones where vector accesses are aligned, else
     * {@code blockDim.x} apart). An input is read at
     * {@code row * cols + col} (full), {@code col} (a last-dim vector broadcast over rows), {@code row} (one value per
     * row) or {@code 0} (a scalar); the kernel's comment says which.
     */
    POINTWISE,
    /**
     * One row at a time, with reductions over the row (softmax, RMSNorm, cross-entropy): one CUDA block per row,
     * or, with {@link #columnSums()}, one per partial row (each walking its run of rows). Outputs are full
     * ({@code rows × cols}), per row ({@code rows}) or column sums ({@code partials × cols}).
     */
    ROWS
  }

  /** The Java implementation: {@code tensors} as contiguous segments of {@code dtype} elements. */
  @FunctionalInterface
  public interface Cpu {
    void run(DType dtype, MemorySegment[] tensors, long rows, long cols, double[] scalars);
  }
}
