#!/usr/bin/env bash
# Build strata and run its main job on the bundled example: copy the example image into a new
# OCI layout and inspect it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --minimal
cargo build --release --quiet
out=$(mktemp -d)/hello-layout
./target/release/strata copy oci:examples/hello:latest "oci:$out:latest"
./target/release/strata inspect "oci:$out:latest"
echo "the copy is in $out"
