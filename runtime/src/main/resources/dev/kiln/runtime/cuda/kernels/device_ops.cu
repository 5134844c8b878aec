// The primitives of Kiln's device SPI on CUDA (dev.kiln.dsl.spi.Device, implemented by CudaModelDevice): strided
// copies and casts, fills, unary/binary/compare/where with broadcasting, reductions, embedding gather/scatter.
// The processor's fused kernels do the heavy pointwise work; these run where generated code calls a primitive.
//
// Strided operands. The host flattens the output's shape after merging dims that are contiguous in every operand
// (so most calls arrive as rank 1) and passes it as KilnShape; each operand brings its own strides over that
// shape (0 where it broadcasts). Element i of the output (row-major) reads operand offset sum(coord_d * stride_d).
// Outputs of unary/binary/compare/where are contiguous; copy and fill write through strides.
//
// Types: f32 float, f64 double, bf16 (KilnB16), i32 int, i64 long long, u8 unsigned char, b8 (KilnBool, 0 or 1).
// Casts go through double, except integer to integer (through long long, exact); to b8 means "!= 0"; float to
// integer truncates toward zero (as a C cast and torch's .to(int)).
//
// Index errors (an id outside the table) cannot throw on the device: the first bad id is written to an error
// word that the host reads at its next synchronisation and turns into an IndexOutOfBoundsException.
#include "kiln_common.cuh"

#define KILN_MAX_RANK 8

struct KilnShape {  // 72 bytes; CudaModelDevice writes the same layout
  kiln_i64 size[KILN_MAX_RANK];
  kiln_i64 rank;
};

struct KilnStrides {  // 64 bytes
  kiln_i64 s[KILN_MAX_RANK];
};

struct KilnB16 {
  unsigned short bits;
};

struct KilnBool {
  unsigned char v;
};

// ---------------------------------------------------------------- conversions

__device__ __forceinline__ double kd(float x) { return x; }
__device__ __forceinline__ double kd(double x) { return x; }
__device__ __forceinline__ double kd(KilnB16 x) { return __uint_as_float(((unsigned)x.bits) << 16); }
__device__ __forceinline__ double kd(int x) { return x; }
__device__ __forceinline__ double kd(kiln_i64 x) { return (double)x; }
__device__ __forceinline__ double kd(unsigned char x) { return x; }
__device__ __forceinline__ double kd(KilnBool x) { return x.v; }

__device__ __forceinline__ kiln_i64 ki(int x) { return x; }
__device__ __forceinline__ kiln_i64 ki(kiln_i64 x) { return x; }
__device__ __forceinline__ kiln_i64 ki(unsigned char x) { return x; }
__device__ __forceinline__ kiln_i64 ki(KilnBool x) { return x.v; }

template <class T> struct KilnIsInt { static const bool value = false; };
template <> struct KilnIsInt<int> { static const bool value = true; };
template <> struct KilnIsInt<kiln_i64> { static const bool value = true; };
template <> struct KilnIsInt<unsigned char> { static const bool value = true; };
template <> struct KilnIsInt<KilnBool> { static const bool value = true; };

template <class T> __device__ __forceinline__ T kfd(double x);
template <> __device__ __forceinline__ float kfd<float>(double x) { return (float)x; }
template <> __device__ __forceinline__ double kfd<double>(double x) { return x; }
template <> __device__ __forceinline__ KilnB16 kfd<KilnB16>(double x) {
  KilnB16 r;
  r.bits = (unsigned short)(kiln_pack_bf16((float)x, 0.f) & 0xffffu);
  return r;
}
template <> __device__ __forceinline__ int kfd<int>(double x) { return (int)(kiln_i64)x; }
template <> __device__ __forceinline__ kiln_i64 kfd<kiln_i64>(double x) { return (kiln_i64)x; }
// Through a 64-bit integer, so negative values wrap modulo 256 as the CPU's cast does (a direct cast is undefined).
template <> __device__ __forceinline__ unsigned char kfd<unsigned char>(double x) { return (unsigned char)(kiln_i64)x; }
template <> __device__ __forceinline__ KilnBool kfd<KilnBool>(double x) {
  KilnBool r;
  r.v = x != 0.0;
  return r;
}

template <class T> __device__ __forceinline__ T kfi(kiln_i64 x) { return kfd<T>((double)x); }
template <> __device__ __forceinline__ int kfi<int>(kiln_i64 x) { return (int)x; }
template <> __device__ __forceinline__ kiln_i64 kfi<kiln_i64>(kiln_i64 x) { return x; }
template <> __device__ __forceinline__ unsigned char kfi<unsigned char>(kiln_i64 x) { return (unsigned char)x; }
template <> __device__ __forceinline__ KilnBool kfi<KilnBool>(kiln_i64 x) {
  KilnBool r;
  r.v = x != 0;
  return r;
}

template <class TO, class TI, bool INTS> struct KilnCvt {
  static __device__ __forceinline__ TO run(TI x) { return kfd<TO>(kd(x)); }
};
template <class TO, class TI> struct KilnCvt<TO, TI, true> {
  static __device__ __forceinline__ TO run(TI x) { return kfi<TO>(ki(x)); }
};
template <class TO, class TI> __device__ __forceinline__ TO kcvt(TI x) {
  return KilnCvt<TO, TI, KilnIsInt<TO>::value && KilnIsInt<TI>::value>::run(x);
}

// ---------------------------------------------------------------- indexing

// Index type I: kiln_i64, or unsigned 32-bit when the host has checked that every element index and every operand
// offset fits (the "_32" kernels): 64-bit division is emulated in software and dominates a strided walk.
//
// The loop is unrolled over the fixed KILN_MAX_RANK with a guard, so every struct element is read at a constant
// index straight from the kernel's parameters. A loop with a variable index makes the compiler copy the structs
// into per-thread local memory (200 bytes a thread, measured: elementwise kernels ran ~20x below bandwidth).
template <class I>
__device__ __forceinline__ I kiln_offset(I i, const KilnShape& sh, const KilnStrides& st) {
  const int rank = (int)sh.rank;
  if (rank == 1) return i * (I)st.s[0];
  I off = 0;
#pragma unroll
  for (int d = KILN_MAX_RANK - 1; d >= 0; --d) {
    if (d < rank) {
      const I n = (I)sh.size[d];
      off += (i % n) * (I)st.s[d];
      i /= n;
    }
  }
  return off;
}

#define KILN_GRID_LOOP(i, n) \
  for (kiln_i64 i = (kiln_i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (kiln_i64)gridDim.x * blockDim.x)
#define KILN_GRID_LOOP_I(i, n) \
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (I)(n); i += (I)gridDim.x * blockDim.x)

// ---------------------------------------------------------------- copy / cast / fill

template <class I, class TI, class TO>
__device__ void kiln_copy(const TI* __restrict__ src, KilnShape sh, KilnStrides ss, TO* __restrict__ dst,
                          KilnStrides ds, kiln_i64 n) {
  KILN_GRID_LOOP_I(i, n) { dst[kiln_offset<I>(i, sh, ds)] = kcvt<TO>(src[kiln_offset<I>(i, sh, ss)]); }
}

// Four consecutive elements of the innermost dim a thread (the host checks that its size is a multiple of 4, so the
// four share one row): the strided offsets, a division per dim, are worked out once for the four. si and di are the
// innermost strides, passed on their own so no struct element is read at a variable index.
template <class I, class TI, class TO>
__device__ void kiln_copy4(const TI* __restrict__ src, KilnShape sh, KilnStrides ss, TO* __restrict__ dst,
                           KilnStrides ds, kiln_i64 groups, kiln_i64 si, kiln_i64 di) {
  KILN_GRID_LOOP_I(g, groups) {
    const I i = g * 4;
    const I so = kiln_offset<I>(i, sh, ss), dof = kiln_offset<I>(i, sh, ds);
#pragma unroll
    for (int k = 0; k < 4; k++) dst[dof + (I)k * (I)di] = kcvt<TO>(src[so + (I)k * (I)si]);
  }
}

#define KILN_COPY(NI, TI, NO, TO)                                                                            \
  extern "C" __global__ void kiln_copy_##NI##_##NO(const TI* src, KilnShape sh, KilnStrides ss, TO* dst,    \
                                                   KilnStrides ds, kiln_i64 n) {                            \
    kiln_pdl_enter();                                                                                       \
    kiln_copy<kiln_i64, TI, TO>(src, sh, ss, dst, ds, n);                                                    \
  }                                                                                                          \
  extern "C" __global__ void kiln_copy_##NI##_##NO##_32(const TI* src, KilnShape sh, KilnStrides ss, TO* dst,\
                                                        KilnStrides ds, kiln_i64 n) {                       \
    kiln_pdl_enter();                                                                                       \
    kiln_copy<unsigned, TI, TO>(src, sh, ss, dst, ds, n);                                                    \
  }                                                                                                          \
  extern "C" __global__ void kiln_copy_##NI##_##NO##_32x4(const TI* src, KilnShape sh, KilnStrides ss,      \
                                                          TO* dst, KilnStrides ds, kiln_i64 groups,         \
                                                          kiln_i64 si, kiln_i64 di) {                       \
    kiln_pdl_enter();                                                                                       \
    kiln_copy4<unsigned, TI, TO>(src, sh, ss, dst, ds, groups, si, di);                                      \
  }
