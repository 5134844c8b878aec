#!/usr/bin/env python3
"""Where a kernel spends its instructions, from Nsight Compute's per-instruction counts.

    sass_hotspots.py SOURCE.csv [--share 0.015] [--annotate DIR]

SOURCE.csv is `ncu -i REPORT --page source --print-source sass --csv` of a report taken with the SourceCounters
section (run-gpu-checks.sh, KILN_NCU_SASS). For each profiled launch (the first of each kernel name) it prints the
warp instructions executed, the share of each opcode, and the straight runs of SASS that execute equally often (a
loop body, a function's prologue) holding at least --share of the total, with their opcodes: a loop's count over the
launch's warps is its trip count, and a run of index arithmetic or placeholder moves next to a few memory
instructions is what to cut. At a card's power limit every instruction issued costs a step time (docs/cuda.md,
"Power"), so this, not the kernel's time alone, shows what a change can save. --annotate writes each kernel's SASS
with its counts to DIR/<kernel>.sass.txt.
"""
import argparse
import collections
import csv
import io
import os
import re
import sys


def opcode(sass):
    """The opcode of a SASS line without its predicate and modifiers (`@!P0 IMAD.WIDE R2, ...` -> IMAD)."""
    text = re.sub(r"^@!?U?P\w+\s+", "", sass.strip())
    return text.split()[0].split(".")[0] if text else "?"


def launches(path):
    """(kernel name, [(count, sass)]) for each launch section of the CSV, in order."""
    lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith('"Kernel Name"')] + [len(lines)]
    for a, b in zip(starts, starts[1:]):
        name = next(csv.reader([lines[a]]))[1]
        rows = list(csv.reader(io.StringIO("\n".join(lines[a + 1:b]))))
        if not rows:
            continue
        header = rows[0]
        try:
            executed, source = header.index("Instructions Executed"), header.index("Source")
        except ValueError:
            sys.exit("%s: no 'Instructions Executed' column: take the report with --section SourceCounters" % path)
        body = []
        for r in rows[1:]:
            if len(r) <= max(executed, source):
                continue
            try:
                n = int(r[executed].replace(",", ""))
            except ValueError:
                n = 0
            body.append((n, r[source].strip()))
        yield name, body


def report(name, body, share):
    total = sum(n for n, _ in body)
    print("%s: %d warp instructions executed, %d SASS lines" % (name, total, len(body)))
    if total == 0:
        return
    ops = collections.Counter()
    for n, s in body:
        ops[opcode(s)] += n
    print("  opcodes: " + ", ".join("%s %.1f%%" % (k, 100.0 * v / total) for k, v in ops.most_common(16)))
    runs = []  # [first line, count, [sass]]
    for i, (n, s) in enumerate(body):
        if runs and runs[-1][1] == n:
            runs[-1][2].append(s)
        else:
            runs.append([i, n, [s]])
    for first, n, sass in runs:
        if n == 0 or n * len(sass) < share * total:
            continue
        mix = collections.Counter(opcode(s) for s in sass)
        print("  lines %5d-%5d: %4d instructions x %8d = %5.1f%%  %s" % (
            first, first + len(sass) - 1, len(sass), n, 100.0 * n * len(sass) / total,
            " ".join("%s %d" % kv for kv in mix.most_common(8))))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source_csv")
    ap.add_argument("--share", type=float, default=0.015, help="smallest share of a kernel's instructions a run shows")
    ap.add_argument("--annotate", help="folder for each kernel's SASS with its counts")
    args = ap.parse_args(argv[1:])
    seen = set()
    for name, body in launches(args.source_csv):
        if name in seen:
            continue
        seen.add(name)
        report(name, body, args.share)
        if args.annotate:
            os.makedirs(args.annotate, exist_ok=True)
            path = os.path.join(args.annotate, re.sub(r"[^\w.-]", "_", name)[:120] + ".sass.txt")
            with open(path + ".tmp", "w") as f:
                for i, (n, s) in enumerate(body):
                    f.write("%5d %10d  %s\n" % (i, n, s))
            os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main(sys.argv)
