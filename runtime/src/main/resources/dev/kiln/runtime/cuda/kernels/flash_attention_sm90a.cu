// Fused attention on Hopper's warpgroup MMA (wgmma, sm_90a): the forward and backward passes of flash_attention.cu
// for head dims 32, 64 and 128, with the same arguments, layouts, masking and results (see that file's header), on
// a faster instruction. This file is compiled for sm_90a alone (build-kernels.sh, or NVRTC with
// --gpu-architecture=sm_90a); FlashAttention launches its kernels only on compute capability 9.0 (and the forward
// only for a positive scale) and falls back to flash_attention.cu otherwise.
//
// Why wgmma: mma.sync reads every B fragment from shared memory into registers (ldmatrix) once per 16 rows (32 at
// r32) of A, and the four warps of a block issue their MMAs one warp at a time. A wgmma is issued by a warpgroup
// (four warps) for 64 rows of A at once and reads B from shared memory directly, so the operand traffic per MAC is
// a quarter of mma.sync's at 16 rows a warp, and the MMA runs asynchronously while the warps go on.
//
// Forward block: WG warpgroups of 64 query rows each (BM = 64 WG rows); K and V tiles of BN keys, double-buffered
// with cp.async. Each warpgroup computes S = Q K^T for its rows (Q and K from shared memory), the online softmax in
// registers (the accumulator layout is mma.sync's, so the softmax code is flash_attention.cu's), and O += P V with P
// from registers and V from shared memory, the softmax of one tile overlapping the P V of the one before.
//
// Shared-memory tiles are stored as kiln_wgmma.cuh's descriptors expect: a tile of R rows and D columns is D / 64
// panels of R rows x 128 bytes, each row's eight 16-byte chunks permuted by XOR with (row % 8) (128-byte swizzle);
// at d32, one panel of 64-byte rows whose four chunks are permuted by XOR with (row / 2) % 4 (64-byte swizzle).
// The same tile is a K-major operand (K for S = Q K^T: rows are N, columns K) and an MN-major one (V for O = P V:
// rows are K, columns N); only the descriptor differs.
#include "kiln_attention.cuh"
#include "kiln_wgmma.cuh"

