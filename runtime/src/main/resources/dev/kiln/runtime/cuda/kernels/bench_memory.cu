// Memory-traffic patterns for CudaBenchmark memory: does the card's rate depend on how many arrays a kernel streams
// through at once? Fused AdamW reads five arrays and writes four (bf16 gradient, the two 16-bit planes, the fp32
// moments m and v) and runs at 0.95 of the driver's copy, which streams one of each. These kernels move AdamW's bytes
// without its arithmetic, in AdamW's blocks (4,096 elements, 256 threads, every load of a thread issued before its
// first store), over its nine arrays, and over seven with m and v interleaved (a group of four elements' m then v in
// 32 bytes), and a copy of 16-byte vectors in the same blocks. Only the benchmark launches them.
#include "kiln_common.cuh"

#define KILN_BENCH_THREADS 256
#define KILN_BENCH_U 4  // groups of four elements a thread: 4,096 elements a block

// The stores take a value that depends on the loads, so none is dropped; the arithmetic is one instruction a word.
// With MV, m and v of a group of four lie in one 32-byte run (m[2i] is the group's m, m[2i + 1] its v; v unused).
template <bool MV>
__device__ __forceinline__ void kiln_bench_adam_body(const uint2* __restrict__ grad, uint2* __restrict__ hi,
                                                     uint2* __restrict__ lo, float4* __restrict__ m,
                                                     float4* __restrict__ v, kiln_i64 groups) {
  const kiln_i64 first = (kiln_i64)blockIdx.x * KILN_BENCH_THREADS * KILN_BENCH_U + threadIdx.x;
  if (first + (KILN_BENCH_U - 1) * KILN_BENCH_THREADS >= groups) return;
  uint2 g[KILN_BENCH_U], h[KILN_BENCH_U], l[KILN_BENCH_U];
  float4 mm[KILN_BENCH_U], vv[KILN_BENCH_U];
#pragma unroll
  for (int u = 0; u < KILN_BENCH_U; u++) {
    const kiln_i64 i = first + u * KILN_BENCH_THREADS;
    g[u] = grad[i];
    h[u] = hi[i];
    l[u] = lo[i];
    mm[u] = MV ? m[2 * i] : m[i];
    vv[u] = MV ? m[2 * i + 1] : v[i];
  }
#pragma unroll
  for (int u = 0; u < KILN_BENCH_U; u++) {
    const kiln_i64 i = first + u * KILN_BENCH_THREADS;
    const float s = __uint_as_float(g[u].x << 16);
    hi[i] = make_uint2(h[u].x ^ g[u].x, h[u].y ^ g[u].y);
    lo[i] = make_uint2(l[u].x ^ g[u].y, l[u].y ^ g[u].x);
    const float4 m2 = make_float4(mm[u].x + s, mm[u].y + s, mm[u].z + s, mm[u].w + s);
    const float4 v2 = make_float4(vv[u].x * s, vv[u].y * s, vv[u].z * s, vv[u].w * s);
    if (MV) {
      m[2 * i] = m2;
      m[2 * i + 1] = v2;
    } else {
      m[i] = m2;
      v[i] = v2;
    }
  }
}

extern "C" __global__ void __launch_bounds__(KILN_BENCH_THREADS) kiln_bench_adam_traffic(
    const uint2* __restrict__ grad, uint2* __restrict__ hi, uint2* __restrict__ lo, float4* __restrict__ m,
    float4* __restrict__ v, kiln_i64 groups) {
  kiln_pdl_enter();
  kiln_bench_adam_body<false>(grad, hi, lo, m, v, groups);
}

// The same bytes with m and v interleaved: mv holds a group's m, then its v.
extern "C" __global__ void __launch_bounds__(KILN_BENCH_THREADS) kiln_bench_adam_traffic_mv(
    const uint2* __restrict__ grad, uint2* __restrict__ hi, uint2* __restrict__ lo, float4* __restrict__ mv,
    kiln_i64 groups) {
  kiln_pdl_enter();
  kiln_bench_adam_body<true>(grad, hi, lo, mv, nullptr, groups);
}

// A copy of n 16-byte vectors in the same blocks: four a thread, loads first.
extern "C" __global__ void __launch_bounds__(KILN_BENCH_THREADS) kiln_bench_copy16(const uint4* __restrict__ src,
                                                                                  uint4* __restrict__ dst,
                                                                                  kiln_i64 n) {
  kiln_pdl_enter();
  const kiln_i64 first = (kiln_i64)blockIdx.x * KILN_BENCH_THREADS * KILN_BENCH_U + threadIdx.x;
  if (first + (KILN_BENCH_U - 1) * KILN_BENCH_THREADS >= n) return;
  uint4 x[KILN_BENCH_U];
#pragma unroll
  for (int u = 0; u < KILN_BENCH_U; u++) x[u] = src[first + u * KILN_BENCH_THREADS];
#pragma unroll
  for (int u = 0; u < KILN_BENCH_U; u++) dst[first + u * KILN_BENCH_THREADS] = x[u];
}
