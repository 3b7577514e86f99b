#!/usr/bin/env bash
# Build the plugin with cargo for meson.build, and copy it to where meson expects its output.
#
#   scripts/cargo-build-plugin.sh CARGO MANIFEST TARGET_DIR PROFILE OUTPUT
#
# CARGO       the cargo program meson found
# MANIFEST    the crate's Cargo.toml
# TARGET_DIR  cargo's target dir (meson puts it inside its build dir)
# PROFILE     cargo profile: release or dev
# OUTPUT      path of libgstregiondrop.so in meson's build dir
#
# Cargo decides itself what is stale, so meson runs this on every build (build_always_stale);
# a no-op build takes a second.
set -euo pipefail
[ $# = 5 ] || { echo "usage: $0 CARGO MANIFEST TARGET_DIR PROFILE OUTPUT" >&2; exit 2; }
cargo="$1" manifest="$2" target_dir="$3" profile="$4" output="$5"

# only the library (the cdylib is the plugin); the command-line tools are not installed by meson
"$cargo" build --manifest-path "$manifest" --target-dir "$target_dir" --profile "$profile" --lib

case "$profile" in dev) dir=debug ;; *) dir="$profile" ;; esac
built="$target_dir/$dir/libgstregiondrop.so"
[ -f "$built" ] || { echo "$0: cargo did not produce $built" >&2; exit 1; }
# copy only when changed, so that ninja sees a new mtime only for a new plugin
if ! cmp -s "$built" "$output"; then
  cp -f "$built" "$output.tmp"
  mv -f "$output.tmp" "$output"
fi
