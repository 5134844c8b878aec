#!/usr/bin/env python3
"""PyTorch reference for `kiln forward`: model folders as a PyTorch/CS336 user has them, plus the expected outputs.

Writes under samples/src/test/resources/reference/forward/, one folder per model:

  <name>/config.json          the CS336 keys at the top level (vocab_size, context_length, d_model, num_layers,
                              num_heads, d_ff, rope_theta) and, for a variant, Kiln's variant keys
  <name>/model.safetensors    the weights under the CS336 state-dict names (float32)
  <name>/tokens.npy           token ids, int64 (batch, seq)
  <name>/targets.npy          next-token ids, int32 (batch, seq): kiln forward takes either width
  <name>/expected.safetensors logits_f32 / loss_f32 / grad_f32.<param>: PyTorch in float32;
                              logits_f64 / loss_f64 / grad_f64.<param>: the same float32 weights widened to float64

Folders: "cs336_tiny" (CS336's pre-norm RMSNorm / SwiGLU / RoPE model) and "variant_tiny" (post-norm, LayerNorm,
GeLU, learned positions, tied embeddings, QK-norm, z-loss 1e-2). The model code is scripts/reference/
cs336_block_reference.py's (the same module the inference engine's fixtures come from); the loss is the mean
cross-entropy over all positions plus, with z_loss > 0, z_loss * mean(logsumexp(logits)^2).

Run with Debian's python3-torch:  /usr/bin/python3 scripts/reference/cs336_forward_reference.py
The output is deterministic (torch.manual_seed); rerunning rewrites the same files.
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cs336_block_reference as ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "samples", "src", "test", "resources", "reference", "forward")

BASE = {"vocab_size": 32, "context_length": 16, "d_model": 16, "num_layers": 2, "num_heads": 4, "d_ff": 32,
        "rope_theta": 10000.0}

MODELS = {
    "cs336_tiny": {},
    "variant_tiny": {"norm_placement": "post", "norm": "layernorm", "ffn": "gelu", "positions": "learned",
                     "tied_embeddings": True, "qk_norm": True, "z_loss": 1e-2},
}


def loss_of(logits, targets, z_loss):
    loss = ref.cross_entropy(logits, targets)
    if z_loss > 0:
        loss = loss + z_loss * (torch.logsumexp(logits, dim=-1) ** 2).mean()
    return loss


def write(name, overrides, batch=2, seq=12):
    cfg = dict(ref.VARIANT_DEFAULTS)
    cfg.update(BASE)
    cfg["norm_eps"] = ref.EPS
    cfg.update(overrides)
    z_loss = cfg.get("z_loss", 0.0)
    p = ref.v_params(cfg)
    tokens = torch.randint(0, cfg["vocab_size"], (batch, seq))
    targets = torch.randint(0, cfg["vocab_size"], (batch, seq))
    positions = torch.arange(seq, dtype=torch.int64)

    expected = {}
    for suffix, params in (("f32", p), ("f64", ref.widen(p))):
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        logits = ref.v_lm(tokens, positions, leaves, cfg)
        loss = loss_of(logits, targets, z_loss)
        loss.backward()
        expected["logits_" + suffix] = logits.detach()
        expected["loss_" + suffix] = loss.detach().reshape(())
        for k, v in leaves.items():
            expected["grad_%s.%s" % (suffix, k)] = v.grad

    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    config = dict(BASE)
    config.update(overrides)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    ref.save_safetensors(os.path.join(d, "model.safetensors"), p, {"format": "pt"})
    np.save(os.path.join(d, "tokens.npy"), tokens.numpy().astype(np.int64))
    np.save(os.path.join(d, "targets.npy"), targets.numpy().astype(np.int32))
    ref.save_safetensors(os.path.join(d, "expected.safetensors"), expected,
                         {"torch": torch.__version__, "source": "scripts/reference/cs336_forward_reference.py"})


if __name__ == "__main__":
    torch.manual_seed(20250901)
    for n, o in MODELS.items():
        write(n, o)
