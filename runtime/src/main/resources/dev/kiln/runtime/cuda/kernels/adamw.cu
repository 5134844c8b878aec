// Multi-tensor AdamW: one launch updates every parameter tensor of a model.
//
// The host passes a table of tensors; tensor i owns chunks [first_block_i, first_block_{i+1}) of KILN_ADAM_CHUNK
// elements, each taken by KILN_ADAM_SPLIT blocks of the grid (below). Parameters, first and second moments are fp32
// (master weights and optimizer state); gradients are fp32 or bf16, each tensor's own (a mixed-precision step's GEMM
// weight gradients are bf16, as autocast's, while its norms' and embeddings' are fp32); an optional bf16 copy of the
// updated parameters is written for bf16 compute.
// A master weight is either an fp32 array or two 16-bit planes (below), whose upper plane is the bf16 copy.
// The update follows torch.optim.AdamW (decoupled weight decay applied before the Adam step):
//   p -= lr * wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),   bc_k = 1 - beta_k^step,   g = grad * grad_scale
// or, with cs336 != 0, CS336 assignment 1's Algorithm 1 (dev.kiln.runtime.optim.AdamW.Formula.CS336):
//   m, v as above;  p -= (lr sqrt(bc2) / bc1) * m / (sqrt(v) + eps);  then p -= lr * wd * p
#include "kiln_common.cuh"

// ---- Two-plane master weights (dev.kiln.runtime.cuda.MasterPlanes)
//
// An fp32 weight b (its 32 bits) is stored as an upper plane hi = (b + 0x8000) >> 16, which is b rounded to bf16 to
// nearest with ties away from zero, and a lower plane lo = b & 0xffff. Then b = ((hi - (lo >= 0x8000)) << 16) | lo,
// bit for bit: hi is b's upper half plus the carry out of adding 0x8000 to the lower half, and that carry happened
// exactly when lo >= 0x8000. GEMMs read the upper plane as the weight's bf16 copy, so AdamW writes 4 bytes of master
// a parameter instead of 4 + 2 (fp32 master and a separate copy). The upper plane differs from round-to-nearest-even
// only on exact ties (lo == 0x8000). A NaN is stored as the quiet NaN 0x7fc00000, whose upper plane is a bf16 NaN
// (CUDA's own NaN, 0x7fffffff, would carry into the sign bit and read as -0 in bf16).
__device__ __forceinline__ unsigned kiln_planes_bits(float p) {
  const unsigned b = __float_as_uint(p);
  return (b & 0x7fffffffu) > 0x7f800000u ? 0x7fc00000u : b;
}
__device__ __forceinline__ unsigned kiln_plane_hi(unsigned b) { return (b + 0x8000u) >> 16; }
__device__ __forceinline__ float kiln_planes_join(unsigned hi, unsigned lo) {
  return __uint_as_float(((hi - (lo >> 15)) << 16) | lo);
}
// Four weights from 4 upper and 4 lower halves (each uint2 holds elements 0..3, the first in the low half).
__device__ __forceinline__ float4 kiln_planes_join4(uint2 h, uint2 l) {
  return make_float4(kiln_planes_join(h.x & 0xffffu, l.x & 0xffffu), kiln_planes_join(h.x >> 16, l.x >> 16),
                     kiln_planes_join(h.y & 0xffffu, l.y & 0xffffu), kiln_planes_join(h.y >> 16, l.y >> 16));
}
__device__ __forceinline__ void kiln_planes_split4(float4 p, uint2& h, uint2& l) {
  const unsigned b0 = kiln_planes_bits(p.x), b1 = kiln_planes_bits(p.y), b2 = kiln_planes_bits(p.z),
                 b3 = kiln_planes_bits(p.w);
  h.x = kiln_plane_hi(b0) | (kiln_plane_hi(b1) << 16);
  h.y = kiln_plane_hi(b2) | (kiln_plane_hi(b3) << 16);
  l.x = (b0 & 0xffffu) | (b1 << 16);
  l.y = (b2 & 0xffffu) | (b3 << 16);
}

