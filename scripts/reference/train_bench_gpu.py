#!/usr/bin/env python3
"""PyTorch peer of Kiln's GPU training benchmark: times full training steps (forward, cross-entropy, backward,
global-norm gradient clipping, AdamW) of the CS336 Transformer LM, eager and under torch.compile, and prints one JSON
line per (config, mode).

The model is the CS336 LM of cs336_block_reference.py (RMSNorm with eps 1e-5, RoPE on the pairs (2i, 2i+1) of each
head, causal multi-head attention, SwiGLU w2(silu(w1 x) * w3 x), pre-norm blocks, untied LM head, no biases, weights
[d_out, d_in]), written as a torch.nn.Module the way it is trained on a GPU:

  - attention is F.scaled_dot_product_attention(q, k, v, is_causal=True), restricted to the flash backend on CUDA
    (a config flash cannot run reports an error instead of silently falling back); torch < 2.0 has no SDPA, and
    there the explicit masked softmax of the reference is used and the line says so ("attention");
  - bf16 mixed precision on CUDA: fp32 parameters, torch.autocast("cuda", dtype=torch.bfloat16) around forward and
    loss; RMSNorm and RoPE compute in fp32 and hand bf16 on (the CS336 convention); the loss is F.cross_entropy on the
    logits upcast to fp32; backward runs outside autocast;
  - gradient clipping as Kiln's step does it (max norm 1.0; --clip 0 leaves it out, as the step the Kiln issue
    quotes PyTorch figures for): torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm), multi-tensor kernels;
  - torch.optim.AdamW(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=True), zero_grad(set_to_none=True)
    every step (on the CPU, where old torch has no fused AdamW, it falls back to the default and the line says so);
  - init as in train_bench.py: truncated normals (std sqrt(2 / (d_in + d_out)) for matmul weights, 1 for the embedding,
    cut at 3 std), norm gains 1; torch.manual_seed(0) before building each model.

Modes: "eager" runs the module as is; "compile" runs torch.compile(model) (default mode). The compiled graph covers
forward and loss (the module's forward returns the loss); backward is compiled by AOTAutograd; the optimizer step is
not compiled (fused AdamW is already a few multi-tensor kernels). Compile time falls in the warm-up steps and is
reported separately as "warmup_s".

Data: random token ids and targets, uniform over the vocabulary, drawn from a torch.Generator seeded with 0 on the
device before timing: a pool of 8 batches cycled through, so no host-to-device copy or RNG kernel is timed.

What is timed (wall clock, time.perf_counter), after --warmup untimed steps:
  ms_per_step         torch.cuda.synchronize(); --steps steps back to back; synchronize(); elapsed / steps (a mean). The
                      CPU queues step i+1 while the GPU still runs step i, as in real training. tokens_per_s and mfu
                      use this figure.
  median_ms_per_step  a second pass of --steps steps with synchronize() before and after each one: the median of
                      those per-step times (includes the launch latency the first pass hides).
  peak_mem_gib        torch.cuda.max_memory_allocated() over warm-up and both passes, in GiB (2^30 bytes); null on
                      the CPU.

MFU (Kiln's Java side uses exactly the same):
  tokens          = batch * context
  N_matmul        = parameters that are matmul weights: q, k, v, output projections and w1, w2, w3 of every layer,
                    and lm_head; NOT the embedding table (a lookup), NOT the norm gains
                  = layers * (4 d^2 + 3 d d_ff) + vocab * d
  flops_per_step  = 6 * N_matmul * tokens + 6 * layers * context * d_model * tokens
                    (the second term is PaLM's attention term 12 * L * d * ctx per token, halved because causal
                    masking leaves half of the scores unused)
  mfu             = flops_per_step / (seconds_per_step * peak), peak = 989.4e12 FLOP/s (H200 dense bf16) unless
                    --peak-tflops says otherwise.

  config       params (all)   N_matmul       tokens/step  flops_per_step
  small          128,625,408    120,926,208   2,048        1,543,923,302,400
  medium         423,183,360    412,893,184   2,048        5,228,250,267,648
  large          969,411,840    956,518,400   2,048       12,043,608,391,680
  xl           3,406,809,600  3,381,043,200   2,048       42,061,654,917,120
  tinystories     22,696,448     17,571,840  32,768        3,557,843,533,824
  (--count prints these from the model itself, built on the meta device, next to the formula.)

Each JSON line has impl ("torch-eager" | "torch-compile"), config, params (every parameter, embedding and gains
included), ms_per_step, tokens_per_s, mfu, peak_mem_gib, torch, device, and details (median_ms_per_step, matmul_params,
flops_per_step, ...). A config that fails (out of memory, compile error, no flash kernel) prints a line with "error"
and the run goes on with the next one.

  python3 scripts/reference/train_bench_gpu.py                                  # all five configs, eager and compile
  python3 scripts/reference/train_bench_gpu.py --configs small,xl --modes compile --steps 50
  python3 scripts/reference/train_bench_gpu.py --device cpu --tiny --steps 2 --warmup 1 --modes eager   # smoke test
  python3 scripts/reference/train_bench_gpu.py --count                           # sizes and FLOPs only, no training
  python3 scripts/reference/train_bench_gpu.py --verify    # the module vs cs336_block_reference.py, float64, CPU

Compiling large and xl takes a while (every layer is traced); where one command has a time limit, run the configs in
separate invocations (--configs small,medium, then large, then xl, ...). Errors and tracebacks go to stderr; stdout
holds only the JSON lines.
"""

