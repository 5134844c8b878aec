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
// row0 + mt * 16 + g + (e >> 1) * 8, column col0 + nb * 8 + 2 * t + (e & 1). FOLD leaves the scores unscaled (the
// caller folds a positive scale into its exponentials), so only the mask is applied.
template <int MT, int NB, bool MASK, bool FOLD = false>
__device__ __forceinline__ void scale_scores(float (*s)[NB][4], float sl2, int col0, int row0, int g, int t, int n,
                                             int causal) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nb = 0; nb < NB; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = FOLD ? s[mt][nb][e] : s[mt][nb][e] * sl2;
        if constexpr (MASK) {
          const int col = col0 + nb * 8 + 2 * t + (e & 1), row = row0 + mt * 16 + g + (e >> 1) * 8;
          if (col >= n || (causal && col > row)) x = -KILN_INF;
        }
        s[mt][nb][e] = x;
      }
}

// One key tile of the forward for one warp's MT tiles of 16 query rows (from wrow0): S = Q K^T over the tile's BN
// keys (from n0), the online softmax (running max mrow in log2 units, this thread's part of the row sums lrow), and
// O += P V. Q is qf's registers (QREG) or rows qrow.. of the smem tile Qs; ks and vs are the tile's first key row.
// FOLD (a positive scale only): the maximum is taken over the raw scores and mrow kept in raw units, and the scale is
// folded into each exponential's argument, exp2(s · sl2 − max · sl2), one FFMA instead of a multiply and a subtract.
template <int D, int LD, int MT, int BN, bool QREG, bool FOLD = false>
__device__ __forceinline__ void fwd_tile(float (*o)[D / 8][4], float (*mrow)[2], float (*lrow)[2],
                                         const unsigned (*qf)[D / 16][4], const kiln_bf16* Qs, int qrow,
                                         const kiln_bf16* ks, const kiln_bf16* vs, int n0, int wrow0, int n,
                                         int causal, float sl2, int g, int t, int lane) {
  float s[MT][BN / 8][4];
  zero<MT, BN / 8>(s);
  if constexpr (QREG) {
    mma_abt_reg<D, LD, BN, MT>(s, qf, ks, lane);
  } else {
    mma_abt<D, LD, BN, MT>(s, Qs, qrow, ks, lane);
  }
  if ((causal && n0 + BN - 1 > wrow0) || (n0 + BN > n)) {
    scale_scores<MT, BN / 8, true, FOLD>(s, sl2, n0, wrow0, g, t, n, causal);
  } else if constexpr (!FOLD) {
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
      const float alpha = FOLD ? kiln_exp2((mrow[mt][r] - mu[r]) * sl2) : kiln_exp2(mrow[mt][r] - mu[r]);
      mrow[mt][r] = mx[r];
      lrow[mt][r] *= alpha;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        o[mt][i][2 * r] *= alpha;
        o[mt][i][2 * r + 1] *= alpha;
      }
    }
    const float mus[2] = {mu[0] * sl2, mu[1] * sl2};  // the rows' maxima in log2 units (FOLD)
#pragma unroll
    for (int nb = 0; nb < BN / 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = FOLD ? kiln_exp2(fmaf(s[mt][nb][e], sl2, -mus[e >> 1])) : kiln_exp2(s[mt][nb][e] - mu[e >> 1]);
        s[mt][nb][e] = p;
        lrow[mt][e >> 1] += p;
      }
    }
  }
  mma_pb<D, LD, BN, MT>(o, s, vs, lane);
}

// The forward's results for one warp's MT tiles of 16 query rows from wrow0: O / rowsum into o (the (b, h) slab,
// row stride sr) and the natural-log log-sum-exp into lse (the slab's n entries). msc turns mrow into log2 units (1, or
// the folded scale).
template <int D, int MT, typename TO>
__device__ __forceinline__ void fwd_store(float (*o)[D / 8][4], float (*lrow)[2], float (*mrow)[2], TO* out,
                                          kiln_i64 sr, float* lse, int wrow0, int n, int g, int t, float msc = 1.f) {
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
        TO* orow = out + (kiln_i64)row * sr;
#pragma unroll
        for (int i = 0; i < D / 8; ++i)
          kiln_store_pair(orow + i * 8 + 2 * t, o[mt][i][2 * r] * inv, o[mt][i][2 * r + 1] * inv);
        if (t == 0) lse[row] = l > 0.f ? (mrow[mt][r] * msc + __log2f(l)) * KILN_LN2 : KILN_INF;
      }
    }
  }
}

// Rows [row0, row0 + 16·MT) of a gradient from one warp's fp32 accumulators times mul, into the (b, h) slab dst with
// row stride sr; rows past n are not written.
template <int D, int MT, typename TO>
__device__ __forceinline__ void store_rows(TO* dst, kiln_i64 sr, float (*acc)[D / 8][4], float mul, int row0, int n,
                                           int g, int t) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + mt * 16 + g + r * 8;
      if (row < n) {
        TO* d = dst + (kiln_i64)row * sr;
#pragma unroll
        for (int i = 0; i < D / 8; ++i) kiln_store_pair(d + i * 8 + 2 * t, acc[mt][i][2 * r] * mul, acc[mt][i][2 * r + 1] * mul);
      }
    }
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
      fwd_tile<D, LD, MT, BN, QREG>(o, mrow, lrow, qf, Qs, warp * WR, ks, vs, n0, wrow0, n, causal, sl2, g, t, lane);
    }
    __syncthreads();  // the buffer just read is refilled by the next iteration's prefetch
  }

  fwd_store<D, MT, TO>(o, lrow, mrow, O + kiln_attn_slab(lo, bh, heads), lo.sr, LSE + (kiln_i64)bh * n, wrow0, n, g, t);
}

// ------------------------------------------------------------------------------------------------ backward tiles

// One query tile's contribution to one warp's dK and dV: the warp's MT tiles of 16 keys are rows krow.. of the smem
// tiles Ks and Vs (key wkey0 onwards), the query tile's BM rows (query m0 onwards) are qs and dos with their lse and
// dot in ls and ds. S^T = K_w Q^T, P^T = exp(S^T · scale − lse), dV += P^T dO, dP^T = V_w dO^T,
// dS^T = P^T ∘ (dP^T − dot), dK += dS^T Q (the scale is applied when dK is stored). LSE2: whether ls is already in
// log2 units (one FFMA a score instead of a multiply and an FFMA). MASK: whether some of the tile's scores may be masked
// (past n, or above the diagonal when causal); a caller that knows none are passes false and skips the tests.
// KREG: the warp's k and v rows are kf's and vf's registers (A fragments, MT = 1) instead of smem rows (the slab
// backward's form, bwd_dkdv_slab).
template <int D, int LD, int MT, int BM, bool LSE2 = false, bool MASK = true, bool KREG = false>
__device__ __forceinline__ void dkdv_tile(float (*dk)[D / 8][4], float (*dv)[D / 8][4], const kiln_bf16* Ks,
                                          const kiln_bf16* Vs, int krow, const kiln_bf16* qs, const kiln_bf16* dos,
                                          const float* ls, const float* ds, int m0, int wkey0, int n, int causal,
                                          float sl2, int g, int t, int lane,
                                          const unsigned (*kf)[D / 16][4] = nullptr,
                                          const unsigned (*vf)[D / 16][4] = nullptr) {
  float p[MT][BM / 8][4];
  zero<MT, BM / 8>(p);
  if constexpr (KREG) {
    mma_abt_reg<D, LD, BM, MT>(p, kf, qs, lane);
  } else {
    mma_abt<D, LD, BM, MT>(p, Ks, krow, qs, lane);
  }
  // Masked entries are exactly 0. The mask stays inline here: branching on it once a tile, as the forward does, made
  // the tiled kernels 3-7% slower (d32, d80) and the whole-head one 2% (d32, n = 256, 191 against 188 us).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int nb = 0; nb < BM / 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int cl = nb * 8 + 2 * t + (e & 1);
        const int col = m0 + cl;
        const int key = wkey0 + mt * 16 + g + (e >> 1) * 8;
        float x = kiln_exp2(LSE2 ? fmaf(p[mt][nb][e], sl2, -ls[cl]) : p[mt][nb][e] * sl2 - ls[cl] * KILN_LOG2E);
        if (MASK && (col >= n || (causal && col < key))) x = 0.f;
        p[mt][nb][e] = x;
      }
    }
  }
  mma_pb<D, LD, BM, MT>(dv, p, dos, lane);
  float dp[MT][BM / 8][4];
  zero<MT, BM / 8>(dp);
  if constexpr (KREG) {
    mma_abt_reg<D, LD, BM, MT>(dp, vf, dos, lane);
  } else {
    mma_abt<D, LD, BM, MT>(dp, Vs, krow, dos, lane);
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nb = 0; nb < BM / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[mt][nb][e] = p[mt][nb][e] * (dp[mt][nb][e] - ds[nb * 8 + 2 * t + (e & 1)]);
  mma_pb<D, LD, BM, MT>(dk, dp, qs, lane);
}

