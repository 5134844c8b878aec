#!/usr/bin/env bash
# Runs on the GPU machine, from the package scripts/gpu-check.sh built (it is copied there as run-gpu-checks.sh):
# unpacks the JRE, runs every *GpuTest (runtime and the generated models), the training benchmark (Kiln, then the
# PyTorch peer on the same card), optionally the attention benchmark, writes logs to $OUT and prints the tables last.
# Exit status: non-zero when a GPU test failed.
#
# Environment (all optional):
#   KILN_TESTS=0            skip the GPU tests
#   KILN_TRAIN=small,...    configs of the training benchmark (default: all five; "none" skips it)
#   KILN_GRAPHS=1           the Kiln training benchmark replays steps as CUDA graphs (bench train --graphs)
#   KILN_TORCH_MODES=eager,compile   PyTorch modes (default both; "none" skips the peer)
#   KILN_TORCH_CONFIGS=...  configs for the peer (default: KILN_TRAIN)
#   KILN_TORCH_PROFILE=3    the peer also prints its GPU time per kernel family over 3 profiled steps (torch.profiler)
#   KILN_TORCH_CLIP=1.0     the peer's gradient clipping (default 1.0, as Kiln's step clips; 0 = none)
#   KILN_ATTENTION=1        also run the attention benchmark (Kiln and PyTorch SDPA)
#   KILN_ATTENTION_SHAPES=1 also time both at the training configs' attention shapes, side by side
#   KILN_GEMMPREC=1         also time mixed-precision GEMMs: cast + bf16 GEMM against cuBLAS's FAST_16BF on fp32
#   KILN_MEMORY=1           also time fused AdamW's bandwidth against the driver's device-to-device copy
#                           (CudaBenchmark memory: planes and fp32 masters over 2^28 parameters, TB/s and the ratio)
#   KILN_QUICKSTART=1       also run `kiln quickstart` with training on the GPU (bf16, CUDA graphs), from the project
#                           folder, resume it for 100 more steps, then `kiln generate` (greedy) and `kiln forward` on
#                           its model with --device cpu and cuda
#   KILN_SANITIZE=1         compute-sanitizer memcheck over the attention and device tests
#   KILN_NCU=tinystories    Nsight Compute kernel times of one eager training step of that config, per kernel family
#                           (reference/ncu_kernels.py)
#   KILN_NCU_TORCH=tinystories  the same for one step of the peer (torch.compile, or KILN_NCU_TORCH_MODE=eager), at
#                           the same base clocks; both runs also list their GEMM launches in order (--gemms)
#   KILN_NCU_FLAGS="..."    more ncu flags for both, e.g. "--cache-control none --clock-control none" for kernel times
#                           as a real step sees them (boost clocks, caches not flushed between kernels)
#   KILN_NCU_SASS=<regex>   ncu's per-instruction counts of the first KILN_NCU_SASS_COUNT (default 4) launches of
#                           the kernels whose names match, in one eager KILN_NCU_SASS_CONFIG (default tinystories)
#                           step: each kernel's opcode mix and its hot runs of SASS (reference/sass_hotspots.py), the
#                           annotated SASS under $OUT/sass: where a kernel's instructions go (docs/cuda.md, "Power");
#                           launches count in step order across all matching names, so a backward kernel needs a
#                           count past the forward's launches (or a regex that matches it alone)
#   KILN_NCU_ISSUE=1        both also measure the share of cycles each kernel issued an instruction on, shown per
#                           family and kernel: at the card's power limit instructions cost a step time (docs/cuda.md)
#   KILN_NCU_TRAFFIC=1      both also measure each kernel's DRAM bytes read and written, bytes through L2 and warp
#                           instructions, shown per family and kernel (what a power-capped step spends energy on)
#   KILN_AB="KILN_X=0;KILN_X=1"  A/B of settings: graphed Kiln runs of KILN_AB_CONFIGS (default tinystories), each
#                           setting in turn (environment assignments, space-separated within one), KILN_AB_ROUNDS
#                           rounds (default 2), GEMM choices pinned by one file so that the settings' common GEMMs run
#                           the same kernels (a setting that assigns KILN_GEMM_CHOICES keeps its own file); a table of
#                           every run and of each setting's mean (reference/rounds_table.py).
#                           A setting "kiln" is the package as it is; the word "base" in a setting runs the build of
#                           the revision the package was made with KILN_BASE=<revision> (scripts/gpu-check.sh), e.g.
#                           KILN_AB="base;kiln" for a change's before and after
#   KILN_PEER_ROUNDS=2      Kiln graphed and torch.compile on KILN_PEER_CONFIG (default tinystories) in turn, that many
#                           rounds, with the SM clock, power and clock-event reasons sampled by nvidia-smi during each
#                           run (a sustained step holds the H200 at its 700 W limit: docs/cuda.md); the same table.
#                           KILN_ROUNDS_STEPS: timed steps of each round's runs (default 30)
# The Kiln training benchmark writes its timed GEMM choices to $OUT/gemm-choices.txt (KILN_GEMM_CHOICES) and logs the
# timings to kiln-train.err; the ncu run of Kiln reads that file, so it profiles the kernels the benchmark ran (timing
# under ncu would time ncu's overhead).
set -uo pipefail
pkg=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/kiln-gpu-out}
mkdir -p "$out"
reps=${KILN_BENCH_REPS:-10}
train=${KILN_TRAIN:-small,medium,large,xl,tinystories}
torch_modes=${KILN_TORCH_MODES:-eager,compile}
torch_configs=${KILN_TORCH_CONFIGS:-$train}