#define KILN_COPY_FROM(NI, TI)                    \
  KILN_COPY(NI, TI, f32, float)                   \
  KILN_COPY(NI, TI, f64, double)                  \
  KILN_COPY(NI, TI, bf16, KilnB16)                \
  KILN_COPY(NI, TI, i32, int)                     \
  KILN_COPY(NI, TI, i64, kiln_i64)                \
  KILN_COPY(NI, TI, u8, unsigned char)            \
  KILN_COPY(NI, TI, b8, KilnBool)
KILN_COPY_FROM(f32, float)
KILN_COPY_FROM(f64, double)
KILN_COPY_FROM(bf16, KilnB16)
KILN_COPY_FROM(i32, int)
KILN_COPY_FROM(i64, kiln_i64)
KILN_COPY_FROM(u8, unsigned char)
KILN_COPY_FROM(b8, KilnBool)

template <class I, class T>
__device__ void kiln_fill(T* __restrict__ dst, KilnShape sh, KilnStrides ds, kiln_i64 n, double value) {
  const T v = kfd<T>(value);
  KILN_GRID_LOOP_I(i, n) { dst[kiln_offset<I>(i, sh, ds)] = v; }
}

#define KILN_FILL(N, T)                                                                                         \
  extern "C" __global__ void kiln_fill_##N(T* dst, KilnShape sh, KilnStrides ds, kiln_i64 n, double v) {      \
    kiln_pdl_enter();                                                                                         \
    kiln_fill<kiln_i64, T>(dst, sh, ds, n, v);                                                                  \
  }                                                                                                             \
  extern "C" __global__ void kiln_fill_##N##_32(T* dst, KilnShape sh, KilnStrides ds, kiln_i64 n, double v) { \
    kiln_pdl_enter();                                                                                         \
    kiln_fill<unsigned, T>(dst, sh, ds, n, v);                                                                  \
  }
KILN_FILL(f32, float)
KILN_FILL(f64, double)
KILN_FILL(bf16, KilnB16)
KILN_FILL(i32, int)
KILN_FILL(i64, kiln_i64)
KILN_FILL(u8, unsigned char)
KILN_FILL(b8, KilnBool)

// ---------------------------------------------------------------- pointwise math (f32, f64)

__device__ __forceinline__ float kexp(float x) { return expf(x); }
__device__ __forceinline__ double kexp(double x) { return exp(x); }
__device__ __forceinline__ float klog(float x) { return logf(x); }
__device__ __forceinline__ double klog(double x) { return log(x); }
__device__ __forceinline__ float ksqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double ksqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float krsqrt(float x) { return 1.f / sqrtf(x); }
__device__ __forceinline__ double krsqrt(double x) { return 1.0 / sqrt(x); }
__device__ __forceinline__ float ktanh(float x) { return tanhf(x); }
__device__ __forceinline__ double ktanh(double x) { return tanh(x); }
__device__ __forceinline__ float kcos(float x) { return cosf(x); }
__device__ __forceinline__ double kcos(double x) { return cos(x); }
__device__ __forceinline__ float ksin(float x) { return sinf(x); }
__device__ __forceinline__ double ksin(double x) { return sin(x); }

// op codes: the ordinal of Device.Unary / Device.Binary / Device.Compare
template <class T> __device__ __forceinline__ T kiln_unary_op(int op, T x) {
  switch (op) {
    case 0: return -x;
    case 1: return kexp(x);
    case 2: return klog(x);
    case 3: return ksqrt(x);
    case 4: return krsqrt(x);
    case 5: return ktanh(x);
    case 6: return T(1) / (T(1) + kexp(-x));
    case 7: return kcos(x);
    default: return ksin(x);
  }
}

template <class T> __device__ __forceinline__ T kiln_binary_op(int op, T a, T b) {
  switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    default: return (a != a || b != b) ? a + b : (a > b ? a : b);  // NaN propagates, as torch.maximum
  }
}

// out is written at i; an in-place add (CudaModelDevice.addInto) passes out == a with a's strides contiguous.
template <class I, class T>
__device__ void kiln_unary(const T* __restrict__ x, KilnShape sh, KilnStrides xs, T* __restrict__ out, kiln_i64 n,
                           int op) {
  KILN_GRID_LOOP_I(i, n) { out[i] = kiln_unary_op<T>(op, x[kiln_offset<I>(i, sh, xs)]); }
}

template <class I, class T>
__device__ void kiln_binary(const T* a, KilnStrides as, const T* __restrict__ b, KilnStrides bs, KilnShape sh,
                            T* out, kiln_i64 n, int op) {
  KILN_GRID_LOOP_I(i, n) {
    out[i] = kiln_binary_op<T>(op, a[kiln_offset<I>(i, sh, as)], b[kiln_offset<I>(i, sh, bs)]);
  }
}

template <class I, class T>
__device__ void kiln_compare(const T* __restrict__ a, KilnStrides as, const T* __restrict__ b, KilnStrides bs,
                             KilnShape sh, KilnBool* __restrict__ out, kiln_i64 n, int op) {
  KILN_GRID_LOOP_I(i, n) {
    const T x = a[kiln_offset<I>(i, sh, as)];
    const T y = b[kiln_offset<I>(i, sh, bs)];
    out[i].v = op == 0 ? x > y : x < y;
  }
}

template <class I, class T>
__device__ void kiln_where(const KilnBool* __restrict__ c, KilnStrides cs, const T* __restrict__ a, KilnStrides as,
                           const T* __restrict__ b, KilnStrides bs, KilnShape sh, T* __restrict__ out, kiln_i64 n) {
  KILN_GRID_LOOP_I(i, n) {
    out[i] = c[kiln_offset<I>(i, sh, cs)].v ? a[kiln_offset<I>(i, sh, as)] : b[kiln_offset<I>(i, sh, bs)];
  }
}

#define KILN_MATH_I(N, T, SUF, I)                                                                              \
  extern "C" __global__ void kiln_unary_##N##SUF(const T* x, KilnShape sh, KilnStrides xs, T* out, kiln_i64 n,    \
                                                 int op) {                                                       \
    kiln_pdl_enter();                                                                                            \
    kiln_unary<I, T>(x, sh, xs, out, n, op);                                                                     \
  }                                                                                                              \
  extern "C" __global__ void kiln_binary_##N##SUF(const T* a, KilnStrides as, const T* b, KilnStrides bs,       \
                                                  KilnShape sh, T* out, kiln_i64 n, int op) {                    \
    kiln_pdl_enter();                                                                                            \
    kiln_binary<I, T>(a, as, b, bs, sh, out, n, op);                                                             \
  }                                                                                                              \
  extern "C" __global__ void kiln_compare_##N##SUF(const T* a, KilnStrides as, const T* b, KilnStrides bs,      \
                                                   KilnShape sh, KilnBool* out, kiln_i64 n, int op) {            \
    kiln_pdl_enter();                                                                                            \
    kiln_compare<I, T>(a, as, b, bs, sh, out, n, op);                                                            \
  }                                                                                                              \
  extern "C" __global__ void kiln_where_##N##SUF(const KilnBool* c, KilnStrides cs, const T* a, KilnStrides as, \
                                                 const T* b, KilnStrides bs, KilnShape sh, T* out, kiln_i64 n) { \
    kiln_pdl_enter();                                                                                            \
    kiln_where<I, T>(c, cs, a, as, b, bs, sh, out, n);                                                           \
  }
#define KILN_MATH(N, T)             \
  KILN_MATH_I(N, T, , kiln_i64)     \
  KILN_MATH_I(N, T, _32, unsigned)
KILN_MATH(f32, float)
KILN_MATH(f64, double)

// ---------------------------------------------------------------- contiguous fast paths

// Four elements a thread through 16-byte loads, for the commonest shapes of a training step: an fp32 activation cast
// to bf16 for a GEMM, and adds of same-shaped fp32 tensors (residuals, gradient sums). The host checks that every
// operand is contiguous, equally shaped, a multiple of 4 long and aligned. kiln_pack_bf16 rounds to nearest even,
// as the strided cast does, so the two paths give the same bits.
extern "C" __global__ void kiln_cast4_f32_bf16(const float4* __restrict__ src, uint2* __restrict__ dst,
                                               kiln_i64 n4) {
  kiln_pdl_enter();
  KILN_GRID_LOOP(i, n4) {
    const float4 v = src[i];
    uint2 w;
    w.x = kiln_pack_bf16(v.x, v.y);
    w.y = kiln_pack_bf16(v.z, v.w);
    dst[i] = w;
  }
}

// out may be a (an in-place add): each element is read before it is written, by the same thread.
extern "C" __global__ void kiln_binary4_f32(const float4* a, const float4* __restrict__ b, float4* out, kiln_i64 n4,
                                            int op) {
  kiln_pdl_enter();
  KILN_GRID_LOOP(i, n4) {
    const float4 x = a[i];
    const float4 y = b[i];
    float4 r;
    r.x = kiln_binary_op<float>(op, x.x, y.x);
    r.y = kiln_binary_op<float>(op, x.y, y.y);
    r.z = kiln_binary_op<float>(op, x.z, y.z);
    r.w = kiln_binary_op<float>(op, x.w, y.w);
    out[i] = r;
  }
}

