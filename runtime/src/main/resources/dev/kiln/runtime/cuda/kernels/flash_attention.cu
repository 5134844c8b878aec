// Fused scaled-dot-product attention in the FlashAttention-2 style (Dao, 2023): forward and backward, causal or
// not, never materialising the N x N score matrix.
//
// Layout: q, k, v, o, dO, dq, dk, dv are [batch, heads, n, d] with d contiguous and the other three dims strided
// (kiln_attn_layout): element (b, h, r, c) of a tensor lies at b*sb + h*sh + r*sr + c. A head-split view of a
// [batch, n, heads*d] projection is read and written where it lies, with no rearranging copy. Blocks index
// (b, h) as blockIdx.y = b*heads + h. lse and dot are contiguous [batch*heads, n] fp32. lse is the natural-log
// log-sum-exp of the scaled scores of each query row, saved by the forward pass for the backward pass;
// dot[i] = sum_d dO[i,d] * O[i,d] (the "D" of the FA-2 paper).
//
// Two families:
//  * kiln_attn_*_bf16_d{32,64,80,128}: tensor cores (mma.sync m16n8k16 bf16, fp32 accumulators), tiles streamed
//    through shared memory with cp.async double buffering; each warp owns 16 or 32 rows of its block (MT = 1 or
//    2 tiles of 16; at 32 every K/V fragment read from shared memory feeds two MMAs). Fully masked key tiles
//    (causal) are skipped per warp; dQ and dK/dV are computed by separate kernels, so no atomics. Inputs
//    are bf16; results (o, dq, dk, dv) are written from the fp32 accumulators as bf16 (_obf16) or fp32 (_of32),
//    so mixed precision needs no cast of the results.
//  * kiln_attn_*_simt_{f32,bf16}: one warp per row, fp32 arithmetic, any head dim up to 256. This is the path for
//    fp32 inputs and for head dims the tensor-core kernels do not cover; it is correct, not fast.
#include "kiln_attention.cuh"

