#!/usr/bin/env bash
# Copy benchmark: strata vs skopeo, alternating run by run on the same fixtures, in one
# invocation. Prints a Markdown table of mean wall seconds, ratios and strata's peak RSS.
#
# Needs: a registry on $REG with bench/big:latest and an OCI layout $FIX/oci/big — made by
# ../shared/bench/setup.sh and ../shared/bench/make-fixtures.sh (no internet needed).
# usage: bench/copy.sh [-r RUNS] [--only REGEX]
set -euo pipefail
cd "$(dirname "$0")/.."
REG=${REG:-127.0.0.1:5000}
FIX=${FIX:-/tmp/fixtures}
W=${W:-/tmp/strata-bench}
RUNS=5; ONLY=""
while [[ $# -gt 0 ]]; do
  case $1 in -r) RUNS=$2; shift;; --only) ONLY=$2; shift;; *) echo "unknown arg $1" >&2; exit 2;; esac; shift
done
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
curl -sf -o /dev/null "http://$REG/v2/bench/big/manifests/latest" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  || { echo "no $REG/bench/big:latest: run ../shared/bench/setup.sh and make-fixtures.sh" >&2; exit 1; }
[[ -f $FIX/oci/big/index.json ]] || { echo "no $FIX/oci/big: run make-fixtures.sh" >&2; exit 1; }
cargo build --release --quiet
STRATA=$PWD/target/release/strata
mkdir -p "$W"
BIC=/var/lib/containers/cache/blob-info-cache-v1.boltdb
SK="skopeo copy -q --src-tls-verify=false --dest-tls-verify=false"
ST="$STRATA copy -q --tls-verify=false"
BIG=docker://$REG/bench/big:latest

# run_one CMD -> prints "seconds peak_kib"
run_one() {
  local t0 t1 rss
  t0=$(date +%s.%N)
  /usr/bin/time -f %M -o "$W/rss" bash -c "$1" >/dev/null 2>"$W/err" || { echo "FAILED: $1" >&2; cat "$W/err" >&2; exit 1; }
  t1=$(date +%s.%N)
  rss=$(tail -1 "$W/rss")
  echo "$(echo "$t1 - $t0" | bc) $rss"
}

echo "| workload | skopeo s | strata s | skopeo/strata | strata peak RSS MiB |"
echo "|---|--:|--:|--:|--:|"
# workload NAME PREP PEER_CMD TOOL_CMD   ({u} is replaced by a fresh suffix per run)
workload() {
  local name=$1 prep=$2 peer=$3 tool=$4
  [[ -n $ONLY && ! $name =~ $ONLY ]] && return 0
  local ps=0 ts=0 maxrss=0 i u r
  # warm-up (page cache, registry caches)
  u=w$RANDOM; eval "$prep"; run_one "${peer//\{u\}/$u}" >/dev/null
  u=w$RANDOM; eval "$prep"; run_one "${tool//\{u\}/$u}" >/dev/null
  for i in $(seq 1 "$RUNS"); do
    u=$(date +%s%N); eval "$prep"; r=($(run_one "${peer//\{u\}/p$u}")); ps=$(echo "$ps + ${r[0]}" | bc)
    u=$(date +%s%N); eval "$prep"; r=($(run_one "${tool//\{u\}/t$u}")); ts=$(echo "$ts + ${r[0]}" | bc)
    (( r[1] > maxrss )) && maxrss=${r[1]}
  done
  printf '| %s | %.2f | %.2f | %.2fx | %d |\n' "$name" "$(echo "$ps / $RUNS" | bc -l)" "$(echo "$ts / $RUNS" | bc -l)" \
    "$(echo "$ps / $ts" | bc -l)" $((maxrss / 1024))
}

workload "registry -> OCI layout (bench/big, 415 MiB)" "rm -rf $W/out; rm -f $BIC" \
  "$SK $BIG oci:$W/out:latest" "$ST $BIG oci:$W/out:latest"
workload "OCI layout -> registry (new repo)" "rm -f $BIC" \
  "$SK oci:$FIX/oci/big:latest docker://$REG/bench/from-oci-{u}:latest" \
  "$ST oci:$FIX/oci/big:latest docker://$REG/bench/from-oci-{u}:latest"
workload "registry -> registry, new repo (mount)" "" \
  "$SK $BIG docker://$REG/bench/mount-{u}:latest" "$ST $BIG docker://$REG/bench/mount-{u}:latest"
workload "registry -> registry, everything present" "" \
  "$SK $BIG docker://$REG/bench/again:latest" "$ST $BIG docker://$REG/bench/again:latest"
workload "registry -> OCI layout, everything present" "" \
  "$SK $BIG oci:$W/present:latest" "$ST $BIG oci:$W/present:latest"
