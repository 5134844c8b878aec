// Kiln CUDA kernels: helpers shared by every .cu file in this folder.
//
// No system or CUDA headers are included, so the same source compiles with nvcc at build time and with NVRTC
// at run time (the runtime hands this file to NVRTC as the header "kiln_common.cuh"). bf16 values travel as
// raw 16-bit patterns (kiln_bf16) and are converted with PTX instructions (sm_80+).
#pragma once

typedef unsigned short kiln_bf16;
typedef long long kiln_i64;

#define KILN_LOG2E 1.4426950408889634f
#define KILN_LN2 0.6931471805599453f
#define KILN_INF __int_as_float(0x7f800000)

// Programmatic dependent launch (Hopper and later; CudaKernel). The runtime launches the kernels of a module that
// defines kiln_waits_at_entry with CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, so their blocks may be
// scheduled while the kernel before them in the stream is still running its last blocks. That is only safe because
// every kernel of such a module calls kiln_pdl_enter() before it touches memory: griddepcontrol.wait returns once
// the previous grid has completed and its writes are visible, and griddepcontrol.launch_dependents then lets the next
// kernel's blocks be scheduled (they wait at their own entry in turn, so this kernel's writes are complete before
// they read). Without the attribute (a plain launch, or a GPU before sm_90) both are no-ops.
// KernelEntriesTest checks that every kernel of these files starts with the call (KernelEntries).
extern "C" __device__ int kiln_waits_at_entry = 1;

__device__ __forceinline__ void kiln_pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Plain min: NVRTC compiles these sources without CUDA's math headers.
__device__ __forceinline__ int kiln_min(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ kiln_i64 kiln_min(kiln_i64 a, kiln_i64 b) { return a < b ? a : b; }

__device__ __forceinline__ float kiln_to_float(float x) { return x; }
__device__ __forceinline__ float kiln_to_float(kiln_bf16 x) { return __uint_as_float(((unsigned)x) << 16); }

// Round to nearest even, as PyTorch and Layouts.floatToBf16 do.
__device__ __forceinline__ unsigned kiln_pack_bf16(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ void kiln_store(float* p, float v) { *p = v; }
__device__ __forceinline__ void kiln_store(kiln_bf16* p, float v) { *p = (kiln_bf16)(kiln_pack_bf16(v, 0.f) & 0xffffu); }

// 2^x on the special-function unit; the attention kernels work in base 2 with log2(e) folded into the scale.
__device__ __forceinline__ float kiln_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float kiln_warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float kiln_warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ unsigned kiln_smem_addr(const void* p) {
  return (unsigned)__cvta_generic_to_shared(p);
}

// 16-byte global->shared copy that bypasses registers; when !valid it writes 16 zero bytes instead (src-size 0),
// which is how tiles past the end of a sequence are padded.
__device__ __forceinline__ void kiln_cp_async16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(kiln_smem_addr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void kiln_cp_async4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(kiln_smem_addr(smem)), "l"(gmem),
               "r"(valid ? 4 : 0));
}

__device__ __forceinline__ void kiln_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void kiln_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ldmatrix: four 8x8 b16 matrices; lane l gives the address of row (l & 7) of matrix (l >> 3).
__device__ __forceinline__ void kiln_ldsm_x4(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(kiln_smem_addr(p)));
}

// ldmatrix: two 8x8 b16 matrices; lanes 0-15 give the row addresses (lane l: row (l & 7) of matrix (l >> 3) & 1).
__device__ __forceinline__ void kiln_ldsm_x2(unsigned& r0, unsigned& r1, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(kiln_smem_addr(p)));
}

__device__ __forceinline__ void kiln_ldsm_x4_trans(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3,
                                                   const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(kiln_smem_addr(p)));
}

// D = A(16x16 bf16, row) * B(16x8 bf16, col) + D, fp32 accumulators.
__device__ __forceinline__ void kiln_mma_bf16(float* d, const unsigned* a, unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// A RoPE rotation angle given in double, reduced to [-pi, pi] in double (2*pi in two parts, so the reduction is exact to
// double rounding even at positions in the thousands) and rounded to float: the short argument that sincosf (the RoPE
// kernels) or __sincosf (the attention kernels that turn q and k as they load them) then takes.
// rint is taken as (x + 1.5·2^52) − 1.5·2^52, two FP64 adds (exactly rint for |x| < 2^51: the sum's spacing is 1 and
// 1.5·2^52 is even), not cvt.rni.f64: that is a type conversion, which sm_90 runs at a quarter of the FP64 rate on the
// pipe that also takes the exponentials of attention's softmax, where this runs for every RoPE pair.
__device__ __forceinline__ float kiln_angle_reduce(double angle) {
  const double magic = 6755399441055744.0;  // 1.5 · 2^52
  const double k = __dsub_rn(__dadd_rn(__dmul_rn(angle, 0.15915494309189535), magic), magic);
  double r = fma(-k, 6.283185307179586, angle);
  r = fma(-k, 2.4492935982947064e-16, r);
  return (float)r;
}
