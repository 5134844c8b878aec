#!/usr/bin/env python3
"""GPU time per kernel family of one Kiln training step, from an Nsight Compute CSV.

Nsight Compute (ncu) runs each kernel alone at base clocks, so its times add up to somewhat more than a step takes
in a normal run, but they are stable between runs and free of host gaps: the way to see where a step's GPU time goes
and to check a kernel change. The CSV comes from

  ncu --target-processes all --metrics gpu__time_duration.sum --csv --page raw --log-file ncu.csv \\
      java ... dev.kiln.cli.KilnCommand bench train --device cuda --configs tinystories --steps 1 --warmup 1 \\
      --python none

(run-gpu-checks.sh does this with KILN_NCU=<config>). A step ends with the fused AdamW kernel, so the kernels after
the second-to-last AdamW launch, up to and including the last one, are one whole step (warm-up steps and the
benchmark's profiled step come before and after it). Prints the families (GEMMs, attention, RoPE, ...), then the
slowest kernels. With smsp__issue_active.avg.pct_of_peak_sustained_active among the metrics (run-gpu-checks.sh's
KILN_NCU_ISSUE=1), each line also gives the share of cycles on which an instruction issued, weighted by time: a
step at the card's power limit pays for instructions even in a kernel its bytes bound (docs/cuda.md, "Power").
With the traffic metrics (KILN_NCU_TRAFFIC=1: dram__bytes_read.sum, dram__bytes_write.sum, lts__t_bytes.sum,
smsp__inst_executed.sum), each family and kernel also gets the MB it read from and wrote to DRAM, the MB through L2
and its millions of warp instructions: what a step at the power limit spends energy on besides its GEMMs' products.

  python3 ncu_kernels.py ncu.csv [--top 25]
"""
import argparse
import collections
import csv
import re
import sys

# Family of a kernel, by name: the first pattern that matches. Generated kernels are named <Module>_<method>_...
FAMILIES = [
    # The peer's kernels too (KILN_NCU_TORCH): flash attention's names hold "cutlass", so attention comes first.
    ("attention", re.compile(r"^kiln_attn_|flash|fmha", re.I)),
    ("GEMMs (cuBLAS)", re.compile(r"nvjet|gemm|cutlass|xmma|splitKreduce", re.I)),
    ("AdamW", re.compile(r"adam", re.I)),
    ("Triton (peer's fusions)", re.compile(r"^triton")),
    ("peer's other kernels", re.compile(r"^(void )?(at::|at_cuda|elementwise|vectorized|multi_tensor|reduce)")),
    ("cross-entropy", re.compile(r"^kiln_xent")),
    ("RoPE", re.compile(r"^kiln_rope")),
    ("gradient norms", re.compile(r"^kiln_sumsq|^kiln_clip")),
    ("adds and other binary ops", re.compile(r"^kiln_binary")),
    ("bf16 casts", re.compile(r"^kiln_cast")),
    ("copies", re.compile(r"^kiln_copy")),
    ("fills", re.compile(r"^kiln_fill")),
    ("reductions", re.compile(r"^kiln_reduce")),
    ("gathers and scatters", re.compile(r"^kiln_(gather|scatter)")),
]
GENERATED = re.compile(r"^([A-Z][A-Za-z0-9]*)_(apply|loss|forward)\w*?_(fwd|bwd)_\d+")
ISSUE = "smsp__issue_active.avg.pct_of_peak_sustained_active"
UNITS = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0, "second": 1e3, "s": 1e3}
# The traffic metrics (KILN_NCU_TRAFFIC=1), each with its column label and its units scaled to MB or millions.
TRAFFIC = [("dram__bytes_read.sum", "DRAM rd"), ("dram__bytes_write.sum", "DRAM wr"), ("lts__t_bytes.sum", "L2 MB"),
           ("smsp__inst_executed.sum", "M inst")]
TRAFFIC_UNITS = {"byte": 1e-6, "Kbyte": 1e-3, "Mbyte": 1.0, "Gbyte": 1e3, "Tbyte": 1e6, "inst": 1e-6, "Kinst": 1e-3,
                 "Minst": 1.0, "Ginst": 1e3}


def family(name):
    for label, pattern in FAMILIES:
        if pattern.search(name):
            return label
    g = GENERATED.match(name)
    if g:
        return "generated " + g.group(1)
    return "other"