namespace {

// Rows [row0, row0 + ROWS) of a slab with row stride sr into a padded smem tile; rows past n are zero-filled.
template <int D, int ROWS, int NT>
__device__ __forceinline__ void load_tile(kiln_bf16* s, const kiln_bf16* g, kiln_i64 sr, int row0, int n, int tid) {
  constexpr int CPR = D / 8;  // 16-byte chunks per row
  constexpr int LD = D + 8;   // padded row: the 8 rows an ldmatrix reads land in distinct banks
#pragma unroll
  for (int i = tid; i < ROWS * CPR; i += NT) {
    int r = i / CPR, c = (i % CPR) * 8;
    bool valid = row0 + r < n;
    const kiln_bf16* src = valid ? g + (kiln_i64)(row0 + r) * sr + c : g;
    kiln_cp_async16(s + r * LD + c, src, valid);
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

// B fragments for the single k-step k0 of one n-block of 8 (B^T row-major, as lds_b_nk): the last k-step when
// D / 16 is odd (d = 80).
template <int LD>
__device__ __forceinline__ void lds_b_nk1(unsigned* b, const kiln_bf16* tile, int n0, int k0, int lane) {
  kiln_ldsm_x2(b[0], b[1], tile + (n0 + (lane & 7)) * LD + k0 + ((lane >> 3) & 1) * 8);
}

// B fragments for one k-step of 16 and two n-blocks (n0, n0+8), where the smem tile stores B row-major:
// row = k index, col = n index (V for O = P V).
template <int LD>
__device__ __forceinline__ void lds_b_kn(unsigned* b, const kiln_bf16* tile, int k0, int n0, int lane) {
  kiln_ldsm_x4_trans(b[0], b[1], b[2], b[3],
                     tile + (k0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + n0 + (lane >> 4) * 8);
}

// acc[mt][nb] += A B^T over k = D for one warp's MT tiles of 16 rows: A rows a0 + 16·mt of a_tile, B the N rows of
// b_tile (both row-major [rows][LD] smem tiles, k along the row). Each B fragment is read once for all MT tiles.
template <int D, int LD, int N, int MT>
__device__ __forceinline__ void mma_abt(float (*acc)[N / 8][4], const kiln_bf16* a_tile, int a0,
                                        const kiln_bf16* b_tile, int lane) {
#pragma unroll
  for (int kk = 0; kk < D / 16; kk += 2) {
    const bool pair = kk + 1 < D / 16;
    unsigned x[MT][2][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      lds_a<LD>(x[mt][0], a_tile, a0 + mt * 16, kk * 16, lane);
      if (pair) lds_a<LD>(x[mt][1], a_tile, a0 + mt * 16, kk * 16 + 16, lane);
    }
#pragma unroll
    for (int nb = 0; nb < N / 8; ++nb) {
      unsigned b[4];
      if (pair) {
        lds_b_nk<LD>(b, b_tile, nb * 8, kk * 16, lane);
      } else {
        lds_b_nk1<LD>(b, b_tile, nb * 8, kk * 16, lane);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        kiln_mma_bf16(acc[mt][nb], x[mt][0], b[0], b[1]);
        if (pair) kiln_mma_bf16(acc[mt][nb], x[mt][1], b[2], b[3]);
      }
    }
  }
}

// As mma_abt, with A's fragments already in registers: a[mt][kk] holds k-step kk of row tile mt.
template <int D, int LD, int N, int MT>
__device__ __forceinline__ void mma_abt_reg(float (*acc)[N / 8][4], const unsigned (*a)[D / 16][4],
                                            const kiln_bf16* b_tile, int lane) {
#pragma unroll
  for (int kk = 0; kk < D / 16; kk += 2) {
    const bool pair = kk + 1 < D / 16;
#pragma unroll
    for (int nb = 0; nb < N / 8; ++nb) {
      unsigned b[4];
      if (pair) {
        lds_b_nk<LD>(b, b_tile, nb * 8, kk * 16, lane);
      } else {
        lds_b_nk1<LD>(b, b_tile, nb * 8, kk * 16, lane);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        kiln_mma_bf16(acc[mt][nb], a[mt][kk], b[0], b[1]);
        if (pair) kiln_mma_bf16(acc[mt][nb], a[mt][kk + 1], b[2], b[3]);
      }
    }
  }
}

// acc[mt] += A_mt B for the k-range of N (a multiple of 16) and all D columns, where A_mt comes from fp32 register
// tiles p[mt] (an MMA accumulator layout: 16 rows x N) rounded to bf16, and B is a row-major [N][LD] smem tile read
// with ldmatrix.trans (row = k index). This is P·V, P^T·dO, dS^T·Q and dS·K.
template <int D, int LD, int N, int MT>
__device__ __forceinline__ void mma_pb(float (*acc)[D / 8][4], float (*p)[N / 8][4], const kiln_bf16* b_tile,
                                       int lane) {
#pragma unroll
  for (int kb = 0; kb < N / 16; ++kb) {
    unsigned a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      a[mt][0] = kiln_pack_bf16(p[mt][2 * kb][0], p[mt][2 * kb][1]);
      a[mt][1] = kiln_pack_bf16(p[mt][2 * kb][2], p[mt][2 * kb][3]);
      a[mt][2] = kiln_pack_bf16(p[mt][2 * kb + 1][0], p[mt][2 * kb + 1][1]);
      a[mt][3] = kiln_pack_bf16(p[mt][2 * kb + 1][2], p[mt][2 * kb + 1][3]);
    }
#pragma unroll
    for (int db = 0; db < D / 8; db += 2) {
      unsigned b[4];
      lds_b_kn<LD>(b, b_tile, kb * 16, db * 8, lane);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        kiln_mma_bf16(acc[mt][db], a[mt], b[0], b[1]);
        kiln_mma_bf16(acc[mt][db + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

template <int MT, int N>
__device__ __forceinline__ void zero(float (*acc)[N][4]) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < N; ++i) acc[mt][i][0] = acc[mt][i][1] = acc[mt][i][2] = acc[mt][i][3] = 0.f;
}

// The forward's score tile in base-2 units (s *= sl2), -inf where masked, with the causal/edge mask as a template
// parameter: the forward branches on it once a tile (only a diagonal tile, or one reaching past n, needs it). As a
// runtime flag inside the unrolled loop, the mask's compares and selects were predicated by ptxas and issued on
// every tile (d32 and d80 forward 10-18% faster without). Element e of fragment [mt][nb] is row
// row0 + mt * 16 + g + (e >> 1) * 8, column col0 + nb * 8 + 2 * t + (e & 1).
template <int MT, int NB, bool MASK>
__device__ __forceinline__ void scale_scores(float (*s)[NB][4], float sl2, int col0, int row0, int g, int t, int n,
                                             int causal) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nb = 0; nb < NB; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[mt][nb][e] * sl2;
        if constexpr (MASK) {
          const int col = col0 + nb * 8 + 2 * t + (e & 1), row = row0 + mt * 16 + g + (e >> 1) * 8;
          if (col >= n || (causal && col > row)) x = -KILN_INF;
        }
        s[mt][nb][e] = x;
      }
}

// ------------------------------------------------------------------------------------------------ forward

// Each warp owns MT tiles of 16 query rows (16·MT rows), so every K and V fragment read from shared memory feeds MT
// MMAs: at MT = 1 the score and P·V GEMMs need a 256-byte ldmatrix per 4096 MACs, which is the whole shared-memory
// bandwidth of an SM at tensor-core rate; MT = 2 halves that. Q's fragments stay in registers when they fit
// (MT·D <= 128), otherwise they are re-read from shared memory at every key tile.
template <int D, int WARPS, int MT, int BN, typename TO>
__device__ __forceinline__ void fwd_tc(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                       const kiln_bf16* __restrict__ V, TO* __restrict__ O,
                                       float* __restrict__ LSE, int n, int heads, float scale, int causal,
                                       kiln_attn_layout lq, kiln_attn_layout lk, kiln_attn_layout lv,
                                       kiln_attn_layout lo) {
  constexpr int WR = MT * 16, BM = WARPS * WR, LD = D + 8, NT = WARPS * 32, KS = D / 16;
  constexpr bool QREG = MT * D <= 128;
  extern __shared__ __align__(16) unsigned char smem[];
  kiln_bf16* Qs = (kiln_bf16*)smem;
  kiln_bf16* Ks = Qs + BM * LD;      // [2][BN][LD]
  kiln_bf16* Vs = Ks + 2 * BN * LD;  // [2][BN][LD]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int mblocks = (n + BM - 1) / BM;
  // Causal blocks near the end of the sequence do the most work: start them first.
  const int mb = causal ? mblocks - 1 - (int)blockIdx.x : (int)blockIdx.x;
  const int bh = blockIdx.y;
  const kiln_bf16* q = Q + kiln_attn_slab(lq, bh, heads);
  const kiln_bf16* k = K + kiln_attn_slab(lk, bh, heads);
  const kiln_bf16* v = V + kiln_attn_slab(lv, bh, heads);
  const int m0 = mb * BM;
  const int wrow0 = m0 + warp * WR;  // first query row of this warp

  int nkb = (n + BN - 1) / BN;
  if (causal) nkb = kiln_min(nkb, (m0 + BM + BN - 1) / BN);

  load_tile<D, BM, NT>(Qs, q, lq.sr, m0, n, tid);
  kiln_cp_async_commit();
  load_tile<D, BN, NT>(Ks, k, lk.sr, 0, n, tid);
  load_tile<D, BN, NT>(Vs, v, lv.sr, 0, n, tid);
  kiln_cp_async_commit();
  kiln_cp_async_wait<1>();
  __syncthreads();

  unsigned qf[MT][KS][4];  // used only when QREG
  if constexpr (QREG) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) lds_a<LD>(qf[mt][kk], Qs, warp * WR + mt * 16, kk * 16, lane);
  }

  float o[MT][D / 8][4];
  zero<MT, D / 8>(o);
  float mrow[MT][2], lrow[MT][2];  // running max (log2 units of scaled scores); this thread's part of the sum
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    mrow[mt][0] = mrow[mt][1] = -KILN_INF;
    lrow[mt][0] = lrow[mt][1] = 0.f;
  }
  const float sl2 = scale * KILN_LOG2E;

  for (int j = 0; j < nkb; ++j) {
    if (j + 1 < nkb) {
      const int nb1 = ((j + 1) & 1) * BN * LD;
      load_tile<D, BN, NT>(Ks + nb1, k, lk.sr, (j + 1) * BN, n, tid);
      load_tile<D, BN, NT>(Vs + nb1, v, lv.sr, (j + 1) * BN, n, tid);
      kiln_cp_async_commit();
      kiln_cp_async_wait<1>();
    } else {
      kiln_cp_async_wait<0>();
    }
    __syncthreads();
    const kiln_bf16* ks = Ks + (j & 1) * BN * LD;
    const kiln_bf16* vs = Vs + (j & 1) * BN * LD;
    const int n0 = j * BN;
    if (!causal || n0 <= wrow0 + WR - 1) {
      float s[MT][BN / 8][4];
      zero<MT, BN / 8>(s);
      if constexpr (QREG) {
        mma_abt_reg<D, LD, BN, MT>(s, qf, ks, lane);
      } else {
        mma_abt<D, LD, BN, MT>(s, Qs, warp * WR, ks, lane);
      }
      if ((causal && n0 + BN - 1 > wrow0) || (n0 + BN > n)) {
        scale_scores<MT, BN / 8, true>(s, sl2, n0, wrow0, g, t, n, causal);
      } else {
        scale_scores<MT, BN / 8, false>(s, sl2, n0, wrow0, g, t, n, causal);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        float mx[2] = {mrow[mt][0], mrow[mt][1]};
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb) {
#pragma unroll
          for (int e = 0; e < 4; ++e) mx[e >> 1] = fmaxf(mx[e >> 1], s[mt][nb][e]);
        }
        float mu[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
          mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
          mu[r] = mx[r] == -KILN_INF ? 0.f : mx[r];  // a row with nothing unmasked yet stays at zero
          const float alpha = kiln_exp2(mrow[mt][r] - mu[r]);
          mrow[mt][r] = mx[r];
          lrow[mt][r] *= alpha;
#pragma unroll
          for (int i = 0; i < D / 8; ++i) {
            o[mt][i][2 * r] *= alpha;
            o[mt][i][2 * r + 1] *= alpha;
          }
        }
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float p = kiln_exp2(s[mt][nb][e] - mu[e >> 1]);
            s[mt][nb][e] = p;
            lrow[mt][e >> 1] += p;
          }
        }
      }
      mma_pb<D, LD, BN, MT>(o, s, vs, lane);
    }
    __syncthreads();  // the buffer just read is refilled by the next iteration's prefetch
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = lrow[mt][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const int row = wrow0 + mt * 16 + g + r * 8;
      const float inv = l > 0.f ? 1.f / l : 0.f;
      if (row < n) {
        TO* orow = O + kiln_attn_slab(lo, bh, heads) + (kiln_i64)row * lo.sr;
#pragma unroll
        for (int i = 0; i < D / 8; ++i)
          kiln_store_pair(orow + i * 8 + 2 * t, o[mt][i][2 * r] * inv, o[mt][i][2 * r + 1] * inv);
        if (t == 0) LSE[(kiln_i64)bh * n + row] = l > 0.f ? (mrow[mt][r] + __log2f(l)) * KILN_LN2 : KILN_INF;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------ backward dK, dV

// One block owns WARPS*16*MT keys (16*MT per warp) and walks the query tiles of BM rows that can see them.
template <int D, int WARPS, int MT, int BM, typename TO>
__device__ __forceinline__ void bwd_dkdv_tc(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                            const kiln_bf16* __restrict__ V, const kiln_bf16* __restrict__ dO,
                                            const float* __restrict__ LSE, const float* __restrict__ DOT,
                                            TO* __restrict__ dK, TO* __restrict__ dV, int n, int heads,
                                            float scale, int causal, kiln_attn_layout lq, kiln_attn_layout lk,
                                            kiln_attn_layout lv, kiln_attn_layout ldo, kiln_attn_layout ldk,
                                            kiln_attn_layout ldv) {
  constexpr int WR = MT * 16, BN = WARPS * WR, LD = D + 8, NT = WARPS * 32;
  extern __shared__ __align__(16) unsigned char smem[];
  kiln_bf16* Ks = (kiln_bf16*)smem;   // [BN][LD]
  kiln_bf16* Vs = Ks + BN * LD;       // [BN][LD]
  kiln_bf16* Qs = Vs + BN * LD;       // [2][BM][LD]
  kiln_bf16* dOs = Qs + 2 * BM * LD;  // [2][BM][LD]
  float* Ls = (float*)(dOs + 2 * BM * LD);  // [2][BM]
  float* Ds = Ls + 2 * BM;                  // [2][BM]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y;
  const kiln_i64 vbase = (kiln_i64)bh * n;
  const kiln_bf16* q = Q + kiln_attn_slab(lq, bh, heads);
  const kiln_bf16* dout = dO + kiln_attn_slab(ldo, bh, heads);
  const float* lse = LSE + vbase;
  const float* dot = DOT + vbase;
  const int n0 = blockIdx.x * BN;
  const int wkey0 = n0 + warp * WR;
  const int mtiles = (n + BM - 1) / BM;
  const int i0 = causal ? n0 / BM : 0;

  load_tile<D, BN, NT>(Ks, K + kiln_attn_slab(lk, bh, heads), lk.sr, n0, n, tid);
  load_tile<D, BN, NT>(Vs, V + kiln_attn_slab(lv, bh, heads), lv.sr, n0, n, tid);
  kiln_cp_async_commit();
  if (i0 < mtiles) {
    load_tile<D, BM, NT>(Qs, q, lq.sr, i0 * BM, n, tid);
    load_tile<D, BM, NT>(dOs, dout, ldo.sr, i0 * BM, n, tid);
    kiln_load_vec<BM, NT>(Ls, lse, i0 * BM, n, tid);
    kiln_load_vec<BM, NT>(Ds, dot, i0 * BM, n, tid);
  }
  kiln_cp_async_commit();

  float dk[MT][D / 8][4], dv[MT][D / 8][4];
  zero<MT, D / 8>(dk);
  zero<MT, D / 8>(dv);
  const float sl2 = scale * KILN_LOG2E;

  for (int it = i0; it < mtiles; ++it) {
    const int buf = (it - i0) & 1;
    if (it + 1 < mtiles) {
      const int nbuf = buf ^ 1;
      load_tile<D, BM, NT>(Qs + nbuf * BM * LD, q, lq.sr, (it + 1) * BM, n, tid);
      load_tile<D, BM, NT>(dOs + nbuf * BM * LD, dout, ldo.sr, (it + 1) * BM, n, tid);
      kiln_load_vec<BM, NT>(Ls + nbuf * BM, lse, (it + 1) * BM, n, tid);
      kiln_load_vec<BM, NT>(Ds + nbuf * BM, dot, (it + 1) * BM, n, tid);
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
      // S^T = K_w Q^T: rows are this warp's keys, columns the BM queries.
      float p[MT][BM / 8][4];
      zero<MT, BM / 8>(p);
      mma_abt<D, LD, BM, MT>(p, Ks, warp * WR, qs, lane);
      // P^T = exp(S^T * scale - lse[query]); masked entries are exactly 0. The mask stays inline here: branching on
      // it once a tile, as the forward does, made these kernels 3-7% slower (d32, d80).
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nb = 0; nb < BM / 8; ++nb) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int cl = nb * 8 + 2 * t + (e & 1);
            const int col = m0 + cl;
            const int key = wkey0 + mt * 16 + g + (e >> 1) * 8;
            float x = kiln_exp2(p[mt][nb][e] * sl2 - ls[cl] * KILN_LOG2E);
            if (col >= n || (causal && col < key)) x = 0.f;
            p[mt][nb][e] = x;
          }
        }
      }
      // dV += P^T dO
      mma_pb<D, LD, BM, MT>(dv, p, dos, lane);
      // dP^T = V_w dO^T
      float dp[MT][BM / 8][4];
      zero<MT, BM / 8>(dp);
      mma_abt<D, LD, BM, MT>(dp, Vs, warp * WR, dos, lane);
      // dS^T = P^T * (dP^T - dot[query])
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nb = 0; nb < BM / 8; ++nb)
#pragma unroll
          for (int e = 0; e < 4; ++e) dp[mt][nb][e] = p[mt][nb][e] * (dp[mt][nb][e] - ds[nb * 8 + 2 * t + (e & 1)]);
      // dK += dS^T Q
      mma_pb<D, LD, BM, MT>(dk, dp, qs, lane);
    }
    __syncthreads();
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int key = wkey0 + mt * 16 + g + r * 8;
      if (key < n) {
        TO* dkrow = dK + kiln_attn_slab(ldk, bh, heads) + (kiln_i64)key * ldk.sr;
        TO* dvrow = dV + kiln_attn_slab(ldv, bh, heads) + (kiln_i64)key * ldv.sr;
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
          kiln_store_pair(dkrow + i * 8 + 2 * t, dk[mt][i][2 * r] * scale, dk[mt][i][2 * r + 1] * scale);
          kiln_store_pair(dvrow + i * 8 + 2 * t, dv[mt][i][2 * r], dv[mt][i][2 * r + 1]);
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------ backward dQ

// One block owns WARPS*16*MT queries (16*MT per warp) and walks the key tiles of BN keys they can see. Q's and
// dO's fragments stay in registers when they fit (MT·D <= 128), otherwise they are re-read at every key tile.
template <int D, int WARPS, int MT, int BN, typename TO>
__device__ __forceinline__ void bwd_dq_tc(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                          const kiln_bf16* __restrict__ V, const kiln_bf16* __restrict__ dO,
                                          const float* __restrict__ LSE, const float* __restrict__ DOT,
                                          TO* __restrict__ dQ, int n, int heads, float scale, int causal,
                                          kiln_attn_layout lq, kiln_attn_layout lk, kiln_attn_layout lv,
                                          kiln_attn_layout ldo, kiln_attn_layout ldq) {
  constexpr int WR = MT * 16, BM = WARPS * WR, LD = D + 8, NT = WARPS * 32, KS = D / 16;
  constexpr bool QREG = MT * D <= 128;
  extern __shared__ __align__(16) unsigned char smem[];
  kiln_bf16* Qs = (kiln_bf16*)smem;   // [BM][LD]
  kiln_bf16* dOs = Qs + BM * LD;      // [BM][LD]
  kiln_bf16* Ks = dOs + BM * LD;      // [2][BN][LD]
  kiln_bf16* Vs = Ks + 2 * BN * LD;   // [2][BN][LD]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int mblocks = (n + BM - 1) / BM;
  const int mb = causal ? mblocks - 1 - (int)blockIdx.x : (int)blockIdx.x;
  const int bh = blockIdx.y;
  const kiln_i64 vbase = (kiln_i64)bh * n;
  const kiln_bf16* k = K + kiln_attn_slab(lk, bh, heads);
  const kiln_bf16* v = V + kiln_attn_slab(lv, bh, heads);
  const int m0 = mb * BM;
  const int wrow0 = m0 + warp * WR;

  int nkb = (n + BN - 1) / BN;
  if (causal) nkb = kiln_min(nkb, (m0 + BM + BN - 1) / BN);

  load_tile<D, BM, NT>(Qs, Q + kiln_attn_slab(lq, bh, heads), lq.sr, m0, n, tid);
  load_tile<D, BM, NT>(dOs, dO + kiln_attn_slab(ldo, bh, heads), ldo.sr, m0, n, tid);
  kiln_cp_async_commit();
  load_tile<D, BN, NT>(Ks, k, lk.sr, 0, n, tid);
  load_tile<D, BN, NT>(Vs, v, lv.sr, 0, n, tid);
  kiln_cp_async_commit();
  kiln_cp_async_wait<1>();
  __syncthreads();

  unsigned qf[MT][KS][4], df[MT][KS][4];  // used only when QREG
  if constexpr (QREG) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        lds_a<LD>(qf[mt][kk], Qs, warp * WR + mt * 16, kk * 16, lane);
        lds_a<LD>(df[mt][kk], dOs, warp * WR + mt * 16, kk * 16, lane);
      }
  }
  float lse2[MT][2], dot[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = wrow0 + mt * 16 + g + r * 8;
      lse2[mt][r] = row < n ? LSE[vbase + row] * KILN_LOG2E : 0.f;
      dot[mt][r] = row < n ? DOT[vbase + row] : 0.f;
    }
  float dq[MT][D / 8][4];
  zero<MT, D / 8>(dq);
  const float sl2 = scale * KILN_LOG2E;

  for (int j = 0; j < nkb; ++j) {
    if (j + 1 < nkb) {
      const int nb1 = ((j + 1) & 1) * BN * LD;
      load_tile<D, BN, NT>(Ks + nb1, k, lk.sr, (j + 1) * BN, n, tid);
      load_tile<D, BN, NT>(Vs + nb1, v, lv.sr, (j + 1) * BN, n, tid);
      kiln_cp_async_commit();
      kiln_cp_async_wait<1>();
    } else {
      kiln_cp_async_wait<0>();
    }
    __syncthreads();
    const kiln_bf16* ks = Ks + (j & 1) * BN * LD;
    const kiln_bf16* vs = Vs + (j & 1) * BN * LD;
    const int n0 = j * BN;
    if (!causal || n0 <= wrow0 + WR - 1) {
      float p[MT][BN / 8][4], dp[MT][BN / 8][4];
      zero<MT, BN / 8>(p);
      zero<MT, BN / 8>(dp);
      if constexpr (QREG) {
        mma_abt_reg<D, LD, BN, MT>(p, qf, ks, lane);
        mma_abt_reg<D, LD, BN, MT>(dp, df, vs, lane);
      } else {
        mma_abt<D, LD, BN, MT>(p, Qs, warp * WR, ks, lane);
        mma_abt<D, LD, BN, MT>(dp, dOs, warp * WR, vs, lane);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nb = 0; nb < BN / 8; ++nb) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = n0 + nb * 8 + 2 * t + (e & 1);
            const int row = wrow0 + mt * 16 + g + (e >> 1) * 8;
            float x = kiln_exp2(p[mt][nb][e] * sl2 - lse2[mt][e >> 1]);
            if (col >= n || (causal && col > row)) x = 0.f;
            dp[mt][nb][e] = x * (dp[mt][nb][e] - dot[mt][e >> 1]);  // dS
          }
        }
      }
      // dQ += dS K
      mma_pb<D, LD, BN, MT>(dq, dp, ks, lane);
    }
    __syncthreads();
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = wrow0 + mt * 16 + g + r * 8;
      if (row < n) {
        TO* dqrow = dQ + kiln_attn_slab(ldq, bh, heads) + (kiln_i64)row * ldq.sr;
#pragma unroll
        for (int i = 0; i < D / 8; ++i)
          kiln_store_pair(dqrow + i * 8 + 2 * t, dq[mt][i][2 * r] * scale, dq[mt][i][2 * r + 1] * scale);
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
__device__ __forceinline__ void fwd_simt(const T* Q, const T* K, const T* V, T* O, float* LSE, int n, int heads,
                                         int d, float scale, int causal, kiln_attn_layout lq, kiln_attn_layout lk,
                                         kiln_attn_layout lv, kiln_attn_layout lo) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= n) return;
  const int bh = blockIdx.y;
  const T* k = K + kiln_attn_slab(lk, bh, heads);
  const T* v = V + kiln_attn_slab(lv, bh, heads);
  float q[SIMT_PER_LANE], o[SIMT_PER_LANE];
  load_row(q, Q + kiln_attn_slab(lq, bh, heads) + (kiln_i64)row * lq.sr, d, lane);
