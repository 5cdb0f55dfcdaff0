#!/usr/bin/env bash
# Ticket to verified file for a small file, on 127.0.0.1 only.
#
#   bench/small_get.sh SHOAL_BIN [RUNS] [SIZE] [OTHER_BIN]
#   bench/small_get.sh target/release/shoal 10 4096 /tmp/shoal-before
#
# Shares SIZE bytes (default 4096) with SHOAL_BIN, then times RUNS (default
# 10) fresh `shoal get TICKET` (a new data dir each, so node start, key,
# connection, hello, transfer, verification and the final flush all count),
# wall time from spawn to exit 0. With OTHER_BIN, the runs alternate between
# the two binaries against the same seeder, so both see the same machine.
# Each copy is compared with the source. Prints every time and the median:
#   BIN: times ms: T T ... median M ms
set -euo pipefail
BIN=$(realpath "$1")
RUNS=${2:-10}
SIZE=${3:-4096}
OTHER=${4:+$(realpath "$4")}
W=$(mktemp -d)
SEEDER=
cleanup() {
    [ -n "$SEEDER" ] && kill "$SEEDER" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
head -c "$SIZE" /dev/urandom > "$W/f.bin"
SHOAL_LOG=off "$BIN" --data-dir "$W/s" share "$W/f.bin" --json \
    --listen /ip4/127.0.0.1/tcp/0 --mdns off > "$W/share.json" 2> "$W/share.err" &
SEEDER=$!
for _ in $(seq 1 100); do
    grep -q ticket "$W/share.json" 2>/dev/null && break
    sleep 0.1
done
TICKET=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['ticket'])" "$W/share.json")
declare -A TIMES
for r in $(seq 1 "$RUNS"); do
    for b in "$BIN" ${OTHER:+"$OTHER"}; do
        rm -rf "$W/g" "$W/o"
        s=$(date +%s%N)
        SHOAL_LOG=off timeout 60 "$b" --data-dir "$W/g" get "$TICKET" -o "$W/o" \
            --mdns off > /dev/null 2>&1 || { echo "FAILED: $b run $r"; exit 1; }
        e=$(date +%s%N)
        cmp -s "$W/f.bin" "$W/o/f.bin" || { echo "DIFFERENT: $b run $r"; exit 1; }
        TIMES[$b]+="$(( (e - s) / 100000 )) "
    done
done
for b in "$BIN" ${OTHER:+"$OTHER"}; do
    python3 - "$b" ${TIMES[$b]} <<'PY'
import statistics, sys
t = [int(x) / 10 for x in sys.argv[2:]]
print(f"{sys.argv[1]}: times ms: {' '.join(f'{x:.1f}' for x in t)} median {statistics.median(t):.1f} ms")
PY
done
