# Sourced by the GPU scripts on the lent machine: unpacks what `scripts/gpu-check.sh --prepare`
# gzipped into .devcarry/ and points the loader at the carried GStreamer/GLib libraries and at
# the CUDA libraries (cuBLAS, NVRTC) of the machine's Python wheels, where the system has none.
D=.devcarry
for f in "$D"/*.gz "$D"/models/*.gz; do
    [ -e "$f" ] && [ ! -e "${f%.gz}" ] && gunzip -k "$f"
done
export LD_LIBRARY_PATH="$PWD/$D/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for d in $(python3 -c "import site,glob;print(' '.join(glob.glob(site.getsitepackages()[0]+'/nvidia/*/lib')))" 2>/dev/null); do
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
