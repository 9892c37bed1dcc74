#!/usr/bin/env bash
# Console page times on a large SQLite store: generates the store through
# the store API, starts `serve` on it (no admin token, loopback), waits for
# the start-up chain check, then times each console page over HTTP. First
# writes the same events with the console's index and with its tables
# stripped of indexes, for the index's write cost. See bench/README.md.
#
#   bash bench/console.sh                 # 1,000,000 events
#   EVENTS=100000 bash bench/console.sh   # a quick run
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
: "${EVENTS:=1000000}"
: "${QUERIES:=200}"
: "${WRITE_EVENTS:=200000}"   # events of each write-cost run

WORK=$(mktemp -d "${TMPDIR:-/tmp}/llm-audit-console-bench.XXXXXX")
PROXY_PID=
cleanup() {
    if [[ -n "$PROXY_PID" ]]; then
        kill "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "Building the proxy and the benchmark tool (release)."
cargo build --release --locked --bin llm-audit-proxy --bench console_bench \
    --message-format=json-render-diagnostics >"$WORK/build.json"
BENCH=$(python3 - "$WORK/build.json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "console_bench" and m.get("executable"):
        exe = m["executable"]
print(exe)
PY
)
PROXY=$ROOT/target/release/llm-audit-proxy

log "Write cost of the index: $WRITE_EVENTS events with and without it."
"$BENCH" generate --dir "$WORK/plain" --events "$WRITE_EVENTS" --plain
"$BENCH" generate --dir "$WORK/indexed" --events "$WRITE_EVENTS"
rm -rf "$WORK/plain" "$WORK/indexed"

log "Generating a store of $EVENTS events."
gen=$("$BENCH" generate --dir "$WORK/store" --events "$EVENTS")
printf '%s\n' "$gen"
base=$(sed 's/.*"base":"\([^"]*\)".*/\1/' <<<"$gen")
printf '{"console":"size","bytes":%s}\n' "$(du -sb "$WORK/store" | cut -f1)"

LLM_AUDIT_PROXY_RETENTION_DAYS=3650 "$PROXY" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --upstream http://127.0.0.1:9 --file-path "$WORK/store" \
    --log-format json 2>"$WORK/proxy.log" &
PROXY_PID=$!
for _ in $(seq 600); do
    grep -q '"Audit proxy listening."' "$WORK/proxy.log" && break
    sleep 0.1
done
ADMIN=$(grep -m1 '"Audit proxy listening."' "$WORK/proxy.log" | sed 's/.*"admin":"\([^"]*\)".*/\1/')
# serve checks the whole chain once at start; pages are timed after it.
for _ in $(seq 3000); do
    grep -q 'Audit hash chain' "$WORK/proxy.log" && break
    sleep 0.1
done
log "Timing pages on $ADMIN."
"$BENCH" measure --admin "$ADMIN" --events "$EVENTS" --base "$base" --queries "$QUERIES" --pid "$PROXY_PID"
