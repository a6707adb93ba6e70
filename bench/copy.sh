#!/usr/bin/env bash
# Copy benchmark: `strata copy` against `skopeo copy` on the same fixtures, in one run,
# alternating tool by tool (skopeo, strata, skopeo, strata, ...) so that machine noise hits
# both alike. Prints a Markdown table: mean wall seconds (± sd), the speed-up
# (skopeo / strata), the mean CPU seconds (user+sys, less noisy than wall time on a shared
# machine) and strata's peak RSS.
#
# Self-contained on a Debian 12 machine with no network:
#   - needs: cargo, docker-registry, skopeo, jq, openssl, GNU tar, gzip (pigz if present),
#     curl, /usr/bin/time (Debian package `time`); `scripts/install-deps.sh` installs them
#     except `time`, which this script installs when missing (root);
#   - builds strata with `cargo build --release` (never the dev build);
#   - makes the fixture when missing: `bench/make-big.sh $BIG`, an OCI layout of one image of
#     ~1 GiB uncompressed in 8 gzip layers (~400 MiB compressed) from local files (~1-2 min);
#   - starts two CNCF distribution registries (`docker-registry`) on free loopback ports with
#     storage under $W, loads the fixture into the first as bench/big:latest with skopeo,
#     and stops them (by PID) at the end;
#   - and a third serving HTTPS only (HTTP/2 and HTTP/1.1, as Go offers them) with a server
#     certificate signed by a CA made here with openssl ($W/tls/ca/ca.crt): the "(TLS)" rows,
#     where both tools verify the certificate against that CA (--src-cert-dir/--dest-cert-dir
#     for skopeo, --cert-dir for strata).
#
# usage: bench/copy.sh [-r RUNS] [--only REGEX] [--skip REGEX] [--no-build]
# env:   W   work directory (default /tmp/strata-bench; registries, outputs)
#        CARGO_TARGET_DIR  where the release build is (default ./target)
#        BIG the fixture layout (default $W/big; e.g. BIG=/tmp/fixtures/oci/big to reuse one)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${W:-/tmp/strata-bench}
BIG=${BIG:-$W/big}
RUNS=5; ONLY=""; SKIP=""; BUILD=1
while [[ $# -gt 0 ]]; do
  case $1 in
    -r) RUNS=$2; shift;; --only) ONLY=$2; shift;; --skip) SKIP=$2; shift;; --no-build) BUILD=0;;
    -h|--help) sed -n '2,29p' "$0"; exit 0;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac; shift
done
for t in docker-registry skopeo jq curl openssl; do
  command -v $t >/dev/null || { echo "missing $t: run scripts/install-deps.sh" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; } ||
  { echo "needs /usr/bin/time (Debian package time)" >&2; exit 1; }
mkdir -p "$W"

if [[ $BUILD == 1 ]]; then cargo build --release --quiet -p strata; fi
STRATA=${CARGO_TARGET_DIR:-$PWD/target}/release/strata
[[ -x $STRATA ]] || { echo "no $STRATA (run without --no-build)" >&2; exit 1; }
[[ -f $BIG/index.json ]] || bench/make-big.sh "$BIG"

# ---------------------------------------------------------------- registries
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# A CA (kept in $W/tls/ca, the directory both tools are given) and a server certificate it
# signed for 127.0.0.1 / localhost, for the TLS registry.
make_certs() {
  local t=$W/tls
  rm -rf "$t"; mkdir -p "$t/ca"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$t/ca.key" -out "$t/ca/ca.crt" -days 2 \
    -subj /CN=strata-bench-ca -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req "${ec[@]}" -keyout "$t/server.key" -out "$t/server.csr" -subj /CN=127.0.0.1 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$t/server.ext"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca/ca.crt" -CAkey "$t/ca.key" -CAcreateserial \
    -out "$t/server.crt" -days 2 -extfile "$t/server.ext" 2>/dev/null
}
# start_registry NAME [tls] -> prints 127.0.0.1:PORT of a registry started with storage in
# $W/NAME (serving HTTPS with $W/tls/server.crt when "tls")
start_registry() {
  local dir=$W/$1 tls=${2:-} port pid _ scheme=http tls_yaml=""
  rm -rf "$dir"; mkdir -p "$dir/data"
  if [[ $tls == tls ]]; then
    scheme=https
    tls_yaml=", tls: {certificate: $W/tls/server.crt, key: $W/tls/server.key}"
  fi
  for _ in $(seq 1 20); do
    port=$((20000 + RANDOM % 40000))
    curl -s -o /dev/null --max-time 0.5 "http://127.0.0.1:$port/" && continue
    cat > "$dir/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
  cache: {blobdescriptor: inmemory}
  maintenance: {uploadpurging: {enabled: false}}
http: {addr: "127.0.0.1:$port", secret: strata-bench$tls_yaml}
EOF
    docker-registry serve "$dir/config.yml" > "$dir/registry.log" 2>&1 < /dev/null &
    pid=$!
    for _ in $(seq 1 100); do
      if curl -sf -o /dev/null --max-time 1 --cacert "$W/tls/ca/ca.crt" "$scheme://127.0.0.1:$port/v2/"; then
        echo "$pid" > "$dir/registry.pid"; echo "127.0.0.1:$port"; return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
  done
  echo "cannot start docker-registry; log:" >&2; cat "$dir/registry.log" >&2; return 1
}
# $(...) runs start_registry in a subshell: the PIDs come back through the pid files.
make_certs
REG=$(start_registry reg-a) || exit 1
PIDS+=("$(cat "$W/reg-a/registry.pid")")
REG2=$(start_registry reg-b) || exit 1
PIDS+=("$(cat "$W/reg-b/registry.pid")")
REGT=$(start_registry reg-tls tls) || exit 1
PIDS+=("$(cat "$W/reg-tls/registry.pid")")
CA=$W/tls/ca
skopeo copy -q --dest-tls-verify=false "oci:$BIG:latest" "docker://$REG/bench/big:latest"
skopeo copy -q --dest-cert-dir "$CA" "oci:$BIG:latest" "docker://$REGT/bench/big:latest"