// One key tile's contribution to one warp's dQ: the warp's MT tiles of 16 query rows (from wrow0) are qf and df's
// registers (QREG) or rows qrow.. of the smem tiles Qs and dOs, with lse (log2 units) and dot per row; the tile's BN
// keys (key n0 onwards) are ks and vs. Recomputes S and dP, then dQ += dS K (the scale is applied when dQ is stored).
// MASK as dkdv_tile's.
template <int D, int LD, int MT, int BN, bool QREG, bool MASK = true>
__device__ __forceinline__ void dq_tile(float (*dq)[D / 8][4], const unsigned (*qf)[D / 16][4],
                                        const unsigned (*df)[D / 16][4], const kiln_bf16* Qs, const kiln_bf16* dOs,
                                        int qrow, const kiln_bf16* ks, const kiln_bf16* vs, const float (*lse2)[2],
                                        const float (*dot)[2], int n0, int wrow0, int n, int causal, float sl2,
                                        int g, int t, int lane) {
  float p[MT][BN / 8][4], dp[MT][BN / 8][4];
  zero<MT, BN / 8>(p);
  zero<MT, BN / 8>(dp);
  if constexpr (QREG) {
    mma_abt_reg<D, LD, BN, MT>(p, qf, ks, lane);
    mma_abt_reg<D, LD, BN, MT>(dp, df, vs, lane);
  } else {
    mma_abt<D, LD, BN, MT>(p, Qs, qrow, ks, lane);
    mma_abt<D, LD, BN, MT>(dp, dOs, qrow, vs, lane);
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
        if (MASK && (col >= n || (causal && col > row))) x = 0.f;
        dp[mt][nb][e] = x * (dp[mt][nb][e] - dot[mt][e >> 1]);  // dS
      }
    }
  }
  mma_pb<D, LD, BN, MT>(dq, dp, ks, lane);
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
      dkdv_tile<D, LD, MT, BM>(dk, dv, Ks, Vs, warp * WR, qs, dos, ls, ds, m0, wkey0, n, causal, sl2, g, t, lane);
    }
    __syncthreads();
  }

  store_rows<D, MT, TO>(dK + kiln_attn_slab(ldk, bh, heads), ldk.sr, dk, scale, wkey0, n, g, t);
  store_rows<D, MT, TO>(dV + kiln_attn_slab(ldv, bh, heads), ldv.sr, dv, 1.f, wkey0, n, g, t);
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
      dq_tile<D, LD, MT, BN, QREG>(dq, qf, df, Qs, dOs, warp * WR, ks, vs, lse2, dot, n0, wrow0, n, causal, sl2, g, t,
                                   lane);
    }
    __syncthreads();
  }

  store_rows<D, MT, TO>(dQ + kiln_attn_slab(ldq, bh, heads), ldq.sr, dq, scale, wrow0, n, g, t);
}

// ------------------------------------------------------------------------------------------------ whole heads

// bf16 halves of a packed pair.
__device__ __forceinline__ float kiln_bf16_lo(unsigned w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float kiln_bf16_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }

// RoPE on load (the _rope entry points): Device.rope fused into the whole-head kernels. CudaModelDevice defers a RoPE
// whose result only attention reads; q and k then arrive unrotated, and each block turns its slab's rows in shared
// memory once they land (fp32 arithmetic on the bf16 inputs, rounded to bf16, as the RoPE kernel does). The backward
// turns dq and dk by the inverse rotation as it stores them, which is RoPE's backward. Pair i of row r turns by
// pos · inv_freq[i] (inv_freq = theta^(-i / half), in double, the host's); positions are int64, (b, h, r)'s at
// b·sb + h·sh + r·sr. A block first copies its rows' positions and the frequencies into shared memory (rope_stage),
// and every (cos, sin) is computed from the angle there, reduced in double and taken by __sincosf (within 2^-21 of the
// true values on [-pi, pi]; the RoPE kernel's table is within 2^-24, and both are far below the bf16 rounding that
// follows). Loading them from the RoPE kernel's table instead cost more than the RoPE kernels saved: a slab reads its
// rows' table entries once per head, 64 KB a block, in chains of dependent loads between barriers (ncu: +42 us a layer
// forward, +97 backward at TinyStories' shape).
struct kiln_attn_rope {
  const kiln_i64* pos;
  kiln_i64 sb, sh, sr;
  const double* inv_freq;
};

// The slab's positions and the frequencies into shared memory (ps, fs: NMAX positions then D / 2 frequencies, all
// doubles, after a kernel's tiles, FlashAttention.Rope.sharedBytes), with plain loads: issued after the tiles'
// cp.async groups, so they travel together, and seen by all threads after the barrier that follows the tiles' wait.
// Each position is converted to double here, once, not once per pair: int64 to double is a type conversion, which
// sm_90 runs at 16 a cycle per multiprocessor, on the pipe the softmax's exponentials and __sincosf also take
// (exact below 2^53).
template <int D, int NMAX, int NT>
__device__ __forceinline__ void rope_stage(double* ps, double* fs, const kiln_attn_rope& rp, int bh, int heads,
                                           int n, int tid) {
  const kiln_i64 base = (kiln_i64)(bh / heads) * rp.sb + (kiln_i64)(bh % heads) * rp.sh;
  for (int r = tid; r < NMAX; r += NT) ps[r] = r < n ? (double)rp.pos[base + (kiln_i64)r * rp.sr] : 0.0;
  for (int i = tid; i < D / 2; i += NT) fs[i] = rp.inv_freq[i];
}

// (cos, sin) of pair i at position p.
__device__ __forceinline__ float2 kiln_rope_cs(double p, const double* fs, int i) {
  float2 cs;
  __sincosf(kiln_angle_reduce(p * fs[i]), &cs.y, &cs.x);
  return cs;
}

// The pair (x0, x1) packed as bf16 turned by (c, s), repacked.
__device__ __forceinline__ unsigned kiln_rope_turn(unsigned w, float2 cs) {
  const float x0 = kiln_bf16_lo(w), x1 = kiln_bf16_hi(w);
  return kiln_pack_bf16(x0 * cs.x - x1 * cs.y, x0 * cs.y + x1 * cs.x);
}

// (cos, sin) as two fp16 in one word, and back: the backward's table of them (rope_rows' cs_out), [row][pair] with
// rows of D/2 + 4 words, so the 8 rows a warp's stores read at once fall in distinct banks (FlashAttention.Rope).
template <int D>
__host__ __device__ constexpr int kiln_rope_cs_ld() { return D / 2 + 4; }
__device__ __forceinline__ unsigned kiln_pack_f16(float2 cs) {
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(cs.y), "f"(cs.x));
  return r;
}
__device__ __forceinline__ float2 kiln_unpack_f16(unsigned w) {
  float2 cs;
  asm("{.reg .f16 lo, hi;\n mov.b32 {lo, hi}, %2;\n cvt.f32.f16 %0, lo;\n cvt.f32.f16 %1, hi;\n}"
      : "=f"(cs.x), "=f"(cs.y) : "r"(w));
  return cs;
}

// Four pairs (16 bytes of a row) turned by their (cos, sin).
__device__ __forceinline__ uint4 kiln_rope_turn4(uint4 x, const float2* cs) {
  return make_uint4(kiln_rope_turn(x.x, cs[0]), kiln_rope_turn(x.y, cs[1]), kiln_rope_turn(x.z, cs[2]),
                    kiln_rope_turn(x.w, cs[3]));
}

// Rows [row0, row0 + ROWS) of the padded slab tiles qs and ks (row r at r·LD) turned in place, 16 bytes (four pairs)
// of each a step, one (cos, sin) for both; rows past n hold zeros and are left so. cs_out (the backward's, else
// null): each (cos, sin) also as two fp16 at [row][pair] (kiln_rope_cs_ld), for the stores that turn dq and dk back.
template <int D, int ROWS, int NT>
__device__ __forceinline__ void rope_rows(kiln_bf16* qs, kiln_bf16* ks, int row0, int n, const double* ps,
                                          const double* fs, int tid, unsigned* cs_out = nullptr) {
  constexpr int CPR = D / 8, LD = D + 8;
  for (int i = tid; i < ROWS * CPR; i += NT) {
    const int row = row0 + i / CPR, c = (i % CPR) * 8;
    if (row >= n) continue;
    const double p = ps[row];
    uint4* wq = reinterpret_cast<uint4*>(qs + row * LD + c);
    uint4* wk = reinterpret_cast<uint4*>(ks + row * LD + c);
    float2 cs[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) cs[j] = kiln_rope_cs(p, fs, c / 2 + j);
    *wq = kiln_rope_turn4(*wq, cs);
    *wk = kiln_rope_turn4(*wk, cs);
    if (cs_out != nullptr)
      *reinterpret_cast<uint4*>(cs_out + row * kiln_rope_cs_ld<D>() + c / 2) =
          make_uint4(kiln_pack_f16(cs[0]), kiln_pack_f16(cs[1]), kiln_pack_f16(cs[2]), kiln_pack_f16(cs[3]));
  }
}

