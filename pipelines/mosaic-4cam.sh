#!/usr/bin/env bash
# Four "cameras" composed into one 2x2 mosaic analysed by a single regiondrop: one network run per
# mosaic frame instead of four. Three cameras show still scenes and one the sample video, so most
# tiles stay inactive. Detections are printed in mosaic coordinates.
#   pipelines/mosaic-4cam.sh [VIDEO] [FRAMES]
source "$(dirname "$0")/common.sh"
IN="${1:-$VIDEO}"
FRAMES="${2:-40}"
CAM="video/x-raw,width=384,height=288,framerate=10/1"

GST_DEBUG="regiondrop:DEBUG" GST_DEBUG_NO_COLOR=1 \
gst-launch-1.0 -m \
    compositor name=mix background=black \
        sink_0::xpos=0   sink_0::ypos=0 \
        sink_1::xpos=384 sink_1::ypos=0 \
        sink_2::xpos=0   sink_2::ypos=288 \
        sink_3::xpos=384 sink_3::ypos=288 ! \
    video/x-raw,format=I420,width=768,height=576 ! \
    regiondrop model="$MODEL" stats-interval=10 ! fakesink num-buffers="$FRAMES" sync=false \
    filesrc location="$IN" ! decodebin ! videoconvert ! videoscale ! videorate ! "$CAM" ! mix.sink_0 \
    videotestsrc pattern=smpte ! "$CAM" ! mix.sink_1 \
    videotestsrc pattern=pinwheel ! "$CAM" ! mix.sink_2 \
    videotestsrc pattern=checkers-8 ! "$CAM" ! mix.sink_3 2>&1 |
    sed -n -e 's/.*<regiondrop0> \(frame [0-9]* pts .*detections.*\)/\1/p' \
           -e 's/.*(element): \(regiondrop-stats.*\)/\1/p' \
           -e '/ERROR\|[Ee]rror:/p'
