package dev.kiln.dsl;

/**
 * A tensor as module code sees it: a shape, a dtype and pointwise arithmetic with numpy broadcasting.
 *
 * <p>Inside a {@link Forward} or {@link Loss} method these calls are read by Kiln's annotation processor and shape
 * checked; called directly (outside compiled code) they run on the eager backend, which the runtime implements.
 * Scalar variants take a {@code double} that is broadcast to every element.
 */
public interface Tensor {

  /** The size of every dim, outermost first. The array is a copy. */
  long[] shape();

  /** The element type. */
  DType dtype();

  /** Number of dims. */
  default int rank() {
    return shape().length;
  }

  /**
   * Size of one dim; negative {@code axis} counts from the end ({@code -1} is the last dim).
   *
   * @throws IndexOutOfBoundsException when {@code axis} is not in {@code [-rank, rank)}
   */
  default long size(int axis) {
    long[] s = shape();
    int a = axis < 0 ? axis + s.length : axis;
    if (a < 0 || a >= s.length) {
      throw new IndexOutOfBoundsException("axis " + axis + " of a tensor of rank " + s.length);
    }
    return s[a];
  }

  /** {@code this + other}, broadcasting. */
  default Tensor add(Tensor other) {
    return EagerBackends.get("Tensor.add").add(this, other);
  }

  /** {@code this - other}, broadcasting. */
  default Tensor sub(Tensor other) {
    return EagerBackends.get("Tensor.sub").sub(this, other);
  }

  /** {@code this * other} element by element, broadcasting. */
  default Tensor mul(Tensor other) {
    return EagerBackends.get("Tensor.mul").mul(this, other);
  }

  /** {@code this / other} element by element, broadcasting. */
  default Tensor div(Tensor other) {
    return EagerBackends.get("Tensor.div").div(this, other);
  }

  /** {@code -this}. */
  default Tensor neg() {
    return EagerBackends.get("Tensor.neg").neg(this);
  }

  /** {@code this + value}. */
  default Tensor add(double value) {
    return EagerBackends.get("Tensor.add").addScalar(this, value);
  }

  /** {@code this - value}. */
  default Tensor sub(double value) {
    return EagerBackends.get("Tensor.sub").addScalar(this, -value);
  }

  /** {@code this * value}. */
  default Tensor mul(double value) {
    return EagerBackends.get("Tensor.mul").mulScalar(this, value);
  }

  /** {@code this / value}. */
  default Tensor div(double value) {
    return EagerBackends.get("Tensor.div").mulScalar(this, 1.0 / value);
  }
}
