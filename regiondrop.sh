#!/usr/bin/env bash
# regiondrop.sh: the project's one entry point, from a fresh clone to results.
#
#   ./regiondrop.sh demo     set up, build, run regiondrop on the sample clip, print detections
#                            per second and the measured sparse-vs-dense speedup, and write an
#                            annotated video and PNG frames under out/
#   ./regiondrop.sh test     set up, build everything, run the whole test suite (what CI runs)
#   ./regiondrop.sh build    set up, then cargo build --release (plugin + regiondrop-bench)
#   ./regiondrop.sh setup    install what is missing: Debian packages (apt-get), the models and
#                            the sample clip (scripts/setup-assets.sh), the project venv .venv/
#                            with onnxruntime and NVRTC (scripts/requirements.txt)
#   ./regiondrop.sh env      print the environment the other commands use (for `eval`)
#   ./regiondrop.sh help     this text
#
# Every step is re-runnable: what is already there is checked (dpkg, SHA-256, pip stamp) and
# skipped, so a second run of `setup` takes seconds.
#
# Environment:
#   CARGO_TARGET_DIR            cargo's target dir (default: ./target)
#   REGIONDROP_ASSET_CACHE      per-user cache of verified assets, shared by every clone on this
#                               machine (default: ${XDG_CACHE_HOME:-~/.cache}/regiondrop); set to
#                               "none" to disable
#   REGIONDROP_DEMO_FRAMES      demo: frames of the clip given to gst-launch-1.0 (default: all)
#   REGIONDROP_BENCH_FRAMES     demo: frames for the dense-vs-sparse measurement (default: 200)
#   REGIONDROP_VIDEO, REGIONDROP_MODEL   demo: another clip / ONNX model (default: the sample clip
#                               data/video/vtest.avi and the COCO NanoDet data/models/nanodet-416.onnx)
#   REGIONDROP_SKIP_APT=1       setup: do not check or install Debian packages
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

export DEBIAN_FRONTEND=noninteractive

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
RELEASE_DIR="$TARGET_DIR/release"
PLUGIN="$RELEASE_DIR/libgstregiondrop.so"
BENCH="$RELEASE_DIR/regiondrop-bench"
VENV="$ROOT/.venv"
VIDEO="${REGIONDROP_VIDEO:-data/video/vtest.avi}"
MODEL="${REGIONDROP_MODEL:-data/models/nanodet-416.onnx}"
ASSET_CACHE="${REGIONDROP_ASSET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/regiondrop}"

# Debian packages, each with the reason it is needed (checked with dpkg-query, installed if missing).
#   build-essential                    cc/ld: cargo links the plugin and the -sys crates
#   pkg-config                         the gstreamer-*-sys crates find GStreamer through it
#   libgstreamer1.0-dev                gstreamer, gstreamer-base, gstreamer-check (tests)
#   libgstreamer-plugins-base1.0-dev   gstreamer-video, gstreamer-app
#   gstreamer1.0-plugins-base          decodebin, videoconvert, videoscale, appsrc/appsink
#   gstreamer1.0-plugins-good          avidemux (vtest.avi); jpegenc + matroskamux (out/annotated.mkv)
#   gstreamer1.0-plugins-bad           GStreamer's CUDA library and elements (CUDAMemory input)
#   gstreamer1.0-libav                 avdec_msmpeg4: vtest.avi is MS-MPEG4v3
#   gstreamer1.0-tools                 gst-launch-1.0, gst-inspect-1.0
#   python3-venv                       the project venv (.venv/) on Debian's python3
#   libonnx-testdata                   ONNX's backend node tests (tests/onnx_conformance.rs)
# meson and ninja-build are only needed for the meson build (meson.build), not here.
APT_PACKAGES=(
  build-essential pkg-config
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-libav gstreamer1.0-tools
  python3-venv
  libonnx-testdata
)

log()  { echo "[regiondrop] $*" >&2; }
step() { echo >&2; echo "[regiondrop] ==> $*" >&2; }
die()  { echo "[regiondrop] ERROR: $*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# ------------------------------------------------------------------------------------- setup
need_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
    die "cargo and rustc are needed (the Rust toolchain, e.g. from rustup); not found on PATH"
  fi
}

apt_missing() {  # prints the packages of "$@" that are not installed
  local p
  for p in "$@"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
      echo "$p"
    fi
  done
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"; fi
}