// kiln_binary4_f32 with one or both operands a GEMM output that mixed precision keeps in bf16 (Device.emptyGemmResult;
// the residual adds, the sum of two projections' input gradients): 4 bf16 through one 8-byte load, widened exactly,
// the result in fp32. A separate template from kiln_binary4_f32 because these are never in place, so every pointer
// is __restrict__ (kiln_binary4_f32 also serves addInto, whose out is a).
__device__ __forceinline__ float4 kiln_wide4(const float4* p, kiln_i64 i) { return p[i]; }
__device__ __forceinline__ float4 kiln_wide4(const uint2* p, kiln_i64 i) {
  const uint2 w = p[i];
  return make_float4(__uint_as_float(w.x << 16), __uint_as_float(w.x & 0xffff0000u), __uint_as_float(w.y << 16),
                     __uint_as_float(w.y & 0xffff0000u));
}
template <class A, class B>
__device__ void kiln_binary4_mixed(const A* __restrict__ a, const B* __restrict__ b, float4* __restrict__ out,
                                   kiln_i64 n4, int op) {
  KILN_GRID_LOOP(i, n4) {
    const float4 x = kiln_wide4(a, i);
    const float4 y = kiln_wide4(b, i);
    float4 r;
    r.x = kiln_binary_op<float>(op, x.x, y.x);
    r.y = kiln_binary_op<float>(op, x.y, y.y);
    r.z = kiln_binary_op<float>(op, x.z, y.z);
    r.w = kiln_binary_op<float>(op, x.w, y.w);
    out[i] = r;
  }
}
#define KILN_BINARY4_MIXED(NA, A, NB, B)                                                                      \
  extern "C" __global__ void kiln_binary4_##NA##_##NB(const A* a, const B* b, float4* out, kiln_i64 n4, int op) { \
    kiln_pdl_enter();                                                                                             \
    kiln_binary4_mixed<A, B>(a, b, out, n4, op);                                                               \
  }
KILN_BINARY4_MIXED(f32, float4, bf16, uint2)
KILN_BINARY4_MIXED(bf16, uint2, f32, float4)
KILN_BINARY4_MIXED(bf16, uint2, bf16, uint2)

// ---------------------------------------------------------------- reductions (f32, f64; sums in double)

// op: 0 sum, 1 max, 2 min (Reduction.SUM/MAX/MIN). Max and min propagate NaN, as torch.amax.
__device__ __forceinline__ double kiln_red_init(int op) {
  return op == 0 ? 0.0 : (op == 1 ? -(double)KILN_INF : (double)KILN_INF);
}
__device__ __forceinline__ double kiln_red(int op, double a, double b) {
  if (op == 0) return a + b;
  if (a != a || b != b) return a + b;
  return op == 1 ? (a > b ? a : b) : (a < b ? a : b);
}

__device__ __forceinline__ double kiln_warp_red(int op, double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = kiln_red(op, v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// out[r] = reduce(x[r, 0..cols)), x contiguous rows; one block per row.
template <class T>
__device__ void kiln_reduce_rows(const T* __restrict__ x, T* __restrict__ out, kiln_i64 rows, kiln_i64 cols, int op) {
  __shared__ double part[32];
  const kiln_i64 r = blockIdx.x;
  if (r >= rows) return;
  double acc = kiln_red_init(op);
  // Unrolled so that a thread's next loads are issued before its adds: one at a time, the loss's mean (one row of
  // 32,768, 256 threads) took 55 us on the H200, 16 us so with 1,024 threads.
#pragma unroll 8
  for (kiln_i64 c = threadIdx.x; c < cols; c += blockDim.x) acc = kiln_red(op, acc, (double)x[r * cols + c]);
  acc = kiln_warp_red(op, acc);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  if (lane == 0) part[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < warps ? part[lane] : kiln_red_init(op);
    acc = kiln_warp_red(op, acc);
    if (lane == 0) out[r] = (T)acc;
  }
}

// out[chunk, c] = reduce(x[r, c] for r in the chunk's rows), x contiguous [rows, cols]. Block: 32 columns x
// blockDim.x / 32 row lanes (coalesced reads along a row; the host launches 8 lanes, or 32 for chunks of 256 rows
// and more); gridDim.y chunks of rows. The host reduces the chunks in a second launch.
// O, the output's type, is T's, or float for bf16 (KilnB16) input: a gradient the GEMMs wrote in bf16 summed over its
// rows (LayerNorm's bias), widened exactly as it is read.
template <class T, class O>
__device__ void kiln_reduce_cols(const T* __restrict__ x, O* __restrict__ out, kiln_i64 rows, kiln_i64 cols, int op,
                                 kiln_i64 rows_per_chunk) {
  __shared__ double part[32][33];
  const kiln_i64 c = (kiln_i64)blockIdx.x * 32 + (threadIdx.x & 31);
  const int lane_row = threadIdx.x >> 5, lanes = blockDim.x >> 5;
  const kiln_i64 r0 = (kiln_i64)blockIdx.y * rows_per_chunk;
  const kiln_i64 r1 = kiln_min(r0 + rows_per_chunk, rows);
  double acc = kiln_red_init(op);
  if (c < cols) {
    // Unrolled so that four loads are in flight before the first add waits.
#pragma unroll 4
    for (kiln_i64 r = r0 + lane_row; r < r1; r += lanes) acc = kiln_red(op, acc, kd(x[r * cols + c]));
  }
  part[lane_row][threadIdx.x & 31] = acc;
  __syncthreads();
  if (lane_row == 0 && c < cols) {
    for (int k = 1; k < lanes; k++) acc = kiln_red(op, acc, part[k][threadIdx.x]);
    out[(kiln_i64)blockIdx.y * cols + c] = (O)acc;
  }
}

#define KILN_REDUCE(N, T)                                                                                      \
  extern "C" __global__ void kiln_reduce_rows_##N(const T* x, T* out, kiln_i64 rows, kiln_i64 cols, int op) { \
    kiln_pdl_enter();                                                                                         \
    kiln_reduce_rows<T>(x, out, rows, cols, op);                                                               \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(1024) kiln_reduce_cols_##N(const T* x, T* out, kiln_i64 rows, \
                                                                         kiln_i64 cols, int op,               \
                                                                         kiln_i64 rows_per_chunk) {           \
    kiln_pdl_enter();                                                                                         \
    kiln_reduce_cols<T, T>(x, out, rows, cols, op, rows_per_chunk);                                            \
  }
KILN_REDUCE(f32, float)
KILN_REDUCE(f64, double)
extern "C" __global__ void __launch_bounds__(1024) kiln_reduce_cols_bf16(const KilnB16* x, float* out, kiln_i64 rows,
                                                                        kiln_i64 cols, int op,
                                                                        kiln_i64 rows_per_chunk) {
  kiln_pdl_enter();
  kiln_reduce_cols<KilnB16, float>(x, out, rows, cols, op, rows_per_chunk);
}

// ---------------------------------------------------------------- embedding rows and last-dim picks

// err[0] = 1 + (first bad id found), err[1] = the bound it broke; written once (the first writer wins).
__device__ __forceinline__ bool kiln_check_id(kiln_i64 id, kiln_i64 bound, kiln_i64* err) {
  if (id >= 0 && id < bound) return true;
  if (atomicCAS((unsigned long long*)err, 0ull, (unsigned long long)(id + 1)) == 0ull) err[1] = bound;
  return false;
}

__device__ __forceinline__ void kiln_atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void kiln_atomic_add(double* p, double v) { atomicAdd(p, v); }

// out[i, :] = table[ids[i], :]; one block per id. Out-of-range ids give rows of zeros and set err.
template <class T, class I>
__device__ void kiln_gather_rows(const T* __restrict__ table, const I* __restrict__ ids, T* __restrict__ out,
                                 kiln_i64 count, kiln_i64 d, kiln_i64 rows, kiln_i64* err) {
  const kiln_i64 i = blockIdx.x;
  if (i >= count) return;
  const kiln_i64 id = (kiln_i64)ids[i];
  const bool ok = kiln_check_id(id, rows, err);
  for (kiln_i64 c = threadIdx.x; c < d; c += blockDim.x) out[i * d + c] = ok ? table[id * d + c] : T(0);
}

// dtable[ids[i], :] += src[i, :] (atomics: repeated ids add up, in no fixed order).
template <class T, class I>
__device__ void kiln_scatter_rows(T* __restrict__ dtable, const I* __restrict__ ids, const T* __restrict__ src,
                                  kiln_i64 count, kiln_i64 d, kiln_i64 rows, kiln_i64* err) {
  const kiln_i64 i = blockIdx.x;
  if (i >= count) return;
  const kiln_i64 id = (kiln_i64)ids[i];
  if (!kiln_check_id(id, rows, err)) return;
  for (kiln_i64 c = threadIdx.x; c < d; c += blockDim.x) kiln_atomic_add(dtable + id * d + c, src[i * d + c]);
}

// float4 forms of the two above, for fp32 rows of a multiple of 4 entries on 16-byte boundaries (the host checks; d4
// is the row's float4 count): a quarter of the memory instructions and index arithmetic. The scatter adds a float4
// with one vector reduction where the GPU has it (sm_90's red.global.add.v4.f32), else with four atomics. One
// element a thread, the scalar forms moved TinyStories' 32,768 rows of 512 at 2.7 TB/s (50 and 53 us under ncu).
__device__ __forceinline__ void kiln_atomic_add4(float4* p, float4 v) {
#if __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(p), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w)
               : "memory");
#else
  atomicAdd(&p->x, v.x);
  atomicAdd(&p->y, v.y);
  atomicAdd(&p->z, v.z);
  atomicAdd(&p->w, v.w);
#endif
}

template <class I>
__device__ void kiln_gather_rows4(const float4* __restrict__ table, const I* __restrict__ ids,
                                  float4* __restrict__ out, kiln_i64 count, kiln_i64 d4, kiln_i64 rows,
                                  kiln_i64* err) {
  const kiln_i64 i = blockIdx.x;
  if (i >= count) return;
  const kiln_i64 id = (kiln_i64)ids[i];
  const bool ok = kiln_check_id(id, rows, err);
  const float4* src = table + id * d4;
  float4* dst = out + i * d4;
  for (int c = threadIdx.x; c < d4; c += blockDim.x) dst[c] = ok ? src[c] : make_float4(0.f, 0.f, 0.f, 0.f);
}

