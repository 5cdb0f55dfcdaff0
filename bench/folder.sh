#!/usr/bin/env bash
# A folder of FILES random files of SIZE bytes each (100 per subfolder), shared
# by one `shoal share` and fetched RUNS times by a fresh `shoal get` (a new
# data dir each run), on 127.0.0.1 only; each copy is compared with diff -r.
# Prints the wall time of each get and of `tar c | tar x` of the same folder
# (the floor). Everything it starts it stops; its files are removed.
#
#   bench/folder.sh SHOAL_BIN FILES SIZE_BYTES [RUNS]
#   bench/folder.sh target/release/shoal 1000 4096 3
set -euo pipefail
bin=$1; n=$2; size=$3; runs=${4:-3}
w=$(mktemp -d)
trap 'kill "${spid:-}" 2>/dev/null || true; rm -rf "$w"' EXIT
mkdir -p "$w/src"
python3 - "$w/src" "$n" "$size" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    sub = os.path.join(d, f"d{i//100:03d}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:05d}"), "wb") as f:
        f.write(os.urandom(size))
PY
export SHOAL_LISTEN=127.0.0.1:0 SHOAL_FAST_LISTEN=127.0.0.1:0 SHOAL_MDNS=off SHOAL_UPNP=off
"$bin" --data-dir "$w/a" share "$w/src" --json > "$w/share.json" 2>"$w/share.err" &
spid=$!
for _ in $(seq 1 600); do [ -s "$w/share.json" ] && break; sleep 0.1; done
ticket=$(python3 -c "import json,sys;print(json.loads(open('$w/share.json').readline())['ticket'])")
for r in $(seq 1 "$runs"); do
  rm -rf "$w/b" "$w/out"
  s=$(date +%s.%N)
  timeout 300 "$bin" --data-dir "$w/b" get "$ticket" -o "$w/out" --name f >/dev/null 2>"$w/get.err" || { echo "get failed"; tail -3 "$w/get.err"; }
  e=$(date +%s.%N)
  diff -r "$w/src" "$w/out/f" >/dev/null && ok=identical || ok=DIFFERENT
  echo "run $r: $n files x $size B: $(python3 -c "print(round($e-$s,2))") s ($ok)"
done
s=$(date +%s.%N); (cd "$w/src" && tar cf - .) | (mkdir -p "$w/tar" && cd "$w/tar" && tar xf -); e=$(date +%s.%N)
echo "tar c | tar x: $(python3 -c "print(round($e-$s,2))") s"