# ---------------------------------------------------------------- measuring
BIC=/var/lib/containers/cache/blob-info-cache-v1.boltdb   # skopeo's blob-info cache
SK="skopeo copy -q --src-tls-verify=false --dest-tls-verify=false"
ST="$STRATA copy -q --tls-verify=false"
SRC=docker://$REG/bench/big:latest
SKT="skopeo copy -q --src-cert-dir $CA --dest-cert-dir $CA"
STT="$STRATA copy -q --cert-dir $CA"
SRCT=docker://$REGT/bench/big:latest
WANT=$(jq -r '.manifests[0].digest' "$BIG/index.json")   # every copy keeps this digest

# run_one CMD -> "wall_s cpu_s maxrss_kib"; CMD is split on blanks (no shell in between)
run_one() {
  local argv t0 t1 u s m
  read -ra argv <<< "$1"
  t0=$(date +%s%N)
  if ! /usr/bin/time -f '%U %S %M' -o "$W/time" "${argv[@]}" > /dev/null 2> "$W/err"; then
    echo "FAILED: $1" >&2; cat "$W/err" >&2; exit 1
  fi
  t1=$(date +%s%N)
  read -r u s m < <(tail -1 "$W/time")
  awk -v a="$t0" -v b="$t1" -v u="$u" -v s="$s" -v m="$m" 'BEGIN { printf "%.4f %.2f %d\n", (b - a) / 1e9, u + s, m }'
}

# check_dest DEST: the copy's top manifest has the fixture's digest
check_dest() {
  local got
  got=sha256:$(skopeo inspect --raw --tls-verify=false "$1" | sha256sum | cut -d' ' -f1)
  [[ $got == "$WANT" ]] || { echo "wrong result at $1: $got, want $WANT" >&2; exit 1; }
}

# stats FILE (one number per line) -> "mean sd"
stats() { awk '{ s += $1; q += $1 * $1; n++ } END { m = s / n; v = q / n - m * m; printf "%.3f %.3f\n", m, (v > 0 ? sqrt(v) : 0) }' "$1"; }

