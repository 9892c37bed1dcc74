#!/usr/bin/env bash
# Shipping benchmark against a local PostgreSQL, two figures:
#
# Catch-up: how fast one proxy sends a backlog, which is what it does after
# an outage of the database.
# A SQLite store of $EVENTS realistic events is generated (store_bench),
# a throwaway PostgreSQL cluster is started on a free loopback port (initdb
# and pg_ctl, as `nobody` when run as root), and the release proxy starts
# on that store with shipping on. The time from its start until
# /api/stats shows the postgres target with no lag gives events/s; the
# central row count is checked against the store.
#
# Steady state: the same open-loop load ($RATE calls/s for $SECS s, 1 KB
# chat bodies, against bench's mock upstream) through a proxy on the
# sqlite store without shipping, then with shipping on; the proxy's CPU
# time per call in each, and the lag once the load ends.
#
#   bash bench/shipping.sh                 # 200,000 events; 500 calls/s
#   EVENTS=1000000 BATCH=5000 RATE=1000 SECS=20 bash bench/shipping.sh
#
# Needs cargo, python3, curl and PostgreSQL's server binaries
# (/usr/lib/postgresql/<version>/bin, Debian's postgresql package).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${EVENTS:=200000}"
: "${BATCH:=5000}"       # shipping.batch_size (its maximum)
: "${RATE:=500}"         # steady phase: calls/s
: "${SECS:=10}"          # steady phase: seconds of load

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2
    exit 1
fi

WORK="$(mktemp -d)"
as_pg=()
if [ "$(id -u)" = 0 ]; then
    chown nobody "$WORK"
    as_pg=(runuser -u nobody --)