#pragma unroll
  for (int i = 0; i < SIMT_PER_LANE; ++i) o[i] = 0.f;
  float m = -KILN_INF, l = 0.f;
  const int kend = causal ? row + 1 : n;
  for (int j = 0; j < kend; ++j) {
    const float s = dot_row(q, k + (kiln_i64)j * lk.sr, d, lane) * scale;
    const float mnew = fmaxf(m, s);
    const float alpha = expf(m - mnew);
    const float p = expf(s - mnew);
    l = l * alpha + p;
    const T* vr = v + (kiln_i64)j * lv.sr;
#pragma unroll
    for (int i = 0; i < SIMT_PER_LANE; ++i) {
      const int c = lane + 32 * i;
      o[i] = o[i] * alpha + (c < d ? p * kiln_to_float(vr[c]) : 0.f);
    }
    m = mnew;
  }
  store_row(O + kiln_attn_slab(lo, bh, heads) + (kiln_i64)row * lo.sr, o, 1.f / l, d, lane);
  if (lane == 0) LSE[(kiln_i64)bh * n + row] = m + logf(l);
}

// Rows of dot a warp handles: their loads are issued together, so a warp has several in flight. With one row a
// warp (one element a lane at d = 32) the kernel ran at a quarter of the memory bandwidth.
#define KILN_DOT_ROWS 4

