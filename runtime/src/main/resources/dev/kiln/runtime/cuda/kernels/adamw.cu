// Multi-tensor AdamW: one launch updates every parameter tensor of a model.
//
// The host passes a table of tensors; tensor i owns blocks [first_block_i, first_block_{i+1}) of the grid, each
// block CHUNK elements of it. Parameters, first and second moments are fp32 (master weights and optimizer state);
// gradients are fp32 or bf16, each tensor's own (a mixed-precision step's GEMM weight gradients are bf16, as autocast's,
// while its norms' and embeddings' are fp32); an optional bf16 copy of the updated parameters is written for bf16 compute.
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
  kiln_i64 grad_bf16;  // non-zero: grad holds bf16
};

#define KILN_ADAM_CHUNK 4096
#define KILN_ADAM_THREADS 256  // FusedAdamW launches blocks of this many threads

__device__ __forceinline__ bool kiln_aligned16(const void* p) { return ((unsigned long long)p & 15) == 0; }
__device__ __forceinline__ bool kiln_aligned8(const void* p) { return ((unsigned long long)p & 7) == 0; }

// sqrt on the special-function unit (sqrt.approx: within 2^-23 relative, subnormals kept): the update's square
// root and division were IEEE-rounded, about 8 instructions each an element, and at a card's power limit a step
// pays for a kernel's instructions even where its bytes set its time (docs/cuda.md, "Power", twenty-third session).
// The update m / (sqrt(v) + eps) is then within a few parts in 10^7 of the rounded one, far below the weight's own
// fp32 rounding of the step it takes.
__device__ __forceinline__ float kiln_sqrt_approx(float x) {
  float y;
  asm("sqrt.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// One element's update (g already scaled), in place. The denominators are at least eps, inside __fdividef's range.
__device__ __forceinline__ void kiln_adam_one(float g, float& p, float& m, float& v, float lr, float beta1,
                                              float beta2, float eps, float weight_decay, float step, float bc2,
                                              float inv_sqrt_bc2, float decay, int cs336) {
  m = beta1 * m + (1.f - beta1) * g;
  v = beta2 * v + (1.f - beta2) * g * g;
  if (cs336) {
    p -= __fdividef(step * sqrtf(bc2) * m, kiln_sqrt_approx(v) + eps);
    p -= lr * weight_decay * p;
  } else {
    p *= decay;
    p -= __fdividef(step * m, kiln_sqrt_approx(v) * inv_sqrt_bc2 + eps);
  }
}

// One block's share of the update; the scalars come from the launch arguments (kiln_adamw_multi) or from device
// memory (kiln_adamw_multi_dev, for CUDA graphs, where arguments are frozen at capture).
__device__ __forceinline__ void kiln_adamw_block(const KilnAdamTensor* __restrict__ tensors, int count, float lr,
                                                 float beta1, float beta2, float eps, float weight_decay, float bc1,
                                                 float bc2, float grad_scale, int cs336) {
  // Binary search for the tensor that owns this block.
  const kiln_i64 b = blockIdx.x;
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (tensors[mid].first_block <= b) lo = mid; else hi = mid - 1;
  }
  const KilnAdamTensor tt = tensors[lo];
  const bool grad_is_bf16 = tt.grad_bf16 != 0;
  const kiln_i64 start = (b - tt.first_block) * KILN_ADAM_CHUNK;
  const kiln_i64 end = kiln_min(start + (kiln_i64)KILN_ADAM_CHUNK, tt.numel);
  const float step = lr / bc1;
  const float inv_sqrt_bc2 = rsqrtf(bc2);
  const float decay = 1.f - lr * weight_decay;
  const bool aligned = ((start & 3) == 0) && ((end - start) & 3) == 0 && kiln_aligned16(tt.param) &&
                       kiln_aligned16(tt.m) && kiln_aligned16(tt.v) &&
                       (grad_is_bf16 ? kiln_aligned8(tt.grad) : kiln_aligned16(tt.grad)) &&
                       (tt.param_bf16 == nullptr || kiln_aligned8(tt.param_bf16));
  if (aligned && end - start == KILN_ADAM_CHUNK && blockDim.x == KILN_ADAM_THREADS) {
    // A whole chunk: every load of the thread's four groups is issued before the first store. In the loop below the
    // compiler cannot move a group's loads above the stores before it (the five arrays may alias, as far as it
    // knows), so each group waited for memory on its own.
    constexpr int U = KILN_ADAM_CHUNK / (4 * KILN_ADAM_THREADS);
    float4 p4[U], m4[U], v4[U];
    float g[U][4];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const kiln_i64 i = start + 4 * (kiln_i64)(threadIdx.x + u * KILN_ADAM_THREADS);
      if (grad_is_bf16) {
        const uint2 w = *(const uint2*)((const kiln_bf16*)tt.grad + i);
        g[u][0] = __uint_as_float(w.x << 16);
        g[u][1] = __uint_as_float(w.x & 0xffff0000u);
        g[u][2] = __uint_as_float(w.y << 16);
        g[u][3] = __uint_as_float(w.y & 0xffff0000u);
      } else {
        const float4 g4 = *(const float4*)((const float*)tt.grad + i);
        g[u][0] = g4.x; g[u][1] = g4.y; g[u][2] = g4.z; g[u][3] = g4.w;
      }
      p4[u] = *(const float4*)(tt.param + i);
      m4[u] = *(const float4*)(tt.m + i);
      v4[u] = *(const float4*)(tt.v + i);
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const kiln_i64 i = start + 4 * (kiln_i64)(threadIdx.x + u * KILN_ADAM_THREADS);
      float* pp = &p4[u].x;
      float* mm = &m4[u].x;
      float* vv = &v4[u].x;
#pragma unroll
      for (int k = 0; k < 4; k++) {
        kiln_adam_one(g[u][k] * grad_scale, pp[k], mm[k], vv[k], lr, beta1, beta2, eps, weight_decay, step, bc2,
                      inv_sqrt_bc2, decay, cs336);
      }
      *(float4*)(tt.param + i) = p4[u];
      *(float4*)(tt.m + i) = m4[u];
      *(float4*)(tt.v + i) = v4[u];
      if (tt.param_bf16 != nullptr) {
        uint2 w;
        w.x = kiln_pack_bf16(pp[0], pp[1]);
        w.y = kiln_pack_bf16(pp[2], pp[3]);
        *(uint2*)(tt.param_bf16 + i) = w;
      }
    }
    return;
  }
  if (aligned) {
    // Four elements a thread with 16-byte loads and stores: the update is bound by memory traffic (about 30 bytes a
    // parameter), and wide accesses keep more of it in flight.
    for (kiln_i64 i = start + 4 * (kiln_i64)threadIdx.x; i < end; i += 4 * (kiln_i64)blockDim.x) {
      float g[4];
      if (grad_is_bf16) {
        // One 8-byte load for the four (the grad is 8-byte aligned here).
        const uint2 w = *(const uint2*)((const kiln_bf16*)tt.grad + i);
        g[0] = __uint_as_float(w.x << 16);
        g[1] = __uint_as_float(w.x & 0xffff0000u);
        g[2] = __uint_as_float(w.y << 16);
        g[3] = __uint_as_float(w.y & 0xffff0000u);
      } else {
        const float4 g4 = *(const float4*)((const float*)tt.grad + i);
        g[0] = g4.x; g[1] = g4.y; g[2] = g4.z; g[3] = g4.w;
      }
      float4 p4 = *(float4*)(tt.param + i);
      float4 m4 = *(float4*)(tt.m + i);
      float4 v4 = *(float4*)(tt.v + i);
      float* pp = &p4.x;
      float* mm = &m4.x;
      float* vv = &v4.x;
#pragma unroll
      for (int k = 0; k < 4; k++) {
        kiln_adam_one(g[k] * grad_scale, pp[k], mm[k], vv[k], lr, beta1, beta2, eps, weight_decay, step, bc2,
                      inv_sqrt_bc2, decay, cs336);
      }
      *(float4*)(tt.param + i) = p4;
      *(float4*)(tt.m + i) = m4;
      *(float4*)(tt.v + i) = v4;
      if (tt.param_bf16 != nullptr) {
#pragma unroll
        for (int k = 0; k < 4; k++) kiln_store(tt.param_bf16 + i + k, pp[k]);
      }
    }
    return;
  }
  for (kiln_i64 i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float g = (grad_is_bf16 ? kiln_to_float(((const kiln_bf16*)tt.grad)[i]) : ((const float*)tt.grad)[i]) *
                    grad_scale;
    float p = tt.param[i];
    float m = tt.m[i];
    float v = tt.v[i];
    kiln_adam_one(g, p, m, v, lr, beta1, beta2, eps, weight_decay, step, bc2, inv_sqrt_bc2, decay, cs336);
    tt.param[i] = p;
    tt.m[i] = m;
    tt.v[i] = v;
    if (tt.param_bf16 != nullptr) kiln_store(tt.param_bf16 + i, p);
  }
}