setup_apt() {
  if [ "${REGIONDROP_SKIP_APT:-0}" = 1 ]; then log "skipping Debian packages (REGIONDROP_SKIP_APT=1)"; return 0; fi
  if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "this set-up needs Debian's apt-get/dpkg (Debian bookworm or later); install the GStreamer 1.22+ development packages by hand and rerun with REGIONDROP_SKIP_APT=1"
  fi
  local wanted=("${APT_PACKAGES[@]}") missing=()
  # scripts/setup-assets.sh needs npm only to build the NanoDet model; Debian's npm brings node.
  command -v npm >/dev/null 2>&1 || wanted+=(npm)
  mapfile -t missing < <(apt_missing "${wanted[@]}")
  if [ "${#missing[@]}" = 0 ]; then
    log "Debian packages: all ${#wanted[@]} present"
    return 0
  fi
  log "Debian packages missing: ${missing[*]}"
  log "apt-get update"
  as_root apt-get -o DPkg::Lock::Timeout=300 -qq update \
    || die "apt-get update failed: is Debian's archive reachable?"
  log "apt-get install ${missing[*]} (this may take a few minutes)"
  as_root apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
  mapfile -t missing < <(apt_missing "${wanted[@]}")
  [ "${#missing[@]}" = 0 ] || die "still missing after apt-get install: ${missing[*]}"
}

check_gstreamer() {
  local v
  v="$(pkg-config --modversion gstreamer-1.0 2>/dev/null)" \
    || die "pkg-config cannot find gstreamer-1.0 (libgstreamer1.0-dev missing?)"
  case "$v" in
    1.2[2-9]*|1.[3-9][0-9]*) ;;
    *) die "GStreamer $v found; regiondrop needs GStreamer 1.22 or newer" ;;
  esac
  for e in decodebin videoconvert avidemux avdec_msmpeg4; do
    gst-inspect-1.0 --exists "$e" || die "GStreamer element '$e' is missing (see APT_PACKAGES in $0)"
  done
  log "GStreamer $v with decodebin, videoconvert, avidemux, avdec_msmpeg4"
}

# The verified assets are also kept in a per-user cache keyed by SHA-256, so a fresh clone on the
# same machine (CI) does not download and convert them again. setup-assets.sh re-verifies them.
seed_assets_from_cache() {
  [ "$ASSET_CACHE" != none ] || return 0
  local sha path
  while read -r sha path; do
    [ -n "$sha" ] || continue
    path="${path#\*}"
    if [ -f "$path" ] && [ "$(sha256sum "$path" | cut -d' ' -f1)" = "$sha" ]; then continue; fi
    if [ -f "$ASSET_CACHE/assets/$sha" ] && [ "$(sha256sum "$ASSET_CACHE/assets/$sha" | cut -d' ' -f1)" = "$sha" ]; then
      mkdir -p "$(dirname "$path")"
      cp "$ASSET_CACHE/assets/$sha" "$path.tmp" && mv -f "$path.tmp" "$path"
      log "asset $path taken from $ASSET_CACHE/assets (SHA-256 verified)"
    fi
  done < scripts/assets.sha256
}

store_assets_in_cache() {
  [ "$ASSET_CACHE" != none ] || return 0
  local sha path
  mkdir -p "$ASSET_CACHE/assets" 2>/dev/null || { log "cannot write $ASSET_CACHE (asset cache not used)"; return 0; }
  while read -r sha path; do
    [ -n "$sha" ] || continue
    path="${path#\*}"
    if [ ! -f "$ASSET_CACHE/assets/$sha" ] && [ -f "$path" ]; then
      cp "$path" "$ASSET_CACHE/assets/$sha.tmp.$$" && mv -f "$ASSET_CACHE/assets/$sha.tmp.$$" "$ASSET_CACHE/assets/$sha"
    fi
  done < scripts/assets.sha256
}

# the wheel nvidia-cuda-nvrtc-cu12 (scripts/requirements.txt) ships libnvrtc.so.12 here
nvrtc_libdir() {
  local d
  for d in "$VENV"/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib; do
    if [ -e "$d/libnvrtc.so.12" ]; then echo "$d"; return 0; fi
  done
  return 1
}

