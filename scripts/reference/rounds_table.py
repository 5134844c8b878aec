#!/usr/bin/env python3
"""Summarises alternating runs of run-gpu-checks.sh (KILN_AB and KILN_PEER_ROUNDS): one table row per run (ms a
step per config, and the SM clock and power while it ran); then, for the A/B settings, each setting's mean ms per
config and the first setting's ms over it; then, for the peer rounds, Kiln's speed-up over torch.compile in each
round (the peer's ms over Kiln's).

  usage: rounds_table.py RUNS.tsv

RUNS.tsv has one line per run, tab-separated: round, setting (environment assignments for an A/B run, "kiln" or
"torch-compile" for a peer round's two runs), the JSON-lines file the run wrote, optionally its clock file
(nvidia-smi samples: timestamp, SM MHz, memory MHz, power W and optionally the active clock-event reasons as a hex
mask; the samples above 250 W count as under load, and those whose mask has bit 0x4, the software power cap, as
held to the card's power limit), and optionally the run's kind, "ab" or "peer" (without it, the settings "kiln" and
"torch-compile" are a peer round's and the others A/B settings; with it, an A/B setting may be "kiln", the package
as it is, against "base", the build KILN_BASE packed). A run
whose file holds no result line shows as "-"; an "error" line shows as "err". Standard library only.
"""
import os
import sys

import train_bench_table  # its JSON-lines reader; the two scripts travel together (gpu-check.sh)

PEER = ("kiln", "torch-compile")  # the settings of KILN_PEER_ROUNDS' runs


def results(path):
    """{config: ms_per_step, or "err"} from a JSON-lines file of Kiln's bench or train_bench_gpu.py; {} if missing."""
    if not os.path.exists(path):
        return {}
    entries, _ = train_bench_table.read([path])
    return {config: "err" if "error" in obj else float(obj["ms_per_step"])
            for (_, config), obj in entries.items() if "error" in obj or "ms_per_step" in obj}


def clocks(path):
    """'SM <mean> MHz, <mean> W' over the samples drawing more than 250 W (the GPU under load), and the share of them
    held by the power cap where the file has the reasons column; or ''."""
    if not path:
        return ""
    sm, watts, capped = [], [], []
    try:
        f = open(path, errors="replace")
    except OSError:
        return ""
    with f:
        for line in f:
            parts = [p.strip() for p in line.split(",")]
            try:
                s, w = float(parts[1].split()[0]), float(parts[3].split()[0])
            except (IndexError, ValueError):
                continue
            if w > 250:
                sm.append(s)
                watts.append(w)
                try:
                    capped.append(int(parts[4], 16) & 0x4 != 0)
                except (IndexError, ValueError):
                    pass
    if not sm:
        return ""
    cap = ", power-capped in %.0f%%" % (100.0 * sum(capped) / len(capped)) if capped else ""
    return "SM %.0f MHz, %.0f W%s (%d samples)" % (sum(sm) / len(sm), sum(watts) / len(watts), cap, len(sm))


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    runs = []
    with open(argv[1]) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 3:
                kind = cols[4] if len(cols) > 4 and cols[4] else "peer" if cols[1] in PEER else "ab"
                runs.append((cols[0], cols[1], results(cols[2]), clocks(cols[3] if len(cols) > 3 else ""), kind))
    if not runs:
        print("no runs")
        return 1
    configs = []
    ab = []  # the A/B settings, in order of first appearance
    for _, setting, res, _, kind in runs:
        if kind == "ab" and setting not in ab:
            ab.append(setting)
        for c in res:
            if c not in configs:
                configs.append(c)
    cell = lambda v: "-" if v is None else v if isinstance(v, str) else "%.2f" % v
    print("| round | setting | " + " | ".join(c + " ms" for c in configs) + " | clocks |")
    print("| --- | --- | " + " | ".join("---" for _ in configs) + " | --- |")
    for rnd, setting, res, clk, _ in runs:
        print("| %s | %s | %s | %s |" % (rnd, setting, " | ".join(cell(res.get(c)) for c in configs), clk))
    if ab:
        print()
        print("| config | " + " | ".join(ab) + " |")
        print("| --- | " + " | ".join("---" for _ in ab) + " |")
        for c in configs:
            means = []
            for s in ab:
                v = [r[2][c] for r in runs if r[4] == "ab" and r[1] == s and isinstance(r[2].get(c), float)]
                means.append(sum(v) / len(v) if v else None)
            row = []
            for i, m in enumerate(means):
                text = cell(m)
                if i > 0 and m is not None and means[0] is not None:
                    text += " (%.3fx)" % (means[0] / m)
                row.append(text)
            print("| %s | %s |" % (c, " | ".join(row)))
        print("(mean ms a step; (Nx): the first setting's ms / this one's, above 1 means this setting is faster)")
    peer = [r for r in runs if r[4] == "peer"]
    rounds = [r[0] for r in peer if r[1] == "kiln"]
    if rounds and any(r[1] == "torch-compile" for r in peer):
        print()
        print("| round | config | kiln ms | torch.compile ms | Kiln's speed-up |")
        print("| --- | --- | --- | --- | --- |")
        for rnd in rounds:
            k = next(r[2] for r in peer if r[0] == rnd and r[1] == "kiln")
            t = next((r[2] for r in peer if r[0] == rnd and r[1] == "torch-compile"), {})
            for c in k:
                kv, tv = k.get(c), t.get(c)
                ratio = "%.2fx" % (tv / kv) if isinstance(kv, float) and isinstance(tv, float) else "-"
                print("| %s | %s | %s | %s | %s |" % (rnd, c, cell(kv), cell(tv), ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