// dot[i] = sum_d dO[i,d] * O[i,d]; KILN_DOT_ROWS consecutive rows a warp (shared by both families). O may be fp32
// where dO is bf16 (the tensor-core kernels' fp32 results in mixed precision).
template <typename TO, typename TG>
__device__ __forceinline__ void bwd_dot(const TO* O, const TG* dO, float* DOT, int n, int heads, int d,
                                        kiln_attn_layout lo, kiln_attn_layout ldo) {
  const int lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * KILN_DOT_ROWS;
  if (row0 >= n) return;
  const int bh = blockIdx.y;
  const TO* o = O + kiln_attn_slab(lo, bh, heads) + (kiln_i64)row0 * lo.sr;
  const TG* g = dO + kiln_attn_slab(ldo, bh, heads) + (kiln_i64)row0 * ldo.sr;
  float s[KILN_DOT_ROWS];
#pragma unroll
  for (int r = 0; r < KILN_DOT_ROWS; ++r) s[r] = 0.f;
  for (int c = lane; c < d; c += 32) {
#pragma unroll
    for (int r = 0; r < KILN_DOT_ROWS; ++r) {
      if (row0 + r < n) s[r] += kiln_to_float(o[r * lo.sr + c]) * kiln_to_float(g[r * ldo.sr + c]);
    }
  }
#pragma unroll
  for (int r = 0; r < KILN_DOT_ROWS; ++r) {
    const float t = kiln_warp_sum(s[r]);
    if (lane == 0 && row0 + r < n) DOT[(kiln_i64)bh * n + row0 + r] = t;
  }
}

