#!/usr/bin/env python3
"""Writes the entries of a base build's jar that differ from the current build's, as a jar of their own.

    jar_delta.py BASE.jar CURRENT.jar OUT.jar

scripts/gpu-check.sh (KILN_BASE=<revision>) uses it to pack a second build for the GPU machine within its 64 MiB:
put first on the class path, OUT.jar makes the classes and kernels of the base revision win over the current ones,
and the entries both builds share come from the current jar. An entry only the current build has stays visible
(nothing can hide it), which is harmless as long as the base code never names it. nvcc's fatbins of unchanged
sources can differ byte for byte between two builds (seen for flash_attention and cross_entropy), so they may be
packed too: same code, a few MB more. Prints how many entries differ; writes no file when none do.
"""
import os
import sys
import zipfile


def entries(path):
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist() if not i.is_dir()}


def main(argv):
    if len(argv) != 4:
        sys.exit("usage: jar_delta.py BASE.jar CURRENT.jar OUT.jar")
    base, current = entries(argv[1]), entries(argv[2])
    # The manifest records build times and the like; it names no class, so it is not part of the difference.
    differ = sorted(n for n, b in base.items() if current.get(n) != b and n != "META-INF/MANIFEST.MF")
    print("%s: %d of %d entries differ from %s" % (argv[1], len(differ), len(base), argv[2]))
    if not differ:
        return
    tmp = argv[3] + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name in differ:
            z.writestr(name, base[name])
    os.replace(tmp, argv[3])


if __name__ == "__main__":
    main(sys.argv)
