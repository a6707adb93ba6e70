#!/usr/bin/env bash
# Layer writing and extraction throughput, strata-archive next to the usual tools, same run.
# Usage: bench/archive.sh [DIR]   (default: /tmp/fixtures/ctx-copy500/data, ~570 MiB mixed files)
set -euo pipefail
DIR=${1:-/tmp/fixtures/ctx-copy500/data}
cd "$(dirname "$0")/.."
cargo build -q --release -p strata-archive --example layer_bench
BIN=target/release/examples/layer_bench
# Outputs on tmpfs when there is one: the figures are then the CPU cost, not the disk's.
TMPBASE=/tmp; [[ -d /dev/shm ]] && TMPBASE=/dev/shm
export STRATA_BENCH_TMP=$TMPBASE
OUT=$(mktemp -d -p "$TMPBASE"); trap 'rm -rf "$OUT"' EXIT
# Warm the page cache so every contender reads from memory.
tar -cf - -C "$DIR" . > /dev/null
t() { local s=$(date +%s.%N); "$@"; echo "$(echo "$(date +%s.%N) - $s" | bc)"; }
MIB=$(du -sm --apparent-size "$DIR" | cut -f1)
echo "data: $DIR ($MIB MiB apparent, $(find "$DIR" -type f | wc -l) files)"
for c in gzip:1 gzip:6 zstd:3; do $BIN "$DIR" "$c"; done
$BIN "$DIR" gzip:1 1
STRATA_BENCH_THREADS=same $BIN "$DIR" gzip:1 | sed 's/^extract/extract (decoder on the same thread)/' | tail -1
/usr/bin/time -f "peak RSS of write+extract gzip:1: %M KiB" $BIN "$DIR" gzip:1 > /dev/null
for tool in "gzip -1" "pigz -1" "pigz -6" "zstd -3 -T0 -q"; do
  s=$(t sh -c "tar -cf - -C '$DIR' . | $tool > '$OUT/l'")
  printf 'tar | %-14s %5.2f s = %4.0f MiB/s\n' "$tool" "$s" "$(echo "$MIB / $s" | bc -l)"
done
tar -cf - -C "$DIR" . | gzip -1 > "$OUT/l.gz"
mkdir "$OUT/x"; s=$(t tar -xzf "$OUT/l.gz" -C "$OUT/x")
printf 'tar -xzf (GNU)        %5.2f s = %4.0f MiB/s\n' "$s" "$(echo "$MIB / $s" | bc -l)"
