#!/usr/bin/env bash
# Runs shoal's whole test suite. As root on a fresh Debian machine it first
# installs what the tests drive (b3sum, chromium, iproute2 + iptables for
# netlab's virtual hosts, the e2e npm packages, schemathesis). Without root,
# or offline, a test whose tool is missing is skipped, and the skips are
# listed at the end; SHOAL_REQUIRE_ALL=1 (CI sets it) makes a skip a failure.
#
#   ./test.sh                 # everything
#   SHOAL_REQUIRE_ALL=1 ./test.sh
#   SHOAL_FREE_DISK=1         # remove the debug build before the release phase
set -euo pipefail
cd "$(dirname "$0")"
target="${CARGO_TARGET_DIR:-target}"
skips="$target/skipped-tests.txt"

note() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

summary() {
    local rc=$?
    echo
    if [ -s "$skips" ]; then
        echo "== skipped tests (install what each names, or run ./test.sh as root):"
        sort -u "$skips" | sed 's/^/   /'
    else
        echo "== no test was skipped"
    fi
    exit $rc
}

note "test dependencies"
missing=()
command -v b3sum >/dev/null || missing+=(b3sum)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # An interrupted earlier install leaves dpkg half-configured: repair, then retry once.
        apt-get install -y -qq "${missing[@]}" >/dev/null \
            || { apt-get --fix-broken install -y -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null; }
    else
        echo "not root: not installing ${missing[*]} (the tests that need them are skipped)"
    fi
fi
# playwright-core (pinned in e2e/package-lock.json) drives chromium; node 20+.
if command -v npm >/dev/null; then
    npm ci --prefix e2e --no-audit --no-fund --loglevel=error \
        || echo "npm ci --prefix e2e failed: the web UI tests are skipped"
else
    echo "no npm: the web UI tests are skipped (apt-get install nodejs npm)"
fi
# schemathesis fuzzes the daemon's HTTP API (crates/shoal/tests/api_schema.rs).
SCHEMATHESIS_VERSION=4.32.5
if ! schemathesis --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    python3 -m pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
        || echo "pip could not install schemathesis: the API schema test is skipped"
    # Under pyenv the new console script needs a shim before it is on PATH.
    if command -v pyenv >/dev/null; then pyenv rehash; fi
fi
for tool in b3sum /usr/bin/chromium node schemathesis; do
    if command -v "$tool" >/dev/null; then
        printf '%-18s %s\n' "$(basename "$tool")" "$("$tool" --version 2>/dev/null | head -1)"
    fi
done

mkdir -p "$target"
rm -f "$skips"
trap summary EXIT

note "tests (debug build)"
cargo test --workspace --locked

# scale-1000 (1 seeder + 999 leechers) is ignored in debug builds, where it is
# too slow; it runs here in release.
note "swarm simulation at scale (release build)"
if [ "${SHOAL_FREE_DISK:-}" = 1 ]; then
    # The debug build is done with; its test binaries are most of the disk used.
    rm -rf "$target/debug" fuzz/target
fi
cargo test --release --locked -p shoal-sim --test scenarios -- scale_1000
