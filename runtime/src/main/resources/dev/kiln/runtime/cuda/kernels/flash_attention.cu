// Fused scaled-dot-product attention in the FlashAttention-2 style (Dao, 2023): forward and backward, causal or
// not, never materialising the N x N score matrix.
//
// Layout: q, k, v, o, dO, dq, dk, dv are [batch*heads, n, d] row-major (each (b, h) slab n*d contiguous);
// lse and dot are [batch*heads, n] fp32. lse is the natural-log log-sum-exp of the scaled scores of each query row,
// saved by the forward pass for the backward pass; dot[i] = sum_d dO[i,d] * O[i,d] (the "D" of the FA-2 paper).
//
// Two families:
//  * kiln_attn_*_bf16_d64 / _d128: tensor cores (mma.sync m16n8k16 bf16, fp32 accumulators), tiles streamed
//    through shared memory with cp.async double buffering; each warp owns 16 rows of its block. Fully masked
//    tiles (causal) are skipped per warp; dQ and dK/dV are computed by separate kernels, so no atomics.
//  * kiln_attn_*_simt_{f32,bf16}: one warp per row, fp32 arithmetic, any head dim up to 256. This is the path for
//    fp32 inputs and for head dims the tensor-core kernels do not cover; it is correct, not fast.
#include "kiln_common.cuh"