template <typename T>
__device__ __forceinline__ void bwd_dq_simt(const T* Q, const T* K, const T* V, const T* dO, const float* LSE,
                                            const float* DOT, T* dQ, int n, int heads, int d, float scale,
                                            int causal, kiln_attn_layout lq, kiln_attn_layout lk,
                                            kiln_attn_layout lv, kiln_attn_layout ldo, kiln_attn_layout ldq) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= n) return;
  const int bh = blockIdx.y;
  const kiln_i64 vrow = (kiln_i64)bh * n + row;
  const T* k = K + kiln_attn_slab(lk, bh, heads);
  const T* v = V + kiln_attn_slab(lv, bh, heads);
  float q[SIMT_PER_LANE], g[SIMT_PER_LANE], acc[SIMT_PER_LANE];
  load_row(q, Q + kiln_attn_slab(lq, bh, heads) + (kiln_i64)row * lq.sr, d, lane);
  load_row(g, dO + kiln_attn_slab(ldo, bh, heads) + (kiln_i64)row * ldo.sr, d, lane);
#pragma unroll
  for (int i = 0; i < SIMT_PER_LANE; ++i) acc[i] = 0.f;
  const float lse = LSE[vrow], dot = DOT[vrow];
  const int kend = causal ? row + 1 : n;
  for (int j = 0; j < kend; ++j) {
    const T* kr = k + (kiln_i64)j * lk.sr;
    const float p = expf(dot_row(q, kr, d, lane) * scale - lse);
    const float ds = p * (dot_row(g, v + (kiln_i64)j * lv.sr, d, lane) - dot);
#pragma unroll
    for (int i = 0; i < SIMT_PER_LANE; ++i) {
      const int c = lane + 32 * i;
      if (c < d) acc[i] += ds * kiln_to_float(kr[c]);
    }
  }
  store_row(dQ + kiln_attn_slab(ldq, bh, heads) + (kiln_i64)row * ldq.sr, acc, scale, d, lane);
}

