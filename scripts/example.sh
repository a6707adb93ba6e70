#!/usr/bin/env bash
# strata's main job on the bundled example: build examples/app (a Containerfile on the example
# base image in examples/hello) into a new OCI layout, inspect the result, and check it with
# skopeo when it is installed. Installs the build tools first (Debian 12, root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --minimal
cargo build --release --quiet
out=$(mktemp -d)/app-layout
./target/release/strata build -f examples/app/Containerfile -o "oci:$out:latest" \
  --build-arg VERSION=1.1 examples/app
./target/release/strata inspect "oci:$out:latest"
./target/release/strata ls "$out"
if command -v skopeo >/dev/null; then
  skopeo inspect "oci:$out:latest" >/dev/null && echo "skopeo reads it too"
fi
echo "the image is in $out"
