// Multi-tensor AdamW: one launch updates every parameter tensor of a model.
//
// The host passes a table of tensors; tensor i owns blocks [first_block_i, first_block_{i+1}) of the grid, each
// block CHUNK elements of it. Parameters, first and second moments are fp32 (master weights and optimizer state);
// gradients are fp32 or bf16; an optional bf16 copy of the updated parameters is written for bf16 compute.
// The update follows torch.optim.AdamW (decoupled weight decay applied before the Adam step):
//   p -= lr * wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),   bc_k = 1 - beta_k^step,   g = grad * grad_scale
// or, with cs336 != 0, CS336 assignment 1's Algorithm 1 (dev.kiln.runtime.optim.AdamW.Formula.CS336):
//   m, v as above;  p -= (lr sqrt(bc2) / bc1) * m / (sqrt(v) + eps);  then p -= lr * wd * p
#include "kiln_common.cuh"

struct KilnAdamTensor {  // 64 bytes; the Java side writes the same layout (AdamW.java)
  float* param;
  const void* grad;
  float* m;
  float* v;
  kiln_bf16* param_bf16;  // may be null
  kiln_i64 numel;
  kiln_i64 first_block;
  kiln_i64 reserved;
};

#define KILN_ADAM_CHUNK 4096

extern "C" __global__ void __launch_bounds__(256) kiln_adamw_multi(const KilnAdamTensor* __restrict__ tensors,
                                                                    int count, int grad_is_bf16, float lr,
                                                                    float beta1, float beta2, float eps,
                                                                    float weight_decay, float bc1, float bc2,
                                                                    float grad_scale, int cs336) {
  // Binary search for the tensor that owns this block.
  const kiln_i64 b = blockIdx.x;
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (tensors[mid].first_block <= b) lo = mid; else hi = mid - 1;
  }
  const KilnAdamTensor tt = tensors[lo];
  const kiln_i64 start = (b - tt.first_block) * KILN_ADAM_CHUNK;
  const kiln_i64 end = kiln_min(start + (kiln_i64)KILN_ADAM_CHUNK, tt.numel);
  const float step = lr / bc1;
  const float inv_sqrt_bc2 = rsqrtf(bc2);
  const float decay = 1.f - lr * weight_decay;
  for (kiln_i64 i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float g = (grad_is_bf16 ? kiln_to_float(((const kiln_bf16*)tt.grad)[i]) : ((const float*)tt.grad)[i]) *
                    grad_scale;
    float p = tt.param[i];
    const float m = beta1 * tt.m[i] + (1.f - beta1) * g;
    const float v = beta2 * tt.v[i] + (1.f - beta2) * g * g;
    if (cs336) {
      p -= step * sqrtf(bc2) * m / (sqrtf(v) + eps);
      p -= lr * weight_decay * p;
    } else {
      p *= decay;
      p -= step * m / (sqrtf(v) * inv_sqrt_bc2 + eps);
    }
    tt.param[i] = p;
    tt.m[i] = m;
    tt.v[i] = v;
    if (tt.param_bf16 != nullptr) kiln_store(tt.param_bf16 + i, p);
  }
}