namespace {

template <int D, int ROWS, int NT>
__device__ __forceinline__ void load_tile(kiln_bf16* s, const kiln_bf16* g, int row0, int n, int tid) {
  constexpr int CPR = D / 8;  // 16-byte chunks per row
  constexpr int LD = D + 8;   // padded row: the 8 rows an ldmatrix reads land in distinct banks
#pragma unroll
  for (int i = tid; i < ROWS * CPR; i += NT) {
    int r = i / CPR, c = (i % CPR) * 8;
    bool valid = row0 + r < n;
    const kiln_bf16* src = valid ? g + (kiln_i64)(row0 + r) * D + c : g;
    kiln_cp_async16(s + r * LD + c, src, valid);
  }
}

template <int ROWS, int NT>
__device__ __forceinline__ void load_vec(float* s, const float* g, int row0, int n, int tid) {
  for (int i = tid; i < ROWS; i += NT) {
    bool valid = row0 + i < n;
    kiln_cp_async4(s + i, valid ? g + row0 + i : g, valid);
  }
}

// A fragments (16 rows x 16 cols at column c0) of a row-major smem tile with row stride LD.
template <int LD>
__device__ __forceinline__ void lds_a(unsigned* a, const kiln_bf16* tile, int row0, int c0, int lane) {
  kiln_ldsm_x4(a[0], a[1], a[2], a[3], tile + (row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + c0 + (lane >> 4) * 8);
}

// B fragments for two consecutive k-steps (k0, k0+16) and one n-block of 8, where the smem tile stores B^T
// row-major: row = n index, col = k index (K for S = Q K^T).
template <int LD>
__device__ __forceinline__ void lds_b_nk(unsigned* b, const kiln_bf16* tile, int n0, int k0, int lane) {
  kiln_ldsm_x4(b[0], b[1], b[2], b[3], tile + (n0 + (lane & 7)) * LD + k0 + (lane >> 3) * 8);
}

// B fragments for one k-step of 16 and two n-blocks (n0, n0+8), where the smem tile stores B row-major:
// row = k index, col = n index (V for O = P V).
template <int LD>
__device__ __forceinline__ void lds_b_kn(unsigned* b, const kiln_bf16* tile, int k0, int n0, int lane) {
  kiln_ldsm_x4_trans(b[0], b[1], b[2], b[3],
                     tile + (k0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + n0 + (lane >> 4) * 8);
}

// ------------------------------------------------------------------------------------------------ forward

template <int D, int WARPS, int BN>
__device__ __forceinline__ void fwd_tc(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                       const kiln_bf16* __restrict__ V, kiln_bf16* __restrict__ O,
                                       float* __restrict__ LSE, int n, float scale, int causal) {
  constexpr int BM = WARPS * 16, LD = D + 8, NT = WARPS * 32;
  extern __shared__ __align__(16) unsigned char smem[];
  kiln_bf16* Qs = (kiln_bf16*)smem;
  kiln_bf16* Ks = Qs + BM * LD;      // [2][BN][LD]
  kiln_bf16* Vs = Ks + 2 * BN * LD;  // [2][BN][LD]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int mblocks = (n + BM - 1) / BM;
  // Causal blocks near the end of the sequence do the most work: start them first.
  const int mb = causal ? mblocks - 1 - (int)blockIdx.x : (int)blockIdx.x;
  const kiln_i64 base = (kiln_i64)blockIdx.y * n * D;
  const kiln_bf16* q = Q + base;
  const kiln_bf16* k = K + base;
  const kiln_bf16* v = V + base;
  const int m0 = mb * BM;
  const int wrow0 = m0 + warp * 16;  // first query row of this warp

  int nkb = (n + BN - 1) / BN;
  if (causal) nkb = kiln_min(nkb, (m0 + BM + BN - 1) / BN);

  load_tile<D, BM, NT>(Qs, q, m0, n, tid);
  kiln_cp_async_commit();
  load_tile<D, BN, NT>(Ks, k, 0, n, tid);
  load_tile<D, BN, NT>(Vs, v, 0, n, tid);
  kiln_cp_async_commit();
  kiln_cp_async_wait<1>();
  __syncthreads();

  unsigned qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) lds_a<LD>(qf[kk], Qs, warp * 16, kk * 16, lane);

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float mrow[2] = {-KILN_INF, -KILN_INF};  // running max, log2 units of scaled scores
  float lrow[2] = {0.f, 0.f};              // this thread's part of the running denominator
  const float sl2 = scale * KILN_LOG2E;

  for (int j = 0; j < nkb; ++j) {
    if (j + 1 < nkb) {
      const int nb1 = ((j + 1) & 1) * BN * LD;
      load_tile<D, BN, NT>(Ks + nb1, k, (j + 1) * BN, n, tid);
      load_tile<D, BN, NT>(Vs + nb1, v, (j + 1) * BN, n, tid);
      kiln_cp_async_commit();
      kiln_cp_async_wait<1>();
    } else {
      kiln_cp_async_wait<0>();
    }
    __syncthreads();
    const kiln_bf16* ks = Ks + (j & 1) * BN * LD;
    const kiln_bf16* vs = Vs + (j & 1) * BN * LD;
    const int n0 = j * BN;
    if (!causal || n0 <= wrow0 + 15) {
      float s[BN / 8][4];
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb) {
          unsigned b[4];
          lds_b_nk<LD>(b, ks, nb * 8, kk * 16, lane);
          kiln_mma_bf16(s[nb], qf[kk], b[0], b[1]);
          kiln_mma_bf16(s[nb], qf[kk + 1], b[2], b[3]);
        }
      }
      const bool mask = (causal && n0 + BN - 1 > wrow0) || (n0 + BN > n);
      float mx[2] = {mrow[0], mrow[1]};
#pragma unroll
      for (int nb = 0; nb < BN / 8; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = s[nb][e] * sl2;
          if (mask) {
            const int col = n0 + nb * 8 + 2 * t + (e & 1);
            const int row = wrow0 + g + (e >> 1) * 8;
            if (col >= n || (causal && col > row)) x = -KILN_INF;
          }
          s[nb][e] = x;
          mx[e >> 1] = fmaxf(mx[e >> 1], x);
        }
      }
      float mu[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        mu[r] = mx[r] == -KILN_INF ? 0.f : mx[r];  // a row with nothing unmasked yet stays at zero
        const float alpha = kiln_exp2(mrow[r] - mu[r]);
        mrow[r] = mx[r];
        lrow[r] *= alpha;
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
          o[i][2 * r] *= alpha;
          o[i][2 * r + 1] *= alpha;
        }
      }
#pragma unroll
      for (int nb = 0; nb < BN / 8; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = kiln_exp2(s[nb][e] - mu[e >> 1]);
          s[nb][e] = p;
          lrow[e >> 1] += p;
        }
      }