fi
PROXY_PID=""
MOCK_PID=""
cleanup() {
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null || true
    [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null || true
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

log "Building the proxy and store_bench (release)."
cargo build --release --locked --bin llm-audit-proxy --bench store_bench \
    --bench loadgen --bench mock_upstream \
    --message-format=json-render-diagnostics >"$WORK/build.json"
exe() {
    python3 - "$1" "$WORK/build.json" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
for line in open(path):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == name and m.get("executable"):
        print(m["executable"])
EOF
}
PROXY="$(exe llm-audit-proxy | tail -1)"
STORE_BENCH="$(exe store_bench | tail -1)"
LOADGEN="$(exe loadgen | tail -1)"
MOCK="$(exe mock_upstream | tail -1)"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log "Starting PostgreSQL on 127.0.0.1:$port."
"${as_pg[@]}" "$pg_bin/initdb" -D "$WORK/pg" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK/pg" start >/dev/null
DSN="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"

log "Generating a SQLite store of $EVENTS events."
mkdir -p "$WORK/store"
"$STORE_BENCH" generate --dir "$WORK/store" --events "$EVENTS" >/dev/null

log "Shipping the backlog."
start_ns="$(date +%s%N)"
LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN="$DSN" \
LLM_AUDIT_PROXY_SHIPPING_BATCH_SIZE="$BATCH" \
LLM_AUDIT_PROXY_SHIPPING_POLL_INTERVAL_MS=50 \
    "$PROXY" serve --file-path "$WORK/store" --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --upstream http://127.0.0.1:9 --log-format json \
    2>"$WORK/proxy.log" &
PROXY_PID=$!
admin=""
for _ in $(seq 1 600); do
    admin="$(sed -n 's/.*"message":"Audit proxy listening\.".*"admin":"\([^"]*\)".*/\1/p' "$WORK/proxy.log" | head -1)"
    [ -n "$admin" ] && break
    sleep 0.1
done
[ -n "$admin" ] || { cat "$WORK/proxy.log" >&2; exit 1; }
while :; do
    stats="$(curl -sf "http://$admin/api/stats" || true)"
    done_now="$(printf '%s' "$stats" | python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)
except ValueError:
    print(0); sys.exit()
t = (s.get("shipping") or [{}])[0]
print(1 if t.get("lag_events") == 0 and (t.get("cursor") or 0) >= s["total_events"] > 0 else 0)')"
    [ "$done_now" = 1 ] && break
    kill -0 "$PROXY_PID" || { cat "$WORK/proxy.log" >&2; exit 1; }
    sleep 0.05
done
end_ns="$(date +%s%N)"
# The proxy's CPU time (user + system) over the whole run, in clock ticks.
proxy_ticks="$(awk '{print $14 + $15}' "/proc/$PROXY_PID/stat")"
kill "$PROXY_PID"
wait "$PROXY_PID" || true
PROXY_PID=""

rows="$("${as_pg[@]}" "$pg_bin/psql" -h 127.0.0.1 -p "$port" -U postgres -Atc 'SELECT count(*) FROM audit_events')"
stored="$(printf '%s' "$stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_events"])')"
python3 - "$stored" "$rows" "$start_ns" "$end_ns" "$BATCH" "$proxy_ticks" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
stored, rows, start, end, batch, ticks, hz = (int(x) for x in sys.argv[1:])
secs = (end - start) / 1e9
print(json.dumps({"shipping": "catch_up", "events": stored, "central_rows": rows,
                  "batch_size": batch, "secs": round(secs, 2),
                  "events_per_s": round(stored / secs),
                  "proxy_cpu_secs": round(ticks / hz, 2)}))
EOF

# --- steady state ---------------------------------------------------------
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
"$MOCK" --listen 127.0.0.1:0 >"$WORK/mock.out" 2>&1 &
MOCK_PID=$!
mock_addr=""
for _ in $(seq 1 100); do
    mock_addr="$(sed -n 's/.*"listen":"\([^"]*\)".*/\1/p' "$WORK/mock.out" | head -1)"
    [ -n "$mock_addr" ] && break
    sleep 0.1
done
for mode in off on; do
    store="$WORK/steady-$mode"
    mkdir -p "$store"
    shipping_env=(LLM_AUDIT_PROXY_LOG_FORMAT=json)
    [ "$mode" = on ] && shipping_env+=(LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN="$DSN")
    env "${shipping_env[@]}" "$PROXY" serve --file-path "$store" --listen 127.0.0.1:0 \
        --admin-listen 127.0.0.1:0 --upstream "http://$mock_addr" \
        2>"$WORK/steady-$mode.log" &
    PROXY_PID=$!
    line=""
    for _ in $(seq 1 100); do
        line="$(grep -m1 '"Audit proxy listening."' "$WORK/steady-$mode.log" || true)"
        [ -n "$line" ] && break
        sleep 0.1
    done
    addr="$(printf '%s' "$line" | sed 's/.*"proxy":"\([^"]*\)".*/\1/')"
    admin="$(printf '%s' "$line" | sed 's/.*"admin":"\([^"]*\)".*/\1/')"
    sleep 1
    c0="$(cpu_ticks "$PROXY_PID")"
    out="$("$LOADGEN" --addr "$addr" --mode rate --rate "$RATE" --conns 32 \
        --duration "$SECS" --label "shipping-$mode")"
    sleep 2
    c1="$(cpu_ticks "$PROXY_PID")"
    lag="$(curl -sf "http://$admin/api/stats" | python3 -c '
import json, sys
t = (json.load(sys.stdin).get("shipping") or [{}])[0]
print(t.get("lag_events", "null"))')"
    kill "$PROXY_PID"
    wait "$PROXY_PID" || true
    PROXY_PID=""
    python3 - "$mode" "$out" "$c0" "$c1" "$(getconf CLK_TCK)" "$lag" <<'EOF'
import json, sys
mode, out, c0, c1, hz, lag = sys.argv[1:]
sent = json.loads(out.strip().splitlines()[-1]).get("sent", 0)
cpu_ms = (int(c1) - int(c0)) * 1000 / int(hz)
print(json.dumps({"shipping": f"steady_{mode}", "calls": sent, "proxy_cpu_ms": round(cpu_ms),
                  "cpu_us_per_call": round(cpu_ms * 1000 / max(sent, 1), 1),
                  "lag_after_load": None if lag == "null" else int(lag)}))
EOF
done