extern "C" __global__ void __launch_bounds__(KILN_ADAM_THREADS) kiln_adamw_multi(const KilnAdamTensor* __restrict__ tensors,
                                                                    int count, float lr,
                                                                    float beta1, float beta2, float eps,
                                                                    float weight_decay, float bc1, float bc2,
                                                                    float grad_scale, int cs336) {
  kiln_pdl_enter();
  kiln_adamw_block(tensors, count, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale, cs336);
}

// hyper: lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale, skip (non-zero: leave everything unchanged, the
// step diverged), cs336 (non-zero: CS336's form).
extern "C" __global__ void __launch_bounds__(KILN_ADAM_THREADS) kiln_adamw_multi_dev(const KilnAdamTensor* __restrict__ tensors,
                                                                        int count,
                                                                        const float* __restrict__ hyper) {
  kiln_pdl_enter();
  if (hyper[8] != 0.f) return;
  kiln_adamw_block(tensors, count, hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5],
                   hyper[6], hyper[7], hyper[9] != 0.f);
}

// Global-norm clipping on the device: norm = sqrt(sum of sumsq[0..n)) * inv_micro (gradients summed over
// micro-batches); hyper[7] (AdamW's gradient scale) = inv_micro * min(1, max_norm / (norm + 1e-6)) when max_norm > 0;
// hyper[8] (skip) = 1 when the norm is not finite. out[0] = the norm before clipping, for the host to log.
extern "C" __global__ void kiln_clip_scale(const double* __restrict__ sumsq, int n, float max_norm, float inv_micro,
                                           float* hyper, double* out) {
  kiln_pdl_enter();
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double s = 0;
  for (int i = 0; i < n; i++) s += sumsq[i];
  const double norm = sqrt(s) * inv_micro;
  const bool finite = norm == norm && norm < 1e308;
  double clip = 1.0;
  if (max_norm > 0.f && finite && norm > max_norm) clip = max_norm / (norm + 1e-6);
  hyper[7] = (float)(clip * inv_micro);
  hyper[8] = finite ? 0.f : 1.f;
  out[0] = norm;
}