template <typename T>
__device__ __forceinline__ void bwd_dkdv_simt(const T* Q, const T* K, const T* V, const T* dO, const float* LSE,
                                              const float* DOT, T* dK, T* dV, int n, int heads, int d,
                                              float scale, int causal, kiln_attn_layout lq, kiln_attn_layout lk,
                                              kiln_attn_layout lv, kiln_attn_layout ldo, kiln_attn_layout ldk,
                                              kiln_attn_layout ldv) {
  const int lane = threadIdx.x & 31;
  const int key = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (key >= n) return;
  const int bh = blockIdx.y;
  const kiln_i64 vbase = (kiln_i64)bh * n;
  const T* q = Q + kiln_attn_slab(lq, bh, heads);
  const T* dout = dO + kiln_attn_slab(ldo, bh, heads);
  float kr[SIMT_PER_LANE], vr[SIMT_PER_LANE], dk[SIMT_PER_LANE], dv[SIMT_PER_LANE];
  load_row(kr, K + kiln_attn_slab(lk, bh, heads) + (kiln_i64)key * lk.sr, d, lane);
  load_row(vr, V + kiln_attn_slab(lv, bh, heads) + (kiln_i64)key * lv.sr, d, lane);
#pragma unroll
  for (int i = 0; i < SIMT_PER_LANE; ++i) dk[i] = dv[i] = 0.f;
  for (int i = causal ? key : 0; i < n; ++i) {
    const T* qi = q + (kiln_i64)i * lq.sr;
    const T* gi = dout + (kiln_i64)i * ldo.sr;
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
  store_row(dK + kiln_attn_slab(ldk, bh, heads) + (kiln_i64)key * ldk.sr, dk, scale, d, lane);
  store_row(dV + kiln_attn_slab(ldv, bh, heads) + (kiln_i64)key * ldv.sr, dv, 1.f, d, lane);
}

}  // namespace

