# Shared by the bench scripts (sourced): timing one command.
#
# measure CMD -> "wall_seconds cpu_seconds peak_rss_kib" for `bash -c CMD` (CPU = user + sys of
# the command and its children: on a shared machine the steadier figure). Output of CMD is
# discarded; if it fails, its stderr is shown and the script exits. Needs $W (scratch dir) and
# /usr/bin/time (Debian package `time`, installed when missing).
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

measure() {
  local t0 t1 rss u s
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M %U %S" -o "$W/time" bash -c "$1" >/dev/null 2>"$W/err" \
    || { echo "FAILED: $1" >&2; cat "$W/err" >&2; exit 1; }
  t1=$(date +%s.%N)
  read -r rss u s < <(tail -1 "$W/time")
  echo "$(echo "$t1 - $t0" | bc) $(echo "$u + $s" | bc) $rss"
}