// rope_rows for the slab kernels, which keep one of q and k in shared memory and take the other from global memory
// (fwd_head's QG form, bwd_dkdv_slab, bwd_dq_slab): rows [row0, row0 + ROWS) of the padded tile s turned in place.
template <int D, int ROWS, int NT>
__device__ __forceinline__ void rope_rows_of(kiln_bf16* s, int row0, int n, const double* ps, const double* fs,
                                             int tid) {
  constexpr int CPR = D / 8, LD = D + 8;
  for (int i = tid; i < ROWS * CPR; i += NT) {
    const int row = row0 + i / CPR, c = (i % CPR) * 8;
    if (row >= n) continue;
    const double p = ps[row];
    float2 cs[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) cs[j] = kiln_rope_cs(p, fs, c / 2 + j);
    uint4* w = reinterpret_cast<uint4*>(s + row * LD + c);
    *w = kiln_rope_turn4(*w, cs);
  }
}

// A fragments that ldg_a took from global memory (rows row0.., columns c0..c0 + 15) turned in registers: a[i] holds
// row row0 + g + 8·(i & 1), columns c0 + 8·(i >> 1) + 2t and the next, which are pair c0 / 2 + 4·(i >> 1) + t. Rows
// past n are zero and stay so (their staged position is 0).
__device__ __forceinline__ void rope_frag_a(unsigned* a, int row0, int c0, const double* ps, const double* fs,
                                            int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; ++i)
    a[i] = kiln_rope_turn(a[i], kiln_rope_cs(ps[row0 + g + (i & 1) * 8], fs, c0 / 2 + (i >> 1) * 4 + t));
}

// store_rows for one 16-row tile with RoPE's inverse rotation on each pair, (cos, sin) of (row, pair) from cs_of: a
// lane's accumulators (i·8 + 2t, i·8 + 2t + 1) are exactly pair 4i + t of the row.
template <int D, typename TO, class CS>
__device__ __forceinline__ void store_rows_turned_back(TO* dst, kiln_i64 sr, float (*acc)[D / 8][4], float mul,
                                                       int row0, int n, int g, int t, CS cs_of) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + g + r * 8;
    if (row < n) {
      TO* d = dst + (kiln_i64)row * sr;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        const float2 cs = cs_of(row, 4 * i + t);
        const float a = acc[0][i][2 * r] * mul, b = acc[0][i][2 * r + 1] * mul;
        kiln_store_pair(d + i * 8 + 2 * t, a * cs.x + b * cs.y, b * cs.x - a * cs.y);
      }
    }
  }
}

// store_rows for one 16-row tile with RoPE's inverse rotation on each pair: a lane's accumulators (i·8 + 2t,
// i·8 + 2t + 1) are exactly pair 4i + t of the row, whose (cos, sin) rope_rows left in cs ([row][pair], two fp16:
// 2^-12 relative, 8× below the bf16 rounding of the rows it turned) rather than computed again for each of dq and dk.
template <int D, typename TO>
__device__ __forceinline__ void store_rows_unrope(TO* dst, kiln_i64 sr, float (*acc)[D / 8][4], float mul, int row0,
                                                  int n, int g, int t, const unsigned* cs_table) {
  store_rows_turned_back<D, TO>(dst, sr, acc, mul, row0, n, g, t, [&](int row, int pair) {
    return kiln_unpack_f16(cs_table[row * kiln_rope_cs_ld<D>() + pair]);
  });
}

// Short sequences (n <= NMAX, e.g. TinyStories' 256 rows at d32): one block owns a whole (b, h) slab, loads q, k, v
// (and for the backward dO, lse and dot) into shared memory once, with one wait, and its warps then run every tile
// from there with no further barrier. The tiled kernels above walk the same tiles with a load, a wait and two
// barriers each; at n = 256 a block sees at most four key tiles, so those waits were most of its time (ncu: 0.5-0.6
// instructions issued a cycle per scheduler) and each K/V tile was read from L2 by up to four blocks.
// Warp w owns the 16-row tiles w and 2·WARPS−1−w, so under a causal mask every warp walks the same number of key (or
// query) tiles: a tile near the start of the sequence sees few keys and is paired with one near the end that sees
// many.

// Rows [0, NMAX/2) of a slab's tile go in the first cp.async group and the rest in the second: under a causal mask the
// first half of the query rows sees only the first half of the keys, so the warps start on their first tile (all in
// the first half) while the second half is still arriving.
// ROWWISE: the block's threads cover whole rows (NT a multiple of a row's 16-byte chunks), so each thread keeps one
// column and walks rows NT / CPR apart, with no division of a chunk index (ncu's per-instruction counts, d32
// backward: its eight loads in load_tile's form were 9% of the kernel's instructions, about 30 a 16-byte copy).
// Which kernels take it is ptxas's register allocation, checked kernel by kernel: the RoPE forms (what a RoPE model
// runs) keep their registers with it, while the plain forward at three blocks a multiprocessor (80 registers) spilled
// 32 bytes and the plain backward 12, so they keep load_tile, as do the tiled kernels, several of which spilled.
template <int D, int NMAX, int NT, bool ROWWISE>
__device__ __forceinline__ void load_halves(kiln_bf16* s, const kiln_bf16* g, kiln_i64 sr, int half, int n,
                                            int tid) {
  constexpr int LD = D + 8, H = NMAX / 2, CPR = D / 8, STEP = NT / CPR;
  if constexpr (ROWWISE) {
    static_assert(NT % CPR == 0 && H % STEP == 0, "the threads cover whole rows of the half");
    const int r = half * H + (unsigned)tid / CPR, c = (unsigned)tid % CPR * 8;
#pragma unroll
    for (int j = 0; j < H / STEP; ++j) {
      const int row = r + j * STEP;
      const bool valid = row < n;
      kiln_cp_async16(s + row * LD + c, g + (valid ? (kiln_i64)row * sr + c : 0), valid);
    }
  } else {
    load_tile<D, H, NT>(s + half * H * LD, g, sr, half * H, n, tid);
  }
}

// A warp's A fragments of q rows row0..row0+15, columns c0..c0+15, straight from global memory, as lds_a's ldmatrix
// would give them from a shared tile (matrix i of the x4 is rows + 8·(i & 1), columns + 8·(i >> 1); a lane holds row
// g, columns 2t and 2t+1 of each); rows past n are zero. Loaded once a query tile, so their half-used sectors cost
// little (fwd_head's QG form).
__device__ __forceinline__ void ldg_a(unsigned* a, const kiln_bf16* q, kiln_i64 sr, int row0, int c0, int n,
                                      int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = row0 + g + (i & 1) * 8;
    a[i] = row < n ? *reinterpret_cast<const unsigned*>(q + (kiln_i64)row * sr + c0 + (i >> 1) * 8 + 2 * t) : 0u;
  }
}

// Forward: warps own query tiles and walk the key tiles of 64 that they see. The scale is folded into the
// exponentials (fwd_tile's FOLD), so the host runs it for positive scales only. ROPE: q and k come unrotated and are
// turned in shared memory (rope_rows) as their rows land. QG: only k and v go to shared memory and each warp takes its
// query tiles' fragments from global memory (ldg_a), so a longer slab fits: 512 rows of d80 in 180 KB, where q, k and
// v would need 270 (the _w<warps>h<rows>kv variants). QG with ROPE turns k in shared memory (rope_rows_of) and each
// warp's q fragments in registers as they arrive (rope_frag_a).
template <int D, int WARPS, int NMAX, typename TO, bool ROPE, bool QG = false>
__device__ __forceinline__ void fwd_head(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                         const kiln_bf16* __restrict__ V, TO* __restrict__ O,
                                         float* __restrict__ LSE, int n, int heads, float scale, int causal,
                                         kiln_attn_layout lq, kiln_attn_layout lk, kiln_attn_layout lv,
                                         kiln_attn_layout lo, const kiln_attn_rope& rp) {
  // QG's 16 warps have 128 registers a thread: key tiles of 32 keep the score tile to 16 of them (at 64, 44 bytes
  // spilled).
  constexpr int LD = D + 8, NT = WARPS * 32, KS = D / 16, BN = QG ? 32 : 64, TILES = NMAX / 16;
  static_assert(TILES == 2 * WARPS && NMAX % (2 * BN) == 0, "a warp owns two 16-row tiles of the slab");
  extern __shared__ __align__(16) unsigned char smem[];
  kiln_bf16* Qs = (kiln_bf16*)smem;  // [NMAX][LD] each (no Qs with QG)
  kiln_bf16* Ks = QG ? Qs : Qs + NMAX * LD;
  kiln_bf16* Vs = Ks + NMAX * LD;
  double* Ps = (double*)(Vs + NMAX * LD);  // ROPE: [NMAX] positions, then [D / 2] frequencies
  double* Fs = Ps + NMAX;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y;
  const kiln_bf16* q = Q + kiln_attn_slab(lq, bh, heads);
  const kiln_bf16* k = K + kiln_attn_slab(lk, bh, heads);
  const kiln_bf16* v = V + kiln_attn_slab(lv, bh, heads);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    // Rowwise copies need the block's threads to cover whole rows: QG's 512 threads do not cover d80's 10 pieces.
    if constexpr (!QG) load_halves<D, NMAX, NT, ROPE>(Qs, q, lq.sr, half, n, tid);
    load_halves<D, NMAX, NT, ROPE && !QG>(Ks, k, lk.sr, half, n, tid);
    load_halves<D, NMAX, NT, ROPE && !QG>(Vs, v, lv.sr, half, n, tid);
    kiln_cp_async_commit();
  }

  if constexpr (ROPE) rope_stage<D, NMAX, NT>(Ps, Fs, rp, bh, heads, n, tid);
  const float sl2 = scale * KILN_LOG2E;
  for (int half = 0; half < 2; ++half) {
    // Tile w (the first half of the rows) needs only the first half of the keys when causal.
    if (half == 0 && causal) {
      kiln_cp_async_wait<1>();
    } else {
      kiln_cp_async_wait<0>();
    }
    __syncthreads();
    if constexpr (ROPE) {
      // The rows that arrived: this half when causal (the half's tiles need no more), else all of them at once.
      if (causal || half == 0) {
        if constexpr (QG) {
          if (causal) {
            rope_rows_of<D, NMAX / 2, NT>(Ks, half * (NMAX / 2), n, Ps, Fs, tid);
          } else {
            rope_rows_of<D, NMAX, NT>(Ks, 0, n, Ps, Fs, tid);
          }
        } else if (causal) {
          rope_rows<D, NMAX / 2, NT>(Qs, Ks, half * (NMAX / 2), n, Ps, Fs, tid);
        } else {
          rope_rows<D, NMAX, NT>(Qs, Ks, 0, n, Ps, Fs, tid);
        }
        __syncthreads();
      }
    }
    const int wrow0 = (half == 0 ? warp : TILES - 1 - warp) * 16;
    if (wrow0 >= n) continue;
    unsigned qf[1][KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      if constexpr (QG) {
        ldg_a(qf[0][kk], q, lq.sr, wrow0, kk * 16, n, lane);
        if constexpr (ROPE) rope_frag_a(qf[0][kk], wrow0, kk * 16, Ps, Fs, lane);
      } else {
        lds_a<LD>(qf[0][kk], Qs, wrow0, kk * 16, lane);
      }
    }
    float o[1][D / 8][4];
    zero<1, D / 8>(o);
    float mrow[1][2] = {{-KILN_INF, -KILN_INF}}, lrow[1][2] = {{0.f, 0.f}};
    int nkb = (n + BN - 1) / BN;
    if (causal) nkb = kiln_min(nkb, (wrow0 + 16 + BN - 1) / BN);
    for (int j = 0; j < nkb; ++j)
      fwd_tile<D, LD, 1, BN, true, true>(o, mrow, lrow, qf, Qs, wrow0, Ks + j * BN * LD, Vs + j * BN * LD, j * BN,
                                         wrow0, n, causal, sl2, g, t, lane);
    fwd_store<D, 1, TO>(o, lrow, mrow, O + kiln_attn_slab(lo, bh, heads), lo.sr, LSE + (kiln_i64)bh * n, wrow0, n,
                        g, t, sl2);
  }
}

