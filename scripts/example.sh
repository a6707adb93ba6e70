#!/usr/bin/env bash
# strata's main job on the bundled example: build examples/app (a Containerfile on the example
# base image in examples/hello) into a new OCI layout, inspect the result, and check it with
# skopeo when it is installed. Installs the build tools first (Debian 12, root).
# Works from any directory: `/path/to/strata/scripts/example.sh`.
set -euo pipefail
# The repository root, wherever this is run from (and through a symlink to the script).
cd "$(dirname "$(readlink -f "$0")")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

step "installing the build tools (Debian packages; skipped when present)"
scripts/install-deps.sh --minimal
step "compiling strata in release mode (the first build takes about 5 minutes; later ones seconds)"
cargo build --release -p strata
# Where cargo put it ($CARGO_TARGET_DIR and build.target-dir move it out of ./target).
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
strata=$target_dir/release/strata
"$strata" --version

out=$(mktemp -d)/app-layout
step "building $root/examples/app/Containerfile into oci:$out:latest"
"$strata" build -f "$root/examples/app/Containerfile" -o "oci:$out:latest" \
  --build-arg VERSION=1.1 "$root/examples/app"
step "inspecting the result"
"$strata" inspect "oci:$out:latest"
"$strata" ls "$out"
if command -v skopeo >/dev/null; then
  step "reading it back with skopeo"
  skopeo inspect "oci:$out:latest" >/dev/null && echo "skopeo reads it too"
fi
echo
echo "the image is in $out"