import argparse
import collections
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-5
ROPE_THETA = 10000.0
VOCAB = 10000
POOL = 8  # distinct batches, cycled
DEFAULT_PEAK_TFLOPS = 989.4  # H200 SXM dense bf16

CONFIGS = {
    #               d_model  d_ff  layers heads context batch
    "small":       (768,    3072,  12,    12,   512,    4),
    "medium":      (1024,   4096,  24,    16,   512,    4),
    "large":       (1280,   5120,  36,    20,   512,    4),
    "xl":          (2560,   10240, 32,    32,   512,    4),
    "tinystories": (512,    1344,  4,     16,   256,    128),
}


def config(name, tiny):
    d, dff, layers, heads, ctx, batch = CONFIGS[name]
    cfg = {"vocab": VOCAB, "d_model": d, "d_ff": dff, "layers": layers, "heads": heads, "context": ctx,
           "batch": batch, "theta": ROPE_THETA}
    if tiny:
        # Same vocabulary and d_ff / d_model ratio (rounded to a multiple of 8), everything else small enough for
        # seconds on a CPU.
        cfg.update(d_model=64, d_ff=max(8, round(dff / d * 64 / 8) * 8), layers=2, heads=4, context=32, batch=2)
    return cfg


def matmul_params(cfg):
    d, dff, layers = cfg["d_model"], cfg["d_ff"], cfg["layers"]
    return layers * (4 * d * d + 3 * d * dff) + cfg["vocab"] * d


def total_params(cfg):
    # + embedding table, two gains per layer, the final gain
    return matmul_params(cfg) + cfg["vocab"] * cfg["d_model"] + (2 * cfg["layers"] + 1) * cfg["d_model"]


def flops_per_step(cfg):
    tokens = cfg["batch"] * cfg["context"]
    return 6 * matmul_params(cfg) * tokens + 6 * cfg["layers"] * cfg["context"] * cfg["d_model"] * tokens


# ---------------------------------------------------------------- the model

def trunc_normal_(t, std):
    nn.init.trunc_normal_(t, mean=0.0, std=std, a=-3 * std, b=3 * std)
    return t


class Linear(nn.Module):
    """y = x W^T with W [d_out, d_in], no bias, CS336's init."""

    def __init__(self, d_in, d_out, device):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(d_out, d_in, device=device),
                                                 math.sqrt(2.0 / (d_in + d_out))))

    def forward(self, x):
        return F.linear(x, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, d, device):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d, device=device))

    def forward(self, x):
        # In fp32 (at least) whatever comes in (CS336: the mean of squares loses precision in bf16), handed back in
        # the input's dtype.
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + EPS) * self.weight
        return y.to(x.dtype)


