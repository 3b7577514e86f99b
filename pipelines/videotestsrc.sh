#!/usr/bin/env bash
# videotestsrc: a bouncing ball on a still background. After the first (dense) frame only the tiles
# around the ball are recomputed: watch active-fraction and active-x/y/width/height in the
# regiondrop-stats messages.
#   pipelines/videotestsrc.sh [FRAMES]
source "$(dirname "$0")/common.sh"
FRAMES="${1:-60}"

gst-launch-1.0 -m \
    videotestsrc pattern=ball num-buffers="$FRAMES" ! \
    video/x-raw,format=RGB,width=640,height=480,framerate=30/1 ! \
    regiondrop model="$MODEL" stats-interval=10 ! \
    fakesink sync=false 2>&1 |
    sed -n -e 's/.*(element): \(regiondrop-stats.*\)/\1/p' -e '/ERROR\|[Ee]rror:/p'