template <class I>
__device__ void kiln_scatter_rows4(float4* __restrict__ dtable, const I* __restrict__ ids,
                                   const float4* __restrict__ src, kiln_i64 count, kiln_i64 d4, kiln_i64 rows,
                                   kiln_i64* err) {
  const kiln_i64 i = blockIdx.x;
  if (i >= count) return;
  const kiln_i64 id = (kiln_i64)ids[i];
  if (!kiln_check_id(id, rows, err)) return;
  float4* dst = dtable + id * d4;
  const float4* row = src + i * d4;
  for (int c = threadIdx.x; c < d4; c += blockDim.x) kiln_atomic_add4(dst + c, row[c]);
}

// out[r] = x[r, idx[r]] for x contiguous [rows, n].
template <class T, class I>
__device__ void kiln_pick(const T* __restrict__ x, const I* __restrict__ idx, T* __restrict__ out, kiln_i64 rows,
                          kiln_i64 n, kiln_i64* err) {
  KILN_GRID_LOOP(r, rows) {
    const kiln_i64 j = (kiln_i64)idx[r];
    out[r] = kiln_check_id(j, n, err) ? x[r * n + j] : T(0);
  }
}

// dx[r, idx[r, j]] += src[r, j] for dx contiguous [rows, n], idx and src contiguous [rows, k].
template <class T, class I>
__device__ void kiln_scatter_last(T* __restrict__ dx, const I* __restrict__ idx, const T* __restrict__ src,
                                  kiln_i64 rows, kiln_i64 n, kiln_i64 k, kiln_i64* err) {
  KILN_GRID_LOOP(e, rows * k) {
    const kiln_i64 r = e / k;
    const kiln_i64 j = (kiln_i64)idx[e];
    if (kiln_check_id(j, n, err)) kiln_atomic_add(dx + r * n + j, src[e]);
  }
}

#define KILN_INDEX(N, T, NI, I)                                                                                  \
  extern "C" __global__ void kiln_gather_rows_##N##_##NI(const T* table, const I* ids, T* out, kiln_i64 count, \
                                                         kiln_i64 d, kiln_i64 rows, kiln_i64* err) {            \
    kiln_pdl_enter();                                                                                           \
    kiln_gather_rows<T, I>(table, ids, out, count, d, rows, err);                                                \
  }                                                                                                              \
  extern "C" __global__ void kiln_scatter_rows_##N##_##NI(T* dtable, const I* ids, const T* src, kiln_i64 count,\
                                                          kiln_i64 d, kiln_i64 rows, kiln_i64* err) {           \
    kiln_pdl_enter();                                                                                           \
    kiln_scatter_rows<T, I>(dtable, ids, src, count, d, rows, err);                                              \
  }                                                                                                              \
  extern "C" __global__ void kiln_pick_##N##_##NI(const T* x, const I* idx, T* out, kiln_i64 rows, kiln_i64 n,  \
                                                  kiln_i64* err) {                                               \
    kiln_pdl_enter();                                                                                            \
    kiln_pick<T, I>(x, idx, out, rows, n, err);                                                                  \
  }                                                                                                              \
  extern "C" __global__ void kiln_scatter_last_##N##_##NI(T* dx, const I* idx, const T* src, kiln_i64 rows,     \
                                                          kiln_i64 n, kiln_i64 k, kiln_i64* err) {              \
    kiln_pdl_enter();                                                                                           \
    kiln_scatter_last<T, I>(dx, idx, src, rows, n, k, err);                                                      \
  }
KILN_INDEX(f32, float, i32, int)
KILN_INDEX(f32, float, i64, kiln_i64)
#define KILN_INDEX4(NI, I)                                                                                       \
  extern "C" __global__ void kiln_gather_rows4_f32_##NI(const float4* table, const I* ids, float4* out,         \
                                                        kiln_i64 count, kiln_i64 d4, kiln_i64 rows,             \
                                                        kiln_i64* err) {                                        \
    kiln_pdl_enter();                                                                                           \
    kiln_gather_rows4<I>(table, ids, out, count, d4, rows, err);                                                 \
  }                                                                                                              \
  extern "C" __global__ void kiln_scatter_rows4_f32_##NI(float4* dtable, const I* ids, const float4* src,       \
                                                         kiln_i64 count, kiln_i64 d4, kiln_i64 rows,            \
                                                         kiln_i64* err) {                                       \
    kiln_pdl_enter();                                                                                           \
    kiln_scatter_rows4<I>(dtable, ids, src, count, d4, rows, err);                                               \
  }
KILN_INDEX4(i32, int)
KILN_INDEX4(i64, kiln_i64)
KILN_INDEX(f64, double, i32, int)
KILN_INDEX(f64, double, i64, kiln_i64)

// ---------------------------------------------------------------- cross-entropy (Device.crossEntropy)

// Combines two (max, sum of exp(x - max)) pairs; (-inf, 0) is the empty pair.
template <class A> __device__ __forceinline__ void kiln_lse_merge(A& m, A& s, A m2, A s2) {
  const A mm = m > m2 ? m : m2;
  if (mm == -(A)KILN_INF) return;
  s = s * exp(m - mm) + s2 * exp(m2 - mm);
  m = mm;
}

// One block per row of x (contiguous [rows, v]), A the accumulation type. The row's log-sum-exp is found in one
// online sweep (max and sum of exponentials together), then:
//   dloss == nullptr (forward): out[r] = lse - x[r, target[r]];
//   else (backward):           out[r, j] = dloss[r] * (exp(x[r, j] - lse) - [j == target[r]]),
// the row read a second time (from L2 for rows of a language model's vocabulary). A target out of [0, v) is
// reported through err, as the other index kernels do.
template <class T, class A, class I>
__device__ void kiln_xent(const T* __restrict__ x, const I* __restrict__ target, const T* __restrict__ dloss,
                          T* __restrict__ out, kiln_i64 rows, kiln_i64 v, kiln_i64* err) {
  __shared__ A part_m[32], part_s[32];
  __shared__ A row_lse;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  for (kiln_i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * v;
    A m = -(A)KILN_INF, s = 0;
    for (kiln_i64 j = threadIdx.x; j < v; j += blockDim.x) {
      const A a = (A)row[j];
      if (a > m) {
        s = s * exp(m - a) + (A)1;
        m = a;
      } else if (m > -(A)KILN_INF) {
        s += exp(a - m);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      kiln_lse_merge(m, s, (A)__shfl_xor_sync(0xffffffffu, m, o), (A)__shfl_xor_sync(0xffffffffu, s, o));
    }
    if (lane == 0) {
      part_m[warp] = m;
      part_s[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
      m = lane < warps ? part_m[lane] : -(A)KILN_INF;
      s = lane < warps ? part_s[lane] : (A)0;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        kiln_lse_merge(m, s, (A)__shfl_xor_sync(0xffffffffu, m, o), (A)__shfl_xor_sync(0xffffffffu, s, o));
      }
      if (lane == 0) row_lse = m + log(s);
    }
    __syncthreads();
    const A lse = row_lse;
    const kiln_i64 t = (kiln_i64)target[r];
    if (dloss == nullptr) {
      if (threadIdx.x == 0) out[r] = kiln_check_id(t, v, err) ? (T)(lse - (A)row[t]) : (T)0;
    } else {
      const A g = (A)dloss[r];
      if (threadIdx.x == 0) kiln_check_id(t, v, err);
      T* o = out + r * v;
      for (kiln_i64 j = threadIdx.x; j < v; j += blockDim.x) {
        o[j] = (T)(g * (exp((A)row[j] - lse) - (j == t ? (A)1 : (A)0)));
      }
    }
    __syncthreads();  // part_m, part_s and row_lse are reused by the next row
  }
}
#define KILN_XENT(N, T, NI, I)                                                                                 \
  extern "C" __global__ void kiln_xent_##N##_##NI(const T* x, const I* target, const T* dloss, T* out,          \
                                                  kiln_i64 rows, kiln_i64 v, kiln_i64* err) {                   \
    kiln_pdl_enter();                                                                                           \
    kiln_xent<T, T, I>(x, target, dloss, out, rows, v, err);                                                     \
  }
KILN_XENT(f32, float, i32, int)
KILN_XENT(f32, float, i64, kiln_i64)
KILN_XENT(f64, double, i32, int)
KILN_XENT(f64, double, i64, kiln_i64)

// Block-wide max or sum of one value per thread (every thread gets the result); part holds 32 values.
template <class T>
__device__ __forceinline__ T kiln_block_reduce(T x, bool max, T* part) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const T y = __shfl_xor_sync(0xffffffffu, x, o);
    x = max ? (x > y ? x : y) : x + y;
  }
  if (lane == 0) part[warp] = x;
  __syncthreads();
  x = lane < warps ? part[lane] : (max ? -(T)KILN_INF : (T)0);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const T y = __shfl_xor_sync(0xffffffffu, x, o);
    x = max ? (x > y ? x : y) : x + y;
  }
  __syncthreads();  // part is reused by the next reduction
  return x;
}

