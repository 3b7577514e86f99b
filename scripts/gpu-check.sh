#!/usr/bin/env bash
# The GPU checks, run on a machine with an NVIDIA GPU from binaries prepared on the build machine
# (that machine needs neither Rust nor GStreamer). Prepare with:  scripts/gpu-check.sh --prepare
# then run `scripts/gpu-check.sh` on the GPU machine with the .devcarry/ folder next to it
# (`scripts/gpu-check.sh --quick`: the CUDA tests, the default benches, lanes and the switches around them, streams,
# the baselines and YOLOv8n; without it, also the eager, host-detection, exact and fraction runs).
# Models and frames travel gzipped (a lent machine takes at most 64 MiB of files). Where the
# onnx2torch wheel is carried in .devcarry/whl/, the PyTorch baselines also run through it.
# `GPU_AB_BASE=REV scripts/gpu-check.sh --prepare` also carries REV's kernels for gpu-ab.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
D=.devcarry
FRAMES=${GPU_CHECK_FRAMES:-40}
# The larger, compute-heavier case: YOLOv8n at 1280x736.
YOLO=yolov8n-nudenet-320.onnx
YOLO_SIZE=1280x736
YOLO_FRAMES=${GPU_CHECK_YOLO_FRAMES:-6}

if [ "${1:-}" = "--prepare" ]; then
    set -e
    cargo build --release --bin regiondrop-bench --tests --lib --example fusion_costs --example letterbox_place
    rm -rf "$D" && mkdir -p "$D/lib" "$D/models"
    cp target/release/regiondrop-bench "$D/"
    cp "$(ls -t target/release/deps/cuda_backend-* | grep -v '\.d$' | head -1)" "$D/cuda_backend"
    # The library's unit tests, for the AMX kernels on the lent machine's CPU where it has AMX
    # (GPU_CHECK_LIB_TESTS=1; they passed there in the fifteenth session, and the carry is near
    # its 64 MiB limit without them).
    [ "${GPU_CHECK_LIB_TESTS:-0}" = 1 ] &&
        cp "$(ls -t target/release/deps/gstregiondrop-* | grep -v '\.d$' | head -1)" "$D/lib_tests"
    cp target/release/examples/fusion_costs target/release/examples/letterbox_place "$D/"
    for f in regiondrop-bench cuda_backend fusion_costs letterbox_place lib_tests; do
        [ ! -f "$D/$f" ] || strip "$D/$f"
    done
    # GStreamer and GLib libraries the bench links against (it decodes nothing there).
    ldd "$D/regiondrop-bench" | awk '/=> \// {print $3}' | grep -E 'gst|glib|gobject|gmodule|orc|ffi|pcre2|unwind|dw|elf|bz2|lzma' \
        | xargs -I{} cp -L {} "$D/lib/"
    gzip -9 -c data/models/nanodet-416.onnx >"$D/models/nanodet-416.onnx.gz"
    # DBNet for the CUDA tests (its squeeze-excitation blocks run as Generic steps).
    [ -f data/models/ppocr-det.onnx ] && gzip -9 -c data/models/ppocr-det.onnx >"$D/models/ppocr-det.onnx.gz"
    target/release/regiondrop-bench --frames "$FRAMES" --save-frames "$D/frames.rgb" --backend cpu >/dev/null
    gzip -1 "$D/frames.rgb"
    if [ -f "data/models/$YOLO" ]; then
        gzip -9 -c "data/models/$YOLO" >"$D/models/$YOLO.gz"
        target/release/regiondrop-bench --model "data/models/$YOLO" --input-size "$YOLO_SIZE" \
            --frames "$YOLO_FRAMES" --save-frames "$D/frames-yolo.rgb" --backend cpu >/dev/null
        gzip -1 "$D/frames-yolo.rgb"
    fi
    mkdir -p "$D/whl"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$D/whl" onnx2torch==1.5.15 \
        || echo "onnx2torch wheel not downloaded: the baselines use the op interpreter only"
    # GPU_AB_BASE=REV: that revision's cuda/ in .devcarry/cuda-base, which scripts/gpu-ab.sh
    # times as the variant "base" (REGIONDROP_CUDA_KERNELS) beside this build's own kernels.
    if [ -n "${GPU_AB_BASE:-}" ]; then
        mkdir -p "$D/cuda-base"
        for f in $(git ls-tree --name-only "$GPU_AB_BASE" cuda/); do
            git show "$GPU_AB_BASE:$f" >"$D/cuda-base/$(basename "$f")"
        done
        echo "kernels of $(git rev-parse --short "$GPU_AB_BASE") in $D/cuda-base"
    fi
    grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || echo '/.devcarry/' >> .git/info/exclude
    du -sh "$D"
    exit 0
