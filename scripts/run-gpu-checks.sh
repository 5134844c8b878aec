#!/usr/bin/env bash
# Runs on the GPU machine, from the package scripts/gpu-check.sh built (it is copied there as run-gpu-checks.sh):
# unpacks the JRE, runs every *GpuTest, the Kiln CUDA benchmark and the PyTorch peer, writes logs to $OUT and
# prints the summary table last. Exit status: non-zero when a GPU test failed.
set -uo pipefail
pkg=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/kiln-gpu-out}
mkdir -p "$out"
reps=${KILN_BENCH_REPS:-10}

tar xzf "$pkg/jre25.tgz" -C /tmp
java=(/tmp/jre25/bin/java --enable-native-access=ALL-UNNAMED --add-modules jdk.incubator.vector -Xmx16g
  -cp "$pkg/lib/*:$pkg/test-classes")
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv > "$out/nvidia-smi.txt" 2>&1

echo "=== GPU tests"
"${java[@]}" dev.kiln.runtime.cuda.GpuTestMain "$pkg/test-classes" > "$out/gpu-tests.log" 2>&1
tests_rc=$?
grep -E "^(GPUTEST|  )" "$out/gpu-tests.log" | cut -c1-220
echo "=== Kiln benchmark"
timeout 240 "${java[@]}" dev.kiln.runtime.cuda.bench.CudaBenchmark "$reps" 2>&1 | tee "$out/kiln-bench.log" | cut -c1-200
echo "=== PyTorch benchmark"
PYTHONUNBUFFERED=1 timeout 240 python3 "$pkg/reference/attention_bench.py" "$reps" 2>&1 | tee "$out/torch-bench.log" | cut -c1-200
if [[ "${KILN_SANITIZE:-0}" == 1 ]]; then
  # Out-of-bounds and misaligned accesses in the attention kernels (the JVM's own signals are not CUDA errors).
  echo "=== compute-sanitizer memcheck, attention tests"
  timeout 240 compute-sanitizer --tool memcheck --print-limit 20 "${java[@]}" dev.kiln.runtime.cuda.GpuTestMain \
    "$pkg/test-classes" FlashAttention > "$out/sanitizer.log" 2>&1
  echo "exit $?; $(grep -E 'ERROR SUMMARY|GPUTEST (PASS|FAIL)' "$out/sanitizer.log" | tr '\n' ' ' | cut -c1-600)"
fi
echo
echo "=== Failures (first lines)"
grep -A12 "^GPUTEST FAIL" "$out/gpu-tests.log" | head -60
echo
echo "=== Summary ($(head -2 "$out/nvidia-smi.txt" | tail -1))"
python3 "$pkg/reference/bench_table.py" "$out/gpu-tests.log" "$out/kiln-bench.log" "$out/torch-bench.log" | tee "$out/table.txt"
exit $tests_rc
