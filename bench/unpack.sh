#!/usr/bin/env bash
# Unpack benchmark: `strata unpack` vs `umoci unpack` (and both with --rootless) on a
# ~1 GiB image, alternating tool by tool in each round, same layout, same disk. Prints a
# Markdown table of mean wall seconds, ratios and peak RSS, then where strata's time goes.
#
# The image: $FIX/oci/big:latest (../shared/bench/make-fixtures.sh makes it), or, with
# --make, a ~1 GiB image built here from host directories with umoci (no network).
#
# The bundles are written to tmpfs (/dev/shm) by default: the figures are then the tools'
# own cost. On this project's VMs the ext4 disk is shared with other jobs, and creating an
# inode there takes from 30 µs to 600 µs depending on what else runs, which swamps both
# tools; --disk DIR measures there anyway.
# usage: bench/unpack.sh [-r RUNS] [--make] [--image LAYOUT:TAG] [--disk DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
FIX=${FIX:-/tmp/fixtures}
W=${W:-/tmp/strata-bench-unpack}
RUNS=3; MAKE=0; IMAGE=""; OUTDIR=""
[[ -d /dev/shm ]] && OUTDIR=/dev/shm/strata-bench-unpack
while [[ $# -gt 0 ]]; do
  case $1 in
    -r) RUNS=$2; shift;;
    --make) MAKE=1;;
    --image) IMAGE=$2; shift;;
    --disk) OUTDIR=$2; shift;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac; shift
done
for t in umoci bc; do command -v $t >/dev/null || { echo "$t missing (scripts/install-deps.sh)" >&2; exit 1; }; done
mkdir -p "$W"
source bench/lib.sh