class RoPE(nn.Module):
    """Rotates the pairs (2i, 2i+1) of each head by position * theta^(-2i/d_head); cos/sin precomputed for the
    context, in fp32 (float64 for --verify)."""

    def __init__(self, d_head, context, theta, device, dtype=torch.float32):
        super().__init__()
        inv = theta ** (-torch.arange(0, d_head, 2, dtype=dtype, device=device) / d_head)
        angle = torch.arange(context, dtype=dtype, device=device)[:, None] * inv[None, :]
        # [context, 1, d_head/2]: broadcasts over the heads of x [batch, context, heads, d_head/2]
        self.register_buffer("cos", torch.cos(angle)[:, None, :], persistent=False)
        self.register_buffer("sin", torch.sin(angle)[:, None, :], persistent=False)

    def forward(self, x):  # x [batch, seq, heads, d_head]
        s = x.shape[1]
        cos, sin = self.cos[:s], self.sin[:s]
        pairs = x.to(torch.promote_types(x.dtype, cos.dtype)).view(*x.shape[:-1], -1, 2)
        even, odd = pairs[..., 0], pairs[..., 1]
        y = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
        # Back to the projection's dtype (bf16 under autocast): the flash kernel takes bf16 only.
        return y.to(x.dtype)


HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


class Attention(nn.Module):
    def __init__(self, d, heads, context, theta, device):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = Linear(d, d, device), Linear(d, d, device)
        self.v_proj, self.output_proj = Linear(d, d, device), Linear(d, d, device)
        self.rope = RoPE(d // heads, context, theta, device)

    def forward(self, x):
        b, s, d = x.shape
        split = (b, s, self.heads, d // self.heads)
        q = self.rope(self.q_proj(x).view(split)).transpose(1, 2)  # [b, heads, s, d_head]
        k = self.rope(self.k_proj(x).view(split)).transpose(1, 2)
        v = self.v_proj(x).view(split).transpose(1, 2)
        if HAS_SDPA:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0: the reference's explicit causal softmax
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            future = torch.triu(torch.ones(s, s, dtype=torch.bool, device=x.device), diagonal=1)
            scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
            o = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1).to(v.dtype) @ v
        return self.output_proj(o.transpose(1, 2).reshape(b, s, d))


class SwiGLU(nn.Module):
    def __init__(self, d, d_ff, device):
        super().__init__()
        self.w1, self.w2, self.w3 = Linear(d, d_ff, device), Linear(d_ff, d, device), Linear(d, d_ff, device)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg, device):
        super().__init__()
        d = cfg["d_model"]
        self.ln1, self.ln2 = RMSNorm(d, device), RMSNorm(d, device)
        self.attn = Attention(d, cfg["heads"], cfg["context"], cfg["theta"], device)
        self.ffn = SwiGLU(d, cfg["d_ff"], device)

    def forward(self, x):
        h = x + self.attn(self.ln1(x))
        return h + self.ffn(self.ln2(h))


class TransformerLM(nn.Module):
    """CS336 LM; forward(tokens, targets) returns the mean cross-entropy, so torch.compile sees the loss too."""

    def __init__(self, cfg, device):
        super().__init__()
        self.token_embeddings = nn.Embedding(cfg["vocab"], cfg["d_model"], device=device)
        trunc_normal_(self.token_embeddings.weight.data, 1.0)
        self.layers = nn.ModuleList(Block(cfg, device) for _ in range(cfg["layers"]))
        self.ln_final = RMSNorm(cfg["d_model"], device)
        self.lm_head = Linear(cfg["d_model"], cfg["vocab"], device)

    def forward(self, tokens, targets):
        x = self.token_embeddings(tokens)
        for layer in self.layers:
            x = layer(x)
        logits = self.lm_head(self.ln_final(x))
        # bf16 logits (autocast) upcast to fp32 for the loss; float64 stays float64 (--verify)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def count(model):
    total = sum(p.numel() for p in model.parameters())
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, Linear))
    return total, matmul


# ---------------------------------------------------------------- the bench

def sdpa_flash_only(device):
    """Context that restricts SDPA to the flash kernel on CUDA (torch >= 2.3 API, then the 2.0-2.2 one)."""
    if device.type != "cuda" or not HAS_SDPA:
        return contextlib.nullcontext(), ("sdpa" if HAS_SDPA else "explicit-softmax")
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.FLASH_ATTENTION), "sdpa-flash"
    except ImportError:
        return torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False,
                                              enable_mem_efficient=False), "sdpa-flash"