tar xzf "$pkg/jre25.tgz" -C /tmp
jvm=(/tmp/jre25/bin/java --enable-native-access=ALL-UNNAMED --add-modules jdk.incubator.vector -Xmx48g)
java=("${jvm[@]}" -cp "$pkg/lib/*:$pkg/test-classes")
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv > "$out/nvidia-smi.txt" 2>&1
tests_rc=0

if [[ "${KILN_TESTS:-1}" == 1 ]] && ! ls "$pkg"/lib/openblas-*.jar > /dev/null 2>&1; then
  echo "=== GPU tests skipped: this package has no OpenBLAS (made with KILN_BASE for A/B rounds), which the tests'" \
    "CPU reference needs; make one without KILN_BASE to run them"
elif [[ "${KILN_TESTS:-1}" == 1 ]]; then
  echo "=== GPU tests"
  timeout ${KILN_TEST_TIMEOUT:-200} "${java[@]}" dev.kiln.runtime.cuda.GpuTestMain "$pkg/test-classes" > "$out/gpu-tests.log" 2>&1
  tests_rc=$?
  grep -E "^(GPUTEST|  )" "$out/gpu-tests.log" | cut -c1-220
fi
if [[ "$train" != none ]]; then
  echo "=== Kiln training benchmark ($train)"
  KILN_GEMM_LOG=1 KILN_GEMM_CHOICES="$out/gemm-choices.txt" \
    timeout ${KILN_TRAIN_TIMEOUT:-240} "${java[@]}" dev.kiln.cli.KilnCommand bench train --device cuda --configs "$train" --steps 20 \
    --warmup 5 $([[ "${KILN_GRAPHS:-0}" == 1 ]] && echo --graphs) 2> "$out/kiln-train.err" | tee "$out/kiln-train.jsonl" | cut -c1-300
  tail -5 "$out/kiln-train.err"
fi
if [[ "$torch_modes" != none ]]; then
  echo "=== PyTorch training benchmark ($torch_configs; $torch_modes)"
  PYTHONUNBUFFERED=1 timeout ${KILN_TORCH_TIMEOUT:-300} python3 "$pkg/reference/train_bench_gpu.py" --configs "$torch_configs" \
    --modes "$torch_modes" --clip "${KILN_TORCH_CLIP:-1.0}" --steps 20 --warmup 5 --profile "${KILN_TORCH_PROFILE:-0}" 2> "$out/torch-train.err" | tee "$out/torch-train.jsonl" | cut -c1-300
  tail -3 "$out/torch-train.err"
  if [[ "${KILN_TORCH_PROFILE:-0}" != 0 ]]; then grep -A40 "^=== torch-" "$out/torch-train.err"; fi