// ------------------------------------------------------------------------------------------------ entry points
// Variants. Kernel names end in _w<warps>[r32][k32][mb<min blocks per SM>]_o<result type>: the warps per block,
// r32 where each warp owns 32 rows (template MT = 2) instead of 16, k32 where the forward pass takes 32-key tiles
// instead of 64, where given the __launch_bounds__ minimum of
// resident blocks, which caps registers per thread (65536 / (32 * warps * min blocks)), and the type the results
// are written in (bf16 or f32). FlashAttention.Tuning lists the variants per pass and head dim (a CI test checks
// the list and its tile sizes against these lines) and picks one; its DEFAULT is what measured fastest on an H200
// (docs/cuda.md), the others stay so the choice can be re-measured with CudaBenchmark.
// Backward (KILN_BWD): dK/dV query tiles and dQ key tiles of 64 (d <= 80 at 16 rows a warp) or 32 (d128, or 32
// rows a warp: to stay under 255 registers with both accumulators live). Layouts come by value, as three i64 each.

#define KILN_L kiln_attn_layout

#define KILN_FWD_T(NAME, D, W, MT, BN, BOUNDS, TO)                                                             \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                                    \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, TO* o, float* lse, int n, int heads,         \
      float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv, KILN_L lo) {                                   \
    fwd_tc<D, W, MT, BN, TO>(q, k, v, o, lse, n, heads, scale, causal, lq, lk, lv, lo);                        \
  }
#define KILN_FWD(SUFFIX, D, W, MT, BN, BOUNDS)                                  \
  KILN_FWD_T(kiln_attn_fwd_bf16_##SUFFIX##_obf16, D, W, MT, BN, BOUNDS, kiln_bf16) \
  KILN_FWD_T(kiln_attn_fwd_bf16_##SUFFIX##_of32, D, W, MT, BN, BOUNDS, float)
KILN_FWD(d32_w4mb4, 32, 4, 1, 64, (128, 4))
KILN_FWD(d32_w4r32, 32, 4, 2, 64, (128))
KILN_FWD(d64_w8, 64, 8, 1, 64, (256))
KILN_FWD(d64_w8mb2, 64, 8, 1, 64, (256, 2))
KILN_FWD(d64_w4mb4, 64, 4, 1, 64, (128, 4))
KILN_FWD(d64_w4r32, 64, 4, 2, 64, (128))
KILN_FWD(d64_w4r32k32, 64, 4, 2, 32, (128))
KILN_FWD(d80_w4mb3, 80, 4, 1, 64, (128, 3))
KILN_FWD(d80_w4r32, 80, 4, 2, 64, (128))
KILN_FWD(d80_w4r32k32, 80, 4, 2, 32, (128))
KILN_FWD(d128_w8, 128, 8, 1, 64, (256))
KILN_FWD(d128_w4mb2, 128, 4, 1, 64, (128, 2))
KILN_FWD(d128_w4mb3, 128, 4, 1, 64, (128, 3))
KILN_FWD(d128_w4r32, 128, 4, 2, 64, (128))
KILN_FWD(d128_w4r32k32, 128, 4, 2, 32, (128))

#define KILN_DKDV_T(NAME, D, W, MT, BM, BOUNDS, TO)                                                            \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                                    \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, const kiln_bf16* dout, const float* lse,     \
      const float* dot, TO* dk, TO* dv, int n, int heads, float scale, int causal, KILN_L lq, KILN_L lk,       \
      KILN_L lv, KILN_L ldo, KILN_L ldk, KILN_L ldv) {                                                         \
    bwd_dkdv_tc<D, W, MT, BM, TO>(q, k, v, dout, lse, dot, dk, dv, n, heads, scale, causal, lq, lk, lv, ldo,   \
                                  ldk, ldv);                                                                   \
  }

#define KILN_DQ_T(NAME, D, W, MT, BN, BOUNDS, TO)                                                              \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                                    \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, const kiln_bf16* dout, const float* lse,     \
      const float* dot, TO* dq, int n, int heads, float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv,    \
      KILN_L ldo, KILN_L ldq) {                                                                                \
    bwd_dq_tc<D, W, MT, BN, TO>(q, k, v, dout, lse, dot, dq, n, heads, scale, causal, lq, lk, lv, ldo, ldq);   \
  }