#pragma unroll
      for (int kb = 0; kb < BN / 16; ++kb) {
        unsigned a[4];
        a[0] = kiln_pack_bf16(s[2 * kb][0], s[2 * kb][1]);
        a[1] = kiln_pack_bf16(s[2 * kb][2], s[2 * kb][3]);
        a[2] = kiln_pack_bf16(s[2 * kb + 1][0], s[2 * kb + 1][1]);
        a[3] = kiln_pack_bf16(s[2 * kb + 1][2], s[2 * kb + 1][3]);
#pragma unroll
        for (int db = 0; db < D / 8; db += 2) {
          unsigned b[4];
          lds_b_kn<LD>(b, vs, kb * 16, db * 8, lane);
          kiln_mma_bf16(o[db], a, b[0], b[1]);
          kiln_mma_bf16(o[db + 1], a, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the buffer just read is refilled by the next iteration's prefetch
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = lrow[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int row = wrow0 + g + r * 8;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    if (row < n) {
      kiln_bf16* orow = O + base + (kiln_i64)row * D;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        *(unsigned*)(orow + i * 8 + 2 * t) = kiln_pack_bf16(o[i][2 * r] * inv, o[i][2 * r + 1] * inv);
      }
      if (t == 0) LSE[(kiln_i64)blockIdx.y * n + row] = l > 0.f ? (mrow[r] + __log2f(l)) * KILN_LN2 : KILN_INF;
    }
  }
}

// ------------------------------------------------------------------------------------------------ backward dK, dV

// One block owns WARPS*16 keys (16 per warp) and walks the query tiles that can see them.
template <int D, int WARPS, int BM>
__device__ __forceinline__ void bwd_dkdv_tc(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                            const kiln_bf16* __restrict__ V, const kiln_bf16* __restrict__ dO,
                                            const float* __restrict__ LSE, const float* __restrict__ DOT,
                                            kiln_bf16* __restrict__ dK, kiln_bf16* __restrict__ dV, int n,
                                            float scale, int causal) {
  constexpr int BN = WARPS * 16, LD = D + 8, NT = WARPS * 32;
  extern __shared__ __align__(16) unsigned char smem[];
  kiln_bf16* Ks = (kiln_bf16*)smem;   // [BN][LD]
  kiln_bf16* Vs = Ks + BN * LD;       // [BN][LD]
  kiln_bf16* Qs = Vs + BN * LD;       // [2][BM][LD]
  kiln_bf16* dOs = Qs + 2 * BM * LD;  // [2][BM][LD]
  float* Ls = (float*)(dOs + 2 * BM * LD);  // [2][BM]
  float* Ds = Ls + 2 * BM;                  // [2][BM]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const kiln_i64 base = (kiln_i64)blockIdx.y * n * D;
  const kiln_i64 vbase = (kiln_i64)blockIdx.y * n;
  const kiln_bf16* q = Q + base;
  const kiln_bf16* dout = dO + base;
  const float* lse = LSE + vbase;
  const float* dot = DOT + vbase;
  const int n0 = blockIdx.x * BN;
  const int wkey0 = n0 + warp * 16;
  const int mtiles = (n + BM - 1) / BM;
  const int i0 = causal ? n0 / BM : 0;

  load_tile<D, BN, NT>(Ks, K + base, n0, n, tid);
  load_tile<D, BN, NT>(Vs, V + base, n0, n, tid);
  kiln_cp_async_commit();
  if (i0 < mtiles) {
    load_tile<D, BM, NT>(Qs, q, i0 * BM, n, tid);
    load_tile<D, BM, NT>(dOs, dout, i0 * BM, n, tid);
    load_vec<BM, NT>(Ls, lse, i0 * BM, n, tid);
    load_vec<BM, NT>(Ds, dot, i0 * BM, n, tid);
  }
  kiln_cp_async_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) {
    dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.f;
    dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.f;
  }
  const float sl2 = scale * KILN_LOG2E;

  for (int it = i0; it < mtiles; ++it) {
    const int buf = (it - i0) & 1;
    if (it + 1 < mtiles) {
      const int nbuf = buf ^ 1;
      load_tile<D, BM, NT>(Qs + nbuf * BM * LD, q, (it + 1) * BM, n, tid);
      load_tile<D, BM, NT>(dOs + nbuf * BM * LD, dout, (it + 1) * BM, n, tid);
      load_vec<BM, NT>(Ls + nbuf * BM, lse, (it + 1) * BM, n, tid);
      load_vec<BM, NT>(Ds + nbuf * BM, dot, (it + 1) * BM, n, tid);
      kiln_cp_async_commit();
      kiln_cp_async_wait<1>();
    } else {
      kiln_cp_async_wait<0>();
    }
    __syncthreads();
    const kiln_bf16* qs = Qs + buf * BM * LD;
    const kiln_bf16* dos = dOs + buf * BM * LD;
    const float* ls = Ls + buf * BM;
    const float* ds = Ds + buf * BM;
    const int m0 = it * BM;
    if (!causal || m0 + BM - 1 >= wkey0) {
      // S^T = K_w Q^T: rows are this warp's 16 keys, columns the BM queries.
      float p[BM / 8][4];
#pragma unroll
      for (int i = 0; i < BM / 8; ++i) p[i][0] = p[i][1] = p[i][2] = p[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        unsigned a0[4], a1[4];
        lds_a<LD>(a0, Ks, warp * 16, kk * 16, lane);
        lds_a<LD>(a1, Ks, warp * 16, kk * 16 + 16, lane);
#pragma unroll
        for (int nb = 0; nb < BM / 8; ++nb) {
          unsigned b[4];
          lds_b_nk<LD>(b, qs, nb * 8, kk * 16, lane);
          kiln_mma_bf16(p[nb], a0, b[0], b[1]);
          kiln_mma_bf16(p[nb], a1, b[2], b[3]);
        }
      }
      // P^T = exp(S^T * scale - lse[query]); masked entries are exactly 0.
#pragma unroll
      for (int nb = 0; nb < BM / 8; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int cl = nb * 8 + 2 * t + (e & 1);
          const int col = m0 + cl;
          const int key = wkey0 + g + (e >> 1) * 8;
          float x = kiln_exp2(p[nb][e] * sl2 - ls[cl] * KILN_LOG2E);
          if (col >= n || (causal && col < key)) x = 0.f;
          p[nb][e] = x;
        }
      }
      // dV += P^T dO
#pragma unroll
      for (int kb = 0; kb < BM / 16; ++kb) {
        unsigned a[4];
        a[0] = kiln_pack_bf16(p[2 * kb][0], p[2 * kb][1]);
        a[1] = kiln_pack_bf16(p[2 * kb][2], p[2 * kb][3]);
        a[2] = kiln_pack_bf16(p[2 * kb + 1][0], p[2 * kb + 1][1]);
        a[3] = kiln_pack_bf16(p[2 * kb + 1][2], p[2 * kb + 1][3]);
#pragma unroll
        for (int db = 0; db < D / 8; db += 2) {
          unsigned b[4];
          lds_b_kn<LD>(b, dos, kb * 16, db * 8, lane);
          kiln_mma_bf16(dv[db], a, b[0], b[1]);
          kiln_mma_bf16(dv[db + 1], a, b[2], b[3]);
        }
      }
      // dP^T = V_w dO^T
      float dp[BM / 8][4];
#pragma unroll
      for (int i = 0; i < BM / 8; ++i) dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        unsigned a0[4], a1[4];
        lds_a<LD>(a0, Vs, warp * 16, kk * 16, lane);
        lds_a<LD>(a1, Vs, warp * 16, kk * 16 + 16, lane);
#pragma unroll
        for (int nb = 0; nb < BM / 8; ++nb) {
          unsigned b[4];
          lds_b_nk<LD>(b, dos, nb * 8, kk * 16, lane);
          kiln_mma_bf16(dp[nb], a0, b[0], b[1]);
          kiln_mma_bf16(dp[nb], a1, b[2], b[3]);
        }
      }
      // dS^T = P^T * (dP^T - dot[query])
#pragma unroll
      for (int nb = 0; nb < BM / 8; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) dp[nb][e] = p[nb][e] * (dp[nb][e] - ds[nb * 8 + 2 * t + (e & 1)]);
      }
      // dK += dS^T Q
