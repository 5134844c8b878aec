package dev.kiln.runtime.cuda.device;

import dev.kiln.dsl.DType;
import dev.kiln.dsl.Tensor;
import dev.kiln.runtime.cuda.CudaArray;

/**
 * A tensor of {@link CudaModelDevice}: a {@link CudaArray} in device memory, and for a parameter trained in mixed
 * precision its bf16 twin, which the optimizer rewrites after every update so GEMMs read it without a cast.
 *
 * <p>Views of a tensor ({@code reshape}, {@code permute}, {@code expand} on the device) carry the matching view of
 * the twin. Generated code only sees {@link Tensor}; the device unwraps it.
 */
public final class CudaTensor implements Tensor {
  private final CudaArray array;
  private CudaArray bf16;
  /** The lower plane of a master weight kept as two planes ({@link dev.kiln.runtime.cuda.MasterPlanes}), or null. */
  private CudaArray lowerPlane;

  CudaTensor(CudaArray array, CudaArray bf16) {
    this.array = array;
    this.bf16 = bf16;
  }

  /**
   * The device array (shape, strides, dtype, address). Work deferred on its memory (a fill, a GEMM) runs when the
   * memory is first touched, through the buffer ({@code DeviceBuffer.deferProducer}), not here.
   */
  public CudaArray array() {
    return array;
  }

  /** The bf16 twin kept current by the optimizer, or null. */
  public CudaArray bf16Twin() {
    return bf16;
  }

  /** Set once, by {@link CudaModelDevice#withBf16Twin}, on a parameter the model's record already holds. */
  void attachBf16Twin(CudaArray twin) {
    if (bf16 != null) {
      throw new IllegalStateException(this + " already has a bf16 twin");
    }
    bf16 = twin;
  }

  /**
   * The lower plane of this parameter's master weight where it is kept as two planes, its {@link #bf16Twin} the
   * upper one ({@link CudaModelDevice#keepMasterInPlanes}); else null.
   */
  public CudaArray lowerPlane() {
    return lowerPlane;
  }

  void attachLowerPlane(CudaArray plane) {
    if (lowerPlane != null) {
      throw new IllegalStateException(this + " already keeps its master weight in planes");
    }
    lowerPlane = plane;
  }

  @Override
  public long[] shape() {
    return array.shape();
  }

  @Override
  public DType dtype() {
    return array.dtype();
  }

  @Override
  public int rank() {
    return array.rank();
  }

  @Override
  public String toString() {
    return "CudaTensor(" + array.dtype() + java.util.Arrays.toString(array.shape()) + (lowerPlane != null ? ", master in planes"
        : bf16 != null ? ", bf16 twin" : "") + ")";
  }
}