// The forward's output rows of one warp's 16-row tile (from wrow0), for dot = rowsum(dO ∘ O): two lanes a row, D/2
// columns a lane, read from global memory in 16-byte pieces before the shared tiles arrive so the loads overlap.
template <int D, typename TI>
struct OutHalfRows {
  static constexpr int C = D / 2 * (int)sizeof(TI) / 16;
  uint4 v[C];
};

template <int D, typename TI>
__device__ __forceinline__ void load_out_rows(OutHalfRows<D, TI>& r, const TI* o, kiln_i64 sr, int wrow0, int n,
                                              int lane) {
  const int row = wrow0 + (lane >> 1);
  const TI* p = o + (kiln_i64)row * sr + (lane & 1) * (D / 2);
#pragma unroll
  for (int c = 0; c < OutHalfRows<D, TI>::C; ++c)
    r.v[c] = row < n ? *reinterpret_cast<const uint4*>(p + c * 16 / (int)sizeof(TI)) : make_uint4(0, 0, 0, 0);
}

// dot[row] = sum_c dO[row, c] · O[row, c] for the tile of r (its rows' dO from the smem tile dOs), into Ds[row]; the
// same lane turns Ls[row] into log2 units for the exponentials. Rows past n have zero O (and zero-filled dO and lse)
// and are never stored.
template <int D, int LD, typename TI>
__device__ __forceinline__ void tile_dot(float* Ds, float* Ls, const OutHalfRows<D, TI>& r, const kiln_bf16* dOs,
                                         int wrow0, int lane) {
  const int row = wrow0 + (lane >> 1);
  const kiln_bf16* gs = dOs + row * LD + (lane & 1) * (D / 2);
  float s = 0.f;
#pragma unroll
  for (int c = 0; c < OutHalfRows<D, TI>::C; ++c) {
    const unsigned* x = reinterpret_cast<const unsigned*>(&r.v[c]);
    if constexpr (sizeof(TI) == 2) {
      const uint4 y4 = *reinterpret_cast<const uint4*>(gs + c * 8);
      const unsigned* y = reinterpret_cast<const unsigned*>(&y4);
#pragma unroll
      for (int w = 0; w < 4; ++w) s += kiln_bf16_lo(x[w]) * kiln_bf16_lo(y[w]) + kiln_bf16_hi(x[w]) * kiln_bf16_hi(y[w]);
    } else {
      const uint2 y2 = *reinterpret_cast<const uint2*>(gs + c * 4);
      s += __uint_as_float(x[0]) * kiln_bf16_lo(y2.x) + __uint_as_float(x[1]) * kiln_bf16_hi(y2.x)
           + __uint_as_float(x[2]) * kiln_bf16_lo(y2.y) + __uint_as_float(x[3]) * kiln_bf16_hi(y2.y);
    }
  }
  s += __shfl_xor_sync(0xffffffffu, s, 1);
  if ((lane & 1) == 0) {
    Ds[row] = s;
    Ls[row] *= KILN_LOG2E;
  }
}