struct KilnAdamTensor {  // 72 bytes; the Java side writes the same layout (FusedAdamW.java)
  float* param;           // the fp32 master weight; null when it is two planes
  const void* grad;
  float* m;
  float* v;
  kiln_bf16* param_bf16;  // the bf16 copy, or null; the upper plane when param_low is set
  kiln_bf16* param_low;   // the lower plane of a two-plane master, or null
  kiln_i64 numel;
  kiln_i64 first_block;
  kiln_i64 grad_bf16;  // non-zero: grad holds bf16
};

// The table's unit: tensor i owns chunks [first_block_i, first_block_{i+1}) of KILN_ADAM_CHUNK elements. A chunk is
// taken by KILN_ADAM_SPLIT blocks of KILN_ADAM_THREADS threads, two groups of four elements a thread (FusedAdamW
// launches that grid). One block of 256 threads a chunk, four groups a thread, held 90 registers a thread, two blocks
// a multiprocessor: AdamW ran at 0.953 of the driver's device-to-device copy, while its bytes moved without the
// arithmetic ran at 0.975 (CudaBenchmark memory). Quarter blocks take 64 registers, eight blocks a multiprocessor
// whose loads and arithmetic interleave: 0.984-0.988 (twenty-ninth session; graphed xl and TinyStories steps, held at
// the card's power limit, ran the same). The whole-chunk blocks stay, for comparisons (KILN_ADAM_SPLIT=1: the _whole
// kernels).
#define KILN_ADAM_CHUNK 4096
#define KILN_ADAM_SPLIT 4
#define KILN_ADAM_THREADS 128
#define KILN_ADAM_WHOLE_THREADS 256

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

