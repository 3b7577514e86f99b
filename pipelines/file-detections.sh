#!/usr/bin/env bash
# File → detections: decodes a video, runs regiondrop and prints each frame's detections (from the
# element's debug log) and the regiondrop-stats messages (from gst-launch -m).
#   pipelines/file-detections.sh [VIDEO] [FRAMES]
source "$(dirname "$0")/common.sh"
IN="${1:-$VIDEO}"
FRAMES="${2:-50}"

GST_DEBUG="regiondrop:DEBUG" GST_DEBUG_NO_COLOR=1 \
gst-launch-1.0 -m \
    filesrc location="$IN" ! decodebin ! videoconvert ! \
    regiondrop model="$MODEL" stats-interval=10 tracking=true ! \
    fakesink num-buffers="$FRAMES" sync=false 2>&1 |
    sed -n -e 's/.*<regiondrop0> \(frame [0-9]* pts .*detections.*\)/\1/p' \
           -e 's/.*(element): \(regiondrop-stats.*\)/\1/p' \
           -e '/ERROR\|WARNING\|[Ee]rror:/p'