// Backward: also computes dot = rowsum(dO ∘ O) itself (from the forward's output O, of type TI), so the separate row-sum
// kernel and its round trip through global memory are gone. dQ of each warp's first query tile runs first (under a
// causal mask it needs only the first half of the slab), then dK and dV (warps own key tiles and walk the query
// tiles of BT that see them), then dQ of the second query tile. Each result row is written by one warp, so no
// atomics, and the arithmetic is the tiled kernels' own (dkdv_tile, dq_tile). ROPE: q and k come unrotated and are
// turned in shared memory as they land (rope_rows), and dq and dk are turned back as they are stored
// (store_rows_unrope): the gradients with respect to the unrotated q and k.
template <int D, int WARPS, int NMAX, int BT, typename TO, typename TI, bool ROPE>
__device__ __forceinline__ void bwd_head(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                         const kiln_bf16* __restrict__ V, const TI* __restrict__ O,
                                         const kiln_bf16* __restrict__ dO, const float* __restrict__ LSE,
                                         TO* __restrict__ dQ, TO* __restrict__ dK, TO* __restrict__ dV, int n,
                                         int heads, float scale, int causal, kiln_attn_layout lq,
                                         kiln_attn_layout lk, kiln_attn_layout lv, kiln_attn_layout lo,
                                         kiln_attn_layout ldo, kiln_attn_layout ldq, kiln_attn_layout ldk,
                                         kiln_attn_layout ldv, const kiln_attn_rope& rp) {
  constexpr int LD = D + 8, NT = WARPS * 32, KS = D / 16, TILES = NMAX / 16;
  static_assert(TILES == 2 * WARPS && NMAX % (2 * BT) == 0, "a warp owns two 16-row tiles of the slab");
  static_assert(BT % 16 == 0, "the unmasked tiles are found with 16-row tiles");
  extern __shared__ __align__(16) unsigned char smem[];
  kiln_bf16* Qs = (kiln_bf16*)smem;  // [NMAX][LD] each
  kiln_bf16* Ks = Qs + NMAX * LD;
  kiln_bf16* Vs = Ks + NMAX * LD;
  kiln_bf16* dOs = Vs + NMAX * LD;
  float* Ls = (float*)(dOs + NMAX * LD);  // [NMAX]
  float* Ds = Ls + NMAX;                  // [NMAX]
  double* Ps = (double*)(Ds + NMAX);  // ROPE: [NMAX] positions, then [D / 2] frequencies
  double* Fs = Ps + NMAX;
  unsigned* Cs = (unsigned*)(Fs + D / 2);  // ROPE: [NMAX][D / 2 + 4] (cos, sin) as fp16 pairs, for dq's and dk's stores
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y;
  const kiln_i64 vbase = (kiln_i64)bh * n;
  const kiln_bf16* q = Q + kiln_attn_slab(lq, bh, heads);
  const kiln_bf16* k = K + kiln_attn_slab(lk, bh, heads);
  const kiln_bf16* v = V + kiln_attn_slab(lv, bh, heads);
  const kiln_bf16* dout = dO + kiln_attn_slab(ldo, bh, heads);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    load_halves<D, NMAX, NT, ROPE>(Qs, q, lq.sr, half, n, tid);
    load_halves<D, NMAX, NT, ROPE>(Ks, k, lk.sr, half, n, tid);
    load_halves<D, NMAX, NT, ROPE>(Vs, v, lv.sr, half, n, tid);
    load_halves<D, NMAX, NT, ROPE>(dOs, dout, ldo.sr, half, n, tid);
    kiln_load_vec<NMAX / 2, NT>(Ls + half * (NMAX / 2), LSE + vbase, half * (NMAX / 2), n, tid);
    kiln_cp_async_commit();
  }
  if constexpr (ROPE) rope_stage<D, NMAX, NT>(Ps, Fs, rp, bh, heads, n, tid);
  // The warp's two tiles, of queries and of keys (the second one's index is not a local array's: that lives in memory).
  const int first = warp * 16, second = (TILES - 1 - warp) * 16;
  // The first tile's output rows are read while the shared tiles arrive; the second tile's after its dQ, so they hold
  // no registers through it.
  OutHalfRows<D, TI> orows;
  const TI* out = O + kiln_attn_slab(lo, bh, heads);
  load_out_rows<D, TI>(orows, out, lo.sr, first, n, lane);
  const float sl2 = scale * KILN_LOG2E;
  const int qtiles = (n + BT - 1) / BT;

  // dQ of query rows [wrow0, wrow0 + 16): recomputes S and dP over the key tiles of BT they see.
  auto dq_rows = [&](int wrow0) {
    if (wrow0 >= n) return;
    unsigned qf[1][KS][4], df[1][KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      lds_a<LD>(qf[0][kk], Qs, wrow0, kk * 16, lane);
      lds_a<LD>(df[0][kk], dOs, wrow0, kk * 16, lane);
    }
    float lse2[1][2], dot[1][2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      lse2[0][r] = Ls[wrow0 + g + r * 8];  // log2 units (tile_dot); rows past n are zero and never stored
      dot[0][r] = Ds[wrow0 + g + r * 8];
    }
    float dq[1][D / 8][4];
    zero<1, D / 8>(dq);
    int nkb = qtiles;
    if (causal) nkb = kiln_min(nkb, (wrow0 + 16 + BT - 1) / BT);
    // Key tiles before the diagonal one (causal), or before a partial last one, mask nothing: their loop skips the
    // tests (ncu: the masks were a quarter of the loops' instructions). With wrow0 and BT multiples of 16, a causal
    // row's last tile holds its diagonal and every earlier tile ends at or before wrow0.
    const int unmasked = causal ? nkb - 1 : kiln_min(nkb, n / BT);
    int j = 0;
    for (; j < unmasked; ++j)
      dq_tile<D, LD, 1, BT, true, false>(dq, qf, df, Qs, dOs, wrow0, Ks + j * BT * LD, Vs + j * BT * LD, lse2, dot,
                                         j * BT, wrow0, n, causal, sl2, g, t, lane);
    for (; j < nkb; ++j)
      dq_tile<D, LD, 1, BT, true>(dq, qf, df, Qs, dOs, wrow0, Ks + j * BT * LD, Vs + j * BT * LD, lse2, dot, j * BT,
                                  wrow0, n, causal, sl2, g, t, lane);
    if constexpr (ROPE) {
      store_rows_unrope<D, TO>(dQ + kiln_attn_slab(ldq, bh, heads), ldq.sr, dq, scale, wrow0, n, g, t, Cs);
    } else {
      store_rows<D, 1, TO>(dQ + kiln_attn_slab(ldq, bh, heads), ldq.sr, dq, scale, wrow0, n, g, t);
    }
  };

  // The first half of the slab: this warp's first tile's dot (its own rows, so no barrier before it is read by this
  // warp), and under a causal mask that tile's dQ.
  if (causal) {
    kiln_cp_async_wait<1>();
  } else {
    kiln_cp_async_wait<0>();
  }
  __syncthreads();
  if constexpr (ROPE) {
    // The rows that arrived: the first half when causal, else all of them.
    if (causal) {
      rope_rows<D, NMAX / 2, NT>(Qs, Ks, 0, n, Ps, Fs, tid, Cs);
    } else {
      rope_rows<D, NMAX, NT>(Qs, Ks, 0, n, Ps, Fs, tid, Cs);
    }
  }
  tile_dot<D, LD, TI>(Ds, Ls, orows, dOs, first, lane);
  __syncwarp();
  if constexpr (ROPE) __syncthreads();  // dQ reads rows other threads turned
  if (causal) dq_rows(first);
  load_out_rows<D, TI>(orows, out, lo.sr, second, n, lane);
  kiln_cp_async_wait<0>();
  __syncthreads();
  tile_dot<D, LD, TI>(Ds, Ls, orows, dOs, second, lane);
  if constexpr (ROPE) {
    if (causal) rope_rows<D, NMAX / 2, NT>(Qs, Ks, NMAX / 2, n, Ps, Fs, tid, Cs);
  }
  __syncthreads();  // dK/dV read every query row's dot and lse (and every turned row)
  if (!causal) dq_rows(first);

  for (int half = 0; half < 2; ++half) {
    const int wkey0 = half == 0 ? first : second;
    if (wkey0 >= n) continue;
    float dk[1][D / 8][4], dv[1][D / 8][4];
    zero<1, D / 8>(dk);
    zero<1, D / 8>(dv);
    // The diagonal query tile (causal) and a partial last one are masked; the tiles between them mask nothing (the
    // one after the diagonal starts at or past wkey0 + 16, with wkey0 and BT multiples of 16).
    // (Two plain lambdas, not one generic one: NVRTC takes a generic lambda's operator() for a host function.)
    auto masked = [&](int it) {
      const int m0 = it * BT;
      dkdv_tile<D, LD, 1, BT, true>(dk, dv, Ks, Vs, wkey0, Qs + m0 * LD, dOs + m0 * LD, Ls + m0, Ds + m0, m0, wkey0,
                                    n, causal, sl2, g, t, lane);
    };
    auto unmasked = [&](int it) {
      const int m0 = it * BT;
      dkdv_tile<D, LD, 1, BT, true, false>(dk, dv, Ks, Vs, wkey0, Qs + m0 * LD, dOs + m0 * LD, Ls + m0, Ds + m0, m0,
                                           wkey0, n, causal, sl2, g, t, lane);
    };
    int it = causal ? wkey0 / BT : 0;
    if (causal) masked(it++);
    for (const int full = n / BT; it < full; ++it) unmasked(it);
    for (; it < qtiles; ++it) masked(it);
    if constexpr (ROPE) {
      store_rows_unrope<D, TO>(dK + kiln_attn_slab(ldk, bh, heads), ldk.sr, dk, scale, wkey0, n, g, t, Cs);
    } else {
      store_rows<D, 1, TO>(dK + kiln_attn_slab(ldk, bh, heads), ldk.sr, dk, scale, wkey0, n, g, t);
    }
    store_rows<D, 1, TO>(dV + kiln_attn_slab(ldv, bh, heads), ldv.sr, dv, 1.f, wkey0, n, g, t);
  }
  dq_rows(second);
}

// ------------------------------------------------------------------------------------------------ slab backward

// The slab backward (_w<warps>h<rows>s): the forward slab's layout turned around for each pass, one block a (batch,
// head) slab of up to NMAX rows, so a 512-row slab at d80 runs as one wave of blocks. dK/dV keeps q and dO (and
// their rows' lse and dot) resident and reads each warp's key tiles' k and v from global memory as A fragments
// (ldg_a); dQ keeps k and v resident and reads each warp's query tiles' q and dO so. The row sums come from the
// tiled path's dot kernel. A warp owns TILES / WARPS tiles of 16 rows, taken from both ends of the slab so that under
// a causal mask every warp has the same work: i-th tile w, 2W-1-w, 2W+w, 4W-1-w, ... (kiln_slab_tile).
template <int WARPS>
__device__ __forceinline__ int kiln_slab_tile(int i, int warp) {
  return (i & 1) == 0 ? i * WARPS + warp : (i + 1) * WARPS - 1 - warp;
}

// A slab kernel's wait for its resident rows (two cp.async groups, the half its warps' first tiles need committed
// first) at the start of its tile loop (first) and of the loop's second half. When causal the first wait takes one
// group and the second the other; otherwise the first takes both. With ROPE the rows of s that arrived are turned in
// shared memory before any warp reads them. `early` is the half committed first (0 or 1).
template <int D, int NMAX, int NT, bool ROPE>
__device__ __forceinline__ void slab_arrivals(bool first, int causal, kiln_bf16* s, int early, int n, const double* ps,
                                              const double* fs, int tid) {
  if (first) {
    if (causal) {
      kiln_cp_async_wait<1>();
    } else {
      kiln_cp_async_wait<0>();
    }
    __syncthreads();
    if constexpr (ROPE) {
      if (causal) {
        rope_rows_of<D, NMAX / 2, NT>(s, early * (NMAX / 2), n, ps, fs, tid);
      } else {
        rope_rows_of<D, NMAX, NT>(s, 0, n, ps, fs, tid);
      }
      __syncthreads();
    }
  } else {
    kiln_cp_async_wait<0>();
    __syncthreads();
    if constexpr (ROPE) {
      if (causal) {
        rope_rows_of<D, NMAX / 2, NT>(s, (1 - early) * (NMAX / 2), n, ps, fs, tid);
        __syncthreads();
      }
    }
  }
}