fi

OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
. scripts/devcarry-env.sh
if ls "$D"/whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site "$D"/whl/*.whl \
        && export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
fi
QUICK=$([ "${1:-}" = "--quick" ] && echo 1 || echo 0)
export REGIONDROP_REQUIRE_GPU=1 REGIONDROP_MODELS_DIR="$PWD/$D/models"
B0=(timeout 120 "$D/regiondrop-bench" --model "$D/models/nanodet-416.onnx" --video "$D/frames.rgb")
B=("${B0[@]}" --frames "$FRAMES")
Y=(timeout 120 "$D/regiondrop-bench" --model "$D/models/$YOLO" --input-size "$YOLO_SIZE" --video "$D/frames-yolo.rgb" --frames "$YOLO_FRAMES")

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
export REGIONDROP_FRAMES_RGB="$PWD/$D/frames.rgb"
# Most important first: a lease may end before the script does.
echo "== CUDA tests (against the CPU backend; f32 and f16, eager and CUDA graphs), in parallel; the tensor-core one in a process of its own (a device fault ends every test sharing the context)"
timeout 240 "$D/cuda_backend" --nocapture --skip tensor_core 2>&1 | tee "$OUT/cuda_tests.log"
timeout 120 "$D/cuda_backend" --nocapture tensor_core 2>&1 | tee "$OUT/cuda_tests_tc.log" | tail -4
grep -h "graph capture failed" "$OUT/cuda_tests.log" | sort | uniq -c | head -5
echo "== bf16 CPU kernels (AMX where this host's CPU has it, else AVX512-BF16; SKIPPED lines say which cannot run)"
[ -x "$D/lib_tests" ] && timeout 60 "$D/lib_tests" amx bf16 --nocapture 2>&1 | tee "$OUT/cpu_bf16_tests.log" | grep -i "skipped\|test result\|panicked\|FAILED" | head -8
echo "== bench cuda (defaults), f32 and f16"
"${B[@]}" --backend cuda 2>"$OUT/bench_cuda.err" | tee "$OUT/bench_cuda.json"
grep -i "cuda\|graph\|warning" "$OUT/bench_cuda.err" | head -3
"${B[@]}" --backend cuda --precision f16 2>"$OUT/bench_cuda_f16.err" | tee "$OUT/bench_cuda_f16.json"
echo "== the pipelined convolution (cp.async; opt-in): timed as more ways at start-up (REGIONDROP_CUDA_FUSED_PIPE=auto), f16 and f32; every convolution fused, pipelined where it can be (=1) and not, f16; the same on $YOLO at $YOLO_SIZE"
REGIONDROP_CUDA_FUSED_PIPE=auto "${B[@]}" --backend cuda --precision f16 2>"$OUT/bench_cuda_f16_pipeauto.err" | tee "$OUT/bench_cuda_f16_pipeauto.json"
grep -o "convolutions fused[^,]*\(, [0-9]* of them pipelined\)\?" "$OUT/bench_cuda_f16_pipeauto.err" | head -1
REGIONDROP_CUDA_FUSED_PIPE=auto "${B[@]}" --backend cuda 2>/dev/null | tee "$OUT/bench_cuda_pipeauto.json"
REGIONDROP_CUDA_FUSED_K=4096 REGIONDROP_CUDA_FUSED_PIPE=1 "${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_tc_pipe1.json"
REGIONDROP_CUDA_FUSED_K=4096 "${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_tc_pipeoff.json"
if [ -f "$D/models/$YOLO" ]; then
    REGIONDROP_CUDA_FUSED_PIPE=auto "${Y[@]}" --backend cuda --precision f16 2>"$OUT/yolo_cuda_f16_pipeauto.err" | tee "$OUT/yolo_cuda_f16_pipeauto.json"
    grep -o "convolutions fused[^,]*\(, [0-9]* of them pipelined\)\?" "$OUT/yolo_cuda_f16_pipeauto.err" | head -1
    REGIONDROP_CUDA_FUSED_PIPE=auto "${Y[@]}" --backend cuda 2>/dev/null | tee "$OUT/yolo_cuda_pipeauto.json"
    "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16_pipeoff.json"
    REGIONDROP_CUDA_FUSED_K=4096 REGIONDROP_CUDA_FUSED_PIPE=1 "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16_tc_pipe1.json"
    REGIONDROP_CUDA_FUSED_K=4096 "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16_tc_pipeoff.json"
fi
echo "== every graph on one stream (REGIONDROP_CUDA_LANES=1; the default times 4 lanes against one stream at start-up): f32, f16, f16 forced fractions; one stream without PDL (the defaults before the eighteenth session); the defaults again after them"
L=(env REGIONDROP_CUDA_LANES=1)
grep -o "CUDA graphs[^,]*" "$OUT/bench_cuda_f16.err" | head -1
"${L[@]}" "${B[@]}" --backend cuda 2>/dev/null | tee "$OUT/bench_cuda_lanes1.json"
"${L[@]}" "${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_lanes1.json"
"${L[@]}" "${B[@]}" --backend cuda --precision f16 --fractions 2>/dev/null | tee "$OUT/bench_cuda_f16_lanes1_fractions.json"
REGIONDROP_CUDA_LANES=1 REGIONDROP_CUDA_PDL=0 "${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_lanes1_pdl0.json"
"${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_again.json"
echo "== the mask grown by 16 pixels instead of one tile (--dilation 0 --margin 16: cells scored on the device), f16"
"${B[@]}" --backend cuda --precision f16 --dilation 0 --margin 16 2>/dev/null | tee "$OUT/bench_cuda_f16_margin16.json"
echo "== deeper layers grown past the mask (--growth-limit 1: per-layer tile lists; over 300 frames the setting that keeps agreement_map50 >= 0.97), f16"
"${B[@]}" --backend cuda --precision f16 --growth-limit 1 2>/dev/null | tee "$OUT/bench_cuda_f16_growth1.json"
echo "== every convolution fused on the tensor cores (REGIONDROP_CUDA_FUSED_K=4096 with f16: rd_conv_rows_tc), then none (=0; the default times each); forced fractions all fused; phases"
REGIONDROP_CUDA_FUSED_K=4096 "${B[@]}" --backend cuda --precision f16 2>"$OUT/bench_cuda_f16_tc.err" | tee "$OUT/bench_cuda_f16_tc.json"
grep -i "fused\|error" "$OUT/bench_cuda_f16_tc.err" | head -2
REGIONDROP_CUDA_FUSED_K=0 "${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_nofuse.json"
"${B[@]}" --backend cuda --precision f16 --fractions 2>/dev/null | tee "$OUT/bench_cuda_f16_fractions.json"
REGIONDROP_CUDA_FUSED_K=4096 "${B[@]}" --backend cuda --precision f16 --fractions 2>/dev/null | tee "$OUT/bench_cuda_f16_tc_fractions.json"
REGIONDROP_PROFILE=phases REGIONDROP_CUDA_FUSED_K=4096 "${B[@]}" --backend cuda --precision f16 2>"$OUT/phases_cuda_f16_tc.txt" >/dev/null
grep -v "^\s*$" "$OUT/phases_cuda_f16_tc.txt" | tail -8
echo "== the defaults without programmatic dependent launch (REGIONDROP_CUDA_PDL=0), f16; phases"
ALL=(env REGIONDROP_CUDA_PDL=0)
"${ALL[@]}" "${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_pdl0.json"
"${ALL[@]}" REGIONDROP_PROFILE=phases "${B[@]}" --backend cuda --precision f16 2>&1 >/dev/null | grep -v "^\s*$" | tail -8
echo "== PyTorch/cuDNN dense baselines: the op interpreter, and onnx2torch where carried"
T=(timeout 180 python3 scripts/torch_dense_baseline.py)
"${T[@]}" "$D/models/nanodet-416.onnx" "$D/frames.rgb" 2>&1 | tee "$OUT/torch.json"
if python3 -c "import onnx2torch" 2>/dev/null || { echo "onnx2torch not importable: its baselines skipped"; false; }; then
    "${T[@]}" "$D/models/nanodet-416.onnx" "$D/frames.rgb" --onnx2torch 2>&1 | tail -1 | tee "$OUT/torch_onnx2torch.json"
    [ -f "$D/models/$YOLO" ] && "${T[@]}" "$D/models/$YOLO" "$D/frames-yolo.rgb" --onnx2torch --size "$YOLO_SIZE" \
        --norm unit --iters 30 2>&1 | tail -1 | tee "$OUT/torch_yolo_onnx2torch.json"
fi
if [ "$QUICK" = 1 ] && [ -f "$D/models/$YOLO" ]; then
    echo "== $YOLO at $YOLO_SIZE: defaults f32 / f16, host tail, host selection, all fused, no PDL, phases, CPU"
    "${Y[@]}" --backend cuda 2>/dev/null | tee "$OUT/yolo_cuda.json"
    "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16.json"
    "${L[@]}" "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16_lanes1.json"
    REGIONDROP_CUDA_DEVICE_TAIL=0 "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16_hosttail.json"
    REGIONDROP_PROFILE=phases "${Y[@]}" --backend cuda --precision f16 2>&1 >/dev/null | grep -v "^\s*$" | tail -12
    REGIONDROP_CUDA_SELECT=0 "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16_hostselect.json"
    REGIONDROP_CUDA_FUSED_K=4096 "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16_tc.json"
    "${ALL[@]}" "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16_pdl0.json"
    "${ALL[@]}" REGIONDROP_PROFILE=phases "${Y[@]}" --backend cuda --precision f16 2>&1 >/dev/null | grep -v "^\s*$" | tail -12
    REGIONDROP_PROFILE=phases "${Y[@]}" --backend cuda --precision f16 2>&1 >/dev/null | grep -v "^\s*$" | tail -12
    "${Y[@]}" --backend cpu --threads 0 2>/dev/null | tee "$OUT/yolo_cpu.json"
    echo "== the CPU backend in bf16 on AMX tiles where this host's CPU has them (else f32, with a warning), all threads"
    "${B[@]}" --backend cpu --threads 0 --precision bf16 2>"$OUT/bench_cpu_bf16.err" | tee "$OUT/bench_cpu_bf16.json"
    grep -i "bf16\|amx" "$OUT/bench_cpu_bf16.err" | head -2
fi
echo "== the first convolution fused (REGIONDROP_CUDA_FUSED_K=32), f32 and f16"
REGIONDROP_CUDA_FUSED_K=32 "${B[@]}" --backend cuda 2>/dev/null | tee "$OUT/bench_cuda_fusedk32.json"
REGIONDROP_CUDA_FUSED_K=32 "${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_fusedk32.json"
echo "== every convolution fused in f32 arithmetic (REGIONDROP_CUDA_FUSED_K=4096), f32, and f16 without the tensor cores (REGIONDROP_CUDA_FUSED_TC=0); per-step eager profiles"
REGIONDROP_CUDA_FUSED_K=4096 "${B[@]}" --backend cuda 2>/dev/null | tee "$OUT/bench_cuda_fusedk4096.json"
REGIONDROP_CUDA_FUSED_TC=0 REGIONDROP_CUDA_FUSED_K=4096 "${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_fusedk4096_notc.json"
REGIONDROP_PROFILE=1 "${B0[@]}" --backend cuda --fractions --frames 12 2>"$OUT/profile_cuda.txt" >/dev/null
REGIONDROP_PROFILE=1 REGIONDROP_CUDA_FUSED_K=4096 "${B0[@]}" --backend cuda --fractions --frames 12 2>"$OUT/profile_cuda_fused.txt" >/dev/null
echo "== no convolution fused (REGIONDROP_CUDA_FUSED_K=0; the default times each at start-up), f32"
REGIONDROP_CUDA_FUSED_K=0 "${B[@]}" --backend cuda 2>/dev/null | tee "$OUT/bench_cuda_nofuse.json"
echo "== the same with 4x4 outputs per thread (REGIONDROP_CUDA_FUSED_TILE=4x4), f32"
REGIONDROP_CUDA_FUSED_TILE=4x4 REGIONDROP_CUDA_FUSED_K=4096 "${B[@]}" --backend cuda 2>/dev/null | tee "$OUT/bench_cuda_fusedk4096_t44.json"
REGIONDROP_PROFILE=1 REGIONDROP_CUDA_FUSED_TILE=4x4 REGIONDROP_CUDA_FUSED_K=4096 "${B0[@]}" --backend cuda --fractions --frames 12 2>"$OUT/profile_cuda_fused_t44.txt" >/dev/null
echo "== without programmatic dependent launch (REGIONDROP_CUDA_PDL=0): CUDA tests, then f32 and f16"
REGIONDROP_CUDA_PDL=0 timeout 240 "$D/cuda_backend" --skip tensor_core 2>&1 | tail -3 | tee "$OUT/cuda_tests_pdl0.log"
REGIONDROP_CUDA_PDL=0 "${B[@]}" --backend cuda 2>/dev/null | tee "$OUT/bench_cuda_pdl0.json"
REGIONDROP_CUDA_PDL=0 "${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_pdl0_again.json"
echo "== every output downloaded (REGIONDROP_CUDA_SELECT=0; the default selects candidates on the device), f32 and f16; phases"
REGIONDROP_CUDA_SELECT=0 "${B[@]}" --backend cuda 2>/dev/null | tee "$OUT/bench_cuda_hostselect.json"
REGIONDROP_CUDA_SELECT=0 "${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_hostselect.json"
REGIONDROP_PROFILE=phases REGIONDROP_CUDA_SELECT=0 "${B[@]}" --backend cuda --precision f16 2>&1 >/dev/null | grep -v "^\s*$" | tail -8
echo "== several streams in one process (multi-camera), f16: 4 and 8 engines at once"
"${B[@]}" --backend cuda --precision f16 --streams 4 2>/dev/null | tee "$OUT/streams4_cuda_f16.txt"
"${B[@]}" --backend cuda --precision f16 --streams 8 2>/dev/null | tee "$OUT/streams8_cuda_f16.txt"
REGIONDROP_CUDA_SYNC=block "${B[@]}" --backend cuda --precision f16 --streams 8 2>/dev/null | tee "$OUT/streams8_cuda_f16_block.txt"
if [ -x "$D/fusion_costs" ]; then
    echo "== each fusable convolution apart, fused and pipelined, f16 and f32 (examples/fusion_costs: 5, 35 and 100 % of the tiles)"
    timeout 60 "$D/fusion_costs" "$D/models/nanodet-416.onnx" f16 >"$OUT/fusion_costs_nanodet_f16.txt" 2>&1
    timeout 60 "$D/fusion_costs" "$D/models/nanodet-416.onnx" f32 >"$OUT/fusion_costs_nanodet_f32.txt" 2>&1
    [ -f "$D/models/$YOLO" ] && timeout 60 "$D/fusion_costs" "$D/models/$YOLO" "$YOLO_SIZE" f16 \
        >"$OUT/fusion_costs_yolo_f16.txt" 2>&1
    grep -h "of the tiles" "$OUT"/fusion_costs_*.txt
fi
if [ -x "$D/letterbox_place" ]; then
    echo "== whole frames with the letterbox on the host and on the device, camera-sized RGB and NV12, f16 (examples/letterbox_place)"
    timeout 120 "$D/letterbox_place" "$D/models/nanodet-416.onnx" "$D/frames.rgb" 1920x1080 1280x720 --precision f16 \
        2>&1 | tee "$OUT/letterbox_place_f16.txt"
    echo "-- the same, each frame uploaded in one piece (REGIONDROP_CUDA_UPLOAD_PIECE_KB=0; the default overlaps 1 MiB pieces' uploads with the copy into pinned memory)"
    REGIONDROP_CUDA_UPLOAD_PIECE_KB=0 timeout 120 "$D/letterbox_place" "$D/models/nanodet-416.onnx" "$D/frames.rgb" \
        1920x1080 1280x720 --precision f16 2>&1 | tee "$OUT/letterbox_place_f16_onepiece.txt"
    echo "-- the same, each wait asleep on an event (REGIONDROP_CUDA_SYNC=block; the default spins): CPU time against latency"
    REGIONDROP_CUDA_SYNC=block timeout 120 "$D/letterbox_place" "$D/models/nanodet-416.onnx" "$D/frames.rgb" \
        1920x1080 1280x720 --precision f16 2>&1 | tee "$OUT/letterbox_place_f16_block.txt"
fi
if [ "$QUICK" = 1 ]; then
    python3 scripts/gpu-summary.py "$OUT" | tee "$OUT/summary.md"
    exit 0
fi
echo "== fused convolutions (REGIONDROP_CUDA_FUSED_K=K: convolutions with K <= K in one kernel), f32 and f16"
for k in 288; do
    REGIONDROP_CUDA_FUSED_K=$k "${B[@]}" --backend cuda 2>/dev/null | tee "$OUT/bench_cuda_fusedk$k.json"
    REGIONDROP_CUDA_FUSED_K=$k "${B[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/bench_cuda_f16_fusedk$k.json"
done
echo "== bench cuda, forced active fractions, f32 (f16: in the tensor-core section)"
"${B[@]}" --backend cuda --fractions 2>/dev/null | tee "$OUT/bench_cuda_fractions.json"
echo "== where a frame's time goes: phases with graphs (REGIONDROP_PROFILE=phases), steps eager (=1)"
REGIONDROP_PROFILE=phases "${B[@]}" --backend cuda --precision f16 2>"$OUT/phases_cuda_f16.txt" >/dev/null
cat "$OUT/phases_cuda_f16.txt" "$OUT/phases_cuda_f16_tc.txt" | grep -v "^\\s*$" | tail -24
echo "== bench cuda without CUDA graphs (REGIONDROP_CUDA_GRAPHS=0)"
REGIONDROP_CUDA_GRAPHS=0 "${B[@]}" --backend cuda 2>/dev/null | tee "$OUT/bench_cuda_eager.json"
echo "== bench cuda (defaults), change detection on the host (REGIONDROP_CUDA_DETECT=0)"
REGIONDROP_CUDA_DETECT=0 "${B[@]}" --backend cuda 2>/dev/null | tee "$OUT/bench_cuda_hostdetect.json"
echo "== bench cuda, exact mode"
"${B[@]}" --backend cuda --exact 2>/dev/null | tee "$OUT/bench_cuda_exact.json"
if [ -f "$D/models/$YOLO" ]; then
    echo "== $YOLO at $YOLO_SIZE: steps (eager), then defaults f32 / f16 / f16 fused, CPU"
    REGIONDROP_PROFILE=1 "${Y[@]}" --backend cuda 2>"$OUT/yolo_profile.txt" >"$OUT/yolo_profile.json"
    grep -A8 "phase of a frame" "$OUT/yolo_profile.txt" | head -20
    "${Y[@]}" --backend cuda 2>/dev/null | tee "$OUT/yolo_cuda.json"
    "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16.json"
    REGIONDROP_CUDA_FUSED_K=4096 "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16_fusedk4096.json"
    REGIONDROP_CUDA_DEVICE_TAIL=0 "${Y[@]}" --backend cuda --precision f16 2>/dev/null | tee "$OUT/yolo_cuda_f16_hosttail.json"
    "${Y[@]}" --backend cpu --threads 0 2>/dev/null | tee "$OUT/yolo_cpu.json"
    echo "== the CPU backend in bf16 on AMX tiles where this host's CPU has them (else f32, with a warning), all threads"
    "${B[@]}" --backend cpu --threads 0 --precision bf16 2>"$OUT/bench_cpu_bf16.err" | tee "$OUT/bench_cpu_bf16.json"
    grep -i "bf16\|amx" "$OUT/bench_cpu_bf16.err" | head -2
fi
echo "== bench cpu, all cores of this machine"
"${B[@]}" --backend cpu --threads 0 2>/dev/null | tee "$OUT/bench_cpu.json"
echo "== summary (markdown, for BENCHMARKS.md)"
python3 scripts/gpu-summary.py "$OUT" | tee "$OUT/summary.md"
