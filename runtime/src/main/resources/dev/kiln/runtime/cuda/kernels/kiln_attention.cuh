// Kiln CUDA kernels: what the two fused-attention sources (flash_attention.cu for every GPU, flash_attention_sm90a.cu
// for Hopper's warpgroup MMA) share: the layout of their [batch, heads, n, d] operands, the result stores and the
// loads of the per-row lse and dot vectors. Like kiln_common.cuh it includes no system header (NVRTC gets it by
// name from KernelLoader).
#pragma once
#include "kiln_common.cuh"

// Strides, in elements, of a [batch, heads, n, d] tensor's batch, head and row dims (d is contiguous).
struct kiln_attn_layout {
  kiln_i64 sb, sh, sr;
};

// Offset of the (b, h) slab that block row bh = b*heads + h works on.
__device__ __forceinline__ kiln_i64 kiln_attn_slab(const kiln_attn_layout& l, int bh, int heads) {
  return (kiln_i64)(bh / heads) * l.sb + (kiln_i64)(bh % heads) * l.sh;
}

// Two adjacent result columns from fp32 accumulators (the host checks the 4- or 8-byte alignment).
__device__ __forceinline__ void kiln_store_pair(kiln_bf16* p, float a, float b) {
  *(unsigned*)p = kiln_pack_bf16(a, b);
}
__device__ __forceinline__ void kiln_store_pair(float* p, float a, float b) {
  float2 v;
  v.x = a;
  v.y = b;
  *(float2*)p = v;
}

// ROWS consecutive fp32 entries of a [bh, n] vector (lse, dot) from row0 into shared memory, 4 bytes a cp.async;
// entries past n are zero.
template <int ROWS, int NT>
__device__ __forceinline__ void kiln_load_vec(float* s, const float* g, int row0, int n, int tid) {
  for (int i = tid; i < ROWS; i += NT) {
    const bool valid = row0 + i < n;
    kiln_cp_async4(s + i, valid ? g + row0 + i : g, valid);
  }
}