namespace {

// Panel geometry of a head dim: 128-byte rows (64 columns) swizzled in 128-byte mode for d >= 64; 64-byte rows
// (32 columns) swizzled in 64-byte mode for d = 32, whose rows fill half a 128-byte row.
template <int D>
struct panel {
  static constexpr int ROWB = D >= 64 ? 128 : 64;  // bytes a panel row
  static constexpr int COLS = ROWB / 2;             // bf16 columns a panel row
  static constexpr int CHUNKS = ROWB / 16;          // 16-byte chunks a panel row
  static constexpr unsigned MODE = D >= 64 ? 1 : 2;  // descriptor swizzle mode
  // Where chunk c of row r lies in its row: the swizzle XORs the chunk index with address bits 7.. of the row.
  static __device__ __forceinline__ int chunk(int r, int c) { return D >= 64 ? c ^ (r & 7) : c ^ ((r >> 1) & 3); }
};

// Rows [row0, row0 + R) of a slab (row stride sr) into a swizzled panel tile at s; rows past n are zero-filled.
// The loop runs a constant number of times, so it unrolls even where NT does not divide the chunks (the 1,024 of a
// 128-key d64 tile over 384 threads): from tid, ptxas kept a loop with a remainder branch in every key tile.
template <int D, int R, int NT>
__device__ __forceinline__ void load_tile_sw(kiln_bf16* s, const kiln_bf16* g, kiln_i64 sr, int row0, int n, int tid) {
  using P = panel<D>;
  constexpr int CPR = D / 8;  // 16-byte chunks per row
  constexpr int STEPS = (R * CPR + NT - 1) / NT;
#pragma unroll
  for (int step = 0; step < STEPS; ++step) {
    const int i = tid + step * NT;
    if ((R * CPR) % NT != 0 && i >= R * CPR) break;
    const int r = i / CPR, c = i % CPR;
    const bool valid = row0 + r < n;
    const kiln_bf16* src = valid ? g + (kiln_i64)(row0 + r) * sr + c * 8 : g;
    kiln_cp_async16(s + ((c / P::CHUNKS) * R + r) * P::COLS + (P::chunk(r, c % P::CHUNKS) << 3), src, valid);
  }
}

// Descriptor of k-step kk (16 columns) of a K-major operand: rows [row0, row0 + 64 or N) of a panel tile of R rows.
template <int D, int R>
__device__ __forceinline__ unsigned long long desc_k(unsigned tile, int row0, int kk) {
  using P = panel<D>;
  constexpr int KP = P::COLS / 16;  // k-steps a panel
  return kiln_wg_desc(tile + (kk / KP) * R * P::ROWB + row0 * P::ROWB + (kk % KP) * 32, 16, 8 * P::ROWB, P::MODE);
}

// Descriptor of k-step kb (16 rows) of an MN-major operand: a panel tile of R rows whose columns are N.
template <int D, int R>
__device__ __forceinline__ unsigned long long desc_mn(unsigned tile, int kb) {
  using P = panel<D>;
  return kiln_wg_desc(tile + kb * 16 * P::ROWB, R * P::ROWB, 8 * P::ROWB, P::MODE);
}

template <int N>
__device__ __forceinline__ void wgmma_ss(float* d, unsigned long long a, unsigned long long b, int acc) {
  if constexpr (N == 32) {
    kiln_wgmma_ss_n32<0>(d, a, b, acc);
  } else if constexpr (N == 64) {
    kiln_wgmma_ss_n64<0>(d, a, b, acc);
  } else {
    static_assert(N == 128, "wgmma N must be 32, 64 or 128");
    kiln_wgmma_ss_n128<0>(d, a, b, acc);
  }
}

template <int N>
__device__ __forceinline__ void wgmma_rs_mn(float* d, const unsigned* a, unsigned long long b) {
  if constexpr (N == 32) {
    kiln_wgmma_rs_n32<1>(d, a, b, 1);
  } else if constexpr (N == 64) {
    kiln_wgmma_rs_n64<1>(d, a, b, 1);
  } else {
    static_assert(N == 128, "wgmma N must be 32, 64 or 128");
    kiln_wgmma_rs_n128<1>(d, a, b, 1);
  }
}

// ------------------------------------------------------------------------------------------------ forward

// The online-softmax step of one score tile s (this thread's BN/2 raw scores of rows trow0 and trow0 + 8): masks,
// updates the running max mrow (in base-2 units of the scaled scores), and leaves in s the probabilities
// exp2(x * sl2 - max), in lsum their row sums and in alpha the factor by which the earlier sum and output shrink.
// The maximum is taken over the raw scores and the scale applied in the exponent's FFMA: one instruction a score
// fewer, where the forward pass is bound by instruction issue (ncu, d64 16k: issue slots 67% busy, ALU pipe 50%,
// tensor cores waiting). That needs sl2 > 0, which the host checks (FlashAttention).
//
// MASK is a template parameter, and callers branch on it once a tile (softmax_tile_masked_if): as a runtime flag
// inside the unrolled loop, ptxas predicated the mask's compares and selects rather than branching, so every tile
// issued them (about four instructions a score, predicated off on all but the diagonal and last tiles).
template <int BN, bool MASK>
__device__ __forceinline__ void softmax_tile(float* s, float* mrow, float* lsum, float* alpha, int n0, int trow0, int t,
                                             int n, int causal, float sl2) {
  float mx[2] = {-KILN_INF, -KILN_INF};
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) {
    if constexpr (MASK) {
      const int col = n0 + (i >> 2) * 8 + 2 * t + (i & 1);
      const int row = trow0 + ((i >> 1) & 1) * 8;
      if (col >= n || (causal && col > row)) s[i] = -KILN_INF;
    }
    mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
  }
  float mu[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    const float m = fmaxf(mrow[r], mx[r] * sl2);
    mu[r] = m == -KILN_INF ? 0.f : m;  // a row with nothing unmasked yet stays at zero
    alpha[r] = kiln_exp2(mrow[r] - mu[r]);
    mrow[r] = m;
    lsum[r] = 0.f;
  }
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) {
    s[i] = kiln_exp2(fmaf(s[i], sl2, -mu[(i >> 1) & 1]));
    lsum[(i >> 1) & 1] += s[i];
  }
}

// softmax_tile with the mask where the tile needs one (a diagonal tile of a causal pass, or one reaching past n).
template <int BN>
__device__ __forceinline__ void softmax_tile_masked_if(bool mask, float* s, float* mrow, float* lsum, float* alpha,
                                                       int n0, int trow0, int t, int n, int causal, float sl2) {
  if (mask) {
    softmax_tile<BN, true>(s, mrow, lsum, alpha, n0, trow0, t, n, causal, sl2);
  } else {
    softmax_tile<BN, false>(s, mrow, lsum, alpha, n0, trow0, t, n, causal, sl2);
  }
}

