package dev.kiln.dsl.spi;

import dev.kiln.dsl.DimSize;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Ops;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.Tensor;
import dev.kiln.dsl.TopK;

/**
 * What runs {@link Ops} and {@link Tensor}'s arithmetic outside compiled code: the runtime's eager reference
 * interpreter, registered for {@link java.util.ServiceLoader} (with AutoService). Exactly one implementation may be
 * on the class path.
 *
 * <p>Each method has the contract of the {@link Ops} method (or {@link Tensor} method) of the same name; specs and
 * patterns arrive as written, for the implementation to parse with {@code dev.kiln.dsl.shape}. An implementation
 * must accept every tensor this backend itself returned, and rejects foreign ones with a clear message.
 */
public interface EagerBackend {
  Tensor add(Tensor a, Tensor b);

  Tensor sub(Tensor a, Tensor b);

  Tensor mul(Tensor a, Tensor b);

  Tensor div(Tensor a, Tensor b);

  Tensor neg(Tensor x);

  Tensor addScalar(Tensor x, double value);

  Tensor mulScalar(Tensor x, double value);

  Tensor einsum(String spec, Tensor... operands);

  Tensor rearrange(Tensor x, String pattern, DimSize... sizes);

  Tensor reduce(Tensor x, String pattern, Reduction how, DimSize... sizes);

  Tensor repeat(Tensor x, String pattern, DimSize... sizes);

  Tensor exp(Tensor x);

  Tensor log(Tensor x);

  Tensor sqrt(Tensor x);

  Tensor rsqrt(Tensor x);

  Tensor square(Tensor x);

  Tensor tanh(Tensor x);

  Tensor cos(Tensor x);

  Tensor sin(Tensor x);

  Tensor sigmoid(Tensor x);

  Tensor silu(Tensor x);

  Tensor gelu(Tensor x);

  Tensor relu(Tensor x);

  Tensor maximum(Tensor a, Tensor b);

  Tensor greater(Tensor a, Tensor b);

  Tensor less(Tensor a, Tensor b);

  Tensor where(Tensor cond, Tensor a, Tensor b);

  Tensor softmax(Tensor x);

  Tensor logSoftmax(Tensor x);

  Tensor sum(Tensor x);

  Tensor mean(Tensor x);

  Tensor rmsNorm(Tensor x, Tensor weight, double eps);

  Tensor gather(Tensor table, Tensor ids);

  TopK topk(Tensor x, int k);

  Tensor attention(Tensor q, Tensor k, Tensor v, Mask mask);

  Tensor rope(Tensor x, Tensor positions, double theta);

  Tensor crossEntropy(Tensor logits, Tensor targets);
}
