#!/usr/bin/env bash
# A real swarm on netlab hosts: one seeder and N leechers, each host shaped to
# UP upload and DOWN download (tc, on the wire), all leechers started at once;
# shoal and aria2 (BitTorrent, with opentracker) interleaved in each run.
# Needs root, ../shared/netlab/netlab, aria2, opentracker and transmission-cli
# (apt-get install aria2 opentracker transmission-cli). Traffic stays inside
# the lab's namespaces; mDNS, UPnP, aria2's DHT and LPD are off.
#
#   bench/swarm_netlab.sh SHOAL_BIN [LEECHERS] [RUNS] [SIZE_MIB]
#   bench/swarm_netlab.sh target/release/shoal 7 3 32
#
# Environment: SWARM_UP (default 20mbit), SWARM_DOWN (100mbit), SWARM_ONLY
# ("shoal" or "aria2": one contestant only), SWARM_TIMEOUT (s, default 300).
#
# Output (grep-able):
#   run R shoal|aria2: T s (ratio Q to D_p2p, Q' to the TCP-framing bound), done at [t1 t2 ...] s, CPU S s
#   median of R runs: shoal T s (Q) | aria2 T s (Q)
# D_p2p = max(F/u_s, N*F/(u_s + N*u), F/d) for a file of F bits, seeder and
# leecher upload u_s = u, download d (the fluid lower bound of a swarm); the
# TCP-framing bound counts 1448 payload bytes per 1514-byte frame. T is from
# the moment every leecher is started until the last has the whole file
# (verified: shoal's summary says so; aria2's files are compared with cmp).
# CPU is user+system seconds of all contestant processes of the run (seeder
# and leechers), from /proc at their end.
set -euo pipefail
bin=$(readlink -f "$1"); n=${2:-7}; runs=${3:-1}; mib=${4:-32}
up=${SWARM_UP:-20mbit}; down=${SWARM_DOWN:-100mbit}; only=${SWARM_ONLY:-}
limit=${SWARM_TIMEOUT:-300}
netlab=$(readlink -f "$(dirname "$0")/../../shared/netlab/netlab")
prefix=swb
w=$(mktemp -d /tmp/swarm-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  NETLAB_QUIET=1 "$netlab" down --prefix "$prefix" >/dev/null 2>&1 || true
  rm -rf "$w"
}
trap cleanup EXIT
rate_bits() { python3 -c "import re,sys; m=re.fullmatch(r'([0-9.]+)(k|m|g)?bit', sys.argv[1]); print(float(m.group(1))*{None:1,'k':1e3,'m':1e6,'g':1e9}[m.group(2)])" "$1"; }
ub=$(rate_bits "$up"); db=$(rate_bits "$down")
f_bytes=$((mib * 1048576))
bound=$(python3 -c "
F=$f_bytes*8; n=$n; u=$ub; d=$db
print(max(F/u, n*F/(u+n*u), F/d))")
tcp_bound=$(python3 -c "print($bound*1514/1448)")
echo "command: $0 $*"
echo "shoal: $("$bin" --version); aria2: $(aria2c --version | head -1); $(nproc) cores"
echo "swarm: 1 seeder + $n leechers, $mib MiB, up $up / down $down each; D_p2p $(printf %.2f "$bound") s, TCP-framing bound $(printf %.2f "$tcp_bound") s"

NETLAB_QUIET=1 "$netlab" up --prefix "$prefix" --hosts $((n + 1)) --up-rate "$up" --down-rate "$down" >/dev/null
ip_of() { echo "10.99.1.$(($1 + 1))"; }
python3 -c "
import random; r=random.Random(7); f=open('$w/file.bin','wb')
for _ in range($mib): f.write(r.randbytes(1048576))"

# CPU seconds (user + system, and of waited-for children) of a process, read
# from /proc just before it is stopped.
tck=$(getconf CLK_TCK)
cpu_of() { awk -v t="$tck" '{print ($14+$15+$16+$17)/t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU seconds of every process whose command line names the folder $1.
cpu_under() {
  local total=0 p
  for p in $(pgrep -f -- "$1" || true); do total=$(python3 -c "print($total + $(cpu_of "$p"))"); done
  echo "$total"
}

run_shoal() {
  local r=$1 d="$w/shoal-$r"
  mkdir -p "$d"
  export SHOAL_MDNS=off SHOAL_UPNP=off
  "$netlab" exec "$prefix-0" "$bin" --data-dir "$d/seed" share "$w/file.bin" --json \
    --listen "$(ip_of 0):4001" > "$d/seed.out" 2> "$d/seed.err" &
  local spid=$!; pids+=("$spid")
  for _ in $(seq 1 300); do [ -s "$d/seed.out" ] && break; sleep 0.1; done
  local ticket
  ticket=$(python3 -c "import json;print(json.loads(open('$d/seed.out').readline())['ticket'])")
  local t0 lp=()
  t0=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    ( "$netlab" exec "$prefix-$i" "$bin" --data-dir "$d/l$i" get "$ticket" -o "$d/out$i" --name f \
        --json --stall-timeout 60s --seed-for "${limit}s" --listen "$(ip_of "$i"):4001" 2> "$d/l$i.err" \
      | while IFS= read -r line; do echo "$(date +%s.%N) $line"; done > "$d/l$i.out" ) &
    lp+=($!); pids+=($!)
  done
  local deadline=$((SECONDS + limit)) done_n=0
  while [ $SECONDS -lt $deadline ]; do
    done_n=0
    for i in $(seq 1 "$n"); do [ -s "$d/l$i.out" ] && done_n=$((done_n + 1)); done
    [ $done_n -eq "$n" ] && break
    sleep 0.2
  done
  local cpu p
  cpu=$(cpu_under "$d/")
  for p in $(pgrep -f -- "$d/" || true); do kill "$p" 2>/dev/null || true; done
  kill "$spid" "${lp[@]}" 2>/dev/null || true
  wait "$spid" "${lp[@]}" 2>/dev/null || true
  if [ $done_n -ne "$n" ]; then echo "run $r shoal: only $done_n of $n leechers finished in ${limit} s"; return; fi
  python3 - "$d" "$n" "$t0" "$bound" "$tcp_bound" "$r" "$cpu" <<'PY'
import json, sys
d, n, t0, bound, tcp, r, cpu = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6], float(sys.argv[7])
ends = []
for i in range(1, n + 1):
    ts, line = open(f"{d}/l{i}.out").readline().split(" ", 1)
    v = json.loads(line)
    ends.append(float(ts) - t0)
t = max(ends)
print(f"run {r} shoal: {t:.2f} s (ratio {t/bound:.3f} to D_p2p, {t/tcp:.3f} to the TCP-framing bound), done at [{' '.join(f'{e:.1f}' for e in sorted(ends))}] s, CPU {cpu:.1f} s")
PY
  for i in $(seq 1 "$n"); do cmp -s "$w/file.bin" "$d/out$i/f" || echo "run $r shoal: leecher $i's file is DIFFERENT"; done
  rm -rf "$d"
}

run_aria2() {
  local r=$1 d="$w/aria2-$r"
  mkdir -p "$d/seed"
  cp "$w/file.bin" "$d/seed/f"
  transmission-create -o "$d/f.torrent" -t "http://$(ip_of 0):6969/announce" -s 256 "$d/seed/f" > /dev/null 2>&1
  # Debian's opentracker serves only the torrents on its whitelist.
  mkdir -p "$d/tracker"
  transmission-show "$d/f.torrent" | awk '/Hash:/ {print $2}' > "$d/tracker/whitelist"
  "$netlab" exec "$prefix-0" opentracker -i "$(ip_of 0)" -p 6969 -P 6969 -d "$d/tracker" \
    -w whitelist > "$d/tracker.log" 2>&1 &
  local tpid=$!; pids+=("$tpid")
  cat > "$d/stamp.sh" <<EOF
#!/bin/sh
date +%s.%N > "\$3.done"
EOF
  chmod +x "$d/stamp.sh"
  local common=(--enable-dht=false --enable-dht6=false --bt-enable-lpd=false --file-allocation=none
    --console-log-level=warn --summary-interval=0 --check-certificate=false --bt-tracker-connect-timeout=5
    --bt-tracker-interval=5 --bt-request-peer-speed-limit=0)
  "$netlab" exec "$prefix-0" aria2c "${common[@]}" -d "$d/seed" --check-integrity=true --bt-seed-unverified=true \
    --seed-ratio=0.0 --listen-port=6881 "$d/f.torrent" > "$d/seed.log" 2>&1 &
  local spid=$!; pids+=("$spid")
  sleep 2
  local t0 lp=()
  t0=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    mkdir -p "$d/out$i"
    "$netlab" exec "$prefix-$i" aria2c "${common[@]}" -d "$d/out$i" --seed-ratio=0.0 --listen-port=6881 \
      --on-bt-download-complete="$d/stamp.sh" "$d/f.torrent" > "$d/l$i.log" 2>&1 &
    lp+=($!); pids+=($!)
  done
  local deadline=$((SECONDS + limit)) done_n=0
  while [ $SECONDS -lt $deadline ]; do
    done_n=0
    for i in $(seq 1 "$n"); do [ -s "$d/out$i/f.done" ] && done_n=$((done_n + 1)); done
    [ $done_n -eq "$n" ] && break
    sleep 0.2
  done
  local cpu p
  cpu=$(cpu_under "$d/")
  for p in $(pgrep -f -- "$d/" || true) $(pgrep -x opentracker || true); do kill "$p" 2>/dev/null || true; done
  kill "$spid" "${lp[@]}" "$tpid" 2>/dev/null || true
  wait "$spid" "${lp[@]}" "$tpid" 2>/dev/null || true
  if [ $done_n -ne "$n" ]; then echo "run $r aria2: only $done_n of $n leechers finished in ${limit} s"; return; fi
  python3 - "$d" "$n" "$t0" "$bound" "$tcp_bound" "$r" "$cpu" <<'PY'
import sys
d, n, t0, bound, tcp, r, cpu = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6], float(sys.argv[7])
ends = [float(open(f"{d}/out{i}/f.done").read()) - t0 for i in range(1, n + 1)]
t = max(ends)
print(f"run {r} aria2: {t:.2f} s (ratio {t/bound:.3f} to D_p2p, {t/tcp:.3f} to the TCP-framing bound), done at [{' '.join(f'{e:.1f}' for e in sorted(ends))}] s, CPU {cpu:.1f} s")
PY
  for i in $(seq 1 "$n"); do cmp -s "$w/file.bin" "$d/out$i/f" || echo "run $r aria2: leecher $i's file is DIFFERENT"; done
  rm -rf "$d"
}

results="$w/results"
for r in $(seq 1 "$runs"); do
  [ "$only" = aria2 ] || run_shoal "$r" | tee -a "$results"
  [ "$only" = shoal ] || run_aria2 "$r" | tee -a "$results"
done
python3 - "$results" "$bound" <<'PY'
import re, statistics, sys
times = {}
for line in open(sys.argv[1]):
    m = re.match(r"run \d+ (\w+): ([0-9.]+) s", line)
    if m:
        times.setdefault(m.group(1), []).append(float(m.group(2)))
b = float(sys.argv[2])
parts = [f"{k} {statistics.median(v):.2f} s ({statistics.median(v)/b:.3f})" for k, v in times.items()]
print(f"median of the runs: " + " | ".join(parts))
PY