// An accumulator tile (64 x N, this thread's N/2 floats) rounded to bf16 as the A fragments of N/16 k-steps.
template <int N>
__device__ __forceinline__ void to_a_frags(unsigned (*a)[4], const float* x) {
#pragma unroll
  for (int kb = 0; kb < N / 16; ++kb)
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      const int i = 8 * kb + 4 * (h >> 1) + 2 * (h & 1);
      a[kb][h] = kiln_pack_bf16(x[i], x[i + 1]);
    }
}

// The forward pass with each warpgroup's softmax overlapped with its MMAs (FlashAttention-3's intra-warpgroup
// pipelining): while O += P_j V_j runs on the tensor cores, the warpgroup computes the softmax of S_{j+1}, whose MMA
// it issued just before. So K runs one tile ahead of V: each iteration waits for K_{j+1} and V_j and then prefetches
// K_{j+2} and V_{j+1} into the buffers that S_j and O += P_{j-1} V_{j-1} have finished with. P_{j+1} stays in fp32
// (in S's registers) until P_j V_j is done: only then is it rounded into the bf16 registers the tensor cores read.
template <int D, int WG, int BN, typename TO>
__device__ __forceinline__ void fwd_wg_pipe(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                            const kiln_bf16* __restrict__ V, TO* __restrict__ O,
                                            float* __restrict__ LSE, int n, int heads, float scale, int causal,
                                            kiln_attn_layout lq, kiln_attn_layout lk, kiln_attn_layout lv,
                                            kiln_attn_layout lo) {
  constexpr int BM = 64 * WG, NT = 128 * WG, KS = D / 16;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const unsigned raw = kiln_smem_addr(smem_raw);
  kiln_bf16* Qs = (kiln_bf16*)(smem_raw + (((raw + 1023u) & ~1023u) - raw));
  kiln_bf16* Ks = Qs + BM * D;      // [2][BN * D]
  kiln_bf16* Vs = Ks + 2 * BN * D;  // [2][BN * D]
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int mblocks = (n + BM - 1) / BM;
  const int mb = causal ? mblocks - 1 - (int)blockIdx.x : (int)blockIdx.x;
  const int bh = blockIdx.y;
  const kiln_bf16* q = Q + kiln_attn_slab(lq, bh, heads);
  const kiln_bf16* k = K + kiln_attn_slab(lk, bh, heads);
  const kiln_bf16* v = V + kiln_attn_slab(lv, bh, heads);
  const int m0 = mb * BM;
  const int wrow0 = m0 + wg * 64;
  const int trow0 = wrow0 + warp * 16 + g;

  // Every warpgroup walks all the block's key tiles, including (causal) a last one above its diagonal, which its
  // mask zeroes: a branch around wgmma that depends on the warpgroup makes ptxas serialise the MMAs.
  int nkb = (n + BN - 1) / BN;
  if (causal) nkb = kiln_min(nkb, (m0 + BM + BN - 1) / BN);

  load_tile_sw<D, BM, NT>(Qs, q, lq.sr, m0, n, tid);
  load_tile_sw<D, BN, NT>(Ks, k, lk.sr, 0, n, tid);
  kiln_cp_async_commit();
  if (nkb > 1) load_tile_sw<D, BN, NT>(Ks + BN * D, k, lk.sr, BN, n, tid);
  load_tile_sw<D, BN, NT>(Vs, v, lv.sr, 0, n, tid);
  kiln_cp_async_commit();
  kiln_cp_async_wait<1>();
  kiln_fence_proxy_async();
  __syncthreads();

  const unsigned qs = kiln_smem_addr(Qs), ks0 = kiln_smem_addr(Ks), vs0 = kiln_smem_addr(Vs);
  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float mrow[2] = {-KILN_INF, -KILN_INF}, lrow[2] = {0.f, 0.f}, lsum[2], alpha[2];
  const float sl2 = scale * KILN_LOG2E;
  unsigned p[BN / 16][4];  // P_j as bf16 A fragments

  // S_0 and its softmax.
  {
    float s[BN / 2];
    kiln_wg_fence();
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) wgmma_ss<BN>(s, desc_k<D, BM>(qs, wg * 64, kk), desc_k<D, BN>(ks0, 0, kk), kk > 0);
    kiln_wg_commit();
    kiln_wg_wait<0>();
    softmax_tile_masked_if<BN>((causal && BN - 1 > wrow0) || BN > n, s, mrow, lsum, alpha, 0, trow0, t, n, causal,
                               sl2);
    to_a_frags<BN>(p, s);
    lrow[0] = lsum[0];
    lrow[1] = lsum[1];
  }

  // Steady state: every iteration has a next tile, so no branch surrounds a wgmma (ptxas serialises those).
  for (int j = 0; j + 1 < nkb; ++j) {
    kiln_cp_async_wait<0>();
    kiln_fence_proxy_async();
    __syncthreads();  // K_{j+1} and V_j are in; S_j and P_{j-1} V_{j-1} are done in every warpgroup
    if (j + 2 < nkb) load_tile_sw<D, BN, NT>(Ks + (j & 1) * BN * D, k, lk.sr, (j + 2) * BN, n, tid);
    load_tile_sw<D, BN, NT>(Vs + ((j + 1) & 1) * BN * D, v, lv.sr, (j + 1) * BN, n, tid);
    kiln_cp_async_commit();
    float s[BN / 2];
    kiln_wg_fence();
    const unsigned ks = ks0 + ((j + 1) & 1) * BN * D * 2;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) wgmma_ss<BN>(s, desc_k<D, BM>(qs, wg * 64, kk), desc_k<D, BN>(ks, 0, kk), kk > 0);
    kiln_wg_commit();
    const unsigned vs = vs0 + (j & 1) * BN * D * 2;