#pragma unroll
      for (int kb = 0; kb < BM / 16; ++kb) {
        unsigned a[4];
        a[0] = kiln_pack_bf16(dp[2 * kb][0], dp[2 * kb][1]);
        a[1] = kiln_pack_bf16(dp[2 * kb][2], dp[2 * kb][3]);
        a[2] = kiln_pack_bf16(dp[2 * kb + 1][0], dp[2 * kb + 1][1]);
        a[3] = kiln_pack_bf16(dp[2 * kb + 1][2], dp[2 * kb + 1][3]);
#pragma unroll
        for (int db = 0; db < D / 8; db += 2) {
          unsigned b[4];
          lds_b_kn<LD>(b, qs, kb * 16, db * 8, lane);
          kiln_mma_bf16(dk[db], a, b[0], b[1]);
          kiln_mma_bf16(dk[db + 1], a, b[2], b[3]);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = wkey0 + g + r * 8;
    if (key < n) {
      kiln_bf16* dkrow = dK + base + (kiln_i64)key * D;
      kiln_bf16* dvrow = dV + base + (kiln_i64)key * D;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        *(unsigned*)(dkrow + i * 8 + 2 * t) = kiln_pack_bf16(dk[i][2 * r] * scale, dk[i][2 * r + 1] * scale);
        *(unsigned*)(dvrow + i * 8 + 2 * t) = kiln_pack_bf16(dv[i][2 * r], dv[i][2 * r + 1]);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------ backward dQ

// One block owns WARPS*16 queries and walks the key tiles they can see.
template <int D, int WARPS, int BN>
__device__ __forceinline__ void bwd_dq_tc(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                          const kiln_bf16* __restrict__ V, const kiln_bf16* __restrict__ dO,
                                          const float* __restrict__ LSE, const float* __restrict__ DOT,
                                          kiln_bf16* __restrict__ dQ, int n, float scale, int causal) {
  constexpr int BM = WARPS * 16, LD = D + 8, NT = WARPS * 32;
  extern __shared__ __align__(16) unsigned char smem[];
  kiln_bf16* Qs = (kiln_bf16*)smem;   // [BM][LD]
  kiln_bf16* dOs = Qs + BM * LD;      // [BM][LD]
  kiln_bf16* Ks = dOs + BM * LD;      // [2][BN][LD]
  kiln_bf16* Vs = Ks + 2 * BN * LD;   // [2][BN][LD]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int mblocks = (n + BM - 1) / BM;
  const int mb = causal ? mblocks - 1 - (int)blockIdx.x : (int)blockIdx.x;
  const kiln_i64 base = (kiln_i64)blockIdx.y * n * D;
  const kiln_i64 vbase = (kiln_i64)blockIdx.y * n;
  const kiln_bf16* k = K + base;
  const kiln_bf16* v = V + base;
  const int m0 = mb * BM;
  const int wrow0 = m0 + warp * 16;

  int nkb = (n + BN - 1) / BN;
  if (causal) nkb = kiln_min(nkb, (m0 + BM + BN - 1) / BN);

  load_tile<D, BM, NT>(Qs, Q + base, m0, n, tid);
  load_tile<D, BM, NT>(dOs, dO + base, m0, n, tid);
  kiln_cp_async_commit();
  load_tile<D, BN, NT>(Ks, k, 0, n, tid);
  load_tile<D, BN, NT>(Vs, v, 0, n, tid);
  kiln_cp_async_commit();
  kiln_cp_async_wait<1>();
  __syncthreads();

  unsigned qf[D / 16][4], df[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    lds_a<LD>(qf[kk], Qs, warp * 16, kk * 16, lane);
    lds_a<LD>(df[kk], dOs, warp * 16, kk * 16, lane);
  }
  float lse2[2], dot[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = wrow0 + g + r * 8;
    lse2[r] = row < n ? LSE[vbase + row] * KILN_LOG2E : 0.f;
    dot[r] = row < n ? DOT[vbase + row] : 0.f;
  }
  float dq[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
  const float sl2 = scale * KILN_LOG2E;

  for (int j = 0; j < nkb; ++j) {
    if (j + 1 < nkb) {
      const int nb1 = ((j + 1) & 1) * BN * LD;
      load_tile<D, BN, NT>(Ks + nb1, k, (j + 1) * BN, n, tid);
      load_tile<D, BN, NT>(Vs + nb1, v, (j + 1) * BN, n, tid);
      kiln_cp_async_commit();
      kiln_cp_async_wait<1>();
    } else {
      kiln_cp_async_wait<0>();
    }
    __syncthreads();
    const kiln_bf16* ks = Ks + (j & 1) * BN * LD;
    const kiln_bf16* vs = Vs + (j & 1) * BN * LD;
    const int n0 = j * BN;
    if (!causal || n0 <= wrow0 + 15) {
      float p[BN / 8][4], dp[BN / 8][4];
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) {
        p[i][0] = p[i][1] = p[i][2] = p[i][3] = 0.f;
        dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.f;
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb) {
          unsigned b[4];
          lds_b_nk<LD>(b, ks, nb * 8, kk * 16, lane);
          kiln_mma_bf16(p[nb], qf[kk], b[0], b[1]);
          kiln_mma_bf16(p[nb], qf[kk + 1], b[2], b[3]);
          lds_b_nk<LD>(b, vs, nb * 8, kk * 16, lane);
          kiln_mma_bf16(dp[nb], df[kk], b[0], b[1]);
          kiln_mma_bf16(dp[nb], df[kk + 1], b[2], b[3]);
        }
      }
#pragma unroll
      for (int nb = 0; nb < BN / 8; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = n0 + nb * 8 + 2 * t + (e & 1);
          const int row = wrow0 + g + (e >> 1) * 8;
          float x = kiln_exp2(p[nb][e] * sl2 - lse2[e >> 1]);
          if (col >= n || (causal && col > row)) x = 0.f;
          dp[nb][e] = x * (dp[nb][e] - dot[e >> 1]);  // dS
        }
      }
      // dQ += dS K
#pragma unroll
      for (int kb = 0; kb < BN / 16; ++kb) {
        unsigned a[4];
        a[0] = kiln_pack_bf16(dp[2 * kb][0], dp[2 * kb][1]);
        a[1] = kiln_pack_bf16(dp[2 * kb][2], dp[2 * kb][3]);
        a[2] = kiln_pack_bf16(dp[2 * kb + 1][0], dp[2 * kb + 1][1]);
        a[3] = kiln_pack_bf16(dp[2 * kb + 1][2], dp[2 * kb + 1][3]);
#pragma unroll
        for (int db = 0; db < D / 8; db += 2) {
          unsigned b[4];
          lds_b_kn<LD>(b, ks, kb * 16, db * 8, lane);
          kiln_mma_bf16(dq[db], a, b[0], b[1]);
          kiln_mma_bf16(dq[db + 1], a, b[2], b[3]);
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = wrow0 + g + r * 8;
    if (row < n) {
      kiln_bf16* dqrow = dQ + base + (kiln_i64)row * D;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        *(unsigned*)(dqrow + i * 8 + 2 * t) = kiln_pack_bf16(dq[i][2 * r] * scale, dq[i][2 * r + 1] * scale);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------ SIMT path

constexpr int SIMT_MAX_D = 256;
constexpr int SIMT_PER_LANE = SIMT_MAX_D / 32;

template <typename T>
__device__ __forceinline__ void load_row(float* r, const T* p, int d, int lane) {
#pragma unroll
  for (int i = 0; i < SIMT_PER_LANE; ++i) {
    const int c = lane + 32 * i;
    r[i] = c < d ? kiln_to_float(p[c]) : 0.f;
  }
}

template <typename T>
__device__ __forceinline__ float dot_row(const float* r, const T* p, int d, int lane) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < SIMT_PER_LANE; ++i) {
    const int c = lane + 32 * i;
    if (c < d) s += r[i] * kiln_to_float(p[c]);
  }
  return kiln_warp_sum(s);
}

template <typename T>
__device__ __forceinline__ void store_row(T* p, const float* r, float mul, int d, int lane) {
#pragma unroll
  for (int i = 0; i < SIMT_PER_LANE; ++i) {
    const int c = lane + 32 * i;
    if (c < d) kiln_store(p + c, r[i] * mul);
  }
}

// One warp per query row; online softmax in fp32.
template <typename T>
__device__ __forceinline__ void fwd_simt(const T* Q, const T* K, const T* V, T* O, float* LSE, int n, int d,
                                         float scale, int causal) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= n) return;
  const kiln_i64 base = (kiln_i64)blockIdx.y * n * d;
  float q[SIMT_PER_LANE], o[SIMT_PER_LANE];
  load_row(q, Q + base + (kiln_i64)row * d, d, lane);
#pragma unroll
  for (int i = 0; i < SIMT_PER_LANE; ++i) o[i] = 0.f;
  float m = -KILN_INF, l = 0.f;
  const int kend = causal ? row + 1 : n;
  for (int j = 0; j < kend; ++j) {
    const float s = dot_row(q, K + base + (kiln_i64)j * d, d, lane) * scale;
    const float mnew = fmaxf(m, s);
    const float alpha = expf(m - mnew);
    const float p = expf(s - mnew);
    l = l * alpha + p;
    const T* vr = V + base + (kiln_i64)j * d;
#pragma unroll
    for (int i = 0; i < SIMT_PER_LANE; ++i) {
      const int c = lane + 32 * i;
      o[i] = o[i] * alpha + (c < d ? p * kiln_to_float(vr[c]) : 0.f);
    }
    m = mnew;
  }
  store_row(O + base + (kiln_i64)row * d, o, 1.f / l, d, lane);
  if (lane == 0) LSE[(kiln_i64)blockIdx.y * n + row] = m + logf(l);
}

// dot[i] = sum_d dO[i,d] * O[i,d]; one warp per row (shared by both families).
template <typename T>
__device__ __forceinline__ void bwd_dot(const T* O, const T* dO, float* DOT, kiln_i64 rows, int d) {
  const int lane = threadIdx.x & 31;
  const kiln_i64 row = (kiln_i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const T* o = O + row * d;
  const T* g = dO + row * d;
  float s = 0.f;
  for (int c = lane; c < d; c += 32) s += kiln_to_float(o[c]) * kiln_to_float(g[c]);
  s = kiln_warp_sum(s);
  if (lane == 0) DOT[row] = s;
}

template <typename T>
__device__ __forceinline__ void bwd_dq_simt(const T* Q, const T* K, const T* V, const T* dO, const float* LSE,
                                            const float* DOT, T* dQ, int n, int d, float scale, int causal) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= n) return;
  const kiln_i64 base = (kiln_i64)blockIdx.y * n * d;
  const kiln_i64 vrow = (kiln_i64)blockIdx.y * n + row;
  float q[SIMT_PER_LANE], g[SIMT_PER_LANE], acc[SIMT_PER_LANE];
  load_row(q, Q + base + (kiln_i64)row * d, d, lane);
  load_row(g, dO + base + (kiln_i64)row * d, d, lane);
#pragma unroll
  for (int i = 0; i < SIMT_PER_LANE; ++i) acc[i] = 0.f;
  const float lse = LSE[vrow], dot = DOT[vrow];
  const int kend = causal ? row + 1 : n;
  for (int j = 0; j < kend; ++j) {
    const float p = expf(dot_row(q, K + base + (kiln_i64)j * d, d, lane) * scale - lse);
    const float ds = p * (dot_row(g, V + base + (kiln_i64)j * d, d, lane) - dot);
    const T* kr = K + base + (kiln_i64)j * d;
#pragma unroll
    for (int i = 0; i < SIMT_PER_LANE; ++i) {
      const int c = lane + 32 * i;
      if (c < d) acc[i] += ds * kiln_to_float(kr[c]);
    }
  }
  store_row(dQ + base + (kiln_i64)row * d, acc, scale, d, lane);
}

template <typename T>
__device__ __forceinline__ void bwd_dkdv_simt(const T* Q, const T* K, const T* V, const T* dO, const float* LSE,
                                              const float* DOT, T* dK, T* dV, int n, int d, float scale,
                                              int causal) {
  const int lane = threadIdx.x & 31;
  const int key = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (key >= n) return;
  const kiln_i64 base = (kiln_i64)blockIdx.y * n * d;
  const kiln_i64 vbase = (kiln_i64)blockIdx.y * n;
  float kr[SIMT_PER_LANE], vr[SIMT_PER_LANE], dk[SIMT_PER_LANE], dv[SIMT_PER_LANE];
  load_row(kr, K + base + (kiln_i64)key * d, d, lane);
  load_row(vr, V + base + (kiln_i64)key * d, d, lane);
#pragma unroll
  for (int i = 0; i < SIMT_PER_LANE; ++i) dk[i] = dv[i] = 0.f;
  for (int i = causal ? key : 0; i < n; ++i) {
    const T* qi = Q + base + (kiln_i64)i * d;
    const T* gi = dO + base + (kiln_i64)i * d;
    const float p = expf(dot_row(kr, qi, d, lane) * scale - LSE[vbase + i]);
    const float ds = p * (dot_row(vr, gi, d, lane) - DOT[vbase + i]);
#pragma unroll
    for (int c8 = 0; c8 < SIMT_PER_LANE; ++c8) {
      const int c = lane + 32 * c8;
      if (c < d) {
        dv[c8] += p * kiln_to_float(gi[c]);
        dk[c8] += ds * kiln_to_float(qi[c]);
      }
    }
  }
  store_row(dK + base + (kiln_i64)key * d, dk, scale, d, lane);
  store_row(dV + base + (kiln_i64)key * d, dv, 1.f, d, lane);
}

}  // namespace

// ------------------------------------------------------------------------------------------------ entry points
// Variants. Kernel names end in _w<warps>[mb<min blocks per SM>]: the warps per block (16 rows each) and, where
// given, the __launch_bounds__ minimum of resident blocks, which caps registers per thread (65536 / (32 * warps *
// min blocks)). FlashAttention.Tuning picks one per pass and head dim; its DEFAULT is what measured fastest on an
// H200 (docs/cuda.md), the others stay so the choice can be re-measured with CudaBenchmark.
// Forward: 64-key tiles. dK/dV: query tiles of 64 (d64) or 32 (d128, to stay under 255 registers with both
// accumulators live). dQ: key tiles of 64 (d64) or 32 (d128).

#define KILN_FWD(NAME, D, W, BN, BOUNDS)                                                                        \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                                    \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, kiln_bf16* o, float* lse, int n, float scale, \
      int causal) {                                                                                            \
    fwd_tc<D, W, BN>(q, k, v, o, lse, n, scale, causal);                                                       \
  }
