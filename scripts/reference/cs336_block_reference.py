#!/usr/bin/env python3
"""PyTorch reference fixtures for Kiln's eager interpreter (and, later, for generated forward and backward code).

Writes two small safetensors files under runtime/src/test/resources/reference/:

  cs336_block.safetensors  a CS336 pre-norm Transformer block with RoPE: weights, an input, positions, and the output
                           computed in float32 and in float64 (the same float32 weights widened).
  cs336_lm.safetensors     a tiny CS336 Transformer LM: weights, token ids, positions, targets, the float32 logits
                           and loss, and the float64 loss and its gradient with respect to every weight
                           ("grad.<name>"), for the training issue's backward tests.

The model follows the CS336 assignment-1 conventions, written out here with plain torch ops (no torch.nn layers):
weights are [d_out, d_in] and y = x W^T; RMSNorm is x / sqrt(mean(x^2) + eps) * g with eps = 1e-5; SwiGLU is
W2 (silu(W1 x) * W3 x); RoPE rotates the pairs (2i, 2i+1) of each head dim by position * theta^(-2i/d_head); heads
are consecutive slices of d_model; attention is causal softmax(q k^T / sqrt(d_head)) v; blocks are pre-norm.
State-dict names are the CS336 ones (layers.0.attn.q_proj.weight, ...).

Run with Debian's python3-torch:  /usr/bin/python3 scripts/reference/cs336_block_reference.py
The output is deterministic (torch.manual_seed); rerunning rewrites the same files.
"""

import json
import os
import struct

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "runtime", "src", "test", "resources", "reference")
EPS = 1e-5

DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}


def save_safetensors(path, tensors, metadata):
    """The safetensors format by hand (the safetensors package is not installed): little-endian u64 header length,
    a JSON header padded with spaces to a multiple of 8, then the raw row-major little-endian data."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        data = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def linear(x, w):
    return torch.einsum("...i,oi->...o", x, w)


def rms_norm(x, g):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + EPS) * g


def swiglu(x, p, prefix):
    a = linear(x, p[prefix + "w1.weight"])
    return linear(a * torch.sigmoid(a) * linear(x, p[prefix + "w3.weight"]), p[prefix + "w2.weight"])


def rope(x, positions, theta):
    d = x.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, dtype=x.dtype) / d)
    angle = positions.to(x.dtype)[:, None] * inv[None, :]
    cos, sin = torch.cos(angle), torch.sin(angle)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def attention(x, positions, p, prefix, heads, theta):
    b, s, d = x.shape
    dh = d // heads

    def split(t):
        return t.view(b, s, heads, dh).transpose(1, 2)

    q = rope(split(linear(x, p[prefix + "q_proj.weight"])), positions, theta)
    k = rope(split(linear(x, p[prefix + "k_proj.weight"])), positions, theta)
    v = split(linear(x, p[prefix + "v_proj.weight"]))
    scores = q @ k.transpose(-1, -2) / dh ** 0.5
    future = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    o = (weights @ v).transpose(1, 2).reshape(b, s, d)
    return linear(o, p[prefix + "output_proj.weight"])


def block(x, positions, p, prefix, heads, theta):
    h = x + attention(rms_norm(x, p[prefix + "ln1.weight"]), positions, p, prefix + "attn.", heads, theta)
    return h + swiglu(rms_norm(h, p[prefix + "ln2.weight"]), p, prefix + "ffn.")


def lm(tokens, positions, p, layers, heads, theta):
    x = p["token_embeddings.weight"][tokens]
    for i in range(layers):
        x = block(x, positions, p, "layers.%d." % i, heads, theta)
    return linear(rms_norm(x, p["ln_final.weight"]), p["lm_head.weight"])


def cross_entropy(logits, targets):
    z = logits.reshape(-1, logits.shape[-1])
    return -torch.log_softmax(z, dim=-1).gather(1, targets.reshape(-1, 1)).mean()


def block_params(d_model, d_ff, prefix=""):
    p = {}
    p[prefix + "ln1.weight"] = 1 + 0.2 * torch.randn(d_model)
    for name in ("q_proj", "k_proj", "v_proj", "output_proj"):
        p[prefix + "attn.%s.weight" % name] = torch.randn(d_model, d_model) / d_model ** 0.5
    p[prefix + "ln2.weight"] = 1 + 0.2 * torch.randn(d_model)
    p[prefix + "ffn.w1.weight"] = torch.randn(d_ff, d_model) / d_model ** 0.5
    p[prefix + "ffn.w2.weight"] = torch.randn(d_model, d_ff) / d_ff ** 0.5
    p[prefix + "ffn.w3.weight"] = torch.randn(d_ff, d_model) / d_model ** 0.5
    return p


def widen(p):
    return {k: v.double() for k, v in p.items()}


def write_block():
    d_model, heads, d_ff, theta = 32, 4, 64, 10000.0
    p = block_params(d_model, d_ff)
    x = torch.randn(2, 6, d_model)
    positions = torch.arange(3, 9, dtype=torch.int64)  # not starting at 0, so RoPE's offsets matter
    y32 = block(x, positions, p, "", heads, theta)
    y64 = block(x.double(), positions, widen(p), "", heads, theta)
    tensors = dict(p)
    tensors.update({"input.x": x, "input.positions": positions, "output.y_f32": y32, "output.y_f64": y64})
    config = {"d_model": d_model, "num_heads": heads, "d_ff": d_ff, "rope_theta": theta, "eps": EPS}
    save_safetensors(os.path.join(OUT, "cs336_block.safetensors"), tensors,
                     {"config": json.dumps(config), "torch": torch.__version__,
                      "source": "scripts/reference/cs336_block_reference.py"})


def write_lm():
    vocab, d_model, layers, heads, d_ff, theta, b, s = 40, 16, 2, 2, 32, 10000.0, 2, 8
    p = {"token_embeddings.weight": torch.randn(vocab, d_model)}
    for i in range(layers):
        p.update(block_params(d_model, d_ff, "layers.%d." % i))
    p["ln_final.weight"] = 1 + 0.2 * torch.randn(d_model)
    p["lm_head.weight"] = torch.randn(vocab, d_model) / d_model ** 0.5
    tokens = torch.randint(0, vocab, (b, s))
    targets = torch.randint(0, vocab, (b, s))
    positions = torch.arange(s, dtype=torch.int64)
    logits32 = lm(tokens, positions, p, layers, heads, theta)
    loss32 = cross_entropy(logits32, targets)
    p64 = {k: v.clone().requires_grad_(True) for k, v in widen(p).items()}
    loss64 = cross_entropy(lm(tokens, positions, p64, layers, heads, theta), targets)
    loss64.backward()
    tensors = dict(p)
    tensors.update({"input.tokens": tokens, "input.positions": positions, "input.targets": targets,
                    "output.logits_f32": logits32, "output.loss_f32": loss32.reshape(()),
                    "output.loss_f64": loss64.detach().reshape(())})
    for k, v in p64.items():
        tensors["grad." + k] = v.grad
    config = {"vocab_size": vocab, "d_model": d_model, "num_layers": layers, "num_heads": heads, "d_ff": d_ff,
              "rope_theta": theta, "eps": EPS}
    save_safetensors(os.path.join(OUT, "cs336_lm.safetensors"), tensors,
                     {"config": json.dumps(config), "torch": torch.__version__,
                      "source": "scripts/reference/cs336_block_reference.py"})


if __name__ == "__main__":
    torch.manual_seed(336)
    os.makedirs(OUT, exist_ok=True)
    write_block()
    write_lm()