// kiln_xent for rows of at most PER * blockDim.x entries (a language model's vocabulary): each thread keeps its
// PER entries of the row in registers, so the row is read from memory once, in both passes, and each exponential is
// computed once: max, then the sum of exp(x - max), then the loss or the gradient exp(x - max) / sum - [j == t].
template <class T, class I, int PER>
__device__ void kiln_xent_cached(const T* __restrict__ x, const I* __restrict__ target, const T* __restrict__ dloss,
                                 T* __restrict__ out, kiln_i64 rows, kiln_i64 v, kiln_i64* err) {
  __shared__ T part[32];
  for (kiln_i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * v;
    T e[PER];
    T m = -(T)KILN_INF;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const kiln_i64 j = threadIdx.x + (kiln_i64)i * blockDim.x;
      e[i] = j < v ? row[j] : -(T)KILN_INF;
      m = e[i] > m ? e[i] : m;
    }
    m = kiln_block_reduce(m, true, part);
    const T shift = m == -(T)KILN_INF ? (T)0 : m;  // a row of -inf logits: every exp is 0, lse is -inf
    T s = 0;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      e[i] = exp(e[i] - shift);
      s += e[i];
    }
    s = kiln_block_reduce(s, false, part);
    const kiln_i64 t = (kiln_i64)target[r];
    if (dloss == nullptr) {
      if (threadIdx.x == 0) out[r] = kiln_check_id(t, v, err) ? (T)(shift + log(s) - row[t]) : (T)0;
    } else {
      const T g = dloss[r];
      const T inv = (T)1 / s;
      if (threadIdx.x == 0) kiln_check_id(t, v, err);
      T* o = out + r * v;
#pragma unroll
      for (int i = 0; i < PER; ++i) {
        const kiln_i64 j = threadIdx.x + (kiln_i64)i * blockDim.x;
        if (j < v) o[j] = g * (e[i] * inv - (j == t ? (T)1 : (T)0));
      }
    }
  }
}
#define KILN_XENT_CACHED(N, T, NI, I)                                                                          \
  extern "C" __global__ void __launch_bounds__(1024) kiln_xent_cached_##N##_##NI(                            \
      const T* x, const I* target, const T* dloss, T* out, kiln_i64 rows, kiln_i64 v, kiln_i64* err) {         \
    kiln_pdl_enter();                                                                                          \
    kiln_xent_cached<T, I, 16>(x, target, dloss, out, rows, v, err);                                           \
  }
KILN_XENT_CACHED(f32, float, i32, int)
KILN_XENT_CACHED(f32, float, i64, kiln_i64)
KILN_XENT_CACHED(f64, double, i32, int)
KILN_XENT_CACHED(f64, double, i64, kiln_i64)

// kiln_xent_cached for rows whose length is a multiple of 4 and which start on 16 bytes (fp32) or 8 (bf16; the host
// checks): the same three steps on groups of 4, PER4 of them a thread, through 16-byte (fp32) or 8-byte (bf16) loads
// and 16-byte stores. At most 64 registers a thread (two blocks of 512 resident, three of TinyStories' 320): with 96,
// two rows at a time shared a multiprocessor and the forward pass read the logits at 1.6 TB/s. Per element this is a
// quarter of the index arithmetic and memory instructions of the scalar
// kernel, which ran at a third of the memory bandwidth on TinyStories' 32,768 x 10,000 logits. bf16 logits are what
// a mixed-precision LM head's GEMM writes (Device.emptyGemmResult): read as they are and widened (exactly); the loss
// and the gradient are fp32 as for fp32 logits. The backward may also write the gradient rounded to bf16 (out16,
// else null): mixed precision's GEMMs read that copy instead of casting the fp32 gradient again; out is null where
// that copy is all its readers need (Device.crossEntropyBackward's bf16Result).
__device__ __forceinline__ float4 kiln_load4(const float* p, int j) { return reinterpret_cast<const float4*>(p)[j]; }
__device__ __forceinline__ float4 kiln_load4(const unsigned short* p, int j) {
  const uint2 w = reinterpret_cast<const uint2*>(p)[j];
  return make_float4(__uint_as_float(w.x << 16), __uint_as_float(w.x & 0xffff0000u), __uint_as_float(w.y << 16),
                     __uint_as_float(w.y & 0xffff0000u));
}
// Group j of a bf16 row as its two packed words, and the packed pair of -inf placeholders past a row's end.
__device__ __forceinline__ uint2 kiln_load_raw4(const unsigned short* p, int j) {
  return reinterpret_cast<const uint2*>(p)[j];
}
#define KILN_BF16X2_NEG_INF 0xff80ff80u
// The larger of each half of two bf16 pairs (a NaN loses to a number, as in fmaxf).
__device__ __forceinline__ unsigned kiln_max_bf16x2(unsigned a, unsigned b) {
  unsigned r;
  asm("max.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ float kiln_load1(const float* p, kiln_i64 i) { return p[i]; }
__device__ __forceinline__ float kiln_load1(const unsigned short* p, kiln_i64 i) {
  return __uint_as_float((unsigned)p[i] << 16);
}
// Group j of a row's gradient, g · (p − onehot(t)) with p = e · scale: e · (g · scale) (gs), and g taken off the
// target's entry in the one group that holds it (tj = t / 4 as an int and tk = t % 4, kiln_xent_target4). Stored to o
// (fp32) and/or o16 (bf16), whichever is not null. Shared by the backward that reduces the row (kiln_xent_cached4) and
// the one that reads the saved log-sum-exp (kiln_xent_grad4, scale 1). The common group costs a multiply an entry and
// no 64-bit compares: the kernels were bound by the instructions they issued (ncu, kiln_xent_cached4 below).
__device__ __forceinline__ void kiln_xent_put_grad4(float4 e, float gs, float g, int j, int tj, int tk, float4* o,
                                                    uint2* o16) {
  float4 d = make_float4(e.x * gs, e.y * gs, e.z * gs, e.w * gs);
  if (j == tj) {
    d.x -= tk == 0 ? g : 0.f;
    d.y -= tk == 1 ? g : 0.f;
    d.z -= tk == 2 ? g : 0.f;
    d.w -= tk == 3 ? g : 0.f;
  }
  if (o != nullptr) o[j] = d;
  if (o16 != nullptr) o16[j] = make_uint2(kiln_pack_bf16(d.x, d.y), kiln_pack_bf16(d.z, d.w));
}
// The target's group and its entry in that group, for kiln_xent_put_grad4: group -1 for an id outside [0, v) (which
// kiln_check_id reports), so no group takes it, as no entry matched such an id before.
__device__ __forceinline__ int2 kiln_xent_target4(kiln_i64 t, kiln_i64 v) {
  return t >= 0 && t < v ? make_int2((int)(t >> 2), (int)(t & 3)) : make_int2(-1, 0);
}
// kiln_xent_cached4's forward may also write each row's log-sum-exp to lse_out (else null): the backward then takes
// kiln_xent_grad4, which needs no reduction (CudaModelDevice keeps lse per logits array while its scope is open).
// Given out16, the forward writes the row's bf16 gradient too, for a loss gradient g_ahead in every row (the mean's
// 1/n in a training step): the backward is then no pass at all (CudaModelDevice.xentAhead). Its values are the
// backward's own: the same registers, the same g (the host passes the fp32 value dloss would hold), the same steps.
template <class X, class I, int PER4>
__device__ void kiln_xent_cached4(const X* __restrict__ x, const I* __restrict__ target,
                                  const float* __restrict__ dloss, float* __restrict__ out,
                                  uint2* __restrict__ out16, float* __restrict__ lse_out, float g_ahead, kiln_i64 rows,
                                  kiln_i64 v, kiln_i64* err) {
  __shared__ float part[32];
  const int n4 = (int)(v >> 2);
  for (kiln_i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const X* row = x + r * v;
    float4 e[PER4];
    float m = -KILN_INF;
    if constexpr (sizeof(X) == 2) {
      // bf16: the groups stay packed until the exponentials, and the row's maximum is taken on the pairs as they are
      // (max.bf16x2, exact): half the max instructions and no widening for it. Where only the last group can run past
      // the row (the usual block size, a uniform test), the others load with no test and no -inf placeholder: an
      // out-of-row group's placeholder was an instruction an entry (ncu's per-instruction counts, TinyStories).
      uint2 w[PER4];
      if ((PER4 - 1) * (int)blockDim.x <= n4) {
#pragma unroll
        for (int i = 0; i < PER4 - 1; ++i) w[i] = kiln_load_raw4(row, threadIdx.x + i * blockDim.x);
        const int j = threadIdx.x + (PER4 - 1) * blockDim.x;
        w[PER4 - 1] = j < n4 ? kiln_load_raw4(row, j) : make_uint2(KILN_BF16X2_NEG_INF, KILN_BF16X2_NEG_INF);
      } else {
#pragma unroll
        for (int i = 0; i < PER4; ++i) {
          const int j = threadIdx.x + i * blockDim.x;
          w[i] = j < n4 ? kiln_load_raw4(row, j) : make_uint2(KILN_BF16X2_NEG_INF, KILN_BF16X2_NEG_INF);
        }
      }
      unsigned mp = KILN_BF16X2_NEG_INF;
#pragma unroll
      for (int i = 0; i < PER4; ++i) mp = kiln_max_bf16x2(mp, kiln_max_bf16x2(w[i].x, w[i].y));
      m = fmaxf(__uint_as_float(mp << 16), __uint_as_float(mp & 0xffff0000u));
#pragma unroll
      for (int i = 0; i < PER4; ++i)
        e[i] = make_float4(__uint_as_float(w[i].x << 16), __uint_as_float(w[i].x & 0xffff0000u),
                           __uint_as_float(w[i].y << 16), __uint_as_float(w[i].y & 0xffff0000u));
    } else {
#pragma unroll
      for (int i = 0; i < PER4; ++i) {
        const int j = threadIdx.x + i * blockDim.x;
        e[i] = j < n4 ? kiln_load4(row, j) : make_float4(-KILN_INF, -KILN_INF, -KILN_INF, -KILN_INF);
        m = fmaxf(m, fmaxf(fmaxf(e[i].x, e[i].y), fmaxf(e[i].z, e[i].w)));
      }
    }
    m = kiln_block_reduce(m, true, part);
    const float shift = m == -KILN_INF ? 0.f : m;  // a row of -inf logits: every exp is 0, lse is -inf
    // exp(x − shift) = 2^(x·log2 e − shift·log2 e): one FFMA and the special-function unit's 2^x, where expf's
    // accurate form took about ten instructions. With expf the kernel issued an instruction on two cycles in three
    // at TinyStories' shape while moving 2.8 TB/s (ncu): instructions, not bytes, bound it (47% and 3.2 TB/s now).
    const float sl2 = shift * KILN_LOG2E;
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < PER4; ++i) {
      e[i].x = kiln_exp2(fmaf(e[i].x, KILN_LOG2E, -sl2));
      e[i].y = kiln_exp2(fmaf(e[i].y, KILN_LOG2E, -sl2));
      e[i].z = kiln_exp2(fmaf(e[i].z, KILN_LOG2E, -sl2));
      e[i].w = kiln_exp2(fmaf(e[i].w, KILN_LOG2E, -sl2));
      s += (e[i].x + e[i].y) + (e[i].z + e[i].w);
    }
    s = kiln_block_reduce(s, false, part);
    const kiln_i64 t = (kiln_i64)target[r];
    if (dloss == nullptr) {
      if (threadIdx.x == 0) {
        const float lse = shift + logf(s);
        out[r] = kiln_check_id(t, v, err) ? lse - kiln_load1(row, t) : 0.f;
        if (lse_out != nullptr) lse_out[r] = lse;
      }
      if (out16 == nullptr) continue;
    }
    const float g = dloss == nullptr ? g_ahead : dloss[r];
    const float gs = g * (1.f / s);
    if (threadIdx.x == 0 && dloss != nullptr) kiln_check_id(t, v, err);
    const int2 tg = kiln_xent_target4(t, v);
    float4* o = dloss == nullptr || out == nullptr ? nullptr : reinterpret_cast<float4*>(out + r * v);
    uint2* o16 = out16 == nullptr ? nullptr : out16 + r * n4;
#pragma unroll
    for (int i = 0; i < PER4; ++i) {
      const int j = threadIdx.x + i * blockDim.x;
      if (j >= n4) continue;
      kiln_xent_put_grad4(e[i], gs, g, j, tg.x, tg.y, o, o16);
    }
  }
}
// The backward from the forward's lse (kiln_xent_cached4's lse_out): out[r, j] = dloss[r] * (exp(x[r, j] - lse[r])
// - [j == t]), the rows' layout and outputs as kiln_xent_cached4's. Each element depends on its own row's lse only,
// so there is no reduction and no barrier: a block's threads walk a row 4 entries at a time, loads of PER4 groups
// issued together, and stream the gradient out (TinyStories' logits: 0.66 GB read, 0.66 GB written).
template <class X, class I, int PER4>
__device__ void kiln_xent_grad4(const X* __restrict__ x, const I* __restrict__ target, const float* __restrict__ lse,
                                const float* __restrict__ dloss, float* __restrict__ out, uint2* __restrict__ out16,
                                kiln_i64 rows, kiln_i64 v, kiln_i64* err) {
  const int n4 = (int)(v >> 2);
  for (kiln_i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const X* row = x + r * v;
    const kiln_i64 t = (kiln_i64)target[r];
    if (threadIdx.x == 0) kiln_check_id(t, v, err);
    const float g = dloss[r], m = lse[r];
    const int2 tg = kiln_xent_target4(t, v);
    float4* o = out == nullptr ? nullptr : reinterpret_cast<float4*>(out + r * v);
    uint2* o16 = out16 == nullptr ? nullptr : out16 + r * n4;
    for (int j0 = threadIdx.x; j0 < n4; j0 += PER4 * blockDim.x) {
      float4 e[PER4];
#pragma unroll
      for (int i = 0; i < PER4; ++i) {
        const int j = j0 + i * blockDim.x;
        if (j < n4) e[i] = kiln_load4(row, j);
      }
#pragma unroll
      for (int i = 0; i < PER4; ++i) {
        const int j = j0 + i * blockDim.x;
        if (j >= n4) continue;
        kiln_xent_put_grad4(make_float4(expf(e[i].x - m), expf(e[i].y - m), expf(e[i].z - m), expf(e[i].w - m)), g, g,
                            j, tg.x, tg.y, o, o16);
      }
    }
  }
}
#define KILN_XENT_CACHED4(N, X, NI, I)                                                                         \
  extern "C" __global__ void __launch_bounds__(512, 2) kiln_xent_cached4_##N##_##NI(                             \
      const X* x, const I* target, const float* dloss, float* out, uint2* out16, float* lse_out, float g_ahead,  \
      kiln_i64 rows, kiln_i64 v, kiln_i64* err) {                                                              \
    kiln_pdl_enter();                                                                                          \
    kiln_xent_cached4<X, I, 8>(x, target, dloss, out, out16, lse_out, g_ahead, rows, v, err);                  \
  }                                                                                                            \
  extern "C" __global__ void kiln_xent_grad4_##N##_##NI(const X* x, const I* target, const float* lse,          \
                                                        const float* dloss, float* out, uint2* out16,           \
                                                        kiln_i64 rows, kiln_i64 v, kiln_i64* err) {             \
    kiln_pdl_enter();                                                                                           \
    kiln_xent_grad4<X, I, 4>(x, target, lse, dloss, out, out16, rows, v, err);                                 \
  }