echo "# bench/copy.sh $(date -Is): $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), runs=$RUNS"
echo "# strata $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty') (release), $(skopeo --version)"
echo "# fixture $BIG: $(jq '[.layers[].size] | add / 1048576 | floor' "$BIG/blobs/sha256/${WANT#sha256:}") MiB compressed in $(jq '.layers | length' "$BIG/blobs/sha256/${WANT#sha256:}") layers"
echo
echo "| workload | skopeo s | strata s | speed-up | skopeo CPU s | strata CPU s | strata peak RSS MiB | target |"
echo "|---|--:|--:|--:|--:|--:|--:|---|"

# workload NAME TARGET PREP SKOPEO_CMD STRATA_CMD [CHECK_DEST]
#   {u} in commands/checks becomes a fresh suffix per run; PREP runs (untimed) before each run.
#   One warm-up run per tool first (page cache, registry state), then RUNS alternating runs.
workload() {
  local name=$1 target=$2 prep=$3 peer=$4 tool=$5 check=${6:-}
  [[ -n $ONLY && ! $name =~ $ONLY ]] && return 0
  [[ -n $SKIP && $name =~ $SKIP ]] && return 0
  local d=$W/samples i u r tool_name cmd
  rm -rf "$d"; mkdir -p "$d"
  for i in $(seq 0 "$RUNS"); do
    for tool_name in skopeo strata; do
      u=$tool_name$i$RANDOM
      if [[ $tool_name == skopeo ]]; then cmd=${peer//\{u\}/$u}; else cmd=${tool//\{u\}/$u}; fi
      eval "$prep"
      r=$(run_one "$cmd")
      if [[ $i == 0 ]]; then           # warm-up: not counted, but its result is checked
        [[ -n $check ]] && check_dest "${check//\{u\}/$u}"
        continue
      fi
      read -r wall cpu rss <<< "$r"
      echo "$wall" >> "$d/$tool_name.wall"; echo "$cpu" >> "$d/$tool_name.cpu"; echo "$rss" >> "$d/$tool_name.rss"
    done
  done
  local pw ps tw ts pc tc rss
  read -r pw ps < <(stats "$d/skopeo.wall"); read -r tw ts < <(stats "$d/strata.wall")
  read -r pc _ < <(stats "$d/skopeo.cpu"); read -r tc _ < <(stats "$d/strata.cpu")
  rss=$(sort -n "$d/strata.rss" | tail -1)
  awk -v n="$name" -v pw="$pw" -v ps="$ps" -v tw="$tw" -v ts="$ts" -v pc="$pc" -v tc="$tc" -v r="$rss" -v t="$target" \
    'BEGIN { printf "| %s | %.2f ± %.2f | %.2f ± %.2f | %.2f× | %.2f | %.2f | %.0f | %s |\n", n, pw, ps, tw, ts, pw / tw, pc, tc, r / 1024, t }'
}

OUT=$W/out
NOBIC="rm -f $BIC"
workload "registry → OCI layout" "≥ 2.5×" "rm -rf $OUT; $NOBIC" \
  "$SK $SRC oci:$OUT:latest" "$ST $SRC oci:$OUT:latest" "oci:$OUT:latest"
workload "OCI layout → registry, new repo" "≥ 1.3×" "$NOBIC" \
  "$SK oci:$BIG:latest docker://$REG/bench/from-oci-{u}:latest" \
  "$ST oci:$BIG:latest docker://$REG/bench/from-oci-{u}:latest" "docker://$REG/bench/from-oci-{u}:latest"
workload "registry → OCI layout (TLS)" "≥ 2.5×" "rm -rf $OUT; $NOBIC" \
  "$SKT $SRCT oci:$OUT:latest" "$STT $SRCT oci:$OUT:latest" "oci:$OUT:latest"
workload "OCI layout → registry, new repo (TLS)" "≥ 1.5×" "$NOBIC" \
  "$SKT oci:$BIG:latest docker://$REGT/bench/from-oci-{u}:latest" \
  "$STT oci:$BIG:latest docker://$REGT/bench/from-oci-{u}:latest" \
  "docker://$REGT/bench/from-oci-{u}:latest"
workload "registry → same registry and tag, everything present" "≥ 1×" "" \
  "$SK $SRC docker://$REG/bench/again:latest" "$ST $SRC docker://$REG/bench/again:latest"
workload "registry → OCI layout, everything present" "≥ 1×" "" \
  "$SK $SRC oci:$W/present:latest" "$ST $SRC oci:$W/present:latest" "oci:$W/present:latest"
workload "registry → same registry, new repo (mount)" "–" "" \
  "$SK $SRC docker://$REG/bench/mount-{u}:latest" "$ST $SRC docker://$REG/bench/mount-{u}:latest" \
  "docker://$REG/bench/mount-{u}:latest"
workload "registry → another registry, new repo" "–" "$NOBIC" \
  "$SK $SRC docker://$REG2/bench/copy-{u}:latest" "$ST $SRC docker://$REG2/bench/copy-{u}:latest" \
  "docker://$REG2/bench/copy-{u}:latest"
workload "OCI layout → oci-archive" "–" "rm -f $W/big-oci.tar" \
  "$SK oci:$BIG:latest oci-archive:$W/big-oci.tar:latest" "$ST oci:$BIG:latest oci-archive:$W/big-oci.tar:latest"
workload "OCI layout → docker-archive" "–" "rm -f $W/big-docker.tar" \
  "$SK oci:$BIG:latest docker-archive:$W/big-docker.tar:bench/big:latest" \
  "$ST oci:$BIG:latest docker-archive:$W/big-docker.tar:bench/big:latest"
rm -rf "$OUT" "$W/big-oci.tar" "$W/big-docker.tar" "$W/samples"
