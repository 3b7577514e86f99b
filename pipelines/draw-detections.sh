#!/usr/bin/env bash
# Detections drawn on the video: regiondrop tracks the objects, regiondropoverlay draws each box
# with its label, track id and confidence, and the result is written as an MJPEG Matroska file
# (jpegenc and matroskamux are in base/good). Both elements work on BGRx here, so no videoconvert
# sits between them: on GStreamer 1.22 a videoconvert there keeps each box and label but drops
# regiondrop's `detection` structure (track id, confidence).
#   pipelines/draw-detections.sh [VIDEO] [FRAMES] [OUT.mkv]
# To watch instead, end the pipeline with: videoconvert ! autovideosink
source "$(dirname "$0")/common.sh"
IN="${1:-$VIDEO}"
FRAMES="${2:-100}"
OUT="${3:-detections.mkv}"

gst-launch-1.0 -q \
    filesrc location="$IN" ! decodebin ! videoconvert ! video/x-raw,format=BGRx ! \
    identity eos-after="$FRAMES" ! \
    regiondrop model="$MODEL" tracking=true track-min-hits=3 ! regiondropoverlay ! \
    videoconvert ! jpegenc ! matroskamux ! filesink location="$OUT"
echo "wrote $OUT ($FRAMES frames)"
