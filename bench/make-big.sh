#!/usr/bin/env bash
# Make the copy benchmark's fixture: an OCI image layout holding one linux/amd64 image of
# about 1 GiB uncompressed in 8 gzip layers (~400 MiB compressed), from local files only
# (no network, no container engine): GNU tar + gzip/pigz + sha256sum + jq.
#
#   layer 1..6  real files copied from /usr (locale, docs, headers, toolchain, scripts, libs),
#               each up to a byte budget, so the layers look like a distribution's
#   layer 7     64 MiB incompressible (deterministic AES-CTR stream) + 32 MiB of zeros
#   layer 8     filler text, so the image reaches ~1 GiB even on a host with a small /usr
#
# Deterministic for a given set of files under /usr (sorted tar, fixed mtimes/owners, gzip -n);
# installing packages changes layers 1-6 (and the filler size of layer 8).
# usage: bench/make-big.sh LAYOUT_DIR      (re-creates LAYOUT_DIR; tag "latest")
set -euo pipefail
OUT=${1:?usage: make-big.sh LAYOUT_DIR}
TS=1700000000
MiB=$((1 << 20))
TARGET=$((1024 * MiB))                        # uncompressed image size aimed at
for t in tar sha256sum jq openssl; do command -v $t >/dev/null || { echo "make-big.sh needs $t" >&2; exit 1; }; done
GZ="gzip -6 -n"; command -v pigz >/dev/null && GZ="pigz -6 -n"

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench-stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
rm -rf "$OUT"; mkdir -p "$OUT/blobs/sha256"

# fill DEST BUDGET_MiB SRC...: regular files and symlinks of SRC (sorted) under DEST, keeping
# their absolute paths, until BUDGET is reached; hard links are kept (counted once).
fill() {
  local dest=$1 budget=$(($2 * MiB)); shift 2
  local srcs=() s
  for s in "$@"; do [[ -e $s ]] && srcs+=("$s"); done
  mkdir -p "$dest"
  [[ ${#srcs[@]} -gt 0 ]] || return 0
  find "${srcs[@]}" \( -type f -o -type l \) -readable -printf '%s\t%D:%i\t%p\n' 2>/dev/null | LC_ALL=C sort -t $'\t' -k3 |
    awk -F'\t' -v b="$budget" '{ if ($2 in seen) { if (seen[$2]) print substr($3, 2); next }
      ok = (s + $1 <= b); seen[$2] = ok; if (!ok) next; s += $1; print substr($3, 2) }' > "$dest.list"
  tar -C / -cf - --no-recursion -T "$dest.list" 2>/dev/null | tar -C "$dest" -xf - || true
}

# add_blob FILE -> moves FILE into the layout, prints "sha256:HEX SIZE"
add_blob() {
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1); size=$(stat -c %s "$1")
  mv "$1" "$OUT/blobs/sha256/$hex"; echo "sha256:$hex $size"
}

layers=() diffids=() total=0
# layer DIR: tar (sorted, fixed metadata) -> diff_id; gzip -> blob
layer() {
  local dir=$1 tarf=$STAGE/layer.tar d s
  find "$dir" -depth -exec touch -h -d @$TS {} +
  tar --sort=name --mtime=@$TS --owner=0 --group=0 --numeric-owner --format=posix \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -C "$dir" -cf "$tarf" .
  total=$((total + $(stat -c %s "$tarf")))
  diffids+=("sha256:$(sha256sum "$tarf" | cut -d' ' -f1)")
  $GZ -c "$tarf" > "$tarf.gz"; rm -f "$tarf"
  read -r d s < <(add_blob "$tarf.gz"); layers+=("$d $s")
  rm -rf "$dir"
  echo "  layer $((${#layers[@]})): $s bytes compressed ($((total / MiB)) MiB uncompressed so far)" >&2
}

echo "making $OUT (~1 GiB uncompressed, 8 gzip layers)" >&2
PY=$(ls -d /usr/lib/python3* 2>/dev/null | head -1 || true)
i=0
for spec in "150 /usr/share/locale /usr/share/i18n" "180 /usr/share/doc /usr/share/man /usr/share/info" \
            "120 /usr/include" "130 /usr/lib/gcc /usr/libexec" "150 $PY /usr/share/perl /usr/share/perl5" \
            "230 /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64"; do
  i=$((i + 1)); read -r budget srcs <<< "$spec"
  # shellcheck disable=SC2086
  fill "$STAGE/l$i" "$budget" $srcs
  layer "$STAGE/l$i"
done
mkdir -p "$STAGE/l7/opt/blobs"
head -c $((64 * MiB)) /dev/zero | openssl enc -aes-128-ctr -pass pass:bench-seed -nosalt -pbkdf2 > "$STAGE/l7/opt/blobs/random-64m.bin"
head -c $((32 * MiB)) /dev/zero > "$STAGE/l7/opt/blobs/zeros-32m.bin"
layer "$STAGE/l7"
# filler: base64 text of a deterministic stream (compresses about 4:3), up to TARGET
mkdir -p "$STAGE/l8/opt/filler"
rest=$(( TARGET - total )); (( rest < 8 * MiB )) && rest=$((8 * MiB))
head -c $(( rest * 3 / 4 )) /dev/zero | openssl enc -aes-128-ctr -pass pass:filler-seed -nosalt -pbkdf2 |
  base64 -w 76 | split -b $((16 * MiB)) - "$STAGE/l8/opt/filler/part-"
layer "$STAGE/l8"

# config, manifest, index.json
cfg=$STAGE/config.json
jq -cn --argjson ids "$(printf '%s\n' "${diffids[@]}" | jq -R . | jq -cs .)" '{
  created: "2023-11-14T22:13:20Z", architecture: "amd64", os: "linux",
  config: {Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["sh"]},
  rootfs: {type: "layers", diff_ids: $ids},
  history: [$ids[] | {created: "2023-11-14T22:13:20Z", created_by: "bench/make-big.sh"}]}' > "$cfg"
read -r cd cs < <(add_blob "$cfg")
man=$STAGE/manifest.json
printf '%s\n' "${layers[@]}" | jq -R 'split(" ") | {mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: .[0], size: (.[1] | tonumber)}' |
  jq -cs --arg cd "$cd" --argjson cs "$cs" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs}, layers: .}' > "$man"
read -r md ms < <(add_blob "$man")
jq -cn --arg md "$md" --argjson ms "$ms" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
  manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $md, size: $ms,
    annotations: {"org.opencontainers.image.ref.name": "latest"}}]}' > "$OUT/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$OUT/oci-layout"
echo "done: $OUT: ${#layers[@]} layers, $(( $(printf '%s\n' "${layers[@]}" | awk '{s += $2} END {print s}') / MiB )) MiB compressed, $((total / MiB)) MiB uncompressed" >&2
