#!/usr/bin/env bash
# Shipping benchmark against a local PostgreSQL, two figures:
#
# Catch-up: how fast one proxy sends a backlog, which is what it does after
# an outage of the database.
# A SQLite store of $EVENTS realistic events is generated (store_bench) and
# a throwaway PostgreSQL cluster is made on a free loopback port (initdb
# and pg_ctl, as `nobody` when run as root). Each run stops the database,
# starts the release proxy with shipping on (as pod `bench-pod`) on a
# fresh copy of the store, waits for its start-up chain check to end, and
# starts the database again: the proxy now holds a backlog of the whole
# store, as after an outage. The rate is the drain's: events shipped from
# the first acknowledged batch until the lag is 0 (read from /metrics),
# over that time; the time from the database's start is given beside it.
# The central row count is checked against the store.
#
# The CPU time of the proxy and of PostgreSQL (the postmaster and every
# backend, live or exited) over the drain is reported beside it, so the
# figure says which side the time went to. It runs $CATCHUP_RUNS times,
# each into an empty table; the median is printed last.
#
# Steady state: the same open-loop load ($RATE calls/s for $SECS s, 1 KB
# chat bodies, against bench's mock upstream) through a proxy on the
# sqlite store without shipping, then with shipping on; the proxy's CPU
# time per call in each, and the lag once the load ends.
#
#   bash bench/shipping.sh                 # 200,000 events; 500 calls/s
#   EVENTS=1000000 BATCH=5000 RATE=1000 SECS=20 bash bench/shipping.sh
#   PHASES=catchup CATCHUP_RUNS=5 bash bench/shipping.sh
#   PROXY_BIN=/path/to/llm-audit-proxy bash bench/shipping.sh   # another build
#
# Every figure is one JSON line on stdout.
#
# Needs cargo, python3, curl and PostgreSQL's server binaries
# (/usr/lib/postgresql/<version>/bin, Debian's postgresql package).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${EVENTS:=200000}"
: "${BATCH:=5000}"       # shipping.batch_size (its maximum)
: "${RATE:=500}"         # steady phase: calls/s
: "${SECS:=10}"          # steady phase: seconds of load
: "${CATCHUP_RUNS:=3}"   # catch-up runs; the median is reported
: "${PHASES:=catchup steady}"
: "${PROXY_BIN:=}"       # a proxy binary to measure instead of this tree's
: "${BIN_DIR:=}"         # no build: llm-audit-proxy, store_bench, loadgen and
                         # mock_upstream from this folder (an earlier build's)
: "${PERF_OUT:=}"        # set: perf record of the drain (all processes), to $PERF_OUT.<run>

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

if [ -n "$BIN_DIR" ]; then
    log "Using the binaries in $BIN_DIR."
    : >"$WORK/build.json"
else
    log "Building the proxy and store_bench (release)."
    cargo build --release --locked --bin llm-audit-proxy --bench store_bench \
        --bench loadgen --bench mock_upstream \
        --message-format=json-render-diagnostics >"$WORK/build.json"
fi
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
built() { if [ -n "$BIN_DIR" ]; then echo "$BIN_DIR/$1"; else exe "$1" | tail -1; fi; }
PROXY="${PROXY_BIN:-$(built llm-audit-proxy)}"
STORE_BENCH="$(built store_bench)"
LOADGEN="$(built loadgen)"
MOCK="$(built mock_upstream)"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log "Starting PostgreSQL on 127.0.0.1:$port."
"${as_pg[@]}" "$pg_bin/initdb" -D "$WORK/pg" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
pg_ctl_() {
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK/pg" "$@" >/dev/null
}
pg_ctl_ start
DSN="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"