// The dK/dV and dQ kernels of a backward variant, from one line, so the two always exist together. TILE is the query
// tile of dK/dV and the key tile of dQ.
#define KILN_BWD(SUFFIX, D, W, MT, TILE, BOUNDS)                                           \
  KILN_DKDV_T(kiln_attn_bwd_dkdv_bf16_##SUFFIX##_obf16, D, W, MT, TILE, BOUNDS, kiln_bf16) \
  KILN_DKDV_T(kiln_attn_bwd_dkdv_bf16_##SUFFIX##_of32, D, W, MT, TILE, BOUNDS, float)      \
  KILN_DQ_T(kiln_attn_bwd_dq_bf16_##SUFFIX##_obf16, D, W, MT, TILE, BOUNDS, kiln_bf16)     \
  KILN_DQ_T(kiln_attn_bwd_dq_bf16_##SUFFIX##_of32, D, W, MT, TILE, BOUNDS, float)
KILN_BWD(d32_w4mb3, 32, 4, 1, 64, (128, 3))
KILN_BWD(d32_w4r32, 32, 4, 2, 32, (128))
KILN_BWD(d64_w4, 64, 4, 1, 64, (128))
KILN_BWD(d64_w8, 64, 8, 1, 64, (256))
KILN_BWD(d64_w4mb3, 64, 4, 1, 64, (128, 3))
KILN_BWD(d64_w4r32, 64, 4, 2, 32, (128))
KILN_BWD(d80_w4, 80, 4, 1, 64, (128))
KILN_BWD(d80_w4r32, 80, 4, 2, 32, (128))
KILN_BWD(d128_w4, 128, 4, 1, 32, (128))
KILN_BWD(d128_w8, 128, 8, 1, 32, (256))

#define KILN_SIMT(SUFFIX, T)                                                                                   \
  extern "C" __global__ void kiln_attn_fwd_simt_##SUFFIX(const T* q, const T* k, const T* v, T* o, float* lse,  \
                                                         int n, int heads, int d, float scale, int causal,      \
                                                         KILN_L lq, KILN_L lk, KILN_L lv, KILN_L lo) {          \
    fwd_simt<T>(q, k, v, o, lse, n, heads, d, scale, causal, lq, lk, lv, lo);                                  \
  }                                                                                                            \
  extern "C" __global__ void kiln_attn_bwd_dq_simt_##SUFFIX(                                                   \
      const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dot, T* dq, int n,      \
      int heads, int d, float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv, KILN_L ldo, KILN_L ldq) {     \
    bwd_dq_simt<T>(q, k, v, dout, lse, dot, dq, n, heads, d, scale, causal, lq, lk, lv, ldo, ldq);             \
  }                                                                                                            \
  extern "C" __global__ void kiln_attn_bwd_dkdv_simt_##SUFFIX(                                                 \
      const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dot, T* dk, T* dv,      \
      int n, int heads, int d, float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv, KILN_L ldo,            \
      KILN_L ldk, KILN_L ldv) {                                                                                \
    bwd_dkdv_simt<T>(q, k, v, dout, lse, dot, dk, dv, n, heads, d, scale, causal, lq, lk, lv, ldo, ldk, ldv);  \
  }
KILN_SIMT(f32, float)
KILN_SIMT(bf16, kiln_bf16)

// dot[i] = sum_d dO[i,d] * O[i,d] for bf16 O and dO with D a power of two from 8 to 256, every row 16 bytes aligned:
// D / 8 lanes a row, 8 entries (16 bytes) a lane, KILN_DOT_VEC_STEPS groups of 32 * 8 / D rows a warp, their loads all
// issued before the first sum. One bf16 a lane (bwd_dot) moved 1.4 TB/s at TinyStories' D = 32 (47 us a layer).
#define KILN_DOT_VEC_STEPS 4
template <int D>
__device__ __forceinline__ void bwd_dot_vec(const kiln_bf16* O, const kiln_bf16* dO, float* DOT, int n, int heads,
                                            kiln_attn_layout lo, kiln_attn_layout ldo) {
  constexpr int L = D / 8;        // lanes a row
  constexpr int RPS = 32 / L;     // rows a warp per step
  const int lane = threadIdx.x & 31;
  const int warp = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int bh = blockIdx.y;
  const kiln_bf16* o = O + kiln_attn_slab(lo, bh, heads) + (lane % L) * 8;
  const kiln_bf16* g = dO + kiln_attn_slab(ldo, bh, heads) + (lane % L) * 8;
  uint4 a[KILN_DOT_VEC_STEPS], b[KILN_DOT_VEC_STEPS];
#pragma unroll
  for (int s = 0; s < KILN_DOT_VEC_STEPS; ++s) {
    const int row = (warp * KILN_DOT_VEC_STEPS + s) * RPS + lane / L;
    if (row < n) {
      a[s] = *reinterpret_cast<const uint4*>(o + (kiln_i64)row * lo.sr);
      b[s] = *reinterpret_cast<const uint4*>(g + (kiln_i64)row * ldo.sr);
    } else {
      a[s] = make_uint4(0, 0, 0, 0);
      b[s] = make_uint4(0, 0, 0, 0);
    }
  }
#pragma unroll
  for (int s = 0; s < KILN_DOT_VEC_STEPS; ++s) {
    const unsigned* x = reinterpret_cast<const unsigned*>(&a[s]);
    const unsigned* y = reinterpret_cast<const unsigned*>(&b[s]);
    float t = 0.f;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      t += __uint_as_float(x[w] << 16) * __uint_as_float(y[w] << 16);
      t += __uint_as_float(x[w] & 0xffff0000u) * __uint_as_float(y[w] & 0xffff0000u);
    }
#pragma unroll
    for (int off = L / 2; off > 0; off >>= 1) t += __shfl_xor_sync(0xffffffffu, t, off);
    const int row = (warp * KILN_DOT_VEC_STEPS + s) * RPS + lane / L;
    if (lane % L == 0 && row < n) DOT[(kiln_i64)bh * n + row] = t;
  }
}

#define KILN_DOT_VEC(D)                                                                                        \
  extern "C" __global__ void kiln_attn_bwd_dot_vec_d##D(const kiln_bf16* o, const kiln_bf16* dout, float* dot,  \
                                                        int n, int heads, KILN_L lo, KILN_L ldo) {              \
    bwd_dot_vec<D>(o, dout, dot, n, heads, lo, ldo);                                                           \
  }
KILN_DOT_VEC(8)
KILN_DOT_VEC(16)
KILN_DOT_VEC(32)
KILN_DOT_VEC(64)
KILN_DOT_VEC(128)
KILN_DOT_VEC(256)

// dot over (o, dO) types: bf16/bf16 (bf16 attention), f32/f32 (fp32), f32/bf16 (mixed precision: fp32 results).
#define KILN_DOT(SUFFIX, TO, TG)                                                                               \
  extern "C" __global__ void kiln_attn_bwd_dot_##SUFFIX(const TO* o, const TG* dout, float* dot, int n,         \
                                                        int heads, int d, KILN_L lo, KILN_L ldo) {              \
    bwd_dot<TO, TG>(o, dout, dot, n, heads, d, lo, ldo);                                                       \
  }
KILN_DOT(bf16_bf16, kiln_bf16, kiln_bf16)
KILN_DOT(f32_f32, float, float)
KILN_DOT(f32_bf16, float, kiln_bf16)