def make_optimizer(model, device):
    kw = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    try:
        return torch.optim.AdamW(model.parameters(), fused=True, **kw), "adamw-fused"
    except (TypeError, RuntimeError, ValueError):
        if device.type == "cuda":
            raise  # the GPU comparison is against fused AdamW; no silent substitute
        return torch.optim.AdamW(model.parameters(), **kw), "adamw-default"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu %s (%d threads)" % (platform.processor() or platform.machine(), torch.get_num_threads())


def run(name, mode, args, device):
    cfg = config(name, args.tiny)
    line = {"impl": "torch-" + mode, "config": name}
    if mode == "compile" and not hasattr(torch, "compile"):
        raise RuntimeError("torch %s has no torch.compile (needs torch >= 2.0)" % torch.__version__)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = TransformerLM(cfg, device)
    params, matmul = count(model)
    if (params, matmul) != (total_params(cfg), matmul_params(cfg)):
        raise AssertionError("parameter count %d / matmul %d disagrees with the formula %d / %d"
                             % (params, matmul, total_params(cfg), matmul_params(cfg)))
    opt, opt_name = make_optimizer(model, device)
    fn = torch.compile(model) if mode == "compile" else model
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (cfg["batch"], cfg["context"])
    batches = [(torch.randint(0, cfg["vocab"], shape, generator=gen, device=device),
                torch.randint(0, cfg["vocab"], shape, generator=gen, device=device)) for _ in range(POOL)]
    bf16 = args.precision == "bf16"
    attn_ctx, attn_name = sdpa_flash_only(device)

    def step(i):
        x, y = batches[i % POOL]
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = fn(x, y)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    with attn_ctx:
        sync(device)
        t0 = time.perf_counter()
        for i in range(args.warmup):
            step(i)
        sync(device)
        warmup_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i)
        sync(device)
        bulk_s = (time.perf_counter() - t0) / args.steps

        per_step = []
        for i in range(args.steps):
            sync(device)
            t0 = time.perf_counter()
            loss = step(i)
            sync(device)
            per_step.append(time.perf_counter() - t0)
        if args.profile:
            print_profile(name, mode, step, device, args.profile)
        if args.cuda_profile_step:
            # One more step between cudaProfilerStart and cudaProfilerStop: what `ncu --profile-from-start off`
            # records, so that Nsight Compute times the peer's kernels of exactly one step, without the compilation
            # and autotuning before it (run-gpu-checks.sh's KILN_NCU_TORCH).
            sync(device)
            torch.cuda.cudart().cudaProfilerStart()
            step(args.warmup + 2 * args.steps)
            sync(device)
            torch.cuda.cudart().cudaProfilerStop()
    loss = loss.item()
    if not math.isfinite(loss):
        raise RuntimeError("loss is %r after %d steps" % (loss, args.warmup + 2 * args.steps))

    tokens = cfg["batch"] * cfg["context"]
    flops = flops_per_step(cfg)
    line.update({
        "params": params,
        "ms_per_step": round(bulk_s * 1e3, 4),
        "tokens_per_s": round(tokens / bulk_s, 1),
        "mfu": round(flops / (bulk_s * args.peak_tflops * 1e12), 6),
        "peak_mem_gib": (round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3)
                         if device.type == "cuda" else None),
        "torch": torch.__version__,
        "device": device_name(device),
        "median_ms_per_step": round(statistics.median(per_step) * 1e3, 4),
        "matmul_params": matmul,
        "flops_per_step": flops,
        "tokens_per_step": tokens,
        "peak_tflops": args.peak_tflops,
        "steps": args.steps,
        "warmup": args.warmup,
        "warmup_s": round(warmup_s, 3),
        "precision": "bf16-autocast" if bf16 else "fp32",
        "attention": attn_name,
        "optimizer": opt_name,
        "clip": args.clip,
        "loss": round(loss, 5),
        "model": {k: cfg[k] for k in ("vocab", "d_model", "d_ff", "layers", "heads", "context", "batch")},
    })
    if args.tiny:
        line["tiny"] = True
    return line


