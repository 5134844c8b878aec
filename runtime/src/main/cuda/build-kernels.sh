#!/usr/bin/env bash
# Compiles Kiln's CUDA kernels (*.cu in SRC) to fatbins in OUT: sm_80 and sm_90 machine code plus compute_90 PTX,
# so Ampere and Hopper load them directly and newer GPUs JIT the PTX. A NAME_sm90a.cu file uses Hopper-only
# instructions (wgmma) and is compiled for sm_90a alone; the runtime loads it on compute capability 9.0 only. Called by Maven (runtime/pom.xml) in
# process-resources. Without nvcc on the PATH it says so and exits 0: the runtime then compiles the same sources
# with NVRTC on first use (KernelLoader).
#   usage: build-kernels.sh SRC_DIR OUT_DIR
set -euo pipefail
src=${1:?usage: build-kernels.sh SRC_DIR OUT_DIR}
out=${2:?usage: build-kernels.sh SRC_DIR OUT_DIR}
nvcc=${NVCC:-nvcc}
if ! command -v "$nvcc" >/dev/null 2>&1; then
  echo "[kiln] nvcc not on the PATH: CUDA kernels will be compiled with NVRTC at run time"
  exit 0
fi
mkdir -p "$out"
for cu in "$src"/*.cu; do
  name=$(basename "$cu" .cu)
  fatbin="$out/$name.fatbin"
  # Rebuild only when the source, a shared header or this script is newer than the fatbin.
  stale=0
  for dep in "$cu" "$src"/*.cuh "$0"; do
    [[ -f "$fatbin" && "$fatbin" -nt "$dep" ]] || stale=1
  done
  if [[ $stale == 0 ]]; then
    continue
  fi
  echo "[kiln] nvcc $name.cu -> $name.fatbin"
  if [[ $name == *_sm90a ]]; then
    arch=(-gencode arch=compute_90a,code=sm_90a)
  else
    arch=(-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90)
  fi
  "$nvcc" -std=c++17 -O3 -fatbin -I"$src" "${arch[@]}" -o "$fatbin.tmp" "$cu"
  mv "$fatbin.tmp" "$fatbin"
done