#pragma unroll
    for (int kb = 0; kb < BN / 16; ++kb) wgmma_rs_mn<D>(o, p[kb], desc_mn<D, BN>(vs, kb));
    kiln_wg_commit();
    kiln_wg_wait<1>();  // S_{j+1} is done; P_j V_j may still run
    const int n1 = (j + 1) * BN;
    softmax_tile_masked_if<BN>((causal && n1 + BN - 1 > wrow0) || n1 + BN > n, s, mrow, lsum, alpha, n1, trow0, t, n,
                               causal, sl2);
    kiln_wg_wait<0>();  // P_j V_j is done: its A registers and O may be rewritten
    to_a_frags<BN>(p, s);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      lrow[r] = lrow[r] * alpha[r] + lsum[r];
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        o[4 * i + 2 * r] *= alpha[r];
        o[4 * i + 2 * r + 1] *= alpha[r];
      }
    }
  }
  // The last tile's P V.
  {
    const int j = nkb - 1;
    kiln_cp_async_wait<0>();
    kiln_fence_proxy_async();
    __syncthreads();
    kiln_wg_fence();
    const unsigned vs = vs0 + (j & 1) * BN * D * 2;
#pragma unroll
    for (int kb = 0; kb < BN / 16; ++kb) wgmma_rs_mn<D>(o, p[kb], desc_mn<D, BN>(vs, kb));
    kiln_wg_commit();
    kiln_wg_wait<0>();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = lrow[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = trow0 + r * 8;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    if (row < n) {
      TO* orow = O + kiln_attn_slab(lo, bh, heads) + (kiln_i64)row * lo.sr;
#pragma unroll
      for (int i = 0; i < D / 8; ++i)
        kiln_store_pair(orow + i * 8 + 2 * t, o[4 * i + 2 * r] * inv, o[4 * i + 2 * r + 1] * inv);
      if (t == 0) LSE[(kiln_i64)bh * n + row] = l > 0.f ? (mrow[r] + __log2f(l)) * KILN_LN2 : KILN_INF;
    }
  }
}

// ------------------------------------------------------------------------------------------------ backward

// The probabilities of a backward tile, in place of its raw scores: P = exp(S * scale - lse) for this thread's rows
// trow0 and trow0 + 8 (lse2: their lse in base 2), zero where masked. MASK as in softmax_tile: callers branch on it
// once a tile.
template <int BN, bool MASK>
__device__ __forceinline__ void probs(float* p, const float* lse2, int n0, int trow0, int t, int n, int causal,
                                      float sl2) {
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) {
    const int h = (i >> 1) & 1;
    float x = kiln_exp2(p[i] * sl2 - lse2[h]);
    if constexpr (MASK) {
      const int col = n0 + (i >> 2) * 8 + 2 * t + (i & 1), row = trow0 + h * 8;
      if (col >= n || (causal && col > row)) x = 0.f;
    }
    p[i] = x;
  }
}

// The transposed tile of the dK/dV pass: P^T for this thread's keys tkey0 and tkey0 + 8 against the BM queries from
// m0, whose lse (natural log) are ls[0, BM) in shared memory.
template <int BM, bool MASK>
__device__ __forceinline__ void probs_t(float* p, const float* ls, int m0, int tkey0, int t, int n, int causal,
                                        float sl2) {
#pragma unroll
  for (int i = 0; i < BM / 2; ++i) {
    const int cl = (i >> 2) * 8 + 2 * t + (i & 1);
    float x = kiln_exp2(p[i] * sl2 - ls[cl] * KILN_LOG2E);
    if constexpr (MASK) {
      const int col = m0 + cl, key = tkey0 + ((i >> 1) & 1) * 8;
      if (col >= n || (causal && col < key)) x = 0.f;
    }
    p[i] = x;
  }
}