// A master weight's storage, by PLANES (a whole block takes one form, so each form is its own straight-line code):
// four weights' raw bits from i on (16-byte aligned fp32, or 8-byte aligned planes: upper halves in x, y, lower in
// z, w), loaded in the load phase and turned into floats in the compute phase, so no load waits for the arithmetic
// of the one before it; their store with the bf16 copy; and one weight's load and store.
template <bool PLANES>
__device__ __forceinline__ uint4 kiln_adam_raw4(const KilnAdamTensor& t, kiln_i64 i) {
  if (PLANES) {
    const uint2 h = *(const uint2*)(t.param_bf16 + i);
    const uint2 l = *(const uint2*)(t.param_low + i);
    return make_uint4(h.x, h.y, l.x, l.y);
  }
  return *(const uint4*)(t.param + i);
}
template <bool PLANES>
__device__ __forceinline__ float4 kiln_adam_master4(uint4 r) {
  if (PLANES) return kiln_planes_join4(make_uint2(r.x, r.y), make_uint2(r.z, r.w));
  return make_float4(__uint_as_float(r.x), __uint_as_float(r.y), __uint_as_float(r.z), __uint_as_float(r.w));
}
// Vector stores written out in PTX: NVVM split a uint2 or float4 store whose lanes were computed apart (the bf16
// copy, the planes, the updated weight) into 4-byte stores, each covering a warp's 256 or 512 bytes with gaps: twice
// or four times the store instructions, each sector written in parts.
__device__ __forceinline__ void kiln_st_v2(kiln_bf16* p, uint2 v) {
  asm volatile("st.global.v2.u32 [%0], {%1, %2};" ::"l"(p), "r"(v.x), "r"(v.y) : "memory");
}
__device__ __forceinline__ void kiln_st_v4(float* p, float4 v) {
  asm volatile("st.global.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(p), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w) : "memory");
}
template <bool PLANES>
__device__ __forceinline__ void kiln_adam_store4(const KilnAdamTensor& t, kiln_i64 i, float4 p) {
  if (PLANES) {
    uint2 h, l;
    kiln_planes_split4(p, h, l);
    kiln_st_v2(t.param_bf16 + i, h);
    kiln_st_v2(t.param_low + i, l);
    return;
  }
  kiln_st_v4(t.param + i, p);
  if (t.param_bf16 != nullptr) {
    uint2 w;
    w.x = kiln_pack_bf16(p.x, p.y);
    w.y = kiln_pack_bf16(p.z, p.w);
    kiln_st_v2(t.param_bf16 + i, w);
  }
}
template <bool PLANES>
__device__ __forceinline__ float kiln_adam_load1(const KilnAdamTensor& t, kiln_i64 i) {
  return PLANES ? kiln_planes_join(t.param_bf16[i], t.param_low[i]) : t.param[i];
}
template <bool PLANES>
__device__ __forceinline__ void kiln_adam_store1(const KilnAdamTensor& t, kiln_i64 i, float p) {
  if (PLANES) {
    const unsigned b = kiln_planes_bits(p);
    t.param_bf16[i] = (kiln_bf16)kiln_plane_hi(b);
    t.param_low[i] = (kiln_bf16)(b & 0xffffu);
    return;
  }
  t.param[i] = p;
  if (t.param_bf16 != nullptr) kiln_store(t.param_bf16 + i, p);
}

// Four gradients from i on, scaled.
__device__ __forceinline__ void kiln_adam_grad4(const KilnAdamTensor& t, bool bf16, kiln_i64 i, float scale,
                                                float g[4]) {
  if (bf16) {
    // One 8-byte load for the four (the grad is 8-byte aligned here).
    const uint2 w = *(const uint2*)((const kiln_bf16*)t.grad + i);
    g[0] = __uint_as_float(w.x << 16);
    g[1] = __uint_as_float(w.x & 0xffff0000u);
    g[2] = __uint_as_float(w.y << 16);
    g[3] = __uint_as_float(w.y & 0xffff0000u);
  } else {
    const float4 g4 = *(const float4*)((const float*)t.grad + i);
    g[0] = g4.x; g[1] = g4.y; g[2] = g4.z; g[3] = g4.w;
  }
#pragma unroll
  for (int k = 0; k < 4; k++) g[k] *= scale;
}

// Part `part` (of SUB) of chunk b of tensor tt (which owns it), taken by a block of T threads, its master weight in
// PLANES' form.
template <bool PLANES, int SUB, int T>
__device__ __forceinline__ void kiln_adamw_tensor(const KilnAdamTensor& tt, kiln_i64 b, int part, float lr, float beta1,
                                                  float beta2, float eps, float weight_decay, float bc1, float bc2,
                                                  float grad_scale, int cs336) {
  const bool grad_is_bf16 = tt.grad_bf16 != 0;
  const kiln_i64 start = (b - tt.first_block) * KILN_ADAM_CHUNK;
  const kiln_i64 end = kiln_min(start + (kiln_i64)KILN_ADAM_CHUNK, tt.numel);
  const float step = lr / bc1;
  const float inv_sqrt_bc2 = rsqrtf(bc2);
  const float decay = 1.f - lr * weight_decay;
  const bool master_aligned = PLANES ? kiln_aligned8(tt.param_bf16) && kiln_aligned8(tt.param_low)
                                     : kiln_aligned16(tt.param) && (tt.param_bf16 == nullptr || kiln_aligned8(tt.param_bf16));
  const bool aligned = ((start & 3) == 0) && ((end - start) & 3) == 0 && master_aligned && kiln_aligned16(tt.m) &&
                       kiln_aligned16(tt.v) && (grad_is_bf16 ? kiln_aligned8(tt.grad) : kiln_aligned16(tt.grad));
  if (aligned && end - start == KILN_ADAM_CHUNK && blockDim.x == T) {
    // A whole chunk: every load of the thread's groups is issued before the first store. In the loop below the
    // compiler cannot move a group's loads above the stores before it (the arrays may alias, as far as it knows),
    // so each group waited for memory on its own.
    constexpr int U = KILN_ADAM_CHUNK / (4 * T * SUB);
    const kiln_i64 first = start + (kiln_i64)part * (KILN_ADAM_CHUNK / SUB);
    uint4 p4[U];
    float4 m4[U], v4[U];
    float g[U][4];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const kiln_i64 i = first + 4 * (kiln_i64)(threadIdx.x + u * T);
      kiln_adam_grad4(tt, grad_is_bf16, i, grad_scale, g[u]);
      p4[u] = kiln_adam_raw4<PLANES>(tt, i);
      m4[u] = *(const float4*)(tt.m + i);
      v4[u] = *(const float4*)(tt.v + i);
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const kiln_i64 i = first + 4 * (kiln_i64)(threadIdx.x + u * T);
      float4 p = kiln_adam_master4<PLANES>(p4[u]);
      float* pp = &p.x;
      float* mm = &m4[u].x;
      float* vv = &v4[u].x;
#pragma unroll
      for (int k = 0; k < 4; k++) {
        kiln_adam_one(g[u][k], pp[k], mm[k], vv[k], lr, beta1, beta2, eps, weight_decay, step, bc2, inv_sqrt_bc2,
                      decay, cs336);
      }
      kiln_adam_store4<PLANES>(tt, i, p);
      *(float4*)(tt.m + i) = m4[u];
      *(float4*)(tt.v + i) = v4[u];
    }
    return;
  }
  if (part != 0) return;  // the chunk's first block takes a ragged or unaligned chunk whole (the last of a tensor)
  if (aligned) {
    // Four elements a thread with 16-byte loads and stores: the update is bound by memory traffic (about 30 bytes a
    // parameter), and wide accesses keep more of it in flight.
    for (kiln_i64 i = start + 4 * (kiln_i64)threadIdx.x; i < end; i += 4 * (kiln_i64)blockDim.x) {
      float g[4];
      kiln_adam_grad4(tt, grad_is_bf16, i, grad_scale, g);
      const uint4 raw = kiln_adam_raw4<PLANES>(tt, i);
      float4 m4 = *(float4*)(tt.m + i);
      float4 v4 = *(float4*)(tt.v + i);
      float4 p4 = kiln_adam_master4<PLANES>(raw);
      float* pp = &p4.x;
      float* mm = &m4.x;
      float* vv = &v4.x;
#pragma unroll
      for (int k = 0; k < 4; k++) {
        kiln_adam_one(g[k], pp[k], mm[k], vv[k], lr, beta1, beta2, eps, weight_decay, step, bc2, inv_sqrt_bc2,
                      decay, cs336);
      }
      kiln_adam_store4<PLANES>(tt, i, p4);
      *(float4*)(tt.m + i) = m4;
      *(float4*)(tt.v + i) = v4;
    }
    return;
  }
  for (kiln_i64 i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float g = (grad_is_bf16 ? kiln_to_float(((const kiln_bf16*)tt.grad)[i]) : ((const float*)tt.grad)[i]) *
                    grad_scale;
    float p = kiln_adam_load1<PLANES>(tt, i);
    float m = tt.m[i];
    float v = tt.v[i];
    kiln_adam_one(g, p, m, v, lr, beta1, beta2, eps, weight_decay, step, bc2, inv_sqrt_bc2, decay, cs336);
    kiln_adam_store1<PLANES>(tt, i, p);
    tt.m[i] = m;
    tt.v[i] = v;
  }
}

