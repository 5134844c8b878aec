#!/usr/bin/env python3
"""PyTorch reference for Kiln's optimizers, learning-rate schedule and gradient clipping.

Writes runtime/src/test/resources/optim/optim_reference.json, which OptimReferenceTest compares against.
Run from the repository root with Debian's python3-torch:

    /usr/bin/python3 scripts/reference/optim_reference.py

The problem is small and fixed: two float32 parameters ([3, 4] and [5]) and a fixed sequence of gradients (random
normals at several scales, one tiny step to make eps matter, one all-zero step). Gradients are given rather than
computed from the parameters, so the fixtures test the update rules alone. The learning rate of every step comes
from CS336's cosine schedule, so the schedule is exercised through the optimizers too (step 0 has lr 0).

Cases:
  adamw_torch   torch.optim.AdamW (float32)
  adamw_cs336   CS336 assignment 1, Algorithm 1, written out below in float64 (the oracle for Kiln's default
                formula); it differs from torch.optim.AdamW in where eps is added (to sqrt(v), not to
                sqrt(v)/sqrt(1-beta2^t)) and in applying weight decay after the Adam step rather than before
  sgd, sgd_nesterov   torch.optim.SGD with momentum and (coupled) weight decay
  clip          torch.nn.utils.clip_grad_norm_ (max_norm/(norm+1e-6) when norm > max_norm)
  cosine        CS336's get_lr_cosine_schedule on a grid of steps
"""
import json
import math
import os

import torch

STEPS = 12
LR_MAX, LR_MIN, WARMUP, CYCLE = 0.05, 0.005, 3, 10
BETAS, EPS, WD = (0.9, 0.95), 1e-6, 0.1


def cosine_lr(t, lr_max, lr_min, warmup, cycle):
    """CS336's get_lr_cosine_schedule."""
    if t < warmup:
        return t / warmup * lr_max
    if t <= cycle:
        return lr_min + 0.5 * (1 + math.cos((t - warmup) / (cycle - warmup) * math.pi)) * (lr_max - lr_min)
    return lr_min


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def main():
    g = torch.Generator().manual_seed(1234)
    shapes = {"w": (3, 4), "b": (5,)}
    init = {n: torch.randn(s, generator=g, dtype=torch.float32) for n, s in shapes.items()}
    grads = []
    for step in range(STEPS):
        scale = [1.0, 0.1, 3.0, 1e-6, 0.5, 0.0, 1.0, 2.0, 0.01, 1.0, 0.3, 1.0][step]
        grads.append({n: (torch.randn(s, generator=g, dtype=torch.float32) * scale) for n, s in shapes.items()})
    lrs = [cosine_lr(t, LR_MAX, LR_MIN, WARMUP, CYCLE) for t in range(STEPS)]

    def run_torch(make):
        params = {n: torch.nn.Parameter(v.clone()) for n, v in init.items()}
        opt = make(list(params.values()))
        trace = []
        for t in range(STEPS):
            for group in opt.param_groups:
                group["lr"] = lrs[t]
            for n, p in params.items():
                p.grad = grads[t][n].clone()
            opt.step()
            trace.append({n: flat(p) for n, p in params.items()})
        return trace

    adamw_torch = run_torch(lambda ps: torch.optim.AdamW(ps, lr=LR_MAX, betas=BETAS, eps=EPS, weight_decay=WD))
    sgd = run_torch(lambda ps: torch.optim.SGD(ps, lr=LR_MAX, momentum=0.9, weight_decay=0.01))
    sgd_nesterov = run_torch(
        lambda ps: torch.optim.SGD(ps, lr=LR_MAX, momentum=0.9, weight_decay=0.01, nesterov=True))

    # CS336 Algorithm 1 in float64.
    theta = {n: v.double().clone() for n, v in init.items()}
    m = {n: torch.zeros_like(v) for n, v in theta.items()}
    v2 = {n: torch.zeros_like(v) for n, v in theta.items()}
    adamw_cs336 = []
    for t in range(1, STEPS + 1):
        lr = lrs[t - 1]
        for n in theta:
            gr = grads[t - 1][n].double()
            m[n] = BETAS[0] * m[n] + (1 - BETAS[0]) * gr
            v2[n] = BETAS[1] * v2[n] + (1 - BETAS[1]) * gr * gr
            alpha_t = lr * math.sqrt(1 - BETAS[1] ** t) / (1 - BETAS[0] ** t)
            theta[n] = theta[n] - alpha_t * m[n] / (torch.sqrt(v2[n]) + EPS)
            theta[n] = theta[n] - lr * WD * theta[n]
        adamw_cs336.append({n: flat(p) for n, p in theta.items()})

    clip_in = {n: torch.randn(s, generator=g, dtype=torch.float32) for n, s in shapes.items()}
    clip_params = {n: torch.nn.Parameter(torch.zeros(s)) for n, s in shapes.items()}
    for n, p in clip_params.items():
        p.grad = clip_in[n].clone()
    clip_norm = float(torch.nn.utils.clip_grad_norm_(list(clip_params.values()), max_norm=1.0))
    clip_out = {n: flat(p.grad) for n, p in clip_params.items()}

    cosine = {"max_lr": 1.0, "min_lr": 0.1, "warmup": 5, "cycle": 20,
              "lr": [cosine_lr(t, 1.0, 0.1, 5, 20) for t in range(26)]}

    out = {
        "torch_version": torch.__version__,
        "shapes": {n: list(s) for n, s in shapes.items()},
        "init": {n: flat(v) for n, v in init.items()},
        "grads": [{n: flat(x) for n, x in gs.items()} for gs in grads],
        "lr": lrs,
        "adamw": {"beta1": BETAS[0], "beta2": BETAS[1], "eps": EPS, "weight_decay": WD},
        "adamw_torch": adamw_torch,
        "adamw_cs336": adamw_cs336,
        "sgd": {"momentum": 0.9, "weight_decay": 0.01},
        "sgd_trace": sgd,
        "sgd_nesterov_trace": sgd_nesterov,
        "clip": {"max_norm": 1.0, "in": {n: flat(x) for n, x in clip_in.items()}, "norm": clip_norm, "out": clip_out},
        "cosine": cosine,
    }
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "runtime", "src", "test", "resources", "optim", "optim_reference.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f)
        f.write("\n")
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
