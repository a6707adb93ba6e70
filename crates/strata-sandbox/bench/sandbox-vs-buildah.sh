#!/usr/bin/env bash
# Per-step cost of strata-sandbox next to `buildah run --isolation chroot`, on the same busybox
# root filesystem, in the same run (run as root; buildah from scripts/install-deps.sh).
#   N      runs of `true` (default 50)
#   LOOPS  runs of the 1000-file loop (default 5)
# strata: each run gets a fresh overlay upper/work over the rootfs as lower layer (created and
# removed outside the timing). buildah: one working container reused (its own overlay).
set -euo pipefail
cd "$(dirname "$0")/../../.."
N=${N:-50}; LOOPS=${LOOPS:-5}
# The brief's loop, into a new directory each run: buildah reuses its working container, and
# overwriting files that an earlier run created is much cheaper than creating them.
LOOP_CMD='cd $(mktemp -d /tmp/run.XXXXXX) && for i in $(seq 1 1000); do echo $i > f$i; done'
ROOTFS=$(mktemp -d /var/tmp/sbx-bench-XXXXXX)
CTR=sbx-bench-$$
trap 'rm -rf "$ROOTFS"; buildah rm "$CTR" >/dev/null 2>&1 || true' EXIT

mkdir -p "$ROOTFS"/{bin,etc,root,tmp,proc,sys,dev}
chmod 1777 "$ROOTFS/tmp"
install -m 0755 /bin/busybox "$ROOTFS/bin/busybox"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -sf busybox "$ROOTFS/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\n' > "$ROOTFS/etc/group"

cargo build --release -q -p strata-sandbox --example step_overhead
echo "== strata-sandbox (load: $(cut -d' ' -f1-3 /proc/loadavg))"
./target/release/examples/step_overhead "$ROOTFS" "$N" "$LOOPS" "$LOOP_CMD"

buildah from --name "$CTR" scratch >/dev/null
MNT=$(buildah mount "$CTR"); cp -a "$ROOTFS"/. "$MNT"/; buildah umount "$CTR" >/dev/null
stats() { # stats NAME MS...
  local name=$1; shift
  printf '%s\n' "$@" | sort -n | awk -v name="$name" '{a[NR]=$1; s+=$1} END {
    printf "%s: n=%d mean=%.2f ms median=%.2f ms min=%.2f ms max=%.2f ms\n", name, NR, s/NR, a[int(NR/2)+1], a[1], a[NR] }'
}
timed() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 )) | awk '{printf "%.3f\n", $1/1000}'; }
echo "== buildah run --isolation chroot (load: $(cut -d' ' -f1-3 /proc/loadavg))"
ms=(); for _ in $(seq "$N"); do ms+=("$(timed buildah run --isolation chroot "$CTR" -- /bin/true)"); done
stats true "${ms[@]}"
ms=(); for _ in $(seq "$LOOPS"); do ms+=("$(timed buildah run --isolation chroot "$CTR" -- /bin/sh -c "$LOOP_CMD")"); done
stats "1000 files" "${ms[@]}"