# Kernel families of the profile, by name: the first pattern that matches (Triton kernels are torch.compile's fusions).
KERNEL_FAMILIES = [
    ("attention", r"flash|fmha|attention"),  # before GEMMs: flash kernels' names hold "cutlass"
    ("GEMMs", r"gemm|nvjet|cutlass|xmma|sm90_|splitKreduce|cublas"),
    ("AdamW", r"adam"),
    ("Triton (fused by torch.compile)", r"^triton"),
    ("norms and multi-tensor ops", r"multi_tensor|norm|foreach"),
    ("elementwise and reductions (eager)", r"elementwise|reduce|vectorized|unrolled|softmax|nll|cross"),
]


def print_profile(name, mode, step, device, steps):
    """Runs `steps` more steps under torch.profiler and prints, on stderr, their GPU time per kernel family and the
    slowest kernels, per step: the peer's side of Kiln's per-kernel profile (kiln bench train prints Kiln's)."""
    import re
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        for i in range(steps):
            step(i)
        sync(device)
    kernels = collections.Counter()
    calls = collections.Counter()
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None)
        if us is None:
            us = getattr(e, "self_cuda_time_total", 0)
        # Kernels only: CPU ranges such as "Optimizer.step#AdamW.step" also carry the device time of their kernels.
        if us > 0 and "CUDA" in str(e.device_type) and "#" not in e.key and not e.key.startswith("aten::"):
            kernels[e.key] += us / 1e3 / steps
            calls[e.key] += e.count / steps
    families = collections.Counter()
    for k, ms in kernels.items():
        label = next((lab for lab, pat in KERNEL_FAMILIES if re.search(pat, k, re.I)), "other")
        families[label] += ms
    out = sys.stderr
    print("=== torch-%s %s: GPU ms per step by kernel family (torch.profiler, %d steps)" % (mode, name, steps), file=out)
    for label, ms in families.most_common():
        print("  %-40s %8.3f" % (label, ms), file=out)
    print("  %-40s %8.3f" % ("total", sum(families.values())), file=out)
    print("=== slowest kernels (ms per step, launches per step)", file=out)
    for k, ms in kernels.most_common(30):
        print("  %8.3f %5.0f  %s" % (ms, calls[k], k[:150]), file=out)
    out.flush()


