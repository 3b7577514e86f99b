#!/usr/bin/env bash
# tee: one decoded stream feeds a record branch (re-encoded to out/recording.mkv, untouched by the
# detector) and an analytics branch (regiondrop; its stats are printed). From a file every frame is
# analysed; with a live camera, make the analytics queue leaky=downstream so a slow detector drops
# analysis frames instead of stalling the recording.
#   pipelines/tee-record.sh [VIDEO] [FRAMES]
source "$(dirname "$0")/common.sh"
IN="${1:-$VIDEO}"
FRAMES="${2:-100}"
OUT="$ROOT/out"
mkdir -p "$OUT"
# The first encoder this GStreamer has (x264enc is in -ugly, vp8enc in -good, openh264enc in -bad).
if gst-inspect-1.0 x264enc >/dev/null 2>&1; then ENC="x264enc tune=zerolatency speed-preset=ultrafast ! h264parse"
elif gst-inspect-1.0 vp8enc >/dev/null 2>&1; then ENC="vp8enc deadline=1"
elif gst-inspect-1.0 openh264enc >/dev/null 2>&1; then ENC="openh264enc ! h264parse"
else ENC="jpegenc"; fi

gst-launch-1.0 -e -m \
    filesrc location="$IN" ! decodebin ! videoconvert ! identity eos-after="$FRAMES" ! tee name=t \
    t. ! queue ! videoconvert ! $ENC ! \
         matroskamux ! filesink location="$OUT/recording.mkv" \
    t. ! queue ! \
         regiondrop model="$MODEL" stats-interval=10 ! fakesink sync=false 2>&1 |
    sed -n -e 's/.*(element): \(regiondrop-stats.*\)/\1/p' -e '/ERROR\|[Ee]rror:/p'
ls -l "$OUT/recording.mkv"