psql() { "${as_pg[@]}" "$pg_bin/psql" -h 127.0.0.1 -p "$port" -U postgres -Atq "$@"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# PostgreSQL's CPU so far: the postmaster, its exited children (reaped into
# its cutime and cstime) and the live ones.
pg_ticks() {
    local pm total pid
    pm="$(head -1 "$WORK/pg/postmaster.pid")"
    total="$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")"
    for pid in $(pgrep -P "$pm" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# One catch-up after an outage: the proxy starts on a copy of the
# generated store while PostgreSQL is down, finishes its start-up chain
# check, and then PostgreSQL starts. The rate is the drain's: events
# shipped from the first acknowledged batch to the last, over that time
# (so neither the start-up check nor the retry wait is in it); the time
# from the database's start to no lag is reported beside it.
catch_up() { # RUN
    rm -rf "$WORK/store"
    cp -r "$WORK/generated" "$WORK/store"
    psql -c 'SET client_min_messages = warning' \
        -c 'DROP TABLE IF EXISTS audit_events, audit_schema_migrations CASCADE' \
        -c 'DROP SEQUENCE IF EXISTS audit_events_row_id_seq'
    pg_ctl_ stop -m fast
    LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN="$DSN" \
    LLM_AUDIT_PROXY_SHIPPING_BATCH_SIZE="$BATCH" \
    LLM_AUDIT_PROXY_SHIPPING_POLL_INTERVAL_MS=50 \
    LLM_AUDIT_PROXY_SHIPPING_MAX_BACKOFF=1 \
    LLM_AUDIT_PROXY_POD_NAME=bench-pod LLM_AUDIT_PROXY_POD_NAMESPACE=bench \
        "$PROXY" serve --file-path "$WORK/store" --listen 127.0.0.1:0 \
        --admin-listen 127.0.0.1:0 --upstream http://127.0.0.1:9 --log-format json \
        2>"$WORK/proxy.log" &
    PROXY_PID=$!
    local admin=""
    for _ in $(seq 1 1200); do
        admin="$(sed -n 's/.*"message":"Audit proxy listening\.".*"admin":"\([^"]*\)".*/\1/p' "$WORK/proxy.log" | head -1)"
        [ -n "$admin" ] && grep -q '"Audit hash chain verified\."' "$WORK/proxy.log" && break
        sleep 0.1
    done
    [ -n "$admin" ] || { cat "$WORK/proxy.log" >&2; exit 1; }
    local proxy0 pg0 pg1 proxy1 drain rows
    proxy0="$(cpu_ticks "$PROXY_PID")"
    local perf_pid=""
    if [ -n "$PERF_OUT" ]; then
        # Every process (the proxy and PostgreSQL's backends): `perf
        # report --sort comm,sym` tells them apart.
        perf record -F 499 -g -a -o "$PERF_OUT.$1" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    pg_ctl_ start
    pg0="$(pg_ticks)"
    drain="$(python3 - "$admin" "$PROXY_PID" <<'EOF'
import json, os, sys, time, urllib.request
admin, pid = sys.argv[1], int(sys.argv[2])
# /metrics, not /api/stats: the stats count the whole store on each call,
# which would be the proxy's largest cost here.
def series(text, name):
    for line in text.splitlines():
        if line.startswith(f"llm_audit_proxy_{name}{{") and 'target="postgres"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None
start = time.monotonic()
first = None
while True:
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        text = ""
    now = time.monotonic()
    shipped = series(text, "shipping_events_shipped_total") or 0
    lag = series(text, "shipping_lag_events")
    if first is None and shipped > 0:
        first = (now, shipped)
    if first is not None and lag == 0:
        break
    os.kill(pid, 0)
    if now - start > 600:
        sys.exit("no catch-up within 600 s")
    time.sleep(0.02)
print(json.dumps({"total": int(shipped), "from_db_start": now - start,
                  "first_cursor": int(first[1]), "drain_secs": now - first[0]}))
EOF
)"
    proxy1="$(cpu_ticks "$PROXY_PID")"
    pg1="$(pg_ticks)"
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
    fi
    kill "$PROXY_PID"
    wait "$PROXY_PID" || true
    PROXY_PID=""
    rows="$(psql -c 'SELECT count(*) FROM audit_events')"
    python3 - "$1" "$drain" "$rows" "$BATCH" "$((proxy1 - proxy0))" "$((pg1 - pg0))" \
        "$(getconf CLK_TCK)" "$(cut -d' ' -f1 /proc/loadavg)" <<'EOF'
import json, sys
run, drain, rows, batch, proxy_ticks, pg_ticks, hz, load = sys.argv[1:]
d = json.loads(drain)
hz = int(hz)
shipped = d["total"] - d["first_cursor"]
print(json.dumps({"shipping": "catch_up", "run": int(run), "events": d["total"],
                  "central_rows": int(rows), "batch_size": int(batch),
                  "events_per_s": round(shipped / d["drain_secs"]),
                  "drain_secs": round(d["drain_secs"], 2),
                  "secs_from_db_start": round(d["from_db_start"], 2),
                  "proxy_cpu_secs": round(int(proxy_ticks) / hz, 2),
                  "postgres_cpu_secs": round(int(pg_ticks) / hz, 2),
                  "load_avg_1m": float(load)}))
EOF
}

if [[ " $PHASES " == *" catchup "* ]]; then
    log "Generating a SQLite store of $EVENTS events."
    mkdir -p "$WORK/generated"
    "$STORE_BENCH" generate --dir "$WORK/generated" --events "$EVENTS" >/dev/null
    for run in $(seq 1 "$CATCHUP_RUNS"); do
        log "Shipping the backlog (run $run of $CATCHUP_RUNS)."
        catch_up "$run" >>"$WORK/catch_up.jsonl"
        tail -1 "$WORK/catch_up.jsonl"
    done
    python3 - "$WORK/catch_up.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
median = lambda key: statistics.median(r[key] for r in runs)
print(json.dumps({"shipping": "catch_up_median", "runs": len(runs),
                  "events": runs[0]["events"], "batch_size": runs[0]["batch_size"],
                  "events_per_s": round(median("events_per_s")),
                  "drain_secs": median("drain_secs"),
                  "secs_from_db_start": median("secs_from_db_start"),
                  "proxy_cpu_secs": median("proxy_cpu_secs"),
                  "postgres_cpu_secs": median("postgres_cpu_secs"),
                  "all_events_per_s": [r["events_per_s"] for r in runs]}))
EOF
fi

# --- steady state ---------------------------------------------------------
[[ " $PHASES " == *" steady "* ]] || exit 0
# Events the postgres target has shipped so far (0 without shipping).
shipped() {
    curl -sf "http://$1/metrics" | awk '
        /^llm_audit_proxy_shipping_events_shipped_total\{target="postgres"\}/ { n = $2 }
        END { printf "%d\n", n }'
}
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
    s0="$(shipped "$admin")"
    out="$("$LOADGEN" --addr "$addr" --mode rate --rate "$RATE" --conns 32 \
        --duration "$SECS" --label "shipping-$mode")"
    sleep 2
    c1="$(cpu_ticks "$PROXY_PID")"
    s1="$(shipped "$admin")"
    lag="$(curl -sf "http://$admin/api/stats" | python3 -c '
import json, sys
t = (json.load(sys.stdin).get("shipping") or [{}])[0]
print(t.get("lag_events", "null"))')"
    kill "$PROXY_PID"
    wait "$PROXY_PID" || true
    PROXY_PID=""
    python3 - "$mode" "$out" "$c0" "$c1" "$(getconf CLK_TCK)" "$lag" "$((s1 - s0))" "$SECS" <<'EOF'
import json, sys
mode, out, c0, c1, hz, lag, shipped, secs = sys.argv[1:]
sent = json.loads(out.strip().splitlines()[-1]).get("sent", 0)
cpu_ms = (int(c1) - int(c0)) * 1000 / int(hz)
line = {"shipping": f"steady_{mode}", "calls": sent, "proxy_cpu_ms": round(cpu_ms),
        "cpu_us_per_call": round(cpu_ms * 1000 / max(sent, 1), 1),
        "lag_after_load": None if lag == "null" else int(lag)}
if mode == "on":
    # Every event the load made, shipped while it ran (and the 2 s after).
    line["events_shipped"] = int(shipped)
    line["events_per_s"] = round(int(shipped) / int(secs))
print(json.dumps(line))
EOF
done
