#!/usr/bin/env bash
# The whole test suite: installs the Debian packages the tests use (the real distribution
# registry, skopeo, umoci, podman, … as outside judges), then runs every test. Test harnesses
# start their own registries on free loopback ports; nothing else needs to be running.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --no-fail-fast "$@"