KILN_XENT_CACHED4(f32, float, i32, int)
KILN_XENT_CACHED4(f32, float, i64, kiln_i64)
KILN_XENT_CACHED4(bf16, unsigned short, i32, int)
KILN_XENT_CACHED4(bf16, unsigned short, i64, kiln_i64)

// ---------------------------------------------------------------- rotary position embedding (Device.rope)

// cos and sin of a rotation angle given in double. For float results the angle is first reduced to [-pi, pi]
// (kiln_angle_reduce), then sincosf takes the short argument: within 3e-7 of the double cosine, at a fraction of double
// sincos's cost.
__device__ __forceinline__ void kiln_rope_cs(double angle, float* s, float* c) {
  sincosf(kiln_angle_reduce(angle), s, c);
}
__device__ __forceinline__ void kiln_rope_cs(double angle, double* s, double* c) { sincos(angle, s, c); }

// One warp per row (32 / half rows when half < 32): x and out are [n0, n1, n2, 2 * half] with their last dims contiguous and leading strides s0, s1,
// s2 and o0, o1, o2 (the head-split view of a projection is read in place, not copied first, and the result keeps its
// layout); pos is read through strides p0, p1, p2 over the same leading dims (0 where it broadcasts). Pair i of row r
// turns by sign * pos[r] * invFreq[i]. A row's index arithmetic is done once, not once per pair (it was most of the
// work). The cos and sin come from table ([tableRows][half] (cos, sin) pairs in float, computed on the host in
// double) when the position is in it; otherwise from the angle in double, as for T = double, which passes no table.
// invFreq is the host's theta^(-i / half), as the CPU device uses. out16, when not null, gets the result rounded to
// bf16 too, laid out as out (same offsets; the host checks they are even, for the paired 4-byte stores); out is null
// when that copy is the whole result (Device.rope's forGemms). paired:
// x's and out's row offsets are even (the host checks), so each pair moves as one vector.
#define KILN_ROPE_ROWS 4

// A (cos, sin) or (x[2i], x[2i+1]) pair as one vector load or store.
template <class T> struct kiln_pair;
template <> struct kiln_pair<float> { typedef float2 type; };
template <> struct kiln_pair<double> { typedef double2 type; };