def read(path):
    """(kernel name, milliseconds, grid, block, issue % or None, {traffic label: MB or millions}) per launch, in
    launch order; the traffic dict holds the TRAFFIC metrics the CSV has."""
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("==")]
    rows = list(csv.reader(lines))
    if not rows or "Kernel Name" not in rows[0]:
        sys.exit("ncu_kernels.py: %s has no 'Kernel Name' header; run ncu with --csv --page raw" % path)
    header = rows[0]
    if "gpu__time_duration.sum" not in header:
        sys.exit("ncu_kernels.py: %s has no gpu__time_duration.sum column; run ncu with --metrics "
                 "gpu__time_duration.sum" % path)
    name_at, time_at = header.index("Kernel Name"), header.index("gpu__time_duration.sum")
    grid_at = header.index("Grid Size") if "Grid Size" in header else None
    block_at = header.index("Block Size") if "Block Size" in header else None
    issue_at = header.index(ISSUE) if ISSUE in header else None
    traffic_at = [(label, header.index(metric)) for metric, label in TRAFFIC if metric in header]
    traffic_scale = {label: 1.0 for label, _ in traffic_at}
    body = rows[1:]
    scale = UNITS["nsecond"]
    if body and body[0] and body[0][0] == "":  # the units row
        unit = body[0][time_at].strip()
        if unit not in UNITS:
            sys.exit("ncu_kernels.py: unknown time unit %r" % unit)
        scale = UNITS[unit]
        for label, at in traffic_at:
            u = body[0][at].strip()
            if u not in TRAFFIC_UNITS:
                sys.exit("ncu_kernels.py: unknown unit %r of %s" % (u, header[at]))
            traffic_scale[label] = TRAFFIC_UNITS[u]
        body = body[1:]
    launches = []
    for r in body:
        if len(r) > max(name_at, time_at) and r[time_at].strip():
            issue = None
            if issue_at is not None and len(r) > issue_at and r[issue_at].strip():
                issue = float(r[issue_at].replace(",", ""))
            traffic = {label: float(r[at].replace(",", "")) * traffic_scale[label]
                       for label, at in traffic_at if len(r) > at and r[at].strip()}
            launches.append((re.sub(r"\(.*", "", r[name_at]).strip(), float(r[time_at].replace(",", "")) * scale,
                             r[grid_at] if grid_at is not None else "", r[block_at] if block_at is not None else "",
                             issue, traffic))
    return launches


def one_step(launches):
    """The launches of the last whole step: after the second-to-last AdamW launch, through the last one."""
    ends = [i for i, launch in enumerate(launches) if launch[0].startswith("kiln_adamw")]
    if len(ends) >= 2:
        return launches[ends[-2] + 1:ends[-1] + 1], "one step (between the last two AdamW launches)"
    return launches, "every launch (fewer than two AdamW launches: not one step)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=25, help="slowest kernels to list (default: 25)")
    ap.add_argument("--all", action="store_true",
                    help="every launch of the CSV is one step (ncu --profile-from-start off around one step)")
    ap.add_argument("--gemms", action="store_true", help="also list every GEMM launch in order, with its grid")
    args = ap.parse_args()
    launches = read(args.csv)
    step, what = (launches, "every launch (one step)") if args.all else one_step(launches)
    total = sum(launch[1] for launch in step)
    print("%s: %d launches, %.3f ms of kernel time" % (what, len(step), total))
    # [ms, calls, ms of the launches with an issue share, their issue-weighted ms, {traffic label: sum}]
    fams = collections.defaultdict(lambda: [0.0, 0, 0.0, 0.0, collections.Counter()])
    kernels = collections.defaultdict(lambda: [0.0, 0, 0.0, 0.0, collections.Counter()])
    for name, t, _, _, issue, traffic in step:
        for table, key in ((fams, family(name)), (kernels, name)):
            table[key][0] += t
            table[key][1] += 1
            if issue is not None:
                table[key][2] += t
                table[key][3] += t * issue
            table[key][4].update(traffic)
    issued = any(launch[4] is not None for launch in step)
    labels = [label for _, label in TRAFFIC if any(label in launch[5] for launch in step)]
    issue_cell = lambda e: (" %6.1f%%" % (e[3] / e[2]) if e[2] > 0 else " %7s" % "-") if issued else ""
    traffic_cells = lambda e: "".join(" %9.1f" % e[4][label] for label in labels)
    issue_head = (" %7s" % "issue" if issued else "") + "".join(" %9s" % label for label in labels)
    if labels:
        print("traffic of the whole: " + ", ".join("%s %.0f" % (label, sum(launch[5].get(label, 0) for launch in step))
                                                  for label in labels))
    print("%-34s %9s %6s %7s%s" % ("family", "ms", "share", "calls", issue_head))
    for key, e in sorted(fams.items(), key=lambda kv: -kv[1][0]):
        print("%-34s %9.3f %5.1f%% %7d%s%s" % (key, e[0], 100 * e[0] / total if total else 0, e[1], issue_cell(e),
                                              traffic_cells(e)))
    print()
    print("%-72s %9s %7s%s" % ("kernel", "ms", "calls", issue_head))
    for key, e in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print("%-72s %9.3f %7d%s%s" % (key[:72], e[0], e[1], issue_cell(e), traffic_cells(e)))
    if issued:
        print("(issue: the share of cycles on which an instruction issued, weighted by each launch's time)")
    if labels:
        print("(DRAM rd, DRAM wr, L2 MB: megabytes read from and written to memory, and through L2; M inst: millions of"
              " warp instructions)")
    if args.gemms:
        print()
        print("GEMM launches in order: ms, grid, block, kernel")
        for name, t, grid, block, _, _ in step:
            if family(name) == "GEMMs (cuBLAS)":
                print("%8.4f %-16s %-12s %s" % (t, grid, block, name[:110]))


if __name__ == "__main__":
    main()
