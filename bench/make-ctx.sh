#!/usr/bin/env bash
# Make the build benchmark's context: DIR/Containerfile (`FROM scratch` + `COPY data /data`)
# and DIR/data, ~500 MiB in many files copied from /usr (share, include, python, gcc), like
# ../shared/bench/make-fixtures.sh's ctx-copy500. Local files only; fixed mtimes.
# usage: bench/make-ctx.sh DIR [MiB]
set -euo pipefail
OUT=${1:?usage: make-ctx.sh DIR [MiB]}
BUDGET=$(( ${2:-500} << 20 ))
rm -rf "$OUT"; mkdir -p "$OUT/data"
srcs=(); for s in /usr/share /usr/include /usr/lib/python3 /usr/lib/gcc /usr/lib/x86_64-linux-gnu; do [[ -e $s ]] && srcs+=("$s"); done
find "${srcs[@]}" \( -type f -o -type l \) -readable -printf '%s\t%D:%i\t%p\n' 2>/dev/null | LC_ALL=C sort -t $'\t' -k3 |
  awk -F'\t' -v b="$BUDGET" '{ if ($2 in seen) { if (seen[$2]) print substr($3, 2); next }
    ok = (s + $1 <= b); seen[$2] = ok; if (!ok) next; s += $1; print substr($3, 2) }' > "$OUT/.list"
tar -C / -cf - --no-recursion -T "$OUT/.list" 2>/dev/null | tar -C "$OUT/data" -xf - || true
rm -f "$OUT/.list"
find "$OUT/data" -exec touch -h -d @1700000000 {} +
printf 'FROM scratch\nCOPY data /data\n' > "$OUT/Containerfile"
echo "$OUT: $(find "$OUT/data" | wc -l) entries, $(du -sm "$OUT/data" | cut -f1) MiB"