def verify():
    """The module against the functional reference model (cs336_block_reference.py), both in float64 on the CPU on a
    tiny config: the loss and the gradient of every weight."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cs336_block_reference import cross_entropy, lm

    cfg = dict(config("small", True), vocab=97, context=12, batch=3)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = TransformerLM(cfg, cpu).double()
    for layer in model.layers:  # cos/sin computed in float64 too, as the reference does
        layer.attn.rope = RoPE(cfg["d_model"] // cfg["heads"], cfg["context"], cfg["theta"], cpu, torch.float64)
    with torch.no_grad():  # gains away from 1 so that a missing or misplaced gain shows
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(0.3 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["context"]), generator=gen)
    y = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["context"]), generator=gen)
    loss = model(x, y)
    loss.backward()
    ref = {k: v.detach().clone().requires_grad_(True) for k, v in model.state_dict().items()}
    ref_loss = cross_entropy(lm(x, torch.arange(cfg["context"]), ref, cfg["layers"], cfg["heads"], cfg["theta"]), y)
    ref_loss.backward()
    loss_diff = abs(loss.item() - ref_loss.item())
    grads = dict(model.named_parameters())
    if sorted(grads) != sorted(ref):
        raise AssertionError("parameter names differ from the reference: %s vs %s" % (sorted(grads), sorted(ref)))
    # Largest gradient difference relative to that gradient's largest entry.
    grad_diff = max(((grads[k].grad - ref[k].grad).abs().max() / ref[k].grad.abs().max().clamp_min(1e-300)).item()
                    for k in ref)
    # Both sides are float64 with the same math in a different order (rsqrt vs 1/sqrt, silu vs a*sigmoid(a), SDPA vs
    # masked softmax): differences are rounding, ~1e-15 relative; 1e-10 leaves room and still catches any real
    # difference (a wrong RoPE pairing, a missing gain, a non-causal mask give O(1e-2) or more).
    ok = loss_diff <= 1e-10 * abs(ref_loss.item()) and grad_diff <= 1e-10
    print(json.dumps({"verify": "ok" if ok else "FAILED", "loss": loss.item(), "reference_loss": ref_loss.item(),
                      "loss_diff": loss_diff, "max_grad_rel_diff": grad_diff, "params_compared": len(ref),
                      "attention": "sdpa" if HAS_SDPA else "explicit-softmax", "torch": torch.__version__}))
    return ok


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()  # drop compiled graphs (and their guards) before the next model


def parse_list(text, allowed, what):
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError("unknown %s %s; choose from %s" % (what, ",".join(bad) or "(none)",
                                                                            ",".join(allowed)))
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    type=lambda s: parse_list(s, list(CONFIGS), "config"),
                    help="comma-separated, from %s (default: all)" % ",".join(CONFIGS))
    ap.add_argument("--modes", default="eager,compile", type=lambda s: parse_list(s, ["eager", "compile"], "mode"),
                    help="comma-separated, from eager,compile (default: both)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per pass (default: 20)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first, compilation included (default: 5)")
    ap.add_argument("--clip", type=float, default=1.0,
                    help="global-norm gradient clipping before AdamW, as Kiln's step does (default: 1.0); 0 = none")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--precision", choices=["bf16", "fp32"],
                    help="bf16 = autocast bf16 around forward and loss (default on cuda); fp32 (default on cpu)")
    ap.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS,
                    help="peak FLOP/s for MFU, in TFLOP/s (default: %s, H200 dense bf16)" % DEFAULT_PEAK_TFLOPS)
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="after timing, run STEPS more steps under torch.profiler and print their GPU time per kernel "
                         "family and the slowest kernels on stderr (default: 0, none)")
    ap.add_argument("--cuda-profile-step", action="store_true",
                    help="after timing, run one more step between cudaProfilerStart and cudaProfilerStop, for "
                         "`ncu --profile-from-start off` (cuda only)")
    ap.add_argument("--tiny", action="store_true",
                    help="shrink every config (2 layers, d_model 64, 4 heads, context 32, batch 2) for smoke tests")
    ap.add_argument("--count", action="store_true",
                    help="print params, matmul params and FLOPs per step of each config (model built on the meta "
                         "device, checked against the formula) and exit")
    ap.add_argument("--verify", action="store_true",
                    help="check the module's loss and gradients against cs336_block_reference.py (float64, CPU, "
                         "tiny config) and exit; exit status 1 if they differ")
    args = ap.parse_args()
    if args.verify:
        sys.exit(0 if verify() else 1)
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    if not args.clip >= 0:
        ap.error("--clip must be >= 0 (0: no clipping)")
    if args.cuda_profile_step and args.device != "cuda":
        ap.error("--cuda-profile-step needs --device cuda")
    if args.precision is None:
        args.precision = "bf16" if args.device == "cuda" else "fp32"

    if args.count:
        for name in args.configs:
            cfg = config(name, args.tiny)
            params, matmul = count(TransformerLM(cfg, torch.device("meta")))
            print(json.dumps({"config": name, "params": params, "params_formula": total_params(cfg),
                              "matmul_params": matmul, "matmul_params_formula": matmul_params(cfg),
                              "tokens_per_step": cfg["batch"] * cfg["context"],
                              "flops_per_step": flops_per_step(cfg)}), flush=True)
        return

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("train_bench_gpu.py: torch %s sees no CUDA device; use --device cpu for a smoke test"
                 % torch.__version__)
    device = torch.device(args.device)
    for name in args.configs:
        for mode in args.modes:
            try:
                line = run(name, mode, args, device)
            except Exception as e:  # OOM, compile failure, no flash kernel: report it and go on with the next one
                traceback.print_exc(file=sys.stderr)
                line = {"impl": "torch-" + mode, "config": name, "error": ("%s: %s" % (type(e).__name__, e))[:2000],
                        "torch": torch.__version__, "device": device_name(device)}
                if args.tiny:
                    line["tiny"] = True
            # The exception (and its traceback, which holds the model's frame) is gone here; free before the next.
            free(device)
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
