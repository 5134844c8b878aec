// Fused cross-entropy: log-softmax, negative log-likelihood and the gradient with respect to the logits in one
// kernel, one block per row.
//
// The row is read from global memory once: the first sweep keeps it in shared memory (as fp32) while it computes
// the online max / sum-of-exponentials, and the gradient sweep reads it back from there. Rows too long for shared
// memory (cache == 0) are read a second time from global memory instead (usually from L2).
//
//   loss[r]       = logsumexp(x[r,:]) - x[r, target[r]]                (0 when target[r] == ignore_index)
//   dlogits[r, j] = grad_scale * (softmax(x[r,:])[j] - [j == target[r]])  (0 for ignored rows; skipped if null)
#include "kiln_common.cuh"

namespace {

template <typename T>
__device__ __forceinline__ void cross_entropy(const T* __restrict__ logits, const int* __restrict__ targets,
                                              float* __restrict__ loss, T* __restrict__ dlogits, int vocab,
                                              kiln_i64 row_stride, float grad_scale, int ignore_index, int cache) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* red = (float*)smem;       // [2 * 32] block reduction scratch
  float* row_cache = red + 64;     // [vocab] when cache != 0
  __shared__ float s_lse;
  const kiln_i64 r = blockIdx.x;
  const T* x = logits + r * row_stride;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
  const int target = targets[r];

  float m = -KILN_INF, s = 0.f;
  for (int j = tid; j < vocab; j += blockDim.x) {
    const float v = kiln_to_float(x[j]);
    if (cache) row_cache[j] = v;
    if (v > m) {
      s = s * expf(m - v) + 1.f;
      m = v;
    } else if (m > -KILN_INF) {  // (-inf, -inf) would give exp(nan)
      s += expf(v - m);
    }
  }
  // Combine (max, sum) pairs: first within each warp, then across warps.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
    const float mm = fmaxf(m, m2);
    s = (mm == -KILN_INF) ? 0.f : s * expf(m - mm) + s2 * expf(m2 - mm);
    m = mm;
  }
  if (lane == 0) {
    red[warp] = m;
    red[32 + warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    m = lane < nwarps ? red[lane] : -KILN_INF;
    s = lane < nwarps ? red[32 + lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
      const float s2 = __shfl_xor_sync(0xffffffffu, s, o);
      const float mm = fmaxf(m, m2);
      s = (mm == -KILN_INF) ? 0.f : s * expf(m - mm) + s2 * expf(m2 - mm);
      m = mm;
    }
    if (lane == 0) s_lse = m + logf(s);
  }
  __syncthreads();
  const float lse = s_lse;
  const bool ignored = target == ignore_index;
  if (tid == 0) {
    loss[r] = ignored ? 0.f : lse - (cache ? row_cache[target] : kiln_to_float(x[target]));
  }
  if (dlogits == nullptr) return;
  T* dx = dlogits + r * row_stride;
  for (int j = tid; j < vocab; j += blockDim.x) {
    float gv = 0.f;
    if (!ignored) {
      const float v = cache ? row_cache[j] : kiln_to_float(x[j]);
      gv = grad_scale * (expf(v - lse) - (j == target ? 1.f : 0.f));
    }
    kiln_store(dx + j, gv);
  }
}

}  // namespace

extern "C" __global__ void kiln_cross_entropy_f32(const float* logits, const int* targets, float* loss,
                                                  float* dlogits, int vocab, kiln_i64 row_stride,
                                                  float grad_scale, int ignore_index, int cache) {
  kiln_pdl_enter();
  cross_entropy<float>(logits, targets, loss, dlogits, vocab, row_stride, grad_scale, ignore_index, cache);
}

extern "C" __global__ void kiln_cross_entropy_bf16(const kiln_bf16* logits, const int* targets, float* loss,
                                                   kiln_bf16* dlogits, int vocab, kiln_i64 row_stride,
                                                   float grad_scale, int ignore_index, int cache) {
  kiln_pdl_enter();
  cross_entropy<kiln_bf16>(logits, targets, loss, dlogits, vocab, row_stride, grad_scale, ignore_index, cache);
}