cmd_setup() {
  local t0=$SECONDS
  step "setup"
  need_rust
  setup_apt
  check_gstreamer
  seed_assets_from_cache
  # models, sample clip and .venv/ (onnxruntime, numpy, nvidia-cuda-nvrtc-cu12)
  scripts/setup-assets.sh >&2 || die "scripts/setup-assets.sh failed (see above)"
  store_assets_in_cache
  nvrtc_libdir >/dev/null \
    || die "libnvrtc.so.12 not found under $VENV/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib (the pip wheel nvidia-cuda-nvrtc-cu12 from scripts/requirements.txt); delete $VENV/.requirements.sha256 and rerun"
  log "setup done in $((SECONDS - t0)) s ($(rustc --version), NVRTC wheel in $(nvrtc_libdir))"
}

# ------------------------------------------------------------------------------------- env
export_env() {
  local nv
  nv="$(nvrtc_libdir)" || die "NVRTC wheel missing: run ./regiondrop.sh setup"
  export LD_LIBRARY_PATH="$nv${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export GST_PLUGIN_PATH="$RELEASE_DIR${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
  export REGIONDROP_REQUIRE_NVRTC=1
}

cmd_env() {
  export_env
  printf 'export LD_LIBRARY_PATH=%q\n' "$LD_LIBRARY_PATH"
  printf 'export GST_PLUGIN_PATH=%q\n' "$GST_PLUGIN_PATH"
  printf 'export REGIONDROP_REQUIRE_NVRTC=1\n'
  printf 'export PATH=%q\n' "$ROOT/.venv/bin:$PATH"
}

# ------------------------------------------------------------------------------------- build
cmd_build() {
  cmd_setup
  step "cargo build --release"
  local t0=$SECONDS
  cargo build --release || die "cargo build --release failed"
  [ -f "$PLUGIN" ] || die "cargo build finished but $PLUGIN is missing"
  log "built in $((SECONDS - t0)) s: $PLUGIN"
  [ -x "$BENCH" ] && log "  and $BENCH"
  return 0
}

# ------------------------------------------------------------------------------------- test
cmd_test() {
  cmd_setup
  export_env
  local t0=$SECONDS log rc=0
  step "cargo build --release --all-targets"
  cargo build --release --all-targets || die "cargo build --release --all-targets failed"

  mkdir -p "$TARGET_DIR"
  log="$TARGET_DIR/regiondrop-test.log"
  step "cargo test --release (LD_LIBRARY_PATH has the NVRTC wheel, REGIONDROP_REQUIRE_NVRTC=1, GST_PLUGIN_PATH=$GST_PLUGIN_PATH)"
  # --nocapture: tests that cannot run here (no GPU) print "SKIPPED: why", counted below.
  cargo test --release --no-fail-fast -- --nocapture 2>&1 | tee "$log" || rc=$?

  # the plugin must load in a stock gst-inspect-1.0, found through GST_PLUGIN_PATH
  step "gst-inspect-1.0 regiondrop (the built plugin loads)"
  local inspect_ok=1
  if gst-inspect-1.0 regiondrop >"$TARGET_DIR/regiondrop-inspect.txt" 2>&1; then
    log "ok: element regiondrop from $(awk '/^  Filename/ {print $2; exit}' "$TARGET_DIR/regiondrop-inspect.txt")"
  else
    inspect_ok=0
    sed -n '1,20p' "$TARGET_DIR/regiondrop-inspect.txt" >&2
    log "FAILED: gst-inspect-1.0 does not find element regiondrop in $GST_PLUGIN_PATH"
  fi

  # one summary over every test binary of cargo test, plus the plugin check
  local passed failed ignored
  read -r passed failed ignored < <(awk '
    /^test result: / {
      for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/)  p += $i
        if ($(i+1) ~ /^failed/)  f += $i
        if ($(i+1) ~ /^ignored/) g += $i
      }
    }
    END { print p + 0, f + 0, g + 0 }' "$log")
  local failing
  failing="$(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -e 's/^test //' -e 's/ \.\.\. FAILED$//' || true)"
  if [ "$inspect_ok" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  # A test that skipped (e.g. CUDA tests without a GPU) passed in cargo's count: count it as skipped.
  # Tests run in parallel, so a skip line can land in the middle of another test's line.
  local skips
  skips=$(grep -o 'SKIPPED: .*' "$log" | wc -l)
  passed=$((passed - skips)); ignored=$((ignored + skips))
  grep -o 'SKIPPED: .*' "$log" | sort | uniq -c | sed 's/^/  /' || true

  echo
  if [ -n "$failing" ]; then
    echo "failing tests:"; sed 's/^/  /' <<<"$failing"
  fi
  if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
    # cargo failed without a failing test (e.g. a test binary did not compile or crashed)
    failed=$((failed + 1))
    echo "cargo test exited with status $rc (see $log)"
  fi
  echo "regiondrop test: cargo test + plugin check in $((SECONDS - t0)) s, log $log"
  echo "regiondrop: $passed passed, $failed failed, $ignored skipped"
  [ "$failed" = 0 ] && [ "$rc" = 0 ]
}

# ------------------------------------------------------------------------------------- demo
# Formats the demo pipeline's output (gst-launch-1.0 -m, with GST_DEBUG=regiondrop:DEBUG on the
# same stream): per second of video, the detections the element logged for each frame
# ("frame N pts H:MM:SS.NNN: K detections: person #3 0.81 [x,y wxh], ...", the #id with
# tracking=true), the objects tracked in that second, and each regiondrop-stats element message as
# it was posted.
# shellcheck disable=SC2016  # awk's own $ variables
DEMO_AWK='
# every frame logs one line; the n-th such line is the n-th frame the element processed, which is
# what the "frames" field of a stats message counts, so each message goes under its second
/ detections: / && / pts / {
  if (match($0, / pts [0-9]+:[0-9]+:[0-9]+/)) {
    split(substr($0, RSTART + 5, RLENGTH - 5), t, ":")
    s = t[1] * 3600 + t[2] * 60 + t[3]
  }
  if (!(s in nframes)) order[++nsec] = s
  total++; sec_of[total] = s; nframes[s]++
  list = $0; sub(/^.* detections: */, "", list)
  n = split(list, items, /\], */); lastf = ""
  split("", cnt); split("", seen_order); k = 0
  for (i = 1; i <= n; i++) {
    lab = items[i]; sub(/ +-?[0-9.]+ *\[.*$/, "", lab); sub(/^ +/, "", lab)   # "sports ball #7 0.45 [x,y wxh"
    if (match(lab, / #[0-9]+$/)) {
      id = substr(lab, RSTART + 2)
      if (!((s, id) in sec_ids)) { sec_ids[s, id] = 1; ntracked[s]++ }
      if (!(id in all_ids)) { all_ids[id] = 1; nall++ }
      lab = substr(lab, 1, RSTART - 1)
    }
    if (lab == "") continue
    if (!(lab in cnt)) seen_order[++k] = lab
    cnt[lab]++; ndets[s]++
  }
  for (i = 1; i <= k; i++) lastf = lastf (i > 1 ? ", " : "") cnt[seen_order[i]] " " seen_order[i]
  last[s] = (lastf == "" ? "none" : lastf)
  next
}
/regiondrop-stats/ {
  line = $0
  sub(/^.*regiondrop-stats, */, "", line)
  gsub(/=\([a-zA-Z0-9_]+\)/, "=", line)
  gsub(/, active-(x|y|width|height)=[0-9]+/, "", line)
  sub(/;? *$/, "", line)
  m = split(line, kv, ", "); line = ""
  for (i = 1; i <= m; i++) {
    key = kv[i]; val = kv[i]; sub(/=.*/, "", key); sub(/^[^=]*=/, "", val)
    if (val ~ /^-?[0-9]+\.[0-9][0-9][0-9][0-9]+$/) val = sprintf("%.4g", val)
    line = line (i > 1 ? ", " : "") key "=" val
  }
  f = 0
  if (match(line, /(^|, )frames=[0-9]+/)) { f = substr(line, RSTART, RLENGTH); sub(/.*=/, "", f); f += 0 }
  nst++; st_line[nst] = line; st_frame[nst] = f
  next
}
/ERROR|WARN/ { warn[++nwarn] = $0 }
END {
  for (i = 1; i <= nwarn; i++) print "  " warn[i]
  for (j = 1; j <= nst; j++) st_sec[j] = (st_frame[j] in sec_of) ? sec_of[st_frame[j]] : ""
  printed = 0
  for (i = 1; i <= nsec; i++) {
    s = order[i]
    tracked = (nall > 0) ? sprintf("  %3d objects", ntracked[s]) : ""
    printf "  t=%4ds  %3d frames  %5.1f detections/frame%s   last frame: %s\n", s, nframes[s], ndets[s] / nframes[s], tracked, last[s]
    for (j = 1; j <= nst; j++) if (st_sec[j] == s "") { print "          stats: " st_line[j]; printed++ }
  }
  for (j = 1; j <= nst; j++) if (st_sec[j] == "") print "          stats: " st_line[j]
  if (nall > 0) print "  " nall " track ids over the run (tracking=true: objects keep their id from frame to frame)"
  if (total == 0) print "  (no per-frame detection lines in the log: is the element logging at GST_DEBUG=regiondrop:DEBUG?)"
}
'

cmd_demo() {
  cmd_build
  export_env
  [ -f "$VIDEO" ] || die "video $VIDEO not found"
  [ -f "$MODEL" ] || die "model $MODEL not found"
  [ -x "$BENCH" ] || die "$BENCH was not built"
  mkdir -p out
  local limit=()
  if [ -n "${REGIONDROP_DEMO_FRAMES:-}" ]; then limit=(identity "eos-after=$REGIONDROP_DEMO_FRAMES" !); fi

  step "1/2 gst-launch-1.0: regiondrop on $VIDEO with $MODEL"
  # vtest.avi runs at 10 frames/s: stats-interval=10 posts one regiondrop-stats message per second
  local pipeline=(filesrc "location=$VIDEO" ! decodebin ! videoconvert ! "${limit[@]}"
                  regiondrop "model=$MODEL" stats-interval=10 tracking=true ! fakesink sync=false)
  echo "  GST_DEBUG=regiondrop:DEBUG gst-launch-1.0 -m ${pipeline[*]}" >&2
  echo "  per second of video: detections (as the element logs them), objects tracked, and the element's stats messages" >&2
  local t0=$SECONDS rc=0
  GST_DEBUG="*:ERROR,regiondrop:DEBUG" GST_DEBUG_NO_COLOR=1 \
    gst-launch-1.0 -m "${pipeline[@]}" >out/gst-launch.log 2>&1 || rc=$?
  awk "$DEMO_AWK" out/gst-launch.log
  [ "$rc" = 0 ] || { tail -20 out/gst-launch.log >&2; die "gst-launch-1.0 failed (exit $rc); full output in out/gst-launch.log"; }
  log "pipeline ran in $((SECONDS - t0)) s (full output: out/gst-launch.log)"

  # regiondrop-bench draws the boxes and the change mask on the frames it measures
  # (pipelines/draw-detections.sh does the same in a pipeline, with regiondropoverlay).
  local frames="${REGIONDROP_BENCH_FRAMES:-200}"
  step "2/2 regiondrop-bench --frames $frames --annotate out/: dense vs sparse on the same frames, annotated output"
  t0=$SECONDS
  "$BENCH" --model "$MODEL" --video "$VIDEO" --frames "$frames" --annotate out/ >out/bench.json \
    || die "regiondrop-bench failed (exit $?)"
  "$VENV/bin/python" - out/bench.json <<'PY' || die "could not read out/bench.json"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
def f(k):
    v = r.get(k)
    return "n/a" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
print(f"  {f('frames')} frames of {r.get('video')}, network input {r.get('input')}, backend {f('backend')}, {f('threads')} threads")
print(f"  dense {f('dense_ms')} ms/frame, sparse {f('sparse_ms')} ms/frame (medians)")
print(f"  speedup {f('speedup')}x sparse vs dense (ideal {f('ideal_speedup')}x at active fraction {f('active_fraction')}, efficiency {f('efficiency')})")
print(f"  agreement of sparse with dense detections, mAP@0.5: {f('agreement_map50')}")
print(f"  tracks on sparse vs dense detections: MOTA {f('tracking_mota')}, {f('tracking_id_switches')} id switches, {f('tracks_sparse')} vs {f('tracks_dense')} track ids")
PY
  log "measured in $((SECONDS - t0)) s (full JSON: out/bench.json)"
  echo >&2
  log "results under $ROOT/out:"
  find out -maxdepth 1 -type f \( -name '*.png' -o -name '*.mkv' \) | sort | head -20 | sed 's/^/  /' >&2
  [ -f out/annotated.mkv ] || die "regiondrop-bench --annotate did not write out/annotated.mkv"
  log "demo done"
}

# ------------------------------------------------------------------------------------- main
case "${1:-help}" in
  setup) cmd_setup ;;
  build) cmd_build ;;
  test)  cmd_test ;;
  demo)  cmd_demo ;;
  env)   cmd_env ;;
  help|-h|--help) usage ;;
  *) usage >&2; echo >&2; die "unknown command '${1}'" ;;
esac
