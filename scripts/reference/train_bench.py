#!/usr/bin/env python3
"""The PyTorch side of `kiln bench train`: times full training steps (forward, cross-entropy, backward, AdamW) of the
CS336 Transformer LM on the CPU, and prints one JSON line with the result.

The model is the same functional CS336 LM as the reference fixtures (cs336_block_reference.py: RMSNorm, RoPE, causal
multi-head attention, SwiGLU, pre-norm blocks, untied LM head), written with plain torch ops the way a CS336 student
writes it in eager PyTorch, trained with torch.optim.AdamW on random token ids. Run with Debian's python3-torch
(`apt-get install python3-torch libopenblas0-pthread`; without OpenBLAS it silently falls back to reference BLAS).

  /usr/bin/python3 scripts/reference/train_bench.py --vocab 10000 --context 256 --d-model 256 --layers 4 \
      --heads 8 --d-ff 672 --batch 8 --steps 10 --warmup 2 --threads 2
"""

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from cs336_block_reference import cross_entropy, lm  # noqa: E402


def trunc_normal(shape, std):
    t = torch.empty(shape)
    torch.nn.init.trunc_normal_(t, mean=0.0, std=std, a=-3 * std, b=3 * std)
    return t


def init_params(vocab, d_model, layers, d_ff):
    def lin(d_out, d_in):
        return trunc_normal((d_out, d_in), math.sqrt(2.0 / (d_in + d_out)))

    p = {"token_embeddings.weight": trunc_normal((vocab, d_model), 1.0)}
    for i in range(layers):
        pre = "layers.%d." % i
        p[pre + "ln1.weight"] = torch.ones(d_model)
        p[pre + "ln2.weight"] = torch.ones(d_model)
        for name in ("q_proj", "k_proj", "v_proj", "output_proj"):
            p[pre + "attn.%s.weight" % name] = lin(d_model, d_model)
        p[pre + "ffn.w1.weight"] = lin(d_ff, d_model)
        p[pre + "ffn.w2.weight"] = lin(d_model, d_ff)
        p[pre + "ffn.w3.weight"] = lin(d_ff, d_model)
    p["ln_final.weight"] = torch.ones(d_model)
    p["lm_head.weight"] = lin(vocab, d_model)
    return {k: v.requires_grad_(True) for k, v in p.items()}


def sgemm_gflops(n=1024, reps=5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("vocab", 10000), ("context", 256), ("d-model", 256), ("layers", 4), ("heads", 8),
                          ("d-ff", 672), ("batch", 8), ("steps", 10), ("warmup", 2), ("threads", os.cpu_count())):
        ap.add_argument("--" + name, type=int, default=default)
    ap.add_argument("--theta", type=float, default=10000.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    params = init_params(a.vocab, a.d_model, a.layers, a.d_ff)
    opt = torch.optim.AdamW(params.values(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    positions = torch.arange(a.context, dtype=torch.int64)

    def step():
        x = torch.randint(0, a.vocab, (a.batch, a.context))
        y = torch.randint(0, a.vocab, (a.batch, a.context))
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(lm(x, positions, params, a.layers, a.heads, a.theta), y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    times = []
    loss = float("nan")
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({
        "peer": "PyTorch %s eager (CPU, %d threads)" % (torch.__version__, torch.get_num_threads()),
        # Debian's torch calls whatever libblas.so.3 points to; reference BLAS runs ~50x slower than OpenBLAS and
        # would make the comparison worthless, so the bench reports what a plain sgemm reaches here.
        "sgemm_gflops": sgemm_gflops(),
        "median_step_s": median,
        "best_step_s": times[0],
        "tokens_per_s": a.batch * a.context / median,
        "final_loss": loss,
    }))


if __name__ == "__main__":
    main()