fi
# One graphed Kiln run (setting "kiln", or environment assignments) or the peer's (setting "torch-compile") of the
# rounds below: its JSON lines, its clock
# samples and a line of rounds.tsv for reference/rounds_table.py.
rounds_run() { # round setting configs tag
  local jsonl="$out/rounds-$4.jsonl" clk="$out/rounds-$4.clocks.csv" pid=""
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw.instant,clocks_event_reasons.active \
      --format=csv,noheader -lms 50 > "$clk" 2>/dev/null &
    pid=$!
  fi
  echo "=== round $1: $2 ($3)"
  if [[ "$2" == torch-compile ]]; then
    PYTHONUNBUFFERED=1 timeout ${KILN_TORCH_TIMEOUT:-300} python3 "$pkg/reference/train_bench_gpu.py" --configs "$3" \
      --modes compile --clip "${KILN_TORCH_CLIP:-1.0}" --steps "${KILN_ROUNDS_STEPS:-30}" --warmup 5 2> "$out/rounds-$4.err" > "$jsonl"
  else
    local words=() assign=() run=("${java[@]}")
    [[ "$2" != kiln ]] && read -ra words <<< "$2"
    for w in "${words[@]}"; do
      if [[ "$w" == base ]]; then
        # The base revision's differing classes and kernels first (scripts/gpu-check.sh, KILN_BASE).
        run=("${jvm[@]}" -cp "$pkg/base/*:$pkg/lib/*:$pkg/test-classes")
      else
        assign+=("$w")
      fi
    done
    # One choices file for every setting, so their common GEMMs run the same kernels, unless the setting names its
    # own (KILN_GEMM_CHOICES=..., e.g. to compare KILN_GEMM_TUNE=sustained's choices with the default timing's).
    local choices=("KILN_GEMM_CHOICES=$out/rounds-gemm-choices.txt")
    [[ " ${assign[*]} " == *" KILN_GEMM_CHOICES="* ]] && choices=()
    env "${choices[@]}" "${assign[@]}" timeout ${KILN_TRAIN_TIMEOUT:-240} "${run[@]}" \
      dev.kiln.cli.KilnCommand bench train --device cuda --configs "$3" --steps "${KILN_ROUNDS_STEPS:-30}" --warmup 5 --graphs --python none \
      2> "$out/rounds-$4.err" > "$jsonl"
  fi
  [[ -n "$pid" ]] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  cut -c1-200 "$jsonl"
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$jsonl" "$clk" "${4%%-*}" >> "$out/rounds.tsv"
}
if [[ -n "${KILN_AB:-}${KILN_PEER_ROUNDS:-}" ]]; then
  rm -f "$out/rounds.tsv"
  if [[ -n "${KILN_AB:-}" ]]; then
    IFS=';' read -ra settings <<< "$KILN_AB"
    if [[ " ${settings[*]} " =~ [[:space:]]base[[:space:]] ]] && ! ls "$pkg"/base/*.jar > /dev/null 2>&1; then
      echo "KILN_AB names the base build, but this package has none: make it with KILN_BASE=<revision>" \
        "scripts/gpu-check.sh (or the base and this build do not differ)" >&2
      settings=()
    fi
    for ((r = 1; r <= ${KILN_AB_ROUNDS:-2}; r++)); do
      for i in "${!settings[@]}"; do
        rounds_run "$r" "${settings[$i]}" "${KILN_AB_CONFIGS:-tinystories}" "ab-$r-$i"
      done
    done
  fi
  for ((r = 1; r <= ${KILN_PEER_ROUNDS:-0}; r++)); do
    rounds_run "$r" kiln "${KILN_PEER_CONFIG:-tinystories}" "peer-$r-kiln"
    rounds_run "$r" torch-compile "${KILN_PEER_CONFIG:-tinystories}" "peer-$r-torch"
  done
  [[ -f "$out/rounds.tsv" ]] && python3 "$pkg/reference/rounds_table.py" "$out/rounds.tsv" | tee "$out/rounds-table.txt"
fi
if [[ "${KILN_NSYS:-0}" == 1 ]] && command -v nsys > /dev/null; then
  echo "=== nsys: kernel time of 3 small steps"
  timeout 120 nsys profile -q -o "$out/small" --force-overwrite true "${java[@]}" dev.kiln.cli.KilnCommand bench train \
    --device cuda --configs small --steps 3 --warmup 2 > /dev/null 2>&1
  nsys stats -q --report cuda_gpu_kern_sum --format csv "$out/small.nsys-rep" 2> /dev/null | head -25 | cut -c1-200
fi
if [[ "${KILN_QUICKSTART:-0}" == 1 ]]; then
  echo "=== kiln quickstart, training on cuda (bf16)"
  timeout ${KILN_QUICKSTART_TIMEOUT:-150} "${java[@]}" -Dkiln.home=. dev.kiln.cli.KilnCommand quickstart \
    --out "$out/quickstart" --set training.device=cuda --set training.precision=bf16 > "$out/quickstart.log" 2>&1
  echo "exit $?"
  grep -vE "^\s*$" "$out/quickstart.log" | tr '\r' '\n' | grep -v "^step " | tail -25 | cut -c1-220
  run_dir="$out/quickstart/run"
  echo "=== kiln train --resume (100 more steps on cuda, from the quickstart's last checkpoint)"
  timeout 120 "${java[@]}" dev.kiln.cli.KilnCommand train --resume "$run_dir" --set training.steps=800 2>&1 \
    | tr '\r' '\n' | grep -vE "^step |WARNING|^\s*$" | tail -4 | cut -c1-220
  for dev in cpu cuda; do
    echo "=== kiln generate --device $dev (greedy)"
    timeout 60 "${java[@]}" dev.kiln.cli.KilnCommand generate --model "$run_dir" --prompt "Once upon a time" \
      --max-tokens 120 --temperature 0 --seed 1 --device $dev 2>&1 | grep -v WARNING | cut -c1-300
  done
  python3 -c "import numpy as np; np.save('$out/ids.npy', np.random.default_rng(0).integers(0, 1024, (2, 128)));\
np.save('$out/next.npy', np.random.default_rng(1).integers(0, 1024, (2, 128)))"
  for dev in cpu cuda; do
    echo "=== kiln forward --device $dev"
    timeout 60 "${java[@]}" dev.kiln.cli.KilnCommand forward --model "$run_dir" --input "$out/ids.npy" \
      --targets "$out/next.npy" --output "$out/logits-$dev.npy" --grads "$out/grads-$dev.safetensors" \
      --device $dev 2>&1 | grep -v WARNING | cut -c1-200
  done
  python3 -c "
import numpy as np, json, struct
a, b = np.load('$out/logits-cpu.npy'), np.load('$out/logits-cuda.npy')
print('forward cuda vs cpu: logits max |diff| %.3g of max |logit| %.3g' % (np.abs(a - b).max(), np.abs(a).max()))
def st(p):
    raw = open(p, 'rb').read(); n = struct.unpack('<Q', raw[:8])[0]; h = json.loads(raw[8:8 + n]); h.pop('__metadata__', None)
    return {k: np.frombuffer(raw[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]], np.float32) for k, v in h.items()}
g, h = st('$out/grads-cpu.safetensors'), st('$out/grads-cuda.safetensors')
print('gradients cuda vs cpu: worst relative L2 error %.3g over %d tensors' % (max(np.linalg.norm(g[k] - h[k]) / max(np.linalg.norm(g[k]), 1e-30) for k in g), len(g)))
"
fi
if [[ "${KILN_ATTENTION:-0}" == 1 ]]; then
  echo "=== Kiln attention benchmark"
  timeout 240 "${java[@]}" dev.kiln.runtime.cuda.bench.CudaBenchmark "$reps" 2>&1 | tee "$out/kiln-bench.log" | cut -c1-200
  echo "=== PyTorch attention benchmark"
  PYTHONUNBUFFERED=1 timeout 240 python3 "$pkg/reference/attention_bench.py" "$reps" 2>&1 | tee "$out/torch-bench.log" | cut -c1-200
fi
if [[ "${KILN_ATTENTION_SHAPES:-0}" == 1 ]]; then
  echo "=== attention at the training configs' shapes: Kiln, then PyTorch SDPA (flash)"
  timeout 120 "${java[@]}" dev.kiln.runtime.cuda.bench.CudaBenchmark shapes 200 2>&1 | grep BENCH \
    | tee "$out/kiln-shapes.log"
  PYTHONUNBUFFERED=1 timeout 120 python3 "$pkg/reference/attention_bench.py" shapes 200 2>&1 | grep BENCH \
    | tee "$out/torch-shapes.log"
  python3 - "$out/kiln-shapes.log" "$out/torch-shapes.log" <<'PY'
import re, sys
def rows(path):
    return {m['config']: m for m in (dict(re.findall(r'(\w+)=(\S+)', l)) for l in open(path)) if 'config' in m}
kiln, torch = rows(sys.argv[1]), rows(sys.argv[2])
print('| config | b x h x n x d | Kiln fwd ms | PyTorch fwd ms | Kiln fwd+bwd ms | PyTorch fwd+bwd ms | Kiln speed-up (fwd+bwd) |')
print('| --- | --- | --- | --- | --- | --- | --- |')
for c, k in kiln.items():
    t = torch.get(c)
    if t:
        print(f"| {c} | {k['b']} x {k['h']} x {k['n']} x {k['d']} | {k['fwd_ms']} | {t['fwd_ms']} | {k['fwdbwd_ms']} | "
              f"{t['fwdbwd_ms']} | {float(t['fwdbwd_ms']) / float(k['fwdbwd_ms']):.2f}x |")
PY
fi
if [[ "${KILN_MEMORY:-0}" == 1 ]]; then
  echo "=== fused AdamW against the driver's device-to-device copy"
  timeout 120 "${java[@]}" dev.kiln.runtime.cuda.bench.CudaBenchmark memory 20 2>&1 | grep BENCH \
    | tee "$out/kiln-memory.log"
fi
if [[ "${KILN_GEMMPREC:-0}" == 1 ]]; then
  echo "=== GEMM precision benchmark (cast + bf16 against FAST_16BF)"
  timeout 180 "${java[@]}" dev.kiln.runtime.cuda.bench.GemmPrecisionBench 20 2>&1 | grep -v WARNING | tee "$out/gemmprec.log" \
    | cut -c1-260
fi
if [[ "${KILN_SANITIZE:-0}" == 1 ]]; then
  echo "=== compute-sanitizer memcheck, attention and device tests"
  timeout 240 compute-sanitizer --tool memcheck --print-limit 20 "${java[@]}" dev.kiln.runtime.cuda.GpuTestMain \
    "$pkg/test-classes" Device > "$out/sanitizer.log" 2>&1
  echo "exit $?; $(grep -E 'ERROR SUMMARY|GPUTEST (PASS|FAIL)' "$out/sanitizer.log" | tr '\n' ' ' | cut -c1-600)"
fi
# Nsight Compute, for the KILN_NCU* runs below.
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /usr/local/cuda-*/bin/ncu 2> /dev/null | head -1)
ncu_metrics=gpu__time_duration.sum
[[ "${KILN_NCU_ISSUE:-0}" == 1 ]] && ncu_metrics+=,smsp__issue_active.avg.pct_of_peak_sustained_active
[[ "${KILN_NCU_TRAFFIC:-0}" == 1 ]] && ncu_metrics+=,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,smsp__inst_executed.sum
if [[ -n "${KILN_NCU:-}" ]]; then
  echo "=== ncu: kernel times of one eager ${KILN_NCU} step"
  KILN_GEMM_CHOICES="$out/gemm-choices.txt" timeout ${KILN_NCU_TIMEOUT:-240} "$ncu" ${KILN_NCU_FLAGS:-} \
    --target-processes all --metrics "$ncu_metrics" --csv --page raw \
    --log-file "$out/ncu.csv" "${java[@]}" dev.kiln.cli.KilnCommand bench train --device cuda --configs "$KILN_NCU" \
    --steps 1 --warmup 1 --python none > "$out/ncu-bench.log" 2>&1
  echo "exit $?"
  python3 "$pkg/reference/ncu_kernels.py" --gemms "$out/ncu.csv" > "$out/ncu-kernels.txt"
  sed '/^GEMM launches/,$d' "$out/ncu-kernels.txt"
