#!/usr/bin/env bash
# RUN benchmark: `strata build` against `buildah bud --isolation chroot`, alternating run by
# run in one invocation. Prints a Markdown table of mean wall and CPU seconds (user + sys of
# the command and its children: the machine may be shared, CPU time is the steadier figure).
#
# Workloads (base: a busybox image made here from Debian's busybox-static, no internet):
#   ctx-run   `FROM busybox` + `RUN echo hi > /hello`
#   10-run    `FROM busybox` + 10 RUN steps, each writing a file
# Modes:
#   base present, no step cache   buildah: base in containers-storage, no --layers;
#                                 strata: --no-cache into a layout that has the base
#   cold                          buildah: base removed from containers-storage first;
#                                 strata: a fresh output layout (base copied, extracted)
#
# Needs: cargo, buildah, busybox-static (/bin/busybox), /usr/bin/time (installed when missing).
# usage: bench/run.sh [-r RUNS] [--only REGEX]
set -euo pipefail
cd "$(dirname "$0")/.."
W=${W:-/tmp/strata-bench-run}
RUNS=5; ONLY=""
while [[ $# -gt 0 ]]; do
  case $1 in
    -r) RUNS=$2; shift;; --only) ONLY=$2; shift;;
    -h|--help) sed -n '2,18p' "$0"; exit 0;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac; shift
done
command -v buildah >/dev/null || { echo "buildah not installed (scripts/install-deps.sh)" >&2; exit 1; }
[[ -x /bin/busybox ]] || { echo "/bin/busybox missing: apt-get install busybox-static" >&2; exit 1; }
cargo build --release --quiet -p strata
STRATA=$PWD/target/release/strata

rm -rf "$W"; mkdir -p "$W/rootfs/bin" "$W/rootfs/etc" "$W/rootfs/tmp" "$W/run1" "$W/run10"
source bench/lib.sh
# The base: static busybox with its applet links, built into an OCI layout from scratch.
cp /bin/busybox "$W/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -s busybox "$W/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$W/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$W/rootfs/etc/group"
chmod 1777 "$W/rootfs/tmp"
printf 'FROM scratch\nCOPY rootfs /\nENV PATH=/bin\nCMD ["sh"]\n' > "$W/Containerfile.base"
"$STRATA" build -q -f "$W/Containerfile.base" -o "oci:$W/base:busybox" "$W" >/dev/null
BASE="oci:$W/base:busybox"
printf 'FROM %s\nRUN echo hi > /hello\n' "$BASE" > "$W/run1/Containerfile"
{ echo "FROM $BASE"; for i in $(seq 1 10); do echo "RUN echo step $i > /file$i"; done; } > "$W/run10/Containerfile"

BUD="buildah bud -q --isolation chroot"
RMI="buildah rmi -f localhost/bench/run >/dev/null 2>&1 || true"
# buildah names an image pulled from oci:PATH after the path (PATH must be lowercase).
RMBASE="$RMI; buildah rmi -f localhost$W/base:latest >/dev/null 2>&1 || true"

echo "| workload | buildah s | strata s | buildah/strata (wall) | buildah CPU s | strata CPU s | buildah/strata (CPU) |"
echo "|---|--:|--:|--:|--:|--:|--:|"
# workload NAME PEER_PREP PEER_CMD STRATA_PREP STRATA_CMD
workload() {
  local name=$1 pprep=$2 peer=$3 tprep=$4 tool=$5
  [[ -n $ONLY && ! $name =~ $ONLY ]] && return 0
  local pw=0 tw=0 pc=0 tc=0 i r
  # One untimed round each: pulls, page cache, first extraction.
  eval "$pprep"; measure "$peer" >/dev/null
  eval "$tprep"; measure "$tool" >/dev/null
  for i in $(seq 1 "$RUNS"); do
    eval "$pprep"; r=($(measure "$peer")); pw=$(echo "$pw + ${r[0]}" | bc); pc=$(echo "$pc + ${r[1]}" | bc)
    eval "$tprep"; r=($(measure "$tool")); tw=$(echo "$tw + ${r[0]}" | bc); tc=$(echo "$tc + ${r[1]}" | bc)
  done
  printf '| %s | %.3f | %.3f | %.1fx | %.3f | %.3f | %.1fx |\n' "$name" \
    "$(echo "$pw / $RUNS" | bc -l)" "$(echo "$tw / $RUNS" | bc -l)" "$(echo "$pw / $tw" | bc -l)" \
    "$(echo "$pc / $RUNS" | bc -l)" "$(echo "$tc / $RUNS" | bc -l)" "$(echo "$pc / $tc" | bc -l)"
}

for ctx in run1 run10; do
  label=$([[ $ctx == run1 ]] && echo "ctx-run (1 RUN)" || echo "10 RUN steps")
  workload "$label, base present, no step cache" \
    "$RMI" "$BUD -t localhost/bench/run $W/$ctx" \
    "true" "$STRATA build -q --no-cache -o oci:$W/s-$ctx:run $W/$ctx"
  workload "$label, cold" \
    "$RMBASE" "$BUD -t localhost/bench/run $W/$ctx" \
    "rm -rf $W/s-cold" "$STRATA build -q -o oci:$W/s-cold:run $W/$ctx"
done
eval "$RMBASE"
rm -rf "$W"