// dK and dV: a block owns 64 * WG keys (64 a warpgroup) and walks the query tiles of BM rows that can see them.
// Per tile, each warpgroup computes S^T = K Q^T and dP^T = V dO^T (both operands from shared memory, K-major),
// P^T = exp(S^T * scale - lse[query]) and dS^T = P^T (dP^T - dot[query]) in registers, then dV += P^T dO and
// dK += dS^T Q with P^T and dS^T as register A operands and dO, Q as MN-major shared-memory B operands.
template <int D, int WG, int BM, typename TO>
__device__ __forceinline__ void bwd_dkdv_wg(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                            const kiln_bf16* __restrict__ V, const kiln_bf16* __restrict__ dO,
                                            const float* __restrict__ LSE, const float* __restrict__ DOT,
                                            TO* __restrict__ dK, TO* __restrict__ dV, int n, int heads,
                                            float scale, int causal, kiln_attn_layout lq, kiln_attn_layout lk,
                                            kiln_attn_layout lv, kiln_attn_layout ldo, kiln_attn_layout ldk,
                                            kiln_attn_layout ldv) {
  constexpr int BN = 64 * WG, NT = 128 * WG, KS = D / 16;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const unsigned raw = kiln_smem_addr(smem_raw);
  kiln_bf16* Ks = (kiln_bf16*)(smem_raw + (((raw + 1023u) & ~1023u) - raw));  // [BN * D]
  kiln_bf16* Vs = Ks + BN * D;                                                  // [BN * D]
  kiln_bf16* Qs = Vs + BN * D;                                                  // [2][BM * D]
  kiln_bf16* dOs = Qs + 2 * BM * D;                                             // [2][BM * D]
  float* Ls = (float*)(dOs + 2 * BM * D);                                       // [2][BM]
  float* Ds = Ls + 2 * BM;                                                      // [2][BM]
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y;
  const kiln_i64 vbase = (kiln_i64)bh * n;
  const kiln_bf16* q = Q + kiln_attn_slab(lq, bh, heads);
  const kiln_bf16* dout = dO + kiln_attn_slab(ldo, bh, heads);
  const float* lse = LSE + vbase;
  const float* dot = DOT + vbase;
  const int n0 = blockIdx.x * BN;
  const int wkey0 = n0 + wg * 64;            // first key of this warpgroup
  const int tkey0 = wkey0 + warp * 16 + g;  // this thread's keys: tkey0 and tkey0 + 8
  const int mtiles = (n + BM - 1) / BM;
  const int i0 = causal ? n0 / BM : 0;

  load_tile_sw<D, BN, NT>(Ks, K + kiln_attn_slab(lk, bh, heads), lk.sr, n0, n, tid);
  load_tile_sw<D, BN, NT>(Vs, V + kiln_attn_slab(lv, bh, heads), lv.sr, n0, n, tid);
  if (i0 < mtiles) {
    load_tile_sw<D, BM, NT>(Qs, q, lq.sr, i0 * BM, n, tid);
    load_tile_sw<D, BM, NT>(dOs, dout, ldo.sr, i0 * BM, n, tid);
    kiln_load_vec<BM, NT>(Ls, lse, i0 * BM, n, tid);
    kiln_load_vec<BM, NT>(Ds, dot, i0 * BM, n, tid);
  }
  kiln_cp_async_commit();

  const unsigned ks = kiln_smem_addr(Ks), vs = kiln_smem_addr(Vs);
  float dk[D / 2], dv[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) dk[i] = dv[i] = 0.f;
  const float sl2 = scale * KILN_LOG2E;

  for (int it = i0; it < mtiles; ++it) {
    const int buf = (it - i0) & 1;
    kiln_cp_async_wait<0>();
    kiln_fence_proxy_async();
    __syncthreads();  // tile it is in; every warpgroup is done with tile it - 1, whose buffers the prefetch refills
    if (it + 1 < mtiles) {
      const int nbuf = buf ^ 1;
      load_tile_sw<D, BM, NT>(Qs + nbuf * BM * D, q, lq.sr, (it + 1) * BM, n, tid);
      load_tile_sw<D, BM, NT>(dOs + nbuf * BM * D, dout, ldo.sr, (it + 1) * BM, n, tid);
      kiln_load_vec<BM, NT>(Ls + nbuf * BM, lse, (it + 1) * BM, n, tid);
      kiln_load_vec<BM, NT>(Ds + nbuf * BM, dot, (it + 1) * BM, n, tid);
      kiln_cp_async_commit();
    }
    const int m0 = it * BM;
    if (causal && m0 + BM - 1 < wkey0) continue;  // every query of the tile is before this warpgroup's keys
    const unsigned qs = kiln_smem_addr(Qs + buf * BM * D), dos = kiln_smem_addr(dOs + buf * BM * D);
    const float* ls = Ls + buf * BM;
    const float* ds = Ds + buf * BM;

    // Four MMA groups in flight one after the other, each overlapped with the arithmetic that the next one needs:
    // P^T while dP^T runs, dS^T while dV runs.
    float p[BM / 2], dp[BM / 2];
    kiln_wg_fence();
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) wgmma_ss<BM>(p, desc_k<D, BN>(ks, wg * 64, kk), desc_k<D, BM>(qs, 0, kk), kk > 0);
    kiln_wg_commit();
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) wgmma_ss<BM>(dp, desc_k<D, BN>(vs, wg * 64, kk), desc_k<D, BM>(dos, 0, kk), kk > 0);
    kiln_wg_commit();
    kiln_wg_wait<1>();  // S^T is done

    if ((causal && m0 < wkey0 + 63) || (m0 + BM > n)) {
      probs_t<BM, true>(p, ls, m0, tkey0, t, n, causal, sl2);
    } else {
      probs_t<BM, false>(p, ls, m0, tkey0, t, n, causal, sl2);
    }
    unsigned pa[BM / 16][4], sa[BM / 16][4];
    to_a_frags<BM>(pa, p);
    kiln_wg_fence();