fi
if [[ -n "${KILN_NCU_SASS:-}" ]]; then
  # Per-instruction counts (SourceCounters) of the first launches of the kernels matching the regex, in one eager step
  # of KILN_NCU_SASS_CONFIG, GEMM choices pinned as for KILN_NCU; reference/sass_hotspots.py prints each kernel's
  # opcode mix and its hot runs of SASS, and writes each kernel's annotated SASS under $out/sass.
  echo "=== ncu: instructions of ${KILN_NCU_SASS} in one eager ${KILN_NCU_SASS_CONFIG:-tinystories} step"
  KILN_GEMM_CHOICES="$out/gemm-choices.txt" timeout ${KILN_NCU_TIMEOUT:-240} "$ncu" --cache-control none \
    --clock-control none -k "regex:${KILN_NCU_SASS}" -c "${KILN_NCU_SASS_COUNT:-4}" --section SourceCounters \
    --import-source no -f -o "$out/sass" "${java[@]}" dev.kiln.cli.KilnCommand bench train --device cuda \
    --configs "${KILN_NCU_SASS_CONFIG:-tinystories}" --steps 1 --warmup 1 --python none > "$out/ncu-sass-bench.log" 2>&1
  echo "exit $?"
  "$ncu" -i "$out/sass.ncu-rep" --page source --print-source sass --csv > "$out/sass-source.csv" 2> "$out/sass-source.err"
  python3 "$pkg/reference/sass_hotspots.py" --annotate "$out/sass" "$out/sass-source.csv" | tee "$out/sass-hotspots.txt"
  # The report and the full CSV are large; the hot spots and the annotated SASS are what come back.
  rm -f "$out/sass.ncu-rep" "$out/sass-source.csv"
