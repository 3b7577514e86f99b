#!/usr/bin/env bash
# People crossing a line: regiondrop tracks people (track-min-hits=3 keeps one-frame boxes out)
# and posts a regiondrop-crossing message each time one's feet cross the segment given by LINE
# (x0,y0,x1,y1 in frame pixels). Prints each crossing and the totals per direction. The default
# line stands upright in the middle of the sample clip's plaza; forward is right to left there
# (onto the right-hand side of a line drawn top to bottom).
#   pipelines/line-crossings.sh [VIDEO] [LINE]
source "$(dirname "$0")/common.sh"
IN="${1:-$VIDEO}"
LINE="${2:-400,100,400,450}"

gst-launch-1.0 -m \
    filesrc location="$IN" ! decodebin ! videoconvert ! \
    regiondrop model="$MODEL" classes=person tracking=true track-min-hits=3 \
        count-lines="$LINE" stats-interval=0 ! \
    fakesink sync=false 2>&1 |
    awk '/ERROR|WARNING|[Ee]rror:/ { print; next }
         /regiondrop-crossing/ {
             id = $0; sub(/.*track-id=\(guint64\)/, "", id); sub(/,.*/, "", id)
             dir = $0; sub(/.*direction=\(string\)/, "", dir); sub(/[,;].*/, "", dir)
             t = $0; sub(/.*pts=\(guint64\)/, "", t); sub(/[,;].*/, "", t)
             printf "%8.1f s  person #%s  %s\n", t / 1e9, id, dir
             n[dir]++
         }
         END { printf "forward %d, backward %d\n", n["forward"], n["backward"] }'
