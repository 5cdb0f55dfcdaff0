#!/usr/bin/env bash
# shoal against the usual tools at copying a folder, on 127.0.0.1 only.
#
#   bench/folders_vs.sh SHOAL_BIN [RUNS] [SCENARIOS]
#   bench/folders_vs.sh target/release/shoal 3 "a b c"
#
# RUNS defaults to 1, SCENARIOS to "a b c". Each scenario's folder is made by
# python3 from a fixed seed (random content, the same bytes every time):
#   a  10,000 files of 1-64 KiB (uniform), 100 per subfolder
#   b  300 files of 2-8 MiB (uniform), flat: a photo folder; and, as the
#      "one file" reference, a single file of the same total size
#   c  a source-repository-shaped tree: folders nested up to 6 deep, 5,000
#      files, most of 1-32 KiB (log-uniform), a few tiny ones, some of
#      32 KiB-1 MiB, and 5 large files of 8-32 MiB
# For each scenario, one run copies the folder with each contestant in turn
# (interleaved, in this order), every copy into a fresh destination:
#   shoal     a fresh `shoal get` (new data dir) from one `shoal share` seeder
#             started per scenario; peak RSS of the get (/usr/bin/time %M)
#             and of the seeder (VmHWM, read before it is stopped)
#   (b only)  shoal one-file: the same, for the single file, from its own seeder
#   tar|ssh   tar cf - . | ssh -c aes128-gcm@openssh.com ... 'tar xf - -C DEST'
#             against a throwaway sshd on 127.0.0.1 (own host and client keys)
#   rsync     rsync -a over the same ssh
#   tar|tar   tar cf - . | tar xf - locally: the floor
# Every copy is compared with the source (diff -r, cmp for the one file); a
# wrong copy prints DIFFERENT, a failed one FAILED, and the script then exits 1.
# The page cache is not dropped: each source is read once, untimed, before the
# runs, so every contestant reads from cache; writes go to the page cache too
# (after each copy is checked and removed, `sync`, untimed).
# The seeders' indexing time is printed but is not part of any timing.
#
# Output (grep-able, stable):
#   run R scenario S: shoal T s (get RSS M MiB, seeder RSS M MiB) | tar|ssh|tar T s | rsync T s | tar|tar T s
#   run R scenario b one file: shoal T s (get RSS M MiB, seeder RSS M MiB)
#   scenario S (N files, X MiB, median of R runs): shoal T s (get RSS M MiB, seeder RSS M MiB) | tar|ssh|tar T s | rsync T s | tar|tar T s | ratios: shoal/tar-ssh Q, shoal/rsync Q, shoal/tar-tar Q
#   scenario b one file of the same size (X MiB, median of R runs): shoal T s (get RSS M MiB, seeder RSS M MiB); folder/one-file Q
# (the summary's get RSS is the largest of the runs', the seeder's its peak.)
#
# Environment:
#   FOLDERS_VS_SCALE=0.1   scale every file count (a: 10000, b: 300, c: 5000
#                          and its 5 large files, at least 1 each) for quick
#                          tests, e.g. with a debug build; file sizes stay.
#                          Default 1: the full sizes above.
#   FOLDERS_VS_TIMEOUT=S   bound on each copy and on a seeder's indexing
#                          (default 1800 s).
#   FOLDERS_VS_TMP=DIR     where the work folder (sources and copies) is made
#                          (default $TMPDIR or /tmp); it needs ~4.5 GiB free for
#                          b (1.5 GiB folder + 1.5 GiB file + one copy at a
#                          time). Not under /dev: shoal refuses to write there,
#                          so /dev/shm will not do; a tmpfs mounted elsewhere
#                          does, and takes the disk's noise out of the times:
#                          creating thousands of files on a VM's ext4 varies
#                          several-fold run to run (use RUNS >= 3: medians).
# Needs python3, /usr/bin/time, and sshd, ssh, rsync: openssh-server,
# openssh-client and rsync are installed with apt-get if missing (root; with a
# temporary policy-rc.d so the package's own sshd service is not started).
# Everything it starts (seeders, sshd) it stops by PID on exit; every wait is
# bounded; its work folder is removed.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  echo "usage: $0 SHOAL_BIN [RUNS] [SCENARIOS]" >&2
  exit 2
fi
printf 'command:'; printf ' %q' "$0" "$@"; echo
bin=$(realpath -- "$1"); runs=${2:-1}; scenarios=${3:-"a b c"}
scale=${FOLDERS_VS_SCALE:-1}; tmo=${FOLDERS_VS_TIMEOUT:-1800}
[ -x "$bin" ] || { echo "not an executable: $1" >&2; exit 2; }
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer" >&2; exit 2; }
for s in $scenarios; do
  case $s in a|b|c) ;; *) echo "unknown scenario '$s' (a, b or c)" >&2; exit 2;; esac