# make_big LAYOUT: ~1 GiB in 7 gzip layers from host files (locale, docs, headers, libs,
# python, perl) plus 64 MiB of incompressible and 32 MiB of zero bytes, as fixtures do.
make_big() {
  local layout=$1 src=$W/src i=0 d
  rm -rf "$layout" "$src"; mkdir -p "$src"
  umoci init --layout "$layout"; umoci new --image "$layout:latest"
  for d in "usr/share/locale usr/share/i18n" "usr/share/doc usr/share/man" "usr/include" \
           "usr/lib/gcc usr/libexec" "usr/lib/python3 usr/share/perl usr/share/perl5" \
           "usr/lib/x86_64-linux-gnu"; do
    i=$((i + 1)); local parts=()
    for p in $d; do [[ -e /$p ]] && parts+=("$p"); done
    [[ ${#parts[@]} -gt 0 ]] || continue
    tar -C / -cf "$src/$i.tar" "${parts[@]}" 2>/dev/null || true
    umoci raw add-layer --image "$layout:latest" "$src/$i.tar"; rm -f "$src/$i.tar"
  done
  mkdir -p "$src/blobs/opt/blobs"
  head -c $((64 << 20)) /dev/urandom > "$src/blobs/opt/blobs/random-64m.bin"
  head -c $((32 << 20)) /dev/zero > "$src/blobs/opt/blobs/zeros-32m.bin"
  tar -C "$src/blobs" -cf "$src/blobs.tar" opt
  umoci raw add-layer --image "$layout:latest" "$src/blobs.tar"
  rm -rf "$src"
}

if [[ -z $IMAGE ]]; then
  if [[ $MAKE == 1 || ! -f $FIX/oci/big/index.json ]]; then
    echo "making a ~1 GiB image in $W/big (umoci, host files)" >&2
    make_big "$W/big" >/dev/null
    IMAGE=$W/big:latest
  else
    IMAGE=$FIX/oci/big:latest
  fi
fi
LAYOUT=${IMAGE%:*}
cargo build --release --quiet -p strata
STRATA=$PWD/target/release/strata
OUT=${OUTDIR:-$W}/out
mkdir -p "$(dirname "$OUT")"

# Blobs in the page cache: every contender reads from memory.
cat "$LAYOUT"/blobs/sha256/* > /dev/null
MIB=$(( $(jq '[.layers[].size] | add' "$LAYOUT/blobs/sha256/$(jq -r '.manifests[0].digest' "$LAYOUT/index.json" | cut -d: -f2)") >> 20 ))
echo "image: $IMAGE ($MIB MiB compressed), $RUNS rounds, output on $(df --output=fstype "$(dirname "$OUT")" | tail -1) ($(dirname "$OUT"))"

# run_one CMD -> "seconds peak_kib"; the output is removed and flushed before each run so
# a run never pays for the previous one's writeback.
#
# On disk the output is not removed between runs but moved aside and removed at the end:
# this VM's ext4 has no journal, and without one the kernel will not reuse an inode freed in
# the last 60 s (300 s more while its table block is dirty; `recently_deleted()` in
# fs/ext4/ialloc.c), so every file created right after `rm -rf` of a 1 GiB bundle first scans
# past the ~50,000 inodes just freed: 400+ µs of system time per file, whoever runs next.
TRASH=$(dirname "$OUT")/trash
FSTYPE=$(df --output=fstype "$(dirname "$OUT")" | tail -1)
clear_out() {
  if [[ $FSTYPE == tmpfs ]]; then rm -rf "$OUT"
  elif [[ -e $OUT ]]; then mkdir -p "$TRASH"; mv "$OUT" "$TRASH/$(date +%s%N)"; fi
  sync
}
run_one() {
  clear_out
  local r
  r=($(measure "$1"))
  echo "${r[0]} ${r[2]}"
}

declare -A SUM RSS
NAMES=("umoci unpack" "umoci unpack --rootless" "strata unpack" "strata unpack --rootless")
CMDS=("umoci unpack --image $IMAGE $OUT"
      "umoci unpack --rootless --image $IMAGE $OUT"
      "$STRATA unpack -q oci:$IMAGE $OUT"
      "$STRATA unpack -q --rootless oci:$IMAGE $OUT")
for n in "${NAMES[@]}"; do SUM[$n]=0; RSS[$n]=0; done
for round in $(seq 1 "$RUNS"); do
  for i in "${!NAMES[@]}"; do
    r=($(run_one "${CMDS[$i]}"))
    n=${NAMES[$i]}
    SUM[$n]=$(echo "${SUM[$n]} + ${r[0]}" | bc)
    (( r[1] > RSS[$n] )) && RSS[$n]=${r[1]}
    echo "  round $round: $n ${r[0]} s, ${r[1]} KiB" >&2
  done
done
mean() { echo "${SUM[$1]} / $RUNS" | bc -l; }
echo
echo "| unpack of $IMAGE | mean s | vs umoci | peak RSS MiB |"
echo "|---|--:|--:|--:|"
for pair in "umoci unpack|umoci unpack" "strata unpack|umoci unpack" \
            "umoci unpack --rootless|umoci unpack --rootless" "strata unpack --rootless|umoci unpack --rootless"; do
  n=${pair%|*}; peer=${pair#*|}
  if [[ $n == "$peer" ]]; then ratio="(baseline)"
  else ratio=$(printf '%.1fx faster' "$(echo "$(mean "$peer") / $(mean "$n")" | bc -l)"); fi
  printf '| `%s` | %.2f | %s | %d |\n' "$n" "$(mean "$n")" "$ratio" $(( RSS[$n] / 1024 ))
done

echo
echo "where strata's time goes:"
r=($(run_one "$STRATA unpack -q --sync oci:$IMAGE $OUT"))
echo "  with --sync (syncfs before the marker): ${r[0]} s"
clear_out
/usr/bin/time -f '  user %U s, sys %S s, wall %e s, %c involuntary context switches' \
  "$STRATA" unpack -q "oci:$IMAGE" "$OUT" 2>&1 >/dev/null | tail -1
if command -v strace >/dev/null; then
  clear_out
  strace -f -c -o "$W/strace" "$STRATA" unpack -q "oci:$IMAGE" "$OUT" >/dev/null 2>&1 || true
  echo "  top syscalls by time (strace -c -f, waits left out; strace itself slows the run):"
  sed -n '3,40p' "$W/strace" | grep -vE 'futex|epoll_wait|wait4|^-|total' | head -10 |
    awk '{printf "    %-14s %6s%% %8s calls\n", $NF, $1, $4}'
fi
rm -rf "$OUT" "$TRASH"; [[ -n $OUTDIR ]] && rmdir "$(dirname "$OUT")" 2>/dev/null || true