// N is the row index type: unsigned int when the row count fits (the _32 kernels), as 64-bit division is emulated
// and was half of the kernel's time at TinyStories' width (two rows a warp).
template <class T, class I, class N>
__device__ void kiln_rope(const T* __restrict__ x, kiln_i64 n1, kiln_i64 n2, kiln_i64 s0, kiln_i64 s1, kiln_i64 s2,
                          const I* __restrict__ pos, kiln_i64 p0, kiln_i64 p1, kiln_i64 p2,
                          const double* __restrict__ invFreq, const float* __restrict__ table, kiln_i64 tableRows,
                          T* __restrict__ out, unsigned short* __restrict__ out16, kiln_i64 o0, kiln_i64 o1,
                          kiln_i64 o2, kiln_i64 rows, kiln_i64 half, double sign, int paired) {
  typedef typename kiln_pair<T>::type P;
  const int lane = threadIdx.x & 31;
  // Narrow rows (TinyStories' half = 16) share a warp, so no lane idles: rpw rows a warp, half lanes a row.
  const int rpw = half >= 32 ? 1 : 32 / (int)half;
  const int sub = rpw == 1 ? 0 : lane / (int)half;
  const int first = rpw == 1 ? lane : lane - sub * (int)half;
  const int step = rpw == 1 ? 32 : (int)half;
  if (sub >= rpw) return;
  // KILN_ROPE_ROWS groups of rpw consecutive rows a warp, their loads issued together: with one pair a lane and
  // one group a warp, each lane waited on a chain of three loads (position, table, x) for 16 bytes of work.
  const N warp = (N)blockIdx.x * (N)(blockDim.x >> 5) + (N)(threadIdx.x >> 5);
  const T* row[KILN_ROPE_ROWS];
  T* o[KILN_ROPE_ROWS];
  kiln_i64 oof[KILN_ROPE_ROWS];
  const float* cs_row[KILN_ROPE_ROWS];
  kiln_i64 p[KILN_ROPE_ROWS];
  bool live[KILN_ROPE_ROWS];
#pragma unroll
  for (int k = 0; k < KILN_ROPE_ROWS; ++k) {
    const N r = (warp * (N)KILN_ROPE_ROWS + (N)k) * (N)rpw + (N)sub;
    live[k] = (kiln_i64)r < rows;
    const N rr = live[k] ? r : (N)0;  // a row past the end reads row 0 and writes nothing
    const N i2 = rr % (N)n2, rest = rr / (N)n2, i1 = rest % (N)n1;
    const kiln_i64 i0 = rest / (N)n1;
    row[k] = x + i0 * s0 + (kiln_i64)i1 * s1 + (kiln_i64)i2 * s2;
    oof[k] = i0 * o0 + (kiln_i64)i1 * o1 + (kiln_i64)i2 * o2;
    o[k] = out == nullptr ? nullptr : out + oof[k];
    p[k] = (kiln_i64)pos[i0 * p0 + (kiln_i64)i1 * p1 + (kiln_i64)i2 * p2];
    cs_row[k] = table != nullptr && p[k] >= 0 && p[k] < tableRows ? table + 2 * p[k] * half : nullptr;
  }
  for (kiln_i64 i = first; i < half; i += step) {
    T x0[KILN_ROPE_ROWS], x1[KILN_ROPE_ROWS];
#pragma unroll
    for (int k = 0; k < KILN_ROPE_ROWS; ++k) {
      if (paired) {
        const P xy = *reinterpret_cast<const P*>(row[k] + 2 * i);
        x0[k] = xy.x;
        x1[k] = xy.y;
      } else {
        x0[k] = row[k][2 * i];
        x1[k] = row[k][2 * i + 1];
      }
    }
#pragma unroll
    for (int k = 0; k < KILN_ROPE_ROWS; ++k) {
      if (!live[k]) continue;
      T sn, cs;
      if (cs_row[k] != nullptr) {
        const float2 t = *reinterpret_cast<const float2*>(cs_row[k] + 2 * i);
        cs = (T)t.x;
        sn = sign < 0 ? -(T)t.y : (T)t.y;
      } else {
        kiln_rope_cs(sign * (double)p[k] * invFreq[i], &sn, &cs);
      }
      const T y0 = x0[k] * cs - x1[k] * sn, y1 = x0[k] * sn + x1[k] * cs;
      if (out == nullptr) {
        // forGemms: the bf16 copy below is the result
      } else if (paired) {
        P yy;
        yy.x = y0;
        yy.y = y1;
        *reinterpret_cast<P*>(o[k] + 2 * i) = yy;  // one 8-byte store: two 4-byte ones ran at half speed
      } else {
        o[k][2 * i] = y0;
        o[k][2 * i + 1] = y1;
      }
      if (out16 != nullptr) {
        // The bf16 copy laid out as out (mixed precision: what attention or the next GEMM reads).
        *reinterpret_cast<unsigned*>(out16 + oof[k] + 2 * i) = kiln_pack_bf16((float)y0, (float)y1);
      }
    }
  }
}
#define KILN_ROPE(N, T, NI, I, W, IDX)                                                                           \
  extern "C" __global__ void kiln_rope_##N##_##NI##W(const T* x, kiln_i64 n1, kiln_i64 n2, kiln_i64 s0, kiln_i64 s1, \
                                                  kiln_i64 s2, const I* pos, kiln_i64 p0, kiln_i64 p1,          \
                                                  kiln_i64 p2, const double* invFreq, const float* table,       \
                                                  kiln_i64 tableRows, T* out, unsigned short* out16,            \
                                                  kiln_i64 o0, kiln_i64 o1, kiln_i64 o2, kiln_i64 rows,         \
                                                  kiln_i64 half, double sign, int paired) {                     \
    kiln_pdl_enter();                                                                                           \
    kiln_rope<T, I, IDX>(x, n1, n2, s0, s1, s2, pos, p0, p1, p2, invFreq, table, tableRows, out, out16, o0, o1,   \
                         o2, rows, half, sign, paired);                                                          \
  }
KILN_ROPE(f32, float, i32, int, , kiln_i64)
KILN_ROPE(f32, float, i64, kiln_i64, , kiln_i64)
KILN_ROPE(f64, double, i32, int, , kiln_i64)
KILN_ROPE(f64, double, i64, kiln_i64, , kiln_i64)
KILN_ROPE(f32, float, i32, int, _32, unsigned)
KILN_ROPE(f32, float, i64, kiln_i64, _32, unsigned)
KILN_ROPE(f64, double, i32, int, _32, unsigned)
KILN_ROPE(f64, double, i64, kiln_i64, _32, unsigned)

// The common layout, fp32 (or bf16) x: every row of a token (all heads of a [b, s, (h d)] projection, walked in memory order by
// the host) is one contiguous span of span = heads * width elements sharing one position, width = 2 * half a
// multiple of 4. One warp per token then computes the token's offsets and loads its position once, and each
// lane moves float4s (two pairs) at 128-element steps. When width divides 128 (a power of two up to 128) a step keeps
// the lane's pair indices, so its (cos, sin) float4 comes from the table once; otherwise (xl's width 80) the pairs
// repeat with a period of steps, up to 8 of them held, and beyond that they are taken anew each step. The general kernel above did the row arithmetic for every 8 bytes of x and was compute-bound
// at a third of the memory bandwidth (TinyStories' width, half = 16). x, out and the spans start 16-byte aligned
// (the host checks); out16, when not null, is laid out as out, and out is null when out16 is the whole result.
// The token kernel's steps for a period of P steps: the lane's P (cos, sin) float4s are taken once, and each pass
// issues the loads of whole periods, 8 to 10 steps (or one period, if longer), before any of their stores, so that
// they are in flight together; 10 float4s keep the kernel within 128 registers, two blocks an SM. One step at a time
// a warp had one load outstanding and TinyStories' RoPE (period 1) ran at half the memory bandwidth; xl's (period
// 5), taking a table load (or two sincos, beyond the table) and a remainder per float4 of x, ran at 40% of it.
template <unsigned P, class X, class Pairs, class Rotate>
__device__ __forceinline__ void kiln_rope_tokens_periodic(const X* __restrict__ xr, unsigned lane, unsigned span,
                                                          unsigned width, Pairs pairs, Rotate rotate) {
  constexpr unsigned STEPS = P >= 10 ? P : P * (10 / P);
  float4 cs[P];
#pragma unroll
  for (unsigned u = 0; u < P; ++u) cs[u] = pairs(((4 * lane + 128 * u) % width) >> 1);
  for (unsigned e0 = 4 * lane; e0 < span; e0 += 128 * STEPS) {
    float4 v[STEPS];
#pragma unroll
    for (unsigned u = 0; u < STEPS; ++u) {
      if (e0 + u * 128 < span) v[u] = kiln_load4(xr + e0 + u * 128, 0);
    }
#pragma unroll
    for (unsigned u = 0; u < STEPS; ++u) {
      if (e0 + u * 128 < span) rotate(e0 + u * 128, v[u], cs[u % P]);
    }
  }
}

