#!/usr/bin/env bash
# People counting: regiondrop keeps only the person class and tracks it; every regiondrop-stats
# message (one per second of the 10 fps clip) says how many new track ids started in that second.
# Prints them per second and the total. track-min-hits=3 gives an id only to a person detected on
# 3 frames in a row, so boxes that flash for a frame or two are not counted (on the first 300
# frames of the sample clip: 25 ids instead of 49). Still an upper bound on the people who
# entered: a person missed for more than track-max-age frames and found again counts twice.
# To count the people who pass a given place instead, see pipelines/line-crossings.sh.
#   pipelines/count-people.sh [VIDEO] [FRAMES]
source "$(dirname "$0")/common.sh"
IN="${1:-$VIDEO}"
FRAMES="${2:-300}"

gst-launch-1.0 -m \
    filesrc location="$IN" ! decodebin ! videoconvert ! identity eos-after="$FRAMES" ! \
    regiondrop model="$MODEL" classes=person tracking=true track-min-hits=3 stats-interval=10 ! \
    fakesink sync=false 2>&1 |
    awk '/ERROR|[Ee]rror:/ { print; next }
         /regiondrop-stats/ && match($0, /new-tracks=\(guint64\)[0-9]+/) {
             n = substr($0, RSTART, RLENGTH); sub(/.*\)/, "", n)
             f = ""; if (match($0, / frames=\(guint64\)[0-9]+/)) { f = substr($0, RSTART, RLENGTH); sub(/.*\)/, "", f) }
             total += n
             printf "frames %5s: %2d new people (total %d)\n", f, n, total
         }
         END { printf "%d person tracks started\n", total }'
