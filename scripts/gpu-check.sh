#!/usr/bin/env bash
# Builds Kiln here and packs into .device/ everything the GPU machine needs to run all *GpuTest classes and the CUDA
# benchmarks (Kiln and the PyTorch peer) in one command. The GPU machine has no Java, Maven or network
# (docs/cuda.md, ../shared/design/GPU.md), so the package holds a jlinked JRE, the project jars, the CUDA test
# classes, JUnit's launcher, JCuda with only its driver natives, OpenBLAS (the GPU tests compare against the CPU
# device) and the Python peer scripts. The package must stay under the 64 MiB transfer limit.
#
#   scripts/gpu-check.sh [DEST]      # DEST defaults to .device (git-ignored)
# then on the GPU machine, from the folder that holds DEST:
#   bash DEST/run-gpu-checks.sh      # logs under $OUT (or /tmp/kiln-gpu-out), table printed last
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dest=${1:-.device}
export JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
jre_tool=${KILN_DEVICE_JRE_TOOL:-$root/../shared/tools/make-device-jre.sh}
[[ -x "$jre_tool" ]] || jre_tool=/work/shared/tools/make-device-jre.sh

echo "[gpu-check] building (nvcc: $(command -v nvcc || echo 'absent, NVRTC at run time'))"
./mvnw -q -B -o -DskipTests install

mkdir -p "$dest"
rm -rf "$dest/lib" "$dest/test-classes" "$dest/reference"
mkdir -p "$dest/lib" "$dest/test-classes/dev/kiln/runtime/cuda" "$dest/test-classes/dev/kiln/runtime/infer" \
  "$dest/test-classes/dev/kiln/models/cs336" "$dest/reference"

# The JRE is the slow part; rebuild it only when the tool changed.
if [[ ! -f "$dest/jre25.tgz" || "$jre_tool" -nt "$dest/jre25.tgz" ]]; then
  "$jre_tool" "$dest"
fi

cp dsl/target/kiln-dsl-*.jar runtime/target/kiln-runtime-*.jar models/target/kiln-models-*.jar \
  samples/target/kiln-samples-*.jar "$dest/lib/"
rm -f "$dest"/lib/*-sources.jar "$dest"/lib/*-tests.jar
cp -r runtime/target/test-classes/dev/kiln/runtime/cuda/. "$dest/test-classes/dev/kiln/runtime/cuda/"
# Generation on the GPU, and the reference-engine helpers its test shares with the CPU tests.
cp runtime/target/test-classes/dev/kiln/runtime/infer/{DeviceLmEngine,TinyLms}*.class "$dest/test-classes/dev/kiln/runtime/infer/"
# The generated-model GPU tests and the CPU-side fixtures they reuse (the variant list).
cp models/target/test-classes/dev/kiln/models/cs336/{TransformerLm*Test,*GpuTest}*.class \
  "$dest/test-classes/dev/kiln/models/cs336/"

./mvnw -q -B -o dependency:build-classpath -pl runtime -Dmdep.includeScope=test -Dmdep.outputFile="$root/$dest/cp.txt"
# picocli, for the kiln command line (samples).
./mvnw -q -B -o dependency:build-classpath -pl samples -Dmdep.includeScope=runtime -Dmdep.outputFile="$root/$dest/cp2.txt"
printf ':%s\n' "$(tr ':' '\n' < "$dest/cp2.txt" | grep picocli | head -1)" >> "$dest/cp.txt"
rm -f "$dest/cp2.txt"
tr ':' '\n' < "$dest/cp.txt" | while read -r jar; do
  case "$(basename "$jar")" in
    kiln-*|auto-service-*) ;;                         # kiln jars copied above
    jcuda-natives-*)
      # Only the driver binding loads (cuBLAS/NVRTC go through FFM): drop the other natives (24 MB of them).
      tmp=$(mktemp -d)
      (cd "$tmp" && unzip -q "$jar" && rm -f lib/libJNvPTXCompiler-* lib/libJNvrtc-* && zip -q -r "$root/$dest/lib/$(basename "$jar")" .)
      rm -rf "$tmp" ;;
    *) cp "$jar" "$dest/lib/" ;;
  esac
done
rm -f "$dest/cp.txt"
cp scripts/reference/attention_bench.py scripts/reference/bench_table.py scripts/reference/train_bench_gpu.py \
  scripts/reference/train_bench_table.py scripts/reference/ncu_kernels.py scripts/reference/rounds_table.py \
  "$dest/reference/"
cp scripts/run-gpu-checks.sh "$dest/run-gpu-checks.sh"

size=$(du -sb "$dest" | cut -f1)
echo "[gpu-check] $dest: $((size / 1024 / 1024)) MiB ($(ls "$dest/lib" | wc -l) jars)"
if (( size > 60 * 1024 * 1024 )); then
  echo "[gpu-check] $dest is over 60 MiB: the GPU machine takes at most 64 MiB per call" >&2
  exit 1
fi
echo "[gpu-check] on the GPU machine: bash $dest/run-gpu-checks.sh"