template <class X, class I>
__device__ void kiln_rope_tokens(const X* __restrict__ x, kiln_i64 n1, kiln_i64 s0, kiln_i64 s1,
                                 const I* __restrict__ pos, kiln_i64 p0, kiln_i64 p1,
                                 const double* __restrict__ invFreq, const float* __restrict__ table,
                                 kiln_i64 tableRows, float* __restrict__ out, unsigned short* __restrict__ out16,
                                 kiln_i64 o0, kiln_i64 o1, unsigned tokens, unsigned span, unsigned width,
                                 double sign) {
  const unsigned lane = threadIdx.x & 31;
  const unsigned token = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (token >= tokens) return;
  const unsigned t1 = token % (unsigned)n1;
  const kiln_i64 t0 = token / (unsigned)n1;
  const X* xr = x + t0 * s0 + (kiln_i64)t1 * s1;
  const kiln_i64 oo = t0 * o0 + (kiln_i64)t1 * o1;
  float* outr = out == nullptr ? nullptr : out + oo;
  const kiln_i64 p = (kiln_i64)pos[t0 * p0 + (kiln_i64)t1 * p1];
  const bool tabled = table != nullptr && p >= 0 && p < tableRows;
  const unsigned half = width >> 1;
  // (cos, sin) of pairs i and i + 1, from the table or computed, in the direction sign says.
  auto pairs = [&](unsigned i) {
    float4 cs;
    if (tabled) {
      cs = *reinterpret_cast<const float4*>(table + 2 * (p * (kiln_i64)half + i));
      if (sign < 0) {
        cs.y = -cs.y;
        cs.w = -cs.w;
      }
    } else {
      kiln_rope_cs(sign * (double)p * invFreq[i], &cs.y, &cs.x);
      kiln_rope_cs(sign * (double)p * invFreq[i + 1], &cs.w, &cs.z);
    }
    return cs;
  };
  auto rotate = [&](unsigned e, float4 v, float4 cs) {
    float4 y;
    y.x = v.x * cs.x - v.y * cs.y;
    y.y = v.x * cs.y + v.y * cs.x;
    y.z = v.z * cs.z - v.w * cs.w;
    y.w = v.z * cs.w + v.w * cs.z;
    if (out != nullptr) {
      *reinterpret_cast<float4*>(outr + e) = y;
    }
    if (out16 != nullptr) {
      uint2 w;
      w.x = kiln_pack_bf16(y.x, y.y);
      w.y = kiln_pack_bf16(y.z, y.w);
      *reinterpret_cast<uint2*>(out16 + oo + e) = w;
    }
  };
  // A lane's pairs repeat every period = width / gcd(width, 128) steps: 1 where width divides 128 (64, 32), 5 for
  // xl's 80, 3 for 96, 2 for 256. Up to 8, the period's (cos, sin) are taken once a lane
  // (kiln_rope_tokens_periodic).
  switch (width / min(width & (0u - width), 128u)) {
    case 1: kiln_rope_tokens_periodic<1>(xr, lane, span, width, pairs, rotate); return;
    case 2: kiln_rope_tokens_periodic<2>(xr, lane, span, width, pairs, rotate); return;
    case 3: kiln_rope_tokens_periodic<3>(xr, lane, span, width, pairs, rotate); return;
    case 4: kiln_rope_tokens_periodic<4>(xr, lane, span, width, pairs, rotate); return;
    case 5: kiln_rope_tokens_periodic<5>(xr, lane, span, width, pairs, rotate); return;
    case 6: kiln_rope_tokens_periodic<6>(xr, lane, span, width, pairs, rotate); return;
    case 7: kiln_rope_tokens_periodic<7>(xr, lane, span, width, pairs, rotate); return;
    case 8: kiln_rope_tokens_periodic<8>(xr, lane, span, width, pairs, rotate); return;
    default: break;
  }
  // Longer periods: each step takes its pairs anew.
  for (unsigned e = 4 * lane; e < span; e += 128) {
    rotate(e, kiln_load4(xr + e, 0), pairs((e % width) >> 1));
  }
}
#define KILN_ROPE_TOKENS(NX, X, NI, I)                                                                              \
  extern "C" __global__ void kiln_rope_tokens_##NX##_##NI(const X* x, kiln_i64 n1, kiln_i64 s0, kiln_i64 s1,         \
                                                       const I* pos, kiln_i64 p0, kiln_i64 p1,                        \
                                                       const double* invFreq, const float* table,                   \
                                                       kiln_i64 tableRows, float* out, unsigned short* out16,         \
                                                       kiln_i64 o0, kiln_i64 o1, unsigned tokens, unsigned span,      \
                                                       unsigned width, double sign) {                                \
    kiln_pdl_enter();                                                                                                \
    kiln_rope_tokens<X, I>(x, n1, s0, s1, pos, p0, p1, invFreq, table, tableRows, out, out16, o0, o1, tokens, span, \
                           width, sign);                                                                             \
  }
KILN_ROPE_TOKENS(f32, float, i32, int)
KILN_ROPE_TOKENS(f32, float, i64, kiln_i64)
// x a q or k projection kept in bf16 (Device.emptyGemmResult): 4 elements through one 8-byte load, widened exactly.
KILN_ROPE_TOKENS(bf16, unsigned short, i32, int)
KILN_ROPE_TOKENS(bf16, unsigned short, i64, kiln_i64)

// ---------------------------------------------------------------- squared norms (gradient clipping)

// *out += sum(x[i]^2) over this launch's blocks, in double; the host zeroes *out first. Block partials are added
// with a double atomic, so the last bits may differ from run to run (the sum only scales the clipping).
// *out += the block's sum of acc (one value a thread), with a double atomic.
__device__ __forceinline__ void kiln_block_sum_into(double acc, double* part, double* out) {
  acc = kiln_warp_red(0, acc);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  if (lane == 0) part[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < warps ? part[lane] : 0.0;
    acc = kiln_warp_red(0, acc);
    if (lane == 0) atomicAdd(out, acc);
  }
}

template <class T> __device__ void kiln_sumsq(const T* __restrict__ x, kiln_i64 n, double* out) {
  __shared__ double part[32];
  double acc = 0;
  KILN_GRID_LOOP(i, n) {
    double v;
    if constexpr (sizeof(T) == 2) {
      v = (double)kiln_to_float(x[i]);  // bf16
    } else {
      v = (double)x[i];
    }
    acc += v * v;
  }
  kiln_block_sum_into(acc, part, out);
}

// Every tensor of a table at once: out[i] += sum(x_i[j]^2), tensor i owning blocks [first_block_i, first_block_i+1)
// of KILN_SUMSQ_CHUNK elements each (the host zeroes out first). One launch for a model's gradients instead of one
// per tensor: TinyStories' 39 launches took 0.165 ms, most of it launch latency of tiny tensors.
struct KilnSumsqTensor {  // 32 bytes; CudaModelDevice.squaresTable writes the same layout
  const void* x;
  kiln_i64 numel;
  kiln_i64 first_block;
  kiln_i64 bf16;  // non-zero: x holds bf16 (a mixed-precision step's GEMM weight gradients), else fp32
};
#define KILN_SUMSQ_CHUNK 8192
// The squares of 8 bf16 (16 bytes) summed in fp32, for a double accumulator. Each square is exact in fp32 (8-bit
// significands), so the sum is within 7·2^-24 of the exact one, relative. A conversion to double for each of them,
// eight a 16-byte load, would keep the type-conversion pipe (16 a cycle per multiprocessor on sm_90) busy for about
// 70% of its cycles at the memory's full rate, by count. PyTorch's clip_grad_norm_ sums fp32 squares in fp32.
__device__ __forceinline__ float kiln_sumsq8_bf16(uint4 w) {
  const unsigned u[4] = {w.x, w.y, w.z, w.w};
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < 4; k++) {
    const float lo16 = __uint_as_float(u[k] << 16), hi16 = __uint_as_float(u[k] & 0xffff0000u);
    s = fmaf(lo16, lo16, s);
    s = fmaf(hi16, hi16, s);
  }
  return s;
}
extern "C" __global__ void kiln_sumsq_multi_f32(const KilnSumsqTensor* __restrict__ tensors, int count, double* out) {
  kiln_pdl_enter();
  __shared__ double part[32];
  const kiln_i64 b = blockIdx.x;
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (tensors[mid].first_block <= b) lo = mid; else hi = mid - 1;
  }
  const kiln_i64 start = (b - tensors[lo].first_block) * KILN_SUMSQ_CHUNK;
  const kiln_i64 end = kiln_min(start + (kiln_i64)KILN_SUMSQ_CHUNK, tensors[lo].numel);
  double acc = 0;
  // 16 bytes a load (8 bf16 or 4 floats) where the tensor starts on 16 bytes (chunks start on multiples of 8,192
  // elements), then the chunk's ragged end a value at a time: xl's 3.4 billion gradients at 2 bytes each were bound
  // by the loads' count, not their bytes.
  const bool wide = ((unsigned long long)tensors[lo].x & 15) == 0;
  kiln_i64 tail = start;
  if (tensors[lo].bf16) {
    const kiln_bf16* __restrict__ x = (const kiln_bf16*)tensors[lo].x;
    if (wide) {
      tail = start + (end - start) / 8 * 8;
      const kiln_i64 step = 8 * (kiln_i64)blockDim.x;
      kiln_i64 i = start + 8 * (kiln_i64)threadIdx.x;
      // Four loads in flight a thread before their arithmetic (a full chunk is four steps of 256 threads): one at a
      // time, xl's 6.8 GB of gradients took 2.16 ms, 3.2 TB/s.
      for (; i + 3 * step < tail; i += 4 * step) {
        uint4 w[4];
#pragma unroll
        for (int k = 0; k < 4; k++) w[k] = *(const uint4*)(x + i + k * step);
#pragma unroll
        for (int k = 0; k < 4; k++) acc += (double)kiln_sumsq8_bf16(w[k]);
      }
      for (; i < tail; i += step) acc += (double)kiln_sumsq8_bf16(*(const uint4*)(x + i));
    }
    for (kiln_i64 i = tail + threadIdx.x; i < end; i += blockDim.x) {
      const double v = (double)kiln_to_float(x[i]);
      acc += v * v;
    }
  } else {
    const float* __restrict__ x = (const float*)tensors[lo].x;
    if (wide) {
      tail = start + (end - start) / 4 * 4;
      for (kiln_i64 i = start + 4 * (kiln_i64)threadIdx.x; i < tail; i += 4 * (kiln_i64)blockDim.x) {
        const float4 f = *(const float4*)(x + i);
        acc += (double)f.x * f.x + (double)f.y * f.y + (double)f.z * f.z + (double)f.w * f.w;
      }
    }
    for (kiln_i64 i = tail + threadIdx.x; i < end; i += blockDim.x) {
      const double v = (double)x[i];
      acc += v * v;
    }
  }
  kiln_block_sum_into(acc, part, out + lo);
}

extern "C" __global__ void kiln_sumsq_f32(const float* x, kiln_i64 n, double* out) {
  kiln_pdl_enter();
  kiln_sumsq<float>(x, n, out);
}
extern "C" __global__ void kiln_sumsq_f64(const double* x, kiln_i64 n, double* out) {
  kiln_pdl_enter();
  kiln_sumsq<double>(x, n, out);
}
extern "C" __global__ void kiln_sumsq_bf16(const kiln_bf16* x, kiln_i64 n, double* out) {
  kiln_pdl_enter();
  kiln_sumsq<kiln_bf16>(x, n, out);
}