// One block's share of the update, SUB blocks of T threads a chunk; the scalars come from the launch arguments
// (kiln_adamw_multi) or from device memory (kiln_adamw_multi_dev, for CUDA graphs, where arguments are frozen at
// capture).
template <int SUB, int T>
__device__ __forceinline__ void kiln_adamw_block(const KilnAdamTensor* __restrict__ tensors, int count, float lr,
                                                 float beta1, float beta2, float eps, float weight_decay, float bc1,
                                                 float bc2, float grad_scale, int cs336) {
  // Binary search for the tensor that owns this block's chunk.
  const kiln_i64 b = blockIdx.x / SUB;
  const int part = (int)(blockIdx.x % SUB);
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (tensors[mid].first_block <= b) lo = mid; else hi = mid - 1;
  }
  const KilnAdamTensor tt = tensors[lo];
  if (tt.param_low != nullptr) {
    kiln_adamw_tensor<true, SUB, T>(tt, b, part, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale, cs336);
  } else {
    kiln_adamw_tensor<false, SUB, T>(tt, b, part, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale, cs336);
  }
}

#define KILN_ADAMW_ENTRIES(SUFFIX, SUB, T)                                                                          \
  extern "C" __global__ void __launch_bounds__(T) kiln_adamw_multi##SUFFIX(                                        \
      const KilnAdamTensor* __restrict__ tensors, int count, float lr, float beta1, float beta2, float eps,        \
      float weight_decay, float bc1, float bc2, float grad_scale, int cs336) {                                     \
    kiln_pdl_enter();                                                                                              \
    kiln_adamw_block<SUB, T>(tensors, count, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale, cs336);   \
  }                                                                                                                \
  extern "C" __global__ void __launch_bounds__(T) kiln_adamw_multi_dev##SUFFIX(                                    \
      const KilnAdamTensor* __restrict__ tensors, int count, const float* __restrict__ hyper) {                    \
    kiln_pdl_enter();                                                                                              \
    if (hyper[8] != 0.f) return;                                                                                   \
    kiln_adamw_block<SUB, T>(tensors, count, hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5], hyper[6], \
                             hyper[7], hyper[9] != 0.f);                                                           \
  }

