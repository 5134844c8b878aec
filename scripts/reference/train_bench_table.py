#!/usr/bin/env python3
"""Joins the JSON lines of Kiln's GPU training bench ("impl": "kiln") and of train_bench_gpu.py ("torch-eager",
"torch-compile") into one table: per config, ms/step, MFU and tokens/s of each, and Kiln's speed-up over each torch
mode (torch ms / kiln ms: above 1 means Kiln is faster).

  usage: train_bench_table.py FILE...      (no FILE, or "-": standard input)

Lines that are not JSON objects with "impl" and "config" are skipped (logs can be passed as they are). A missing
entry shows as "-", an entry with "error" as "err" (its message is listed under the table). When an (impl, config)
pair appears more than once, the last line wins. Standard library only.
"""
import json
import sys

CONFIG_ORDER = ["small", "medium", "large", "xl", "tinystories"]
IMPLS = ["kiln", "torch-eager", "torch-compile"]
SHORT = {"kiln": "kiln", "torch-eager": "eager", "torch-compile": "compile"}


def read(paths):
    entries, order = {}, []
    for path in paths or ["-"]:
        f = sys.stdin if path == "-" else open(path, errors="replace")
        with f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(obj, dict) or "impl" not in obj or "config" not in obj:
                    continue
                key = (str(obj["impl"]), str(obj["config"]))
                entries[key] = obj
                if key[1] not in order:
                    order.append(key[1])
    return entries, order


def number(entry, field):
    """The field as a float, or None where the entry lacks it (or it is not a number)."""
    value = entry.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def cell(entry, field, fmt):
    if entry is None:
        return "-"
    if "error" in entry:
        return "err"
    value = number(entry, field)
    return "-" if value is None else fmt(value)


def ratio(kiln, torch):
    if kiln is None or torch is None:
        return "-"
    if "error" in kiln or "error" in torch:
        return "err"
    k, t = number(kiln, "ms_per_step"), number(torch, "ms_per_step")
    if k is None or t is None or k <= 0:
        return "-"
    return "%.2fx" % (t / k)


def tokens(v):
    if v >= 1e6:
        return "%.2fM" % (v / 1e6)
    if v >= 1e3:
        return "%.1fk" % (v / 1e3)
    return "%.0f" % v


def main(argv):
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    entries, seen = read(argv)
    configs = [c for c in CONFIG_ORDER if c in seen] + [c for c in seen if c not in CONFIG_ORDER]
    if not configs:
        print("no benchmark lines found in %s" % (", ".join(argv) or "standard input"))
        return 1
    impls = [i for i in IMPLS] + sorted({i for i, _ in entries if i not in IMPLS})

    header = ["config"]
    header += ["ms/step " + SHORT.get(i, i) for i in impls]
    header += ["MFU " + SHORT.get(i, i) for i in impls]
    header += ["tok/s " + SHORT.get(i, i) for i in impls]
    header += ["kiln vs eager", "kiln vs compile"]
    rows = []
    for c in configs:
        row = [c]
        row += [cell(entries.get((i, c)), "ms_per_step", lambda v: "%.2f" % v) for i in impls]
        row += [cell(entries.get((i, c)), "mfu", lambda v: "%.1f%%" % (100 * v)) for i in impls]
        row += [cell(entries.get((i, c)), "tokens_per_s", tokens) for i in impls]
        kiln = entries.get(("kiln", c))
        row += [ratio(kiln, entries.get(("torch-eager", c))), ratio(kiln, entries.get(("torch-compile", c)))]
        rows.append(row)

    widths = [max(len(r[j]) for r in [header] + rows) for j in range(len(header))]
    fmt = lambda r: "  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(r, widths)))
    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r))

    print()
    print("speed-up = torch ms/step / kiln ms/step (>1: kiln faster). MFU as the entries report it.")
    for i in impls:
        devices = sorted({str(e.get("device")) for (k, _), e in entries.items() if k == i and e.get("device")})
        versions = sorted({str(e.get("torch")) for (k, _), e in entries.items() if k == i and e.get("torch")})
        if devices or versions:
            print("%s: %s%s" % (i, ", ".join(devices) or "?", (" (torch " + ", ".join(versions) + ")") if versions
                                else ""))
    tiny = sorted({c for (_, c), e in entries.items() if e.get("tiny")})
    if tiny:
        print("note: shrunk --tiny configs in the input for: " + ", ".join(tiny))
    errors = [(c, i, entries[(i, c)]["error"]) for c in configs for i in impls
              if (i, c) in entries and "error" in entries[(i, c)]]
    for c, i, message in errors:
        print("err %s %s: %s" % (i, c, str(message).splitlines()[0][:300] if str(message) else "(no message)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