#pragma unroll
    for (int kb = 0; kb < BM / 16; ++kb) wgmma_rs_mn<D>(dv, pa[kb], desc_mn<D, BM>(dos, kb));
    kiln_wg_commit();
    kiln_wg_wait<1>();  // dP^T is done; dV may still run
#pragma unroll
    for (int i = 0; i < BM / 2; ++i) dp[i] = p[i] * (dp[i] - ds[(i >> 2) * 8 + 2 * t + (i & 1)]);  // dS^T
    to_a_frags<BM>(sa, dp);
    kiln_wg_fence();
#pragma unroll
    for (int kb = 0; kb < BM / 16; ++kb) wgmma_rs_mn<D>(dk, sa[kb], desc_mn<D, BM>(qs, kb));
    kiln_wg_commit();
    kiln_wg_wait<0>();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = tkey0 + r * 8;
    if (key < n) {
      TO* dkrow = dK + kiln_attn_slab(ldk, bh, heads) + (kiln_i64)key * ldk.sr;
      TO* dvrow = dV + kiln_attn_slab(ldv, bh, heads) + (kiln_i64)key * ldv.sr;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        kiln_store_pair(dkrow + i * 8 + 2 * t, dk[4 * i + 2 * r] * scale, dk[4 * i + 2 * r + 1] * scale);
        kiln_store_pair(dvrow + i * 8 + 2 * t, dv[4 * i + 2 * r], dv[4 * i + 2 * r + 1]);
      }
    }
  }
}