// kiln_adamw_multi: the scalars as arguments. kiln_adamw_multi_dev: hyper holds lr, beta1, beta2, eps,
// weight_decay, bc1, bc2, grad_scale, skip (non-zero: leave everything unchanged, the step diverged), cs336
// (non-zero: CS336's form). The _whole pair takes a chunk a block (KILN_ADAM_SPLIT=1 in FusedAdamW).
KILN_ADAMW_ENTRIES(, KILN_ADAM_SPLIT, KILN_ADAM_THREADS)
KILN_ADAMW_ENTRIES(_whole, 1, KILN_ADAM_WHOLE_THREADS)

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

// Splits n fp32 master weights into their two planes (hi, the bf16 copy, and lo); four a thread where n is a
// multiple of 4 and the arrays are aligned (vec != 0), else one.
extern "C" __global__ void kiln_planes_split(const float* __restrict__ p, kiln_bf16* __restrict__ hi,
                                             kiln_bf16* __restrict__ lo, kiln_i64 n, int vec) {
  kiln_pdl_enter();
  const kiln_i64 stride = (kiln_i64)gridDim.x * blockDim.x;
  if (vec) {
    for (kiln_i64 q = blockIdx.x * (kiln_i64)blockDim.x + threadIdx.x; q < n / 4; q += stride) {
      uint2 h, l;
      kiln_planes_split4(*(const float4*)(p + 4 * q), h, l);
      kiln_st_v2(hi + 4 * q, h);
      kiln_st_v2(lo + 4 * q, l);
    }
    return;
  }
  for (kiln_i64 i = blockIdx.x * (kiln_i64)blockDim.x + threadIdx.x; i < n; i += stride) {
    const unsigned b = kiln_planes_bits(p[i]);
    hi[i] = (kiln_bf16)kiln_plane_hi(b);
    lo[i] = (kiln_bf16)(b & 0xffffu);
  }
}

// Joins n two-plane master weights back into fp32 (checkpoints, the host copy, any fp32 reader).
extern "C" __global__ void kiln_planes_join(const kiln_bf16* __restrict__ hi, const kiln_bf16* __restrict__ lo,
                                            float* __restrict__ p, kiln_i64 n, int vec) {
  kiln_pdl_enter();
  const kiln_i64 stride = (kiln_i64)gridDim.x * blockDim.x;
  if (vec) {
    for (kiln_i64 q = blockIdx.x * (kiln_i64)blockDim.x + threadIdx.x; q < n / 4; q += stride) {
      kiln_st_v4(p + 4 * q, kiln_planes_join4(*(const uint2*)(hi + 4 * q), *(const uint2*)(lo + 4 * q)));
    }
    return;
  }
  for (kiln_i64 i = blockIdx.x * (kiln_i64)blockDim.x + threadIdx.x; i < n; i += stride) {
    p[i] = kiln_planes_join(hi[i], lo[i]);
  }
}