KILN_FWD(kiln_attn_fwd_bf16_d64_w8, 64, 8, 64, (256))
KILN_FWD(kiln_attn_fwd_bf16_d64_w8mb2, 64, 8, 64, (256, 2))
KILN_FWD(kiln_attn_fwd_bf16_d64_w4mb4, 64, 4, 64, (128, 4))
KILN_FWD(kiln_attn_fwd_bf16_d128_w8, 128, 8, 64, (256))
KILN_FWD(kiln_attn_fwd_bf16_d128_w4mb2, 128, 4, 64, (128, 2))
KILN_FWD(kiln_attn_fwd_bf16_d128_w4mb3, 128, 4, 64, (128, 3))

#define KILN_DKDV(NAME, D, W, BM, BOUNDS)                                                                      \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                                    \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, const kiln_bf16* dout, const float* lse,     \
      const float* dot, kiln_bf16* dk, kiln_bf16* dv, int n, float scale, int causal) {                        \
    bwd_dkdv_tc<D, W, BM>(q, k, v, dout, lse, dot, dk, dv, n, scale, causal);                                  \
  }
KILN_DKDV(kiln_attn_bwd_dkdv_bf16_d64_w4, 64, 4, 64, (128))
KILN_DKDV(kiln_attn_bwd_dkdv_bf16_d64_w8, 64, 8, 64, (256))
KILN_DKDV(kiln_attn_bwd_dkdv_bf16_d64_w4mb3, 64, 4, 64, (128, 3))
KILN_DKDV(kiln_attn_bwd_dkdv_bf16_d128_w4, 128, 4, 32, (128))
KILN_DKDV(kiln_attn_bwd_dkdv_bf16_d128_w8, 128, 8, 32, (256))