// dQ: a block owns 64 * WG queries (64 a warpgroup) and walks the key tiles of BN keys they can see. Per tile, each
// warpgroup computes S = Q K^T and dP = dO V^T (shared-memory operands), dS = P (dP - dot) in registers, then
// dQ += dS K with dS as the register A operand and K as an MN-major shared-memory B operand.
template <int D, int WG, int BN, typename TO>
__device__ __forceinline__ void bwd_dq_wg(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                          const kiln_bf16* __restrict__ V, const kiln_bf16* __restrict__ dO,
                                          const float* __restrict__ LSE, const float* __restrict__ DOT,
                                          TO* __restrict__ dQ, int n, int heads, float scale, int causal,
                                          kiln_attn_layout lq, kiln_attn_layout lk, kiln_attn_layout lv,
                                          kiln_attn_layout ldo, kiln_attn_layout ldq) {
  constexpr int BM = 64 * WG, NT = 128 * WG, KS = D / 16;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const unsigned raw = kiln_smem_addr(smem_raw);
  kiln_bf16* Qs = (kiln_bf16*)(smem_raw + (((raw + 1023u) & ~1023u) - raw));  // [BM * D]
  kiln_bf16* dOs = Qs + BM * D;                                                 // [BM * D]
  kiln_bf16* Ks = dOs + BM * D;                                                 // [2][BN * D]
  kiln_bf16* Vs = Ks + 2 * BN * D;                                              // [2][BN * D]
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int mblocks = (n + BM - 1) / BM;
  const int mb = causal ? mblocks - 1 - (int)blockIdx.x : (int)blockIdx.x;
  const int bh = blockIdx.y;
  const kiln_i64 vbase = (kiln_i64)bh * n;
  const kiln_bf16* k = K + kiln_attn_slab(lk, bh, heads);
  const kiln_bf16* v = V + kiln_attn_slab(lv, bh, heads);
  const int m0 = mb * BM;
  const int wrow0 = m0 + wg * 64;
  const int trow0 = wrow0 + warp * 16 + g;

  int nkb = (n + BN - 1) / BN;
  if (causal) nkb = kiln_min(nkb, (m0 + BM + BN - 1) / BN);

  load_tile_sw<D, BM, NT>(Qs, Q + kiln_attn_slab(lq, bh, heads), lq.sr, m0, n, tid);
  load_tile_sw<D, BM, NT>(dOs, dO + kiln_attn_slab(ldo, bh, heads), ldo.sr, m0, n, tid);
  load_tile_sw<D, BN, NT>(Ks, k, lk.sr, 0, n, tid);
  load_tile_sw<D, BN, NT>(Vs, v, lv.sr, 0, n, tid);
  kiln_cp_async_commit();

  float lse2[2], dot[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = trow0 + r * 8;
    lse2[r] = row < n ? LSE[vbase + row] * KILN_LOG2E : 0.f;
    dot[r] = row < n ? DOT[vbase + row] : 0.f;
  }
  const unsigned qs = kiln_smem_addr(Qs), dos = kiln_smem_addr(dOs);
  float dq[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) dq[i] = 0.f;
  const float sl2 = scale * KILN_LOG2E;

  for (int j = 0; j < nkb; ++j) {
    kiln_cp_async_wait<0>();
    kiln_fence_proxy_async();
    __syncthreads();
    if (j + 1 < nkb) {
      const int nb1 = ((j + 1) & 1) * BN * D;
      load_tile_sw<D, BN, NT>(Ks + nb1, k, lk.sr, (j + 1) * BN, n, tid);
      load_tile_sw<D, BN, NT>(Vs + nb1, v, lv.sr, (j + 1) * BN, n, tid);
      kiln_cp_async_commit();
    }
    const int n0 = j * BN;
    if (causal && n0 > wrow0 + 63) continue;
    const unsigned ks = kiln_smem_addr(Ks + (j & 1) * BN * D);
    const unsigned vs = kiln_smem_addr(Vs + (j & 1) * BN * D);

    float p[BN / 2], dp[BN / 2];
    kiln_wg_fence();
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) wgmma_ss<BN>(p, desc_k<D, BM>(qs, wg * 64, kk), desc_k<D, BN>(ks, 0, kk), kk > 0);
    kiln_wg_commit();
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) wgmma_ss<BN>(dp, desc_k<D, BM>(dos, wg * 64, kk), desc_k<D, BN>(vs, 0, kk), kk > 0);
    kiln_wg_commit();
    kiln_wg_wait<1>();  // S is done: P is computed while dP runs

    if ((causal && n0 + BN - 1 > wrow0) || (n0 + BN > n)) {
      probs<BN, true>(p, lse2, n0, trow0, t, n, causal, sl2);
    } else {
      probs<BN, false>(p, lse2, n0, trow0, t, n, causal, sl2);
    }
    kiln_wg_wait<0>();
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) dp[i] = p[i] * (dp[i] - dot[(i >> 1) & 1]);  // dS
    unsigned sa[BN / 16][4];
    to_a_frags<BN>(sa, dp);
    kiln_wg_fence();
#pragma unroll
    for (int kb = 0; kb < BN / 16; ++kb) wgmma_rs_mn<D>(dq, sa[kb], desc_mn<D, BN>(ks, kb));
    kiln_wg_commit();
    kiln_wg_wait<0>();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = trow0 + r * 8;
    if (row < n) {
      TO* dqrow = dQ + kiln_attn_slab(ldq, bh, heads) + (kiln_i64)row * ldq.sr;
#pragma unroll
      for (int i = 0; i < D / 8; ++i)
        kiln_store_pair(dqrow + i * 8 + 2 * t, dq[4 * i + 2 * r] * scale, dq[4 * i + 2 * r + 1] * scale);
    }
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------------ entry points
// Kernel names follow flash_attention.cu's: kiln_attn_fwd_bf16_d<D>_w<warps>wgp[k<BN>]_o<result type>, wg for
// wgmma (16 query rows a warp, 64 a warpgroup), k<BN> the key tile where it is not 64. FlashAttention.Tuning lists
// them next to the mma.sync variants (a CI test checks the list against these lines).
#define KILN_L kiln_attn_layout

