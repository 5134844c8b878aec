#!/usr/bin/env bash
# Builds Kiln here and packs into .device/ everything the GPU machine needs to run all *GpuTest classes and the CUDA
# benchmarks (Kiln and the PyTorch peer) in one command. The GPU machine has no Java, Maven or network
# (docs/cuda.md, ../shared/design/GPU.md), so the package holds a jlinked JRE, the project jars, the CUDA test
# classes, JUnit's launcher, JCuda with only its driver natives, OpenBLAS (the GPU tests compare against the CPU
# device) and the Python peer scripts. The package must stay under the 64 MiB transfer limit.
#
#   scripts/gpu-check.sh [DEST]      # DEST defaults to .device (git-ignored)
#   KILN_BASE=<revision> scripts/gpu-check.sh
#                                    # also builds that git revision (a temporary worktree, installed into a local
#                                    # repository of its own over ~/.m2) and packs, in DEST/base, the entries of its
#                                    # kiln jars that differ from this build's (reference/jar_delta.py): KILN_AB's
#                                    # "base" setting puts them first on the class path, so one call on the GPU
#                                    # machine compares a change's before and after at the same clocks and power
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
rm -rf "$dest/lib" "$dest/test-classes" "$dest/reference" "$dest/base"
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
cp models/target/test-classes/dev/kiln/models/cs336/{TransformerLmVariantsTest,*GpuTest}*.class \
  "$dest/test-classes/dev/kiln/models/cs336/"

./mvnw -q -B -o dependency:build-classpath -pl runtime -Dmdep.includeScope=test -Dmdep.outputFile="$root/$dest/cp.txt"
# picocli, for the kiln command line (samples).
./mvnw -q -B -o dependency:build-classpath -pl samples -Dmdep.includeScope=runtime -Dmdep.outputFile="$root/$dest/cp2.txt"
printf ':%s\n' "$(tr ':' '\n' < "$dest/cp2.txt" | grep picocli | head -1)" >> "$dest/cp.txt"
rm -f "$dest/cp2.txt"
# A jar into the package without the entries that match the globs (paths inside the jar).
pack_without() {
  local jar=$1 tmp
  shift
  tmp=$(mktemp -d)
  (cd "$tmp" && unzip -q "$jar" && for glob in "$@"; do rm -rf $glob; done && zip -q -r "$root/$dest/lib/$(basename "$jar")" .)
  rm -rf "$tmp"
}
tr ':' '\n' < "$dest/cp.txt" | while read -r jar; do
  case "$(basename "$jar")" in
    kiln-*|auto-service-*) ;;                         # kiln jars copied above
    jcuda-natives-*)
      # Only the driver binding loads (cuBLAS/NVRTC go through FFM): drop the other natives (24 MB of them).
      pack_without "$jar" 'lib/libJNvPTXCompiler-*' 'lib/libJNvrtc-*' ;;
    openblas-*-linux-x86_64.jar)
      # Kiln loads only the LAPACK-free binding (runtime/cpu/Blas: openblas_nolapack): drop the two other JNI
      # libraries and the headers (7 MB of the jar's 19), so a package with a base build (KILN_BASE) keeps OpenBLAS
      # and its GPU tests within one call's 64 MiB.
      o=org/bytedeco/openblas/linux-x86_64
      pack_without "$jar" "$o/libjniopenblas.so" "$o/libjniopenblas_full.so" "$o/include" ;;
    *) cp "$jar" "$dest/lib/" ;;
  esac
done
rm -f "$dest/cp.txt"
cp scripts/reference/attention_bench.py scripts/reference/bench_table.py scripts/reference/train_bench_gpu.py \
  scripts/reference/train_bench_table.py scripts/reference/ncu_kernels.py scripts/reference/rounds_table.py \
  scripts/reference/sass_hotspots.py \
  "$dest/reference/"
cp scripts/run-gpu-checks.sh "$dest/run-gpu-checks.sh"

if [[ -n "${KILN_BASE:-}" ]]; then
  base_rev=$(git rev-parse --verify "${KILN_BASE}^{commit}") || { echo "[gpu-check] KILN_BASE=$KILN_BASE is not a commit" >&2; exit 1; }
  base_tree=$(mktemp -d)
  echo "[gpu-check] building the base, $KILN_BASE ($base_rev), in $base_tree"
  git worktree add -q --detach "$base_tree" "$base_rev"
  trap 'git worktree remove --force "$base_tree"' EXIT  # whatever happens below
  # Its own local repository, with ~/.m2's as a read-only tail: installing the base's kiln artifacts (the models
  # take the processor from the repository) must not replace this build's.
  (cd "$base_tree" && ./mvnw -q -B -o -DskipTests -Dmaven.repo.local="$base_tree/.m2" \
    -Dmaven.repo.local.tail="$HOME/.m2/repository" install) || { echo "[gpu-check] the base $KILN_BASE did not build" >&2; exit 1; }
  mkdir -p "$dest/base"
  for module in dsl runtime models samples; do
    python3 scripts/reference/jar_delta.py "$(ls "$base_tree/$module"/target/kiln-$module-*.jar | grep -v -e sources -e tests | head -1)" \
      "$(ls "$dest"/lib/kiln-$module-*.jar | head -1)" "$dest/base/kiln-$module-base.jar"
  done
  # A call carries the working tree (tracked and untracked files git does not ignore) and this package, 64 MiB in
  # all. Where the two builds and OpenBLAS would not fit, the package leaves OpenBLAS out, which only the GPU tests
  # need (they compare against the CPU device); run-gpu-checks.sh then skips them and says why.
  tree=$( (git ls-files -z; git ls-files -z -o --exclude-standard) | xargs -0 -r du -cb 2> /dev/null | tail -1 | cut -f1)
  package=$(du -sb "$dest" | cut -f1)
  if (( tree + package > 62 * 1024 * 1024 )); then
    rm -f "$dest"/lib/openblas-*.jar
    echo "[gpu-check] KILN_BASE: OpenBLAS left out (the tree's $((tree / 1048576)) MiB and the package's" \
      "$((package / 1048576)) would pass the 64 MiB a call carries), so this package runs benchmarks and A/B rounds," \
      "not the GPU tests"
  fi
fi

size=$(du -sb "$dest" | cut -f1)
echo "[gpu-check] $dest: $((size / 1024 / 1024)) MiB ($(ls "$dest/lib" | wc -l) jars)"
if (( size > 60 * 1024 * 1024 )); then
  echo "[gpu-check] $dest is over 60 MiB: the GPU machine takes at most 64 MiB per call" >&2
  exit 1
fi
echo "[gpu-check] on the GPU machine: bash $dest/run-gpu-checks.sh"