// A warp's A fragments (ldg_a) of rows row0..row0 + 15 of x and y, all KS column steps; with ROPE, x's turned in
// registers (rope_frag_a).
template <int KS, bool ROPE>
__device__ __forceinline__ void ldg_a_rows(unsigned (*xf)[4], const kiln_bf16* x, kiln_i64 sx, unsigned (*yf)[4],
                                           const kiln_bf16* y, kiln_i64 sy, int row0, int n, const double* ps,
                                           const double* fs, int lane) {
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    ldg_a(xf[kk], x, sx, row0, kk * 16, n, lane);
    ldg_a(yf[kk], y, sy, row0, kk * 16, n, lane);
  }
  if constexpr (ROPE) {
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) rope_frag_a(xf[kk], row0, kk * 16, ps, fs, lane);
  }
}

// dQ: k and v of the slab in shared memory, halves in two cp.async groups (the first half's query tiles need only the
// first half's keys when causal); each warp's query tiles in order, the first half's before the second's.
template <int D, int WARPS, int NMAX, int BN, typename TO, bool ROPE>
__device__ __forceinline__ void bwd_dq_slab(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                            const kiln_bf16* __restrict__ V, const kiln_bf16* __restrict__ dO,
                                            const float* __restrict__ LSE, const float* __restrict__ DOT,
                                            TO* __restrict__ dQ, int n, int heads, float scale, int causal,
                                            kiln_attn_layout lq, kiln_attn_layout lk, kiln_attn_layout lv,
                                            kiln_attn_layout ldo, kiln_attn_layout ldq, const kiln_attn_rope& rp) {
  constexpr int LD = D + 8, NT = WARPS * 32, KS = D / 16, TILES = NMAX / 16, TPW = TILES / WARPS;
  static_assert(TILES % (2 * WARPS) == 0 && NMAX % (2 * BN) == 0 && BN % 16 == 0, "whole tiles a warp and half");
  extern __shared__ __align__(16) unsigned char smem[];
  kiln_bf16* Ks = (kiln_bf16*)smem;  // [NMAX][LD]
  kiln_bf16* Vs = Ks + NMAX * LD;    // [NMAX][LD]
  double* Ps = (double*)(Vs + NMAX * LD);  // ROPE: [NMAX] positions, then [D / 2] frequencies
  double* Fs = Ps + NMAX;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y;
  const kiln_i64 vbase = (kiln_i64)bh * n;
  const kiln_bf16* q = Q + kiln_attn_slab(lq, bh, heads);
  const kiln_bf16* dout = dO + kiln_attn_slab(ldo, bh, heads);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    load_halves<D, NMAX, NT, false>(Ks, K + kiln_attn_slab(lk, bh, heads), lk.sr, half, n, tid);
    load_halves<D, NMAX, NT, false>(Vs, V + kiln_attn_slab(lv, bh, heads), lv.sr, half, n, tid);
    kiln_cp_async_commit();
  }
  if constexpr (ROPE) rope_stage<D, NMAX, NT>(Ps, Fs, rp, bh, heads, n, tid);
  const float sl2 = scale * KILN_LOG2E;
  for (int i = 0; i < TPW; ++i) {
    if (i == 0 || i == TPW / 2) slab_arrivals<D, NMAX, NT, ROPE>(i == 0, causal, Ks, 0, n, Ps, Fs, tid);
    const int wrow0 = kiln_slab_tile<WARPS>(i, warp) * 16;
    if (wrow0 >= n) continue;
    unsigned qf[1][KS][4], df[1][KS][4];
    ldg_a_rows<KS, ROPE>(qf[0], q, lq.sr, df[0], dout, ldo.sr, wrow0, n, Ps, Fs, lane);
    float lse2[1][2], dot[1][2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = wrow0 + g + r * 8;
      lse2[0][r] = row < n ? LSE[vbase + row] * KILN_LOG2E : 0.f;
      dot[0][r] = row < n ? DOT[vbase + row] : 0.f;
    }
    float dq[1][D / 8][4];
    zero<1, D / 8>(dq);
    int nkb = (n + BN - 1) / BN;
    if (causal) nkb = kiln_min(nkb, (wrow0 + 16 + BN - 1) / BN);
    // As bwd_head's dq_rows: with wrow0 and BN multiples of 16, the tiles before a causal row's last one, or before a
    // partial last one, mask nothing.
    const int unmasked = causal ? nkb - 1 : kiln_min(nkb, n / BN);
    int j = 0;
    for (; j < unmasked; ++j)
      dq_tile<D, LD, 1, BN, true, false>(dq, qf, df, nullptr, nullptr, wrow0, Ks + j * BN * LD, Vs + j * BN * LD,
                                         lse2, dot, j * BN, wrow0, n, causal, sl2, g, t, lane);
    for (; j < nkb; ++j)
      dq_tile<D, LD, 1, BN, true>(dq, qf, df, nullptr, nullptr, wrow0, Ks + j * BN * LD, Vs + j * BN * LD, lse2, dot,
                                  j * BN, wrow0, n, causal, sl2, g, t, lane);
    if constexpr (ROPE) {
      store_rows_turned_back<D, TO>(dQ + kiln_attn_slab(ldq, bh, heads), ldq.sr, dq, scale, wrow0, n, g, t,
                                    [&](int row, int pair) { return kiln_rope_cs(Ps[row], Fs, pair); });
    } else {
      store_rows<D, 1, TO>(dQ + kiln_attn_slab(ldq, bh, heads), ldq.sr, dq, scale, wrow0, n, g, t);
    }
  }
}

// dK/dV: q, dO, lse and dot of the slab in shared memory, the second half first (a causal key tile in the second half
// sees only the second half's queries), so the warps' second-half key tiles start while the first half arrives.
template <int D, int WARPS, int NMAX, int BM, typename TO, bool ROPE>
__device__ __forceinline__ void bwd_dkdv_slab(const kiln_bf16* __restrict__ Q, const kiln_bf16* __restrict__ K,
                                              const kiln_bf16* __restrict__ V, const kiln_bf16* __restrict__ dO,
                                              const float* __restrict__ LSE, const float* __restrict__ DOT,
                                              TO* __restrict__ dK, TO* __restrict__ dV, int n, int heads,
                                              float scale, int causal, kiln_attn_layout lq, kiln_attn_layout lk,
                                              kiln_attn_layout lv, kiln_attn_layout ldo, kiln_attn_layout ldk,
                                              kiln_attn_layout ldv, const kiln_attn_rope& rp) {
  constexpr int LD = D + 8, NT = WARPS * 32, KS = D / 16, TILES = NMAX / 16, TPW = TILES / WARPS;
  static_assert(TILES % (2 * WARPS) == 0 && NMAX % (2 * BM) == 0 && BM % 16 == 0, "whole tiles a warp and half");
  extern __shared__ __align__(16) unsigned char smem[];
  kiln_bf16* Qs = (kiln_bf16*)smem;         // [NMAX][LD]
  kiln_bf16* dOs = Qs + NMAX * LD;          // [NMAX][LD]
  float* Ls = (float*)(dOs + NMAX * LD);    // [NMAX]
  float* Ds = Ls + NMAX;                    // [NMAX]
  double* Ps = (double*)(Ds + NMAX);        // ROPE: [NMAX] positions, then [D / 2] frequencies
  double* Fs = Ps + NMAX;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y;
  const kiln_i64 vbase = (kiln_i64)bh * n;
  const kiln_bf16* q = Q + kiln_attn_slab(lq, bh, heads);
  const kiln_bf16* dout = dO + kiln_attn_slab(ldo, bh, heads);
  const kiln_bf16* k = K + kiln_attn_slab(lk, bh, heads);
  const kiln_bf16* v = V + kiln_attn_slab(lv, bh, heads);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int half = 1 - h;
    load_halves<D, NMAX, NT, false>(Qs, q, lq.sr, half, n, tid);
    load_halves<D, NMAX, NT, false>(dOs, dout, ldo.sr, half, n, tid);
    kiln_load_vec<NMAX / 2, NT>(Ls + half * (NMAX / 2), LSE + vbase, half * (NMAX / 2), n, tid);
    kiln_load_vec<NMAX / 2, NT>(Ds + half * (NMAX / 2), DOT + vbase, half * (NMAX / 2), n, tid);
    kiln_cp_async_commit();
  }
  if constexpr (ROPE) rope_stage<D, NMAX, NT>(Ps, Fs, rp, bh, heads, n, tid);
  const float sl2 = scale * KILN_LOG2E;
  const int mtiles = (n + BM - 1) / BM;
  // The warp's tiles from the last: its second-half tiles (i >= TPW / 2) first.
  for (int r = 0; r < TPW; ++r) {
    const int i = TPW - 1 - r;
    if (r == 0 || r == TPW / 2) slab_arrivals<D, NMAX, NT, ROPE>(r == 0, causal, Qs, 1, n, Ps, Fs, tid);
    const int wkey0 = kiln_slab_tile<WARPS>(i, warp) * 16;
    if (wkey0 >= n) continue;
    unsigned kf[1][KS][4], vf[1][KS][4];
    ldg_a_rows<KS, ROPE>(kf[0], k, lk.sr, vf[0], v, lv.sr, wkey0, n, Ps, Fs, lane);
    float dk[1][D / 8][4], dv[1][D / 8][4];
    zero<1, D / 8>(dk);
    zero<1, D / 8>(dv);
    // As bwd_head: the diagonal query tile (causal) and a partial last one are masked, the tiles between them not.
    int it = causal ? wkey0 / BM : 0;
    auto tile = [&](int m0, bool masked) {
      if (masked) {
        dkdv_tile<D, LD, 1, BM, false, true, true>(dk, dv, nullptr, nullptr, 0, Qs + m0 * LD, dOs + m0 * LD, Ls + m0,
                                                   Ds + m0, m0, wkey0, n, causal, sl2, g, t, lane, kf, vf);
      } else {
        dkdv_tile<D, LD, 1, BM, false, false, true>(dk, dv, nullptr, nullptr, 0, Qs + m0 * LD, dOs + m0 * LD,
                                                    Ls + m0, Ds + m0, m0, wkey0, n, causal, sl2, g, t, lane, kf, vf);
      }
    };
    if (causal) tile(it++ * BM, true);
    for (const int full = n / BM; it < full; ++it) tile(it * BM, false);
    for (; it < mtiles; ++it) tile(it * BM, true);
    if constexpr (ROPE) {
      store_rows_turned_back<D, TO>(dK + kiln_attn_slab(ldk, bh, heads), ldk.sr, dk, scale, wkey0, n, g, t,
                                    [&](int row, int pair) { return kiln_rope_cs(Ps[row], Fs, pair); });
    } else {
      store_rows<D, 1, TO>(dK + kiln_attn_slab(ldk, bh, heads), ldk.sr, dk, scale, wkey0, n, g, t);
    }
    store_rows<D, 1, TO>(dV + kiln_attn_slab(ldv, bh, heads), ldv.sr, dv, 1.f, wkey0, n, g, t);
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
    kiln_pdl_enter();                                                                                          \
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
    kiln_pdl_enter();                                                                                          \
    bwd_dkdv_tc<D, W, MT, BM, TO>(q, k, v, dout, lse, dot, dk, dv, n, heads, scale, causal, lq, lk, lv, ldo,   \
                                  ldk, ldv);                                                                   \
  }

