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

With the argument "variants" it writes instead, under runtime/src/test/resources/reference/lm_variants/, one tiny LM
per architecture variant of Kiln's model config (post-norm, no norm, LayerNorm, the FFN kinds, NoPE, learned
positions, tied embeddings, QK-norm, and two combinations): weights, token ids, and the float32 and float64 logits.
The variants follow docs/inference.md: post-norm is x = norm(x + sublayer(x)) and keeps ln_final; "none" drops every
norm including ln_final; LayerNorm has a weight and a bias and the biased variance (torch.nn.functional.layer_norm);
GeLU is the tanh form; the plain FFNs are w2 act(w1 x); squared ReLU is relu(x)^2; learned positions add
position_embeddings.weight[p] to the token embedding; tied embeddings use token_embeddings.weight as the LM head (no
lm_head.weight); QK-norm normalises each head's queries and keys over d_head (the model's norm type, gains
[d_head] shared by the heads) before RoPE.

Run with Debian's python3-torch:  /usr/bin/python3 scripts/reference/cs336_block_reference.py [variants]
The output is deterministic (torch.manual_seed); rerunning rewrites the same files.
"""

import json
import os
import struct
import sys

import torch
import torch.nn.functional as F

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


# ---------------------------------------------------------------- architecture variants

VARIANT_DEFAULTS = {"norm_placement": "pre", "norm": "rmsnorm", "ffn": "swiglu", "positions": "rope",
                    "tied_embeddings": False, "qk_norm": False}

VARIANTS = {
    "post_norm": {"norm_placement": "post"},
    "no_norm": {"norm_placement": "none"},
    "layernorm": {"norm": "layernorm"},
    "silu": {"ffn": "silu"},
    "gelu": {"ffn": "gelu"},
    "relu": {"ffn": "relu"},
    "squared_relu": {"ffn": "squared_relu"},
    "nope": {"positions": "nope"},
    "learned_positions": {"positions": "learned"},
    "tied_embeddings": {"tied_embeddings": True},
    "qk_norm": {"qk_norm": True},
    "post_layernorm_gelu_learned_tied_qk": {"norm_placement": "post", "norm": "layernorm", "ffn": "gelu",
                                            "positions": "learned", "tied_embeddings": True, "qk_norm": True},
    "none_squared_relu_nope_qk_layernorm": {"norm_placement": "none", "ffn": "squared_relu", "positions": "nope",
                                            "qk_norm": True, "norm": "layernorm"},
}


def v_norm(x, p, prefix, cfg):
    if cfg["norm"] == "layernorm":
        return F.layer_norm(x, (x.shape[-1],), p[prefix + ".weight"], p[prefix + ".bias"], EPS)
    return rms_norm(x, p[prefix + ".weight"])


def v_attention(x, positions, p, prefix, cfg):
    b, s, d = x.shape
    heads = cfg["num_heads"]
    dh = d // heads

    def split(t):
        return t.view(b, s, heads, dh).transpose(1, 2)

    q = split(linear(x, p[prefix + "q_proj.weight"]))
    k = split(linear(x, p[prefix + "k_proj.weight"]))
    v = split(linear(x, p[prefix + "v_proj.weight"]))
    if cfg["qk_norm"]:
        q = v_norm(q, p, prefix + "q_norm", cfg)
        k = v_norm(k, p, prefix + "k_norm", cfg)
    if cfg["positions"] == "rope":
        q = rope(q, positions, cfg["rope_theta"])
        k = rope(k, positions, cfg["rope_theta"])
    scores = q @ k.transpose(-1, -2) / dh ** 0.5
    future = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    o = (weights @ v).transpose(1, 2).reshape(b, s, d)
    return linear(o, p[prefix + "output_proj.weight"])


def v_ffn(x, p, prefix, cfg):
    if cfg["ffn"] == "swiglu":
        return swiglu(x, p, prefix)
    a = linear(x, p[prefix + "w1.weight"])
    act = {"silu": F.silu, "gelu": lambda t: F.gelu(t, approximate="tanh"), "relu": F.relu,
           "squared_relu": lambda t: F.relu(t) ** 2}[cfg["ffn"]]
    return linear(act(a), p[prefix + "w2.weight"])


def v_block(x, positions, p, prefix, cfg):
    placement = cfg["norm_placement"]
    if placement == "pre":
        h = x + v_attention(v_norm(x, p, prefix + "ln1", cfg), positions, p, prefix + "attn.", cfg)
        return h + v_ffn(v_norm(h, p, prefix + "ln2", cfg), p, prefix + "ffn.", cfg)
    if placement == "post":
        h = v_norm(x + v_attention(x, positions, p, prefix + "attn.", cfg), p, prefix + "ln1", cfg)
        return v_norm(h + v_ffn(h, p, prefix + "ffn.", cfg), p, prefix + "ln2", cfg)
    h = x + v_attention(x, positions, p, prefix + "attn.", cfg)
    return h + v_ffn(h, p, prefix + "ffn.", cfg)


def v_lm(tokens, positions, p, cfg):
    x = p["token_embeddings.weight"][tokens]
    if cfg["positions"] == "learned":
        x = x + p["position_embeddings.weight"][positions]
    for i in range(cfg["num_layers"]):
        x = v_block(x, positions, p, "layers.%d." % i, cfg)
    if cfg["norm_placement"] != "none":
        x = v_norm(x, p, "ln_final", cfg)
    head = p["token_embeddings.weight"] if cfg["tied_embeddings"] else p["lm_head.weight"]
    return linear(x, head)


def v_params(cfg):
    d, dff, dh = cfg["d_model"], cfg["d_ff"], cfg["d_model"] // cfg["num_heads"]
    layernorm = cfg["norm"] == "layernorm"

    def norm(prefix, n):
        p[prefix + ".weight"] = 1 + 0.2 * torch.randn(n)
        if layernorm:
            p[prefix + ".bias"] = 0.1 * torch.randn(n)

    p = {"token_embeddings.weight": torch.randn(cfg["vocab_size"], d)}
    if cfg["positions"] == "learned":
        p["position_embeddings.weight"] = 0.5 * torch.randn(cfg["context_length"], d)
    for i in range(cfg["num_layers"]):
        pre = "layers.%d." % i
        if cfg["norm_placement"] != "none":
            norm(pre + "ln1", d)
        for name in ("q_proj", "k_proj", "v_proj", "output_proj"):
            p[pre + "attn.%s.weight" % name] = torch.randn(d, d) / d ** 0.5
        if cfg["qk_norm"]:
            norm(pre + "attn.q_norm", dh)
            norm(pre + "attn.k_norm", dh)
        if cfg["norm_placement"] != "none":
            norm(pre + "ln2", d)
        p[pre + "ffn.w1.weight"] = torch.randn(dff, d) / d ** 0.5
        p[pre + "ffn.w2.weight"] = torch.randn(d, dff) / dff ** 0.5
        if cfg["ffn"] == "swiglu":
            p[pre + "ffn.w3.weight"] = torch.randn(dff, d) / d ** 0.5
    if cfg["norm_placement"] != "none":
        norm("ln_final", d)
    if not cfg["tied_embeddings"]:
        p["lm_head.weight"] = torch.randn(cfg["vocab_size"], d) / d ** 0.5
    return p


def write_variants():
    out = os.path.join(OUT, "lm_variants")
    os.makedirs(out, exist_ok=True)
    for name, overrides in VARIANTS.items():
        cfg = {"vocab_size": 24, "context_length": 8, "d_model": 8, "num_layers": 2, "num_heads": 2, "d_ff": 12,
               "rope_theta": 10000.0, "norm_eps": EPS}
        cfg.update(VARIANT_DEFAULTS)
        cfg.update(overrides)
        p = v_params(cfg)
        tokens = torch.randint(0, cfg["vocab_size"], (1, cfg["context_length"]))
        positions = torch.arange(cfg["context_length"], dtype=torch.int64)
        logits32 = v_lm(tokens, positions, p, cfg)
        logits64 = v_lm(tokens, positions, widen(p), cfg)
        tensors = dict(p)
        tensors.update({"input.tokens": tokens, "output.logits_f32": logits32, "output.logits_f64": logits64})
        save_safetensors(os.path.join(out, name + ".safetensors"), tensors,
                         {"config": json.dumps(cfg), "torch": torch.__version__,
                          "source": "scripts/reference/cs336_block_reference.py variants"})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    if sys.argv[1:] == ["variants"]:
        torch.manual_seed(337)
        write_variants()
    elif sys.argv[1:]:
        sys.exit("usage: cs336_block_reference.py [variants]")
    else:
        torch.manual_seed(336)
        write_block()
        write_lm()
