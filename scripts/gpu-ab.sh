#!/usr/bin/env bash
# Side-by-side timings of the CUDA backend's switches, on the lent GPU machine, from the binaries
# and data `scripts/gpu-check.sh --prepare` put in .devcarry/. Each variant runs REPS times, the
# variants taking turns, so that a drifting machine shows up as spread rather than as a difference.
# Usage: scripts/gpu-ab.sh   (OUT=dir for the JSON lines; prints a table at the end; GPU_AB_REPS,
# GPU_AB_ONLY="names" for a subset of the variants, GPU_AB_EXTRAS=0 without the profiles and streams,
# GPU_AB_COSTS=0 without the per-convolution timings, GPU_AB_TESTS=0 without the CUDA tests)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-ab}
REPS=${GPU_AB_REPS:-3}
mkdir -p "$OUT"
. scripts/devcarry-env.sh
export REGIONDROP_REQUIRE_GPU=1 REGIONDROP_MODELS_DIR="$PWD/$D/models" REGIONDROP_FRAMES_RGB="$PWD/$D/frames.rgb"
NANO0=(timeout 120 "$D/regiondrop-bench" --model "$D/models/nanodet-416.onnx" --video "$D/frames.rgb")
NANO=("${NANO0[@]}" --frames 40)
YOLO=(timeout 120 "$D/regiondrop-bench" --model "$D/models/yolov8n-nudenet-320.onnx" --input-size 1280x736
    --video "$D/frames-yolo.rgb" --frames 6)
# name=environment (space-separated assignments; "-" for none)
VARIANTS=(
    "defaults=-"
    "select0=REGIONDROP_CUDA_SELECT=0"
    "tail0=REGIONDROP_CUDA_DEVICE_TAIL=0"
    "pdl0=REGIONDROP_CUDA_PDL=0"
    "fused_all=REGIONDROP_CUDA_FUSED_K=4096"
    "nofuse=REGIONDROP_CUDA_FUSED_K=0"
    "lanes1=REGIONDROP_CUDA_LANES=1"
    "lanes2=REGIONDROP_CUDA_LANES=2"
    "lanes4=REGIONDROP_CUDA_LANES=4"
    "lanes8=REGIONDROP_CUDA_LANES=8"
    "block=REGIONDROP_CUDA_SYNC=block"
    "piece0=REGIONDROP_CUDA_UPLOAD_PIECE_KB=0"
    "pipeauto=REGIONDROP_CUDA_FUSED_PIPE=auto"
    "pipe1=REGIONDROP_CUDA_FUSED_PIPE=1"
    "lanes1pdl0=REGIONDROP_CUDA_LANES=1 REGIONDROP_CUDA_PDL=0"
)
# Kernels of another revision (GPU_AB_BASE at --prepare): the same binary and defaults, the
# other cuda/ (their kernels must take this build's parameters).
[ -d "$D/cuda-base" ] && VARIANTS+=("base=REGIONDROP_CUDA_KERNELS=$PWD/$D/cuda-base")
# GPU_AB_ONLY="defaults nofuse": run only the variants named.
ONLY=${GPU_AB_ONLY:-}

if [ "${GPU_AB_TESTS:-1}" = 1 ]; then
    echo "== CUDA tests with the defaults of this build"
    timeout 180 "$D/cuda_backend" --skip tensor_core 2>&1 | tee "$OUT/cuda_tests.log" | grep -E "^test |test result" | head -20
    timeout 120 "$D/cuda_backend" tensor_core 2>&1 | tee "$OUT/cuda_tests_tc.log" | grep -E "^test |test result" | head -3
fi

echo "== each fusable convolution timed apart and fused (examples/fusion_costs: CUDA graphs of 20 launches; 5, 35 and 100 % of the tiles)"
COST_RUNS=("f32=-" "f16=-" "f16_t44=REGIONDROP_CUDA_FUSED_TILE=4x4")
[ -d "$D/cuda-base" ] && COST_RUNS+=("f32_base=REGIONDROP_CUDA_KERNELS=$PWD/$D/cuda-base"
    "f16_base=REGIONDROP_CUDA_KERNELS=$PWD/$D/cuda-base")
[ "${GPU_AB_COSTS:-1}" = 1 ] && for run in "${COST_RUNS[@]}"; do
    name=${run%%=*} envs=${run#*=}
    [ "$envs" = "-" ] && envs=""
    for fc in "$D"/fusion_costs*; do
        for m in "nanodet=$D/models/nanodet-416.onnx" "yolo=$D/models/yolov8n-nudenet-320.onnx 1280x736"; do
            f="$OUT/$(basename "$fc")_${m%%=*}_$name.txt"
            env $envs timeout 60 "$fc" ${m#*=} ${name%%_*} >"$f" 2>&1
            echo "-- $(basename "$fc") ${m%%=*} $name: $(grep -c . "$f") lines"; grep "of the tiles" "$f"
        done
    done
done
for rep in $(seq 1 "$REPS"); do
    for v in "${VARIANTS[@]}"; do
        name=${v%%=*} envs=${v#*=}
        [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]] && continue
        [ "$envs" = "-" ] && envs=""
        for prec in f32 f16; do
            env $envs "${NANO[@]}" --backend cuda --precision $prec 2>/dev/null >>"$OUT/nanodet_${prec}_$name.jsonl"
            env $envs "${YOLO[@]}" --backend cuda --precision $prec 2>/dev/null >>"$OUT/yolo_${prec}_$name.jsonl"
        done
    done
done

if [ "${GPU_AB_EXTRAS:-1}" = 1 ]; then
echo "== where the tensor-core fused convolution loses: eager per-step profiles, f16, unfused and all fused"
REGIONDROP_PROFILE=1 "${NANO0[@]}" --backend cuda --precision f16 --fractions --frames 12 2>"$OUT/profile_f16.txt" >/dev/null
REGIONDROP_PROFILE=1 REGIONDROP_CUDA_FUSED_K=4096 "${NANO0[@]}" --backend cuda --precision f16 --fractions --frames 12 \
    2>"$OUT/profile_f16_tc.txt" >/dev/null
echo "== 4 streams, f16, defaults"
"${NANO[@]}" --backend cuda --precision f16 --streams 4 2>/dev/null | tee "$OUT/streams4_f16.txt"
fi

python3 - "$OUT" <<'EOF'
import glob, json, os, statistics, sys
rows = {}
for p in sorted(glob.glob(os.path.join(sys.argv[1], "*.jsonl"))):
    runs = [json.loads(l) for l in open(p) if l.startswith("{")]
    if runs:
        rows[os.path.basename(p)[:-6]] = runs
print("| model, precision, variant | dense ms (each run) | sparse ms (each run) | median speedup | agreement_map50 | median CPU ms a sparse frame |")
print("|---|---|---|---|---|---|")
for k, runs in rows.items():
    d = " / ".join(f"{r['dense_ms']:.3f}" for r in runs)
    s = " / ".join(f"{r['sparse_ms']:.3f}" for r in runs)
    sp = statistics.median(r["speedup"] for r in runs)
    cpu = [r["sparse_cpu_ms"] for r in runs if r.get("sparse_cpu_ms") is not None]
    cpu = f"{statistics.median(cpu):.3f}" if cpu else "—"
    print(f"| {k} | {d} | {s} | {sp:.2f} | {runs[0]['agreement_map50']:.4f} | {cpu} |")
EOF