done
python3 -c "import sys; s=float(sys.argv[1]); assert 0 < s <= 10" "$scale" 2>/dev/null \
  || { echo "FOLDERS_VS_SCALE must be a number in (0, 10]" >&2; exit 2; }
[[ $tmo =~ ^[1-9][0-9]*$ ]] || { echo "FOLDERS_VS_TIMEOUT must be whole seconds" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

# --- tools --------------------------------------------------------------------
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null \
   || ! command -v rsync >/dev/null; then
  echo "installing openssh-server openssh-client rsync (apt-get)"
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  inst() { DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q \
             openssh-server openssh-client rsync >/dev/null; }
  inst || { timeout 600 apt-get update -q >/dev/null && inst; } || rc=$?
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "${rc:-0}" = 0 ] || { echo "apt-get install failed" >&2; exit 1; }
fi

# --- work folder, processes, cleanup ---------------------------------------------
base=$(realpath -- "${FOLDERS_VS_TMP:-${TMPDIR:-/tmp}}")
case $base/ in /dev/*|/proc/*|/sys/*)
  echo "FOLDERS_VS_TMP=$base: shoal writes no files under /dev, /proc or /sys; pick a folder on a disk (or a tmpfs mounted elsewhere)" >&2
  exit 2;; esac
w=$(mktemp -d "$base/folders_vs.XXXXXX")
pids=()           # every background process this script started, until stopped
made_run_sshd=

stop_pid() {      # stop one process we started: TERM, up to 10 s, then KILL; reap it
  local pid=$1 st
  kill "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  for _ in $(seq 1 100); do
    st=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    case $st in ""|Z*) break;; esac
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
forget_pid() {
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
cleanup() {
  local p
  for p in "${pids[@]}"; do stop_pid "$p"; done
  pids=()
  rm -rf "$w"
  [ -z "$made_run_sshd" ] || rmdir /run/sshd 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
sync_quiet() { timeout 600 sync || true; }

# --- folder generator ---------------------------------------------------------------
cat > "$w/gen.py" <<'PY'
# gen.py SCENARIO DEST SCALE: make the scenario's folder at DEST, print "FILES BYTES".
# gen.py one DEST BYTES: make one file of BYTES random bytes at DEST.
import math, os, random, sys

what, dest = sys.argv[1], sys.argv[2]
CHUNK = 4 << 20

def write(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, CHUNK)
            f.write(rng.randbytes(n))
            left -= n

if what == "one":
    size = int(sys.argv[3])
    write(dest, size, random.Random(0x0B1))
    print(1, size)
    sys.exit()

scale = float(sys.argv[3])
count = lambda n: max(1, round(n * scale))
os.makedirs(dest)
files = []  # (relative path, size)
if what == "a":
    rng = random.Random(0xA)
    for i in range(count(10000)):
        files.append((f"d{i // 100:03d}/f{i:05d}.dat", rng.randint(1 << 10, 64 << 10)))
elif what == "b":
    rng = random.Random(0xB)
    for i in range(count(300)):
        files.append((f"IMG_{i + 1:04d}.jpg", rng.randint(2 << 20, 8 << 20)))
elif what == "c":
    rng = random.Random(0xC)
    n, n_large = count(5000), count(5)
    words = ["src", "lib", "core", "net", "util", "tests", "docs", "api", "internal",
             "proto", "cmd", "pkg", "server", "client", "store", "config", "ui", "io"]
    exts = ["rs", "c", "h", "py", "go", "js", "ts", "md", "toml", "json", "txt", "yml"]
    dirs = [("", 0)]  # (relative path, depth); the root is depth 0
    for k in range(6):  # one chain to the full depth of 6
        dirs.append((os.path.join(dirs[-1][0], f"{words[k]}{k}"), k + 1))
    for k in range(6, max(7, n // 12)):
        parent, depth = rng.choice([d for d in dirs if d[1] < 6])
        dirs.append((os.path.join(parent, f"{rng.choice(words)}{k}"), depth + 1))
    for i in range(n - n_large):
        r = rng.random()
        if r < 0.05:
            size = rng.randint(1, 1023)                   # tiny
        elif r < 0.90:
            size = int(2 ** rng.uniform(10, 15))          # 1-32 KiB, log-uniform
        else:
            size = int(2 ** rng.uniform(15, 20))          # 32 KiB-1 MiB
        d = rng.choice(dirs)[0]
        files.append((os.path.join(d, f"{rng.choice(words)}_{i}.{rng.choice(exts)}"), size))
    for i in range(n_large):
        d = rng.choice(dirs)[0]
        files.append((os.path.join(d, f"blob_{i}.bin"), rng.randint(8 << 20, 32 << 20)))
else:
    sys.exit(f"unknown scenario {what}")
for rel, size in files:
    path = os.path.join(dest, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write(path, size, rng)
print(len(files), sum(s for _, s in files))
PY

# --- throwaway sshd on 127.0.0.1 ------------------------------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
mkdir -p "$w/ssh"
ssh-keygen -q -t ed25519 -N '' -C folders_vs-host -f "$w/ssh/host"
ssh-keygen -q -t ed25519 -N '' -C folders_vs-client -f "$w/ssh/client"
cp "$w/ssh/client.pub" "$w/ssh/authorized_keys"
port=$(free_port)
cat > "$w/ssh/sshd_config" <<EOF
ListenAddress 127.0.0.1
HostKey $w/ssh/host
PidFile $w/ssh/sshd.pid
AuthorizedKeysFile $w/ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
LogLevel ERROR
EOF
if [ ! -d /run/sshd ]; then mkdir -p /run/sshd; chmod 755 /run/sshd; made_run_sshd=1; fi
/usr/sbin/sshd -D -e -f "$w/ssh/sshd_config" -p "$port" 2>"$w/ssh/sshd.log" &
pids+=($!); sshd_pid=$!
ssh_opts="-F /dev/null -c aes128-gcm@openssh.com -p $port -i $w/ssh/client -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
read -r -a ssh_args <<< "$ssh_opts"
ready=
for _ in $(seq 1 100); do
  kill -0 "$sshd_pid" 2>/dev/null || break
  if timeout 10 ssh "${ssh_args[@]}" root@127.0.0.1 true </dev/null 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "sshd did not come up on 127.0.0.1:$port:" >&2; tail -5 "$w/ssh/sshd.log" >&2
  exit 1
fi

# --- helpers ----------------------------------------------------------------------------
export SHOAL_LISTEN=127.0.0.1:0 SHOAL_FAST_LISTEN=127.0.0.1:0 SHOAL_MDNS=off SHOAL_UPNP=off \
       SHOAL_NO_DAEMON=1 SHOAL_RELAY_SERVER=off
unset SHOAL_BOOTSTRAP SHOAL_RELAY SHOAL_DATA_DIR SHOAL_UPLOAD_LIMIT SHOAL_DOWNLOAD_LIMIT
echo "shoal: $("$bin" --version 2>/dev/null || echo '?') ($bin); $(ssh -V 2>&1); $(rsync --version | head -1); $(nproc) cores"
[ "$scale" = 1 ] || echo "FOLDERS_VS_SCALE=$scale: file counts scaled, not the full benchmark"

res="$w/results.tsv"   # scenario tool run seconds|- status get_rss_kib seeder_rss_kib
: > "$res"
bad=0

start_seeder() {       # start_seeder NAME PATH: sets seeder_pid, ticket
  local name=$1 path=$2 t0 t1
  t0=$(now)
  "$bin" --data-dir "$w/seed-$name" share "$path" --json >"$w/seed-$name.json" 2>"$w/seed-$name.err" &
  seeder_pid=$!; pids+=("$seeder_pid")
  for _ in $(seq 1 $((tmo * 10))); do
    [ -s "$w/seed-$name.json" ] && break
    kill -0 "$seeder_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ ! -s "$w/seed-$name.json" ]; then
    echo "FAILED: the seeder for $name gave no ticket:" >&2; tail -5 "$w/seed-$name.err" >&2
    exit 1
  fi
  t1=$(now)
  ticket=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["ticket"])' "$w/seed-$name.json")
  echo "seeder $name indexed and ready in $(printf %.2f "$(elapsed "$t0" "$t1")") s (untimed)"
}
seeder_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

verify() {             # verify SRC COPY: print identical or DIFFERENT
  if [ -d "$1" ]; then
    diff -r -q "$1" "$2" >"$w/diff.out" 2>&1 && { echo identical; return; }
  else
    cmp -s "$1" "$2" && { echo identical; return; }
  fi
  echo DIFFERENT
}

# record SCENARIO TOOL RUN T0 T1 OK SRC COPY [GET_RSS SEEDER_RSS]: check, store, clean
last=
record() {
  local scen=$1 tool=$2 run=$3 t0=$4 t1=$5 ok=$6 src=$7 copy=$8 grss=${9:-0} srss=${10:-0} st secs
  if [ "$ok" = 1 ]; then st=$(verify "$src" "$copy"); secs=$(elapsed "$t0" "$t1"); else st=FAILED; secs=-; fi
  if [ "$st" != identical ]; then
    bad=1
    echo "!!! $st: scenario $scen run $run, $tool: the copy at $copy is not the source $src !!!"
    [ "$st" != DIFFERENT ] || head -5 "$w/diff.out"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$tool" "$run" "$secs" "$st" "$grss" "$srss" >> "$res"
  rm -rf "$w/dst" "$w/getdata"
  sync_quiet
  [ "$secs" = - ] || secs=$(printf %.2f "$secs")
  last="$secs s"; [ "$st" = identical ] || last="$secs s $st"
}

run_shoal() {          # run_shoal SCENARIO TOOL RUN SRC TICKET SEEDER_PID: sets last, last_rss
  local scen=$1 tool=$2 run=$3 src=$4 tk=$5 spid=$6 t0 t1 ok=1 grss
  rm -rf "$w/dst" "$w/getdata"; mkdir -p "$w/dst"
  t0=$(now)
  /usr/bin/time -f %M -o "$w/get.rss" timeout "$tmo" \
    "$bin" --data-dir "$w/getdata" get "$tk" -o "$w/dst" --name f >"$w/get.out" 2>"$w/get.err" || ok=0
  t1=$(now)
  [ "$ok" = 1 ] || { echo "shoal get failed:"; tail -3 "$w/get.err"; }
  grss=$(tail -1 "$w/get.rss" 2>/dev/null | tr -dc 0-9); grss=${grss:-0}
  record "$scen" "$tool" "$run" "$t0" "$t1" "$ok" "$src" "$w/dst/f" "$grss" "$(seeder_hwm "$spid")"
  last_rss="get RSS $((grss / 1024)) MiB, seeder RSS $(($(seeder_hwm "$spid") / 1024)) MiB"
}

run_tar_ssh() {
  local scen=$1 run=$2 src=$3 t0 t1 ok=1
  rm -rf "$w/dst"; mkdir -p "$w/dst"
  t0=$(now)
  timeout "$tmo" tar cf - -C "$src" . \
    | timeout "$tmo" ssh "${ssh_args[@]}" root@127.0.0.1 "tar xf - -C '$w/dst'" 2>"$w/ssh.err" || ok=0
  t1=$(now)
  [ "$ok" = 1 ] || { echo "tar|ssh|tar failed:"; tail -3 "$w/ssh.err"; }
  record "$scen" tar-ssh "$run" "$t0" "$t1" "$ok" "$src" "$w/dst"
}

run_rsync() {
  local scen=$1 run=$2 src=$3 t0 t1 ok=1
  rm -rf "$w/dst"; mkdir -p "$w/dst"
  t0=$(now)
  timeout "$tmo" rsync -a -e "ssh $ssh_opts" "$src/" "root@127.0.0.1:$w/dst/" 2>"$w/rsync.err" || ok=0
  t1=$(now)
  [ "$ok" = 1 ] || { echo "rsync failed:"; tail -3 "$w/rsync.err"; }
  record "$scen" rsync "$run" "$t0" "$t1" "$ok" "$src" "$w/dst"
}

run_tar_tar() {
  local scen=$1 run=$2 src=$3 t0 t1 ok=1
  rm -rf "$w/dst"; mkdir -p "$w/dst"
  t0=$(now)
  timeout "$tmo" tar cf - -C "$src" . | timeout "$tmo" tar xf - -C "$w/dst" || ok=0
  t1=$(now)
  [ "$ok" = 1 ] || echo "tar|tar failed"
  record "$scen" tar-tar "$run" "$t0" "$t1" "$ok" "$src" "$w/dst"
}

summary() {            # summary SCENARIO FILES BYTES [ONE_BYTES]
  python3 - "$res" "$@" "$runs" <<'PY'
import statistics, sys
res, scen, nfiles, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
one_bytes, runs = (int(sys.argv[5]), sys.argv[6]) if len(sys.argv) > 6 else (None, sys.argv[5])
rows = [l.rstrip("\n").split("\t") for l in open(res)]
rows = [r for r in rows if r[0] == scen]
def tool(name):
    rs = [r for r in rows if r[1] == name]
    ok = [float(r[3]) for r in rs if r[3] != "-"]
    med = statistics.median(ok) if ok else None
    bad = sorted({r[4] for r in rs if r[4] != "identical"})
    txt = ("%.2f s" % med) if med is not None else "- s"
    if bad:
        txt += " " + "/".join(bad)
    grss = max((int(r[5]) for r in rs), default=0) // 1024
    srss = max((int(r[6]) for r in rs), default=0) // 1024
    return med, txt, grss, srss
def ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "-"
mib = lambda b: "%.1f MiB" % (b / (1 << 20))
plural = "run" if runs == "1" else "runs"
sh, sh_txt, sh_get, sh_seed = tool("shoal")
ts, ts_txt, _, _ = tool("tar-ssh")
rs, rs_txt, _, _ = tool("rsync")
tt, tt_txt, _, _ = tool("tar-tar")
print(f"scenario {scen} ({nfiles} files, {mib(nbytes)}, median of {runs} {plural}): "
      f"shoal {sh_txt} (get RSS {sh_get} MiB, seeder RSS {sh_seed} MiB) | tar|ssh|tar {ts_txt} | "
      f"rsync {rs_txt} | tar|tar {tt_txt} | ratios: shoal/tar-ssh {ratio(sh, ts)}, "
      f"shoal/rsync {ratio(sh, rs)}, shoal/tar-tar {ratio(sh, tt)}")
if one_bytes is not None:
    one, one_txt, one_get, one_seed = tool("shoal-one")
    print(f"scenario {scen} one file of the same size ({mib(one_bytes)}, median of {runs} {plural}): "
          f"shoal {one_txt} (get RSS {one_get} MiB, seeder RSS {one_seed} MiB); "
          f"folder/one-file {ratio(sh, one)}")
PY
}

# --- scenarios ------------------------------------------------------------------------------
for scen in $scenarios; do
  echo "== scenario $scen"
  src="$w/src-$scen"
  python3 "$w/gen.py" "$scen" "$src" "$scale" > "$w/gen.out"
  read -r nfiles nbytes < "$w/gen.out"
  echo "made $nfiles files, $(awk -v b="$nbytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB"
  one=
  if [ "$scen" = b ]; then
    mkdir -p "$w/one-$scen"; one="$w/one-$scen/photos.bin"
    python3 "$w/gen.py" one "$one" "$nbytes" >/dev/null
  fi
  # untimed warm-up read, through a pipe: GNU tar skips reading the files' data
  # when its archive is /dev/null itself
  tar cf - -C "$src" . | cat >/dev/null
  [ -z "$one" ] || cat "$one" >/dev/null
  sync_quiet

  start_seeder "$scen" "$src"; spid=$seeder_pid; stk=$ticket
  if [ -n "$one" ]; then start_seeder "$scen-one" "$one"; opid=$seeder_pid; otk=$ticket; fi

  for r in $(seq 1 "$runs"); do
    run_shoal "$scen" shoal "$r" "$src" "$stk" "$spid"; l_sh="$last ($last_rss)"
    if [ -n "$one" ]; then
      run_shoal "$scen" shoal-one "$r" "$one" "$otk" "$opid"; l_one="$last ($last_rss)"
    fi
    run_tar_ssh "$scen" "$r" "$src"; l_ts=$last
    run_rsync "$scen" "$r" "$src"; l_rs=$last
    run_tar_tar "$scen" "$r" "$src"; l_tt=$last
    echo "run $r scenario $scen: shoal $l_sh | tar|ssh|tar $l_ts | rsync $l_rs | tar|tar $l_tt"
    [ -z "$one" ] || echo "run $r scenario $scen one file: shoal $l_one"
  done

  # seeder peak RSS: read its VmHWM once more just before stopping it
  h=$(seeder_hwm "$spid"); printf '%s\tshoal\t-\t-\tidentical\t0\t%s\n' "$scen" "$h" >> "$res"
  stop_pid "$spid"; forget_pid "$spid"
  if [ -n "$one" ]; then
    h=$(seeder_hwm "$opid"); printf '%s\tshoal-one\t-\t-\tidentical\t0\t%s\n' "$scen" "$h" >> "$res"
    stop_pid "$opid"; forget_pid "$opid"
  fi
  if [ -n "$one" ]; then summary "$scen" "$nfiles" "$nbytes" "$nbytes"; else summary "$scen" "$nfiles" "$nbytes"; fi
  rm -rf "$src" "$w/one-$scen" "$w/seed-$scen" "$w/seed-$scen-one"
done

stop_pid "$sshd_pid"; forget_pid "$sshd_pid"
[ "$bad" = 0 ] || { echo "!!! some copies were DIFFERENT or FAILED (see above) !!!"; exit 1; }