#define KILN_DQ(NAME, D, W, BN, BOUNDS)                                                                        \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                                    \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, const kiln_bf16* dout, const float* lse,     \
      const float* dot, kiln_bf16* dq, int n, float scale, int causal) {                                       \
    bwd_dq_tc<D, W, BN>(q, k, v, dout, lse, dot, dq, n, scale, causal);                                        \
  }
KILN_DQ(kiln_attn_bwd_dq_bf16_d64_w4, 64, 4, 64, (128))
KILN_DQ(kiln_attn_bwd_dq_bf16_d64_w8, 64, 8, 64, (256))
KILN_DQ(kiln_attn_bwd_dq_bf16_d64_w4mb3, 64, 4, 64, (128, 3))
KILN_DQ(kiln_attn_bwd_dq_bf16_d128_w4, 128, 4, 32, (128))
KILN_DQ(kiln_attn_bwd_dq_bf16_d128_w8, 128, 8, 32, (256))

#define KILN_SIMT(SUFFIX, T)                                                                                   \
  extern "C" __global__ void kiln_attn_fwd_simt_##SUFFIX(const T* q, const T* k, const T* v, T* o, float* lse,  \
                                                         int n, int d, float scale, int causal) {               \
    fwd_simt<T>(q, k, v, o, lse, n, d, scale, causal);                                                         \
  }                                                                                                            \
  extern "C" __global__ void kiln_attn_bwd_dot_##SUFFIX(const T* o, const T* dout, float* dot, kiln_i64 rows,    \
                                                        int d) {                                               \
    bwd_dot<T>(o, dout, dot, rows, d);                                                                         \
  }                                                                                                            \
  extern "C" __global__ void kiln_attn_bwd_dq_simt_##SUFFIX(const T* q, const T* k, const T* v, const T* dout,  \
                                                            const float* lse, const float* dot, T* dq, int n,   \
                                                            int d, float scale, int causal) {                  \
    bwd_dq_simt<T>(q, k, v, dout, lse, dot, dq, n, d, scale, causal);                                          \
  }                                                                                                            \
  extern "C" __global__ void kiln_attn_bwd_dkdv_simt_##SUFFIX(const T* q, const T* k, const T* v,               \
                                                              const T* dout, const float* lse,                 \
                                                              const float* dot, T* dk, T* dv, int n, int d,     \
                                                              float scale, int causal) {                       \
    bwd_dkdv_simt<T>(q, k, v, dout, lse, dot, dk, dv, n, d, scale, causal);                                    \
  }
KILN_SIMT(f32, float)
KILN_SIMT(bf16, kiln_bf16)
