#!/usr/bin/env python3
"""PyTorch peer of dev.kiln.runtime.cuda.bench.CudaBenchmark: the same shapes, timed the same way (CUDA events,
mean over repetitions after warm-up), printing lines in the same format so scripts/gpu-check.sh can join them.

  attention: torch.nn.functional.scaled_dot_product_attention, flash backend only, causal, bf16,
             [batch, heads, n, d] with batch = 16384 / n, heads = 2048 / d
  gemm:      a @ b.t() of bf16 matrices in CudaBenchmark.GEMM_SHAPES (cuBLAS/cuBLASLt underneath), bf16 out

  shapes:    the attention of the training benchmark's configs at their own shapes (TRAINING_SHAPES), causal,
             forward and forward+backward

  python3 attention_bench.py [REPS]         # attention (REPS repetitions, default 10), then the GEMMs
  python3 attention_bench.py gemm           # the GEMMs alone, as CudaBenchmark gemm
  python3 attention_bench.py shapes [REPS]  # the training configs' attention (default 100 repetitions), as
                                            # CudaBenchmark shapes
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

TOKENS, WIDTH = 16384, 2048


def timed(fn, reps):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def sdpa_times(gen, b, h, n, d, reps, warmup=2):
    """(forward ms, forward+backward ms) of causal flash SDPA on random bf16 [b, h, n, d] tensors, and its FLOPs."""
    mk = lambda: (torch.rand(b, h, n, d, device="cuda", generator=gen, dtype=torch.float32) * 2 - 1).to(
        torch.bfloat16)
    q, k, v, g = mk().requires_grad_(), mk().requires_grad_(), mk().requires_grad_(), mk()
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        def fwd():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        def fwdbwd():
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            out.backward(g)

        with torch.no_grad():
            for _ in range(warmup):
                fwd()
            t_fwd = timed(fwd, reps)
        for _ in range(warmup):
            fwdbwd()
        t_both = timed(fwdbwd, reps)
    return t_fwd, t_both, 3.5 * 4.0 * b * h * n * n * d / 2


def attention(reps):
    gen = torch.Generator(device="cuda").manual_seed(0)
    for d in (64, 128):
        for n in (1024, 2048, 4096, 8192, 16384):
            b, h = TOKENS // n, WIDTH // d
            t_fwd, t_both, flops = sdpa_times(gen, b, h, n, d, reps)
            print(f"BENCH attn d={d} n={n} b={b} h={h} fwd_ms={t_fwd:.4f} fwdbwd_ms={t_both:.4f} "
                  f"tflops={flops / (t_both * 1e-3) / 1e12:.1f}", flush=True)


# (config, batch, heads, n, d) of the training benchmark's attention, as CudaBenchmark.TRAINING_SHAPES.
TRAINING_SHAPES = [("tinystories", 128, 16, 256, 32), ("small", 4, 12, 512, 64), ("medium", 4, 16, 512, 64),
                   ("large", 4, 20, 512, 64), ("xl", 4, 32, 512, 80)]


def training_shapes(reps):
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name, b, h, n, d in TRAINING_SHAPES:
        t_fwd, t_both, flops = sdpa_times(gen, b, h, n, d, reps, warmup=3)
        print(f"BENCH attnshape config={name} d={d} n={n} b={b} h={h} fwd_ms={t_fwd:.4f} fwdbwd_ms={t_both:.4f} "
              f"tflops={flops / (t_both * 1e-3) / 1e12:.1f}", flush=True)


# (M, N, K) of C[M, N] = A[M, K] @ B[N, K]^T, as CudaBenchmark.GEMM_SHAPES.
GEMM_SHAPES = [(4096, 4096, 4096), (8192, 8192, 8192),
               (2048, 10240, 2560), (2048, 2560, 10240),
               (32768, 1344, 512), (32768, 512, 1344), (32768, 512, 512), (32768, 10000, 512)]


def gemm():
    for m, n, k in GEMM_SHAPES:
        a = torch.rand(m, k, device="cuda", dtype=torch.float32).to(torch.bfloat16) * 2 - 1
        b = torch.rand(n, k, device="cuda", dtype=torch.float32).to(torch.bfloat16) * 2 - 1
        bt = b.t()
        for _ in range(3):
            a @ bt
        ms = timed(lambda: a @ bt, 20)
        print(f"BENCH gemm shape={m}x{n}x{k} ms={ms:.4f} tflops={2.0 * m * n * k / (ms * 1e-3) / 1e12:.1f}",
              flush=True)


if __name__ == "__main__":
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    if len(sys.argv) > 1 and sys.argv[1] == "shapes":
        training_shapes(int(sys.argv[2]) if len(sys.argv) > 2 else 100)
        sys.exit(0)
    if not (len(sys.argv) > 1 and sys.argv[1] == "gemm"):
        attention(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
    gemm()