fi
if [[ -n "${KILN_NCU_TORCH:-}" ]]; then
  mode=${KILN_NCU_TORCH_MODE:-compile}
  echo "=== ncu: kernel times of one torch-$mode ${KILN_NCU_TORCH} step"
  timeout ${KILN_NCU_TIMEOUT:-300} "$ncu" ${KILN_NCU_FLAGS:-} --profile-from-start off --metrics "$ncu_metrics" --csv --page raw \
    --log-file "$out/ncu-torch.csv" python3 "$pkg/reference/train_bench_gpu.py" --configs "$KILN_NCU_TORCH" \
    --modes "$mode" --clip "${KILN_TORCH_CLIP:-1.0}" --steps 2 --warmup 3 --cuda-profile-step > "$out/ncu-torch-bench.log" 2>&1
  echo "exit $?"
  python3 "$pkg/reference/ncu_kernels.py" --all --gemms "$out/ncu-torch.csv" > "$out/ncu-torch-kernels.txt"
  sed '/^GEMM launches/,$d' "$out/ncu-torch-kernels.txt"
fi
echo
echo "=== Failures (first lines)"
[[ -f "$out/gpu-tests.log" ]] && grep -A12 "^GPUTEST FAIL" "$out/gpu-tests.log" | head -80
echo
echo "=== Summary ($(head -2 "$out/nvidia-smi.txt" | tail -1))"
if [[ -f "$out/kiln-bench.log" ]]; then
  python3 "$pkg/reference/bench_table.py" "$out/gpu-tests.log" "$out/kiln-bench.log" "$out/torch-bench.log" | tee "$out/table.txt"
elif [[ -f "$out/gpu-tests.log" ]]; then
  grep -cE "^GPUTEST PASS" "$out/gpu-tests.log" | sed 's/^/GPU tests passed: /'
  grep -E "^GPUTEST (FAIL|SKIP)" "$out/gpu-tests.log" | cut -c1-200
fi
python3 "$pkg/reference/train_bench_table.py" "$out"/kiln-train.jsonl "$out"/torch-train.jsonl 2>/dev/null | tee "$out/train-table.txt"
exit $tests_rc