#define KILN_DQ_T(NAME, D, W, MT, BN, BOUNDS, TO)                                                              \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                                    \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, const kiln_bf16* dout, const float* lse,     \
      const float* dot, TO* dq, int n, int heads, float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv,    \
      KILN_L ldo, KILN_L ldq) {                                                                                \
    kiln_pdl_enter();                                                                                          \
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

// Whole-head variants, _w<warps>h<rows>[mb<min blocks>]: one block a (b, h) slab of at most <rows> rows (the host
// runs the head dim's portable variant for longer sequences). The backward kernel writes dq, dk and dv, and reads the
// forward's output o (_i<type>) for its row sums. Each line also makes the _rope entry points, which take q and k
// before RoPE and one more argument, the rotation (kiln_attn_rope).
#define KILN_FWD_HEAD_T(NAME, D, W, NMAX, BOUNDS, TO)                                                         \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                                    \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, TO* o, float* lse, int n, int heads,         \
      float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv, KILN_L lo) {                                   \
    kiln_pdl_enter();                                                                                          \
    fwd_head<D, W, NMAX, TO, false>(q, k, v, o, lse, n, heads, scale, causal, lq, lk, lv, lo, kiln_attn_rope{}); \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME##_rope(                                             \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, TO* o, float* lse, int n, int heads,         \
      float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv, KILN_L lo, kiln_attn_rope rope) {              \
    kiln_pdl_enter();                                                                                          \
    fwd_head<D, W, NMAX, TO, true>(q, k, v, o, lse, n, heads, scale, causal, lq, lk, lv, lo, rope);            \
  }
#define KILN_BWD_HEAD_T(NAME, D, W, NMAX, BT, BOUNDS, TO, TI)                                                     \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                                    \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, const TI* o, const kiln_bf16* dout,          \
      const float* lse, TO* dq, TO* dk, TO* dv, int n, int heads, float scale, int causal, KILN_L lq,          \
      KILN_L lk, KILN_L lv, KILN_L lo, KILN_L ldo, KILN_L ldq, KILN_L ldk, KILN_L ldv) {                       \
    kiln_pdl_enter();                                                                                          \
    bwd_head<D, W, NMAX, BT, TO, TI, false>(q, k, v, o, dout, lse, dq, dk, dv, n, heads, scale, causal, lq, lk, \
                                            lv, lo, ldo, ldq, ldk, ldv, kiln_attn_rope{});                    \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME##_rope(                                             \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, const TI* o, const kiln_bf16* dout,          \
      const float* lse, TO* dq, TO* dk, TO* dv, int n, int heads, float scale, int causal, KILN_L lq,          \
      KILN_L lk, KILN_L lv, KILN_L lo, KILN_L ldo, KILN_L ldq, KILN_L ldk, KILN_L ldv, kiln_attn_rope rope) {  \
    kiln_pdl_enter();                                                                                          \
    bwd_head<D, W, NMAX, BT, TO, TI, true>(q, k, v, o, dout, lse, dq, dk, dv, n, heads, scale, causal, lq, lk,  \
                                           lv, lo, ldo, ldq, ldk, ldv, rope);                                 \
  }
