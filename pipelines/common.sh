# Sourced by the pipeline scripts: finds the repository, the built plugin and the sample assets.
# Build first: cargo build --release   (assets: scripts/setup-assets.sh)
set -eu -o pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PLUGIN_DIR="${REGIONDROP_PLUGIN_DIR:-$ROOT/target/release}"
export GST_PLUGIN_PATH="$PLUGIN_DIR${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
VIDEO="${REGIONDROP_VIDEO:-$ROOT/data/video/vtest.avi}"
MODEL="${REGIONDROP_MODEL:-$ROOT/data/models/nanodet-416.onnx}"

if [ ! -e "$PLUGIN_DIR/libgstregiondrop.so" ]; then
    echo "error: $PLUGIN_DIR/libgstregiondrop.so not found; run 'cargo build --release' in $ROOT" >&2
    exit 1
fi
if ! gst-inspect-1.0 regiondrop >/dev/null 2>&1; then
    echo "error: GStreamer cannot load the regiondrop plugin from $PLUGIN_DIR" >&2
    echo "       (try: GST_DEBUG=2 gst-inspect-1.0 regiondrop)" >&2
    exit 1
fi
if [ ! -e "$MODEL" ]; then
    echo "error: model $MODEL not found; run scripts/setup-assets.sh" >&2
    exit 1
fi
