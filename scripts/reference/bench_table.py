#!/usr/bin/env python3
"""Joins Kiln's and PyTorch's BENCH lines and the GPUTEST lines into the short table gpu-check.sh prints last.
usage: bench_table.py GPU_TESTS_LOG KILN_BENCH_LOG TORCH_BENCH_LOG"""
import re
import sys


def bench(path):
    rows = {}
    try:
        for line in open(path, errors="replace"):
            if line.startswith("BENCH "):
                kv = dict(re.findall(r"(\w+)=([\w.]+)", line))
                kind = line.split()[1]
                if kind == "gemm":
                    key = (kind, kv["shape"], kv.get("api", ""))
                else:
                    key = (kind, kv.get("d", ""), kv["n"])
                rows[key] = kv
    except FileNotFoundError:
        pass
    return rows


tests = {"PASS": 0, "FAIL": 0, "SKIP": 0}
failed = []
try:
    for line in open(sys.argv[1], errors="replace"):
        m = re.match(r"GPUTEST (PASS|FAIL|SKIP) (\S+)", line)
        if m:
            tests[m.group(1)] += 1
            if m.group(1) == "FAIL":
                failed.append(m.group(2))
except FileNotFoundError:
    pass
kiln, torch = bench(sys.argv[2]), bench(sys.argv[3])

print(f"GPU tests: {tests['PASS']} passed, {tests['FAIL']} failed, {tests['SKIP']} skipped"
      + (" -- FAILED: " + ", ".join(failed) if failed else ""))
print()
print("attention causal bf16 (16k tokens, width 2048)  |  fwd ms: kiln / torch   |  fwd+bwd ms: kiln / torch   | speed-up fwd+bwd | kiln TFLOP/s")
for key in sorted((k for k in set(kiln) | set(torch) if k[0] == "attn"), key=lambda k: (int(k[1]), int(k[2]))):
    _, d, n = key
    a, b = kiln.get(key, {}), torch.get(key, {})
    kf, tf = a.get("fwd_ms"), b.get("fwd_ms")
    kb, tb = a.get("fwdbwd_ms"), b.get("fwdbwd_ms")
    ratio = f"{float(tb) / float(kb):.2f}x" if kb and tb else "-"
    print(f"  d={d:>3} n={n:>5} b={a.get('b', b.get('b', '?')):>2} h={a.get('h', b.get('h', '?')):>2}"
          f"                  | {kf or '-':>8} / {tf or '-':>8}   | {kb or '-':>8} / {tb or '-':>8}     | {ratio:>8}"
          f"         | {a.get('tflops', '-')}")
print()
print("gemm bf16, C = A @ B^T (M x N x K)  | ms: cuBLASLt / cublasGemmEx / torch | speed-up vs torch: Lt / GemmEx"
      " | Lt, fp32 out: ms")
shapes = sorted({k[1] for k in set(kiln) | set(torch) if k[0] == "gemm"},
                key=lambda s: [int(x) for x in s.split("x")])
for shape in shapes:
    lt, ex, pt = kiln.get(("gemm", shape, "lt"), {}), kiln.get(("gemm", shape, "gemmex"), {}), \
        torch.get(("gemm", shape, ""), {})
    lt32 = kiln.get(("gemm", shape, "lt_f32out"), {})

    def ratio(a):
        return f"{float(pt['ms']) / float(a['ms']):.2f}x" if a.get("ms") and pt.get("ms") else "-"

    print(f"  {shape:<24}                | {lt.get('ms', '-'):>8} / {ex.get('ms', '-'):>8} / {pt.get('ms', '-'):>8}"
          f" | {ratio(lt):>6} / {ratio(ex):>6} | {lt32.get('ms', '-'):>8}")