// The forward (fwd_wg_pipe): variant names carry wgp (the p for its overlapped softmax); MINB is the
// __launch_bounds__ minimum of resident blocks (mb<MINB> in the name where it is not 1), which caps registers at
// 65536 / (128 * WG * MINB).
#define KILN_FWD_WGP_T(NAME, D, WG, BN, MINB, TO)                                                              \
  extern "C" __global__ void __launch_bounds__(128 * WG, MINB) NAME(                                          \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, TO* o, float* lse, int n, int heads,         \
      float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv, KILN_L lo) {                                   \
    kiln_pdl_enter();                                                                                          \
    fwd_wg_pipe<D, WG, BN, TO>(q, k, v, o, lse, n, heads, scale, causal, lq, lk, lv, lo);                      \
  }
#define KILN_FWD_WGP(SUFFIX, D, WG, BN, MINB)                                          \
  KILN_FWD_WGP_T(kiln_attn_fwd_bf16_##SUFFIX##_obf16, D, WG, BN, MINB, kiln_bf16)      \
  KILN_FWD_WGP_T(kiln_attn_fwd_bf16_##SUFFIX##_of32, D, WG, BN, MINB, float)
KILN_FWD_WGP(d32_w8wgp, 32, 2, 64, 1)
KILN_FWD_WGP(d64_w4wgp, 64, 1, 64, 1)
KILN_FWD_WGP(d64_w8wgp, 64, 2, 64, 1)
KILN_FWD_WGP(d64_w12wgpk128, 64, 3, 128, 1)
KILN_FWD_WGP(d128_w4wgp, 128, 1, 64, 1)
KILN_FWD_WGP(d128_w8wgp, 128, 2, 64, 1)
KILN_FWD_WGP(d128_w8wgpk128, 128, 2, 128, 1)

#define KILN_DKDV_WG_T(NAME, D, WG, BM, TO)                                                                    \
  extern "C" __global__ void __launch_bounds__(128 * WG) NAME(                                                \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, const kiln_bf16* dout, const float* lse,     \
      const float* dot, TO* dk, TO* dv, int n, int heads, float scale, int causal, KILN_L lq, KILN_L lk,       \
      KILN_L lv, KILN_L ldo, KILN_L ldk, KILN_L ldv) {                                                         \
    kiln_pdl_enter();                                                                                          \
    bwd_dkdv_wg<D, WG, BM, TO>(q, k, v, dout, lse, dot, dk, dv, n, heads, scale, causal, lq, lk, lv, ldo, ldk,  \
                               ldv);                                                                           \
  }
#define KILN_DQ_WG_T(NAME, D, WG, BN, TO)                                                                      \
  extern "C" __global__ void __launch_bounds__(128 * WG) NAME(                                                \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, const kiln_bf16* dout, const float* lse,     \
      const float* dot, TO* dq, int n, int heads, float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv,    \
      KILN_L ldo, KILN_L ldq) {                                                                                \
    kiln_pdl_enter();                                                                                          \
    bwd_dq_wg<D, WG, BN, TO>(q, k, v, dout, lse, dot, dq, n, heads, scale, causal, lq, lk, lv, ldo, ldq);      \
  }
// Backward variants: a block of 64 * WG keys (dK/dV) or queries (dQ); TILE is the query tile of dK/dV and the key
// tile of dQ. One line declares both kernels, as flash_attention.cu's KILN_BWD does. (Separate tiles for the two
// were tried, d64 dK/dV 128 with dQ 64 and d128 64 with 32: both slower than one tile, 16k 15.9 against 14.6 ms
// and 14.4 against 12.9.)
#define KILN_BWD_WG(SUFFIX, D, WG, TILE)                                                \
  KILN_DKDV_WG_T(kiln_attn_bwd_dkdv_bf16_##SUFFIX##_obf16, D, WG, TILE, kiln_bf16)      \
  KILN_DKDV_WG_T(kiln_attn_bwd_dkdv_bf16_##SUFFIX##_of32, D, WG, TILE, float)           \
  KILN_DQ_WG_T(kiln_attn_bwd_dq_bf16_##SUFFIX##_obf16, D, WG, TILE, kiln_bf16)          \
  KILN_DQ_WG_T(kiln_attn_bwd_dq_bf16_##SUFFIX##_of32, D, WG, TILE, float)
KILN_BWD_WG(d32_w8wgk128, 32, 2, 128)
KILN_BWD_WG(d64_w4wg, 64, 1, 64)
KILN_BWD_WG(d64_w8wg, 64, 2, 64)
KILN_BWD_WG(d64_w8wgk128, 64, 2, 128)
KILN_BWD_WG(d128_w4wg, 128, 1, 64)
KILN_BWD_WG(d128_w8wg, 128, 2, 64)
KILN_BWD_WG(d128_w8wgk32, 128, 2, 32)
