#!/usr/bin/env bash
# Build benchmark: strata vs `buildah bud`, alternating run by run on the same context, in one
# invocation. Prints a Markdown table of mean wall seconds, ratios and strata's peak RSS.
#
# Workloads (context: $FIX/ctx-copy500, `FROM scratch` + `COPY data /data`, ~511 MiB, 28k files):
#   cold     build into a fresh gzip OCI layout (strata: new layout, no cache; buildah:
#            --disable-compression=false to an oci: layout, image removed first)
#   rebuild  nothing changed: strata's cache hit vs buildah --layers cache hit
#   3-plat   `ADD data /data` for linux/amd64 + linux/arm64 + windows/amd64:10.0.17763.1757
#            (2 Linux + 1 Windows: two different layers around the same file data) vs the same for
#            linux/amd64 only (strata alone: identical layers are produced once)
#
# strata is `target/release/strata build` (built here with --release).
# Needs: buildah (scripts/install-deps.sh installs it) and the context $CTX: by default
# $FIX/ctx-copy500 when ../shared/bench/make-fixtures.sh made it, else bench/make-ctx.sh makes
# one (~500 MiB of files from /usr) under $W.
# usage: bench/build.sh [-r RUNS] [--only REGEX]
set -euo pipefail
cd "$(dirname "$0")/.."
FIX=${FIX:-/tmp/fixtures}
W=${W:-/tmp/strata-bench-build}
RUNS=3; ONLY=""
while [[ $# -gt 0 ]]; do
  case $1 in -r) RUNS=$2; shift;; --only) ONLY=$2; shift;; *) echo "unknown arg $1" >&2; exit 2;; esac; shift
done
CTX=${CTX:-$FIX/ctx-copy500}
command -v buildah >/dev/null || { echo "buildah not installed (scripts/install-deps.sh)" >&2; exit 1; }
mkdir -p "$W"
source bench/lib.sh
if [[ ! -f $CTX/Containerfile ]]; then
  CTX=$W-ctx; [[ -f $CTX/Containerfile ]] || bench/make-ctx.sh "$CTX"
fi
cargo build --release --quiet -p strata
# strata_build -f FILE -c CONTEXT -o LAYOUT -t TAG [--platform P]... → the CLI's spelling
cat > "$W/strata-build" <<SH
#!/usr/bin/env bash
f=; c=; o=; t=latest; p=()
while [[ \$# -gt 0 ]]; do case \$1 in -f) f=\$2;; -c) c=\$2;; -o) o=\$2;; -t) t=\$2;; --platform) p+=(--platform "\$2");; esac; shift 2; done
exec $PWD/target/release/strata build -q -f "\$f" -o "oci:\$o:\$t" "\${p[@]}" "\$c"
SH
chmod +x "$W/strata-build"
STRATA_BUILD=${STRATA_BUILD:-$W/strata-build}
printf 'FROM scratch\nADD data /data\n' > "$W/Containerfile.add"
RMI="buildah rmi -f localhost/bench/copy500 >/dev/null 2>&1 || true; buildah rmi --prune >/dev/null 2>&1 || true"
BUD="buildah bud -q --isolation chroot"

echo "| workload | peer | peer s | strata s | peer/strata (wall) | peer/strata (CPU) | strata peak RSS MiB |"
echo "|---|---|--:|--:|--:|--:|--:|"
# workload NAME PEERNAME PEER_PREP PEER_CMD TOOL_PREP TOOL_CMD WARM(0|1)
workload() {
  local name=$1 peername=$2 pprep=$3 peer=$4 tprep=$5 tool=$6 warm=$7
  [[ -n $ONLY && ! $name =~ $ONLY ]] && return 0
  local ps=0 ts=0 pc=0 tc=0 maxrss=0 i r
  if [[ $warm == 1 ]]; then   # prime caches (and the page cache)
    eval "$pprep"; measure "$peer" >/dev/null
    eval "$tprep"; measure "$tool" >/dev/null
  else                        # page cache only
    find "$CTX" -type f -exec cat {} + >/dev/null
  fi
  for i in $(seq 1 "$RUNS"); do
    eval "$pprep"; r=($(measure "$peer")); ps=$(echo "$ps + ${r[0]}" | bc); pc=$(echo "$pc + ${r[1]}" | bc)
    eval "$tprep"; r=($(measure "$tool")); ts=$(echo "$ts + ${r[0]}" | bc); tc=$(echo "$tc + ${r[1]}" | bc)
    if (( r[2] > maxrss )); then maxrss=${r[2]}; fi
  done
  printf '| %s | %s | %.2f | %.2f | %.2fx | %.2fx | %d |\n' "$name" "$peername" "$(echo "$ps / $RUNS" | bc -l)" \
    "$(echo "$ts / $RUNS" | bc -l)" "$(echo "$ps / $ts" | bc -l)" "$(echo "$pc / $tc" | bc -l)" $((maxrss / 1024))
}

workload "cold: COPY 511 MiB -> gzip OCI layout" "buildah bud" \
  "$RMI; rm -rf $W/b-oci" "$BUD --disable-compression=false -t oci:$W/b-oci:latest -f $CTX/Containerfile $CTX" \
  "rm -rf $W/s-out" "$STRATA_BUILD -f $CTX/Containerfile -c $CTX -o $W/s-out -t latest" 0

workload "rebuild, nothing changed (cache hit)" "buildah bud --layers" \
  "true" "$BUD --layers -t localhost/bench/copy500 -f $CTX/Containerfile $CTX" \
  "true" "$STRATA_BUILD -f $CTX/Containerfile -c $CTX -o $W/s-cached -t latest" 1

# 3 platforms vs 1 (strata vs itself): the peer column is strata's single-platform build.
workload "3-platform ADD (linux/amd64, linux/arm64, windows/amd64) vs 1-platform" "strata 1-platform" \
  "rm -rf $W/s-1p" "$STRATA_BUILD -f $W/Containerfile.add -c $CTX -o $W/s-1p -t latest --platform linux/amd64" \
  "rm -rf $W/s-3p" "$STRATA_BUILD -f $W/Containerfile.add -c $CTX -o $W/s-3p -t latest --platform linux/amd64 --platform linux/arm64 --platform windows/amd64:10.0.17763.1757" 0
echo
echo "(3-platform row: 'peer' = strata building one platform; peer/strata < 1 means the 3-platform build costs 1/ratio times the single one)"
eval "$RMI"
rm -rf "$W"