#define KILN_FWD_HEAD(SUFFIX, D, W, NMAX, BOUNDS)                                         \
  KILN_FWD_HEAD_T(kiln_attn_fwd_bf16_##SUFFIX##_obf16, D, W, NMAX, BOUNDS, kiln_bf16) \
  KILN_FWD_HEAD_T(kiln_attn_fwd_bf16_##SUFFIX##_of32, D, W, NMAX, BOUNDS, float)
#define KILN_BWD_HEAD(SUFFIX, D, W, NMAX, BT, BOUNDS)                                                    \
  KILN_BWD_HEAD_T(kiln_attn_bwd_head_bf16_##SUFFIX##_obf16_ibf16, D, W, NMAX, BT, BOUNDS, kiln_bf16, kiln_bf16) \
  KILN_BWD_HEAD_T(kiln_attn_bwd_head_bf16_##SUFFIX##_obf16_if32, D, W, NMAX, BT, BOUNDS, kiln_bf16, float)     \
  KILN_BWD_HEAD_T(kiln_attn_bwd_head_bf16_##SUFFIX##_of32_ibf16, D, W, NMAX, BT, BOUNDS, float, kiln_bf16)     \
  KILN_BWD_HEAD_T(kiln_attn_bwd_head_bf16_##SUFFIX##_of32_if32, D, W, NMAX, BT, BOUNDS, float, float)
KILN_FWD_HEAD(d32_w8h256, 32, 8, 256, (256, 2))
KILN_FWD_HEAD(d32_w8h256mb3, 32, 8, 256, (256, 3))
// The q-from-global form (fwd_head's QG): one block a slab of up to 512 rows at d80 (xl's heads and context), k and v
// resident (180 KB), 16 warps of two 16-row query tiles each; the _rope entry point as the whole-head ones'.
#define KILN_FWD_SLAB_T(NAME, D, W, NMAX, BOUNDS, TO)                                                         \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                                    \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, TO* o, float* lse, int n, int heads,         \
      float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv, KILN_L lo) {                                   \
    kiln_pdl_enter();                                                                                          \
    fwd_head<D, W, NMAX, TO, false, true>(q, k, v, o, lse, n, heads, scale, causal, lq, lk, lv, lo,            \
                                          kiln_attn_rope{});                                                   \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME##_rope(                                             \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, TO* o, float* lse, int n, int heads,         \
      float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv, KILN_L lo, kiln_attn_rope rope) {              \
    kiln_pdl_enter();                                                                                          \
    fwd_head<D, W, NMAX, TO, true, true>(q, k, v, o, lse, n, heads, scale, causal, lq, lk, lv, lo, rope);      \
  }
#define KILN_FWD_SLAB(SUFFIX, D, W, NMAX, BOUNDS)                                         \
  KILN_FWD_SLAB_T(kiln_attn_fwd_bf16_##SUFFIX##_obf16, D, W, NMAX, BOUNDS, kiln_bf16) \
  KILN_FWD_SLAB_T(kiln_attn_fwd_bf16_##SUFFIX##_of32, D, W, NMAX, BOUNDS, float)
KILN_FWD_SLAB(d80_w16h512kv, 80, 16, 512, (512, 1))
// The slab backward (bwd_dkdv_slab, bwd_dq_slab): a dK/dV and a dQ kernel with the tiled ones' arguments (the host
// runs the row-sum kernel first, as for them), one block a slab; TILE is the query tile of dK/dV and the key tile of
// dQ. The _rope entry points take q and k before RoPE and write dq and dk turned back, as bwd_head's.
#define KILN_BWD_SLAB_R(NAME_DKDV, NAME_DQ, D, W, NMAX, TILE, BOUNDS, TO, ROPE, ROPE_PARAM, ROPE_ARG)            \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME_DKDV(                                               \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, const kiln_bf16* dout, const float* lse,     \
      const float* dot, TO* dk, TO* dv, int n, int heads, float scale, int causal, KILN_L lq, KILN_L lk,       \
      KILN_L lv, KILN_L ldo, KILN_L ldk, KILN_L ldv ROPE_PARAM) {                                              \
    kiln_pdl_enter();                                                                                          \
    bwd_dkdv_slab<D, W, NMAX, TILE, TO, ROPE>(q, k, v, dout, lse, dot, dk, dv, n, heads, scale, causal, lq, lk, \
                                              lv, ldo, ldk, ldv, ROPE_ARG);                                    \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__ BOUNDS NAME_DQ(                                                 \
      const kiln_bf16* q, const kiln_bf16* k, const kiln_bf16* v, const kiln_bf16* dout, const float* lse,     \
      const float* dot, TO* dq, int n, int heads, float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv,    \
      KILN_L ldo, KILN_L ldq ROPE_PARAM) {                                                                     \
    kiln_pdl_enter();                                                                                          \
    bwd_dq_slab<D, W, NMAX, TILE, TO, ROPE>(q, k, v, dout, lse, dot, dq, n, heads, scale, causal, lq, lk, lv,   \
                                            ldo, ldq, ROPE_ARG);                                               \
  }
#define KILN_COMMA ,
#define KILN_BWD_SLAB_T(NAME_DKDV, NAME_DQ, D, W, NMAX, TILE, BOUNDS, TO)                                       \
  KILN_BWD_SLAB_R(NAME_DKDV, NAME_DQ, D, W, NMAX, TILE, BOUNDS, TO, false, , kiln_attn_rope{})                 \
  KILN_BWD_SLAB_R(NAME_DKDV##_rope, NAME_DQ##_rope, D, W, NMAX, TILE, BOUNDS, TO, true,                        \
                  KILN_COMMA kiln_attn_rope rope, rope)
#define KILN_BWD_SLAB(SUFFIX, D, W, NMAX, TILE, BOUNDS)                                                      \
  KILN_BWD_SLAB_T(kiln_attn_bwd_dkdv_bf16_##SUFFIX##_obf16, kiln_attn_bwd_dq_bf16_##SUFFIX##_obf16, D, W, NMAX, \
                  TILE, BOUNDS, kiln_bf16)                                                                     \
  KILN_BWD_SLAB_T(kiln_attn_bwd_dkdv_bf16_##SUFFIX##_of32, kiln_attn_bwd_dq_bf16_##SUFFIX##_of32, D, W, NMAX,   \
                  TILE, BOUNDS, float)
KILN_BWD_SLAB(d80_w8h512s, 80, 8, 512, 32, (256, 1))
// The backward's tiles of the other pass are 32 rows: at 64, 128 registers held the score tiles only with spills
// (44-52 bytes; 199-211 against 188 us a layer at TinyStories' shape, ncu).
KILN_BWD_HEAD(d32_w8h256, 32, 8, 256, 32, (256, 2))

#define KILN_SIMT(SUFFIX, T)                                                                                   \
  extern "C" __global__ void kiln_attn_fwd_simt_##SUFFIX(const T* q, const T* k, const T* v, T* o, float* lse,  \
                                                         int n, int heads, int d, float scale, int causal,      \
                                                         KILN_L lq, KILN_L lk, KILN_L lv, KILN_L lo) {          \
    kiln_pdl_enter();                                                                                           \
    fwd_simt<T>(q, k, v, o, lse, n, heads, d, scale, causal, lq, lk, lv, lo);                                  \
  }                                                                                                            \
  extern "C" __global__ void kiln_attn_bwd_dq_simt_##SUFFIX(                                                   \
      const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dot, T* dq, int n,      \
      int heads, int d, float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv, KILN_L ldo, KILN_L ldq) {     \
    kiln_pdl_enter();                                                                                           \
    bwd_dq_simt<T>(q, k, v, dout, lse, dot, dq, n, heads, d, scale, causal, lq, lk, lv, ldo, ldq);             \
  }                                                                                                            \
  extern "C" __global__ void kiln_attn_bwd_dkdv_simt_##SUFFIX(                                                 \
      const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dot, T* dk, T* dv,      \
      int n, int heads, int d, float scale, int causal, KILN_L lq, KILN_L lk, KILN_L lv, KILN_L ldo,            \
      KILN_L ldk, KILN_L ldv) {                                                                                \
    kiln_pdl_enter();                                                                                          \
    bwd_dkdv_simt<T>(q, k, v, dout, lse, dot, dk, dv, n, heads, d, scale, causal, lq, lk, lv, ldo, ldk, ldv);  \
  }
KILN_SIMT(f32, float)
KILN_SIMT(bf16, kiln_bf16)

// dot[i] = sum_d dO[i,d] * O[i,d] for bf16 O and dO with D a multiple of 8 up to 256, every row 16 bytes aligned:
// L = D / 8 lanes a row, 8 entries (16 bytes) a lane, KILN_DOT_VEC_STEPS groups of 32 / L rows a warp (the last
// 32 mod L lanes idle where L does not divide 32: 2 of them at xl's D = 80), their loads all issued before the first
// sum. One bf16 a lane (bwd_dot) moved 1.4 TB/s at TinyStories' D = 32 (47 us a layer), and 15.2 against a
// vector kernel's 5-6 us a layer at xl's D = 80 (ncu, twenty-sixth session), before D = 80 had one.
#define KILN_DOT_VEC_STEPS 4
template <int D>
__device__ __forceinline__ void bwd_dot_vec(const kiln_bf16* O, const kiln_bf16* dO, float* DOT, int n, int heads,
                                            kiln_attn_layout lo, kiln_attn_layout ldo) {
  static_assert(D % 8 == 0 && D >= 8 && D <= 256, "16-byte pieces, at most a warp a row");
  constexpr int L = D / 8;        // lanes a row
  constexpr int RPS = 32 / L;     // rows a warp per step
  const int lane = threadIdx.x & 31;
  const bool active = lane < RPS * L;
  const int warp = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int bh = blockIdx.y;
  const kiln_bf16* o = O + kiln_attn_slab(lo, bh, heads) + (lane % L) * 8;
  const kiln_bf16* g = dO + kiln_attn_slab(ldo, bh, heads) + (lane % L) * 8;
  uint4 a[KILN_DOT_VEC_STEPS], b[KILN_DOT_VEC_STEPS];
#pragma unroll
  for (int s = 0; s < KILN_DOT_VEC_STEPS; ++s) {
    const int row = (warp * KILN_DOT_VEC_STEPS + s) * RPS + lane / L;
    if (active && row < n) {
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
      t += kiln_bf16_lo(x[w]) * kiln_bf16_lo(y[w]);
      t += kiln_bf16_hi(x[w]) * kiln_bf16_hi(y[w]);
    }
    if constexpr ((L & (L - 1)) == 0) {
#pragma unroll
      for (int off = L / 2; off > 0; off >>= 1) t += __shfl_xor_sync(0xffffffffu, t, off);
    } else {
      // A tree over each row's L lanes: a lane adds the partial sum of the lane off above it only when that lane is
      // of its row, so every partial stays within its row, and the row's first lane ends with the row's sum.
#pragma unroll
      for (int off = 1; off < L; off <<= 1) {
        const float u = __shfl_down_sync(0xffffffffu, t, off);
        if (lane % L + off < L) t += u;
      }
    }
    const int row = (warp * KILN_DOT_VEC_STEPS + s) * RPS + lane / L;
    if (active && lane % L == 0 && row < n) DOT[(kiln_i64)bh * n + row] = t;
  }
}

#define KILN_DOT_VEC(D)                                                                                        \
  extern "C" __global__ void kiln_attn_bwd_dot_vec_d##D(const kiln_bf16* o, const kiln_bf16* dout, float* dot,  \
                                                        int n, int heads, KILN_L lo, KILN_L ldo) {              \
    kiln_pdl_enter();                                                                                          \
    bwd_dot_vec<D>(o, dout, dot, n, heads, lo, ldo);                                                           \
  }
// Every multiple of 8 up to 256 (FlashAttention.dotVectorised).
#define KILN_DOT_VEC4(A, B, C, D) KILN_DOT_VEC(A) KILN_DOT_VEC(B) KILN_DOT_VEC(C) KILN_DOT_VEC(D)
KILN_DOT_VEC4(8, 16, 24, 32)
KILN_DOT_VEC4(40, 48, 56, 64)
KILN_DOT_VEC4(72, 80, 88, 96)
KILN_DOT_VEC4(104, 112, 120, 128)
KILN_DOT_VEC4(136, 144, 152, 160)
KILN_DOT_VEC4(168, 176, 184, 192)
KILN_DOT_VEC4(200, 208, 216, 224)
KILN_DOT_VEC4(232, 240, 248, 256)

// dot over (o, dO) types: bf16/bf16 (bf16 attention), f32/f32 (fp32), f32/bf16 (mixed precision: fp32 results).
#define KILN_DOT(SUFFIX, TO, TG)                                                                               \
  extern "C" __global__ void kiln_attn_bwd_dot_##SUFFIX(const TO* o, const TG* dout, float* dot, int n,         \
                                                        int heads, int d, KILN_L lo, KILN_L ldo) {              \
    kiln_pdl_enter();                                                                                           \
    bwd_dot<TO, TG>(o, dout, dot, n, heads, d, lo, ldo);                                                       \
  }
KILN_DOT(bf16_bf16, kiln_bf16, kiln_bf16)
KILN_DOT(f32_f32, float, float)
KILN_DOT(f32_bf16, float, kiln_bf16)
