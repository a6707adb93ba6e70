#!/usr/bin/env bash
# Install what strata's tests and examples need on Debian 12 (run as root), and prepare the
# host: a containers.conf drop-in so podman/buildah (used as outside judges) work here, and
# qemu-user binfmt registration for foreign-architecture RUN steps.
# Idempotent. Usage: scripts/install-deps.sh [--minimal]   (--minimal: only the build tools)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo

PKGS=(ca-certificates curl jq gcc pkg-config openssl)
if [[ ${1:-} != --minimal ]]; then
  PKGS+=(docker-registry apache2-utils skopeo umoci oci-image-tool buildah podman runc
         qemu-user-static busybox-static strace tar gzip xz-utils bzip2 zstd file
         pigz python3 util-linux
         uidmap    # uidmap: newuidmap/newgidmap for strata-sandbox's rootless tests
         man-db)   # man -l renders the generated man pages in the CLI tests
fi
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

[[ ${1:-} == --minimal ]] && exit 0

# podman/buildah: crun cannot run on hosts with hybrid cgroups; the default nofile limit may
# exceed the hard limit in containers.
HN=$(ulimit -Hn); [[ $HN == unlimited ]] && HN=1048576
$SUDO mkdir -p /etc/containers/containers.conf.d
$SUDO tee /etc/containers/containers.conf.d/50-strata-tests.conf >/dev/null <<CONF
# written by strata scripts/install-deps.sh
[containers]
default_ulimits = ["nofile=$HN:$HN", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF

# binfmt_misc for qemu-user (no systemd on CI machines). The registration must carry the F
# (fix binary) flag — Debian's /usr/lib/binfmt.d/qemu-*.conf do — so that the interpreter
# works inside a RUN step's root, where its path does not exist.
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
if [[ -e /proc/sys/fs/binfmt_misc/register && ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  if [[ -x /usr/lib/systemd/systemd-binfmt ]]; then
    $SUDO /usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf 2>/dev/null || true
  fi
  if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    # Without systemd: the .conf line is exactly what the register file takes.
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf | $SUDO tee /proc/sys/fs/binfmt_misc/register >/dev/null || true
  fi
fi
grep -qs '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || echo "warning: no qemu-aarch64 binfmt_misc handler with the F flag: arm64 RUN tests will fail" >&2

# The aarch64 static busybox for foreign-architecture fixtures (strata-testkit reads it from
# here): Debian's busybox-static:arm64, downloaded and unpacked, not installed. apt must know
# the arm64 architecture for `apt-get download`.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
fi
ARM64_DIR=/var/cache/strata-tests/arm64
if [[ ! -x $ARM64_DIR/bin/busybox && $(dpkg --print-architecture) == amd64 ]]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q busybox-static:arm64 >/dev/null 2>&1) || { $SUDO apt-get update -qq; (cd "$tmp" && apt-get download -q busybox-static:arm64 >/dev/null); }
  $SUDO mkdir -p "$ARM64_DIR"
  $SUDO dpkg-deb -x "$tmp"/busybox-static_*_arm64.deb "$ARM64_DIR"
  rm -rf "$tmp"
fi

