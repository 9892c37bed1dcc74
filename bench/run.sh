#!/usr/bin/env bash
# Overhead benchmark: the same load, on loopback, against a fast mock
# OpenAI upstream directly, through nginx (when installed) and through
# llm-audit-proxy with auditing off, with the sqlite store, with the file
# store and with sqlite plus policy packs; then store figures on a generated
# SQLite store. Prints a markdown table and writes bench/results/latest.md
# and the raw JSON lines to bench/results/latest.jsonl.
#
# Targets sqlite-strict and sqlite-strict-full (not in the default set) run
# the same load with audit.durability = "strict" (and synchronous FULL):
#   TARGETS="sqlite sqlite-strict sqlite-strict-full" bash bench/run.sh
# Target sqlite-policies-noindex (not in the default set) is sqlite-policies
# with audit.sqlite_search_index = false (no console search index):
#   TARGETS="nginx sqlite-policies sqlite-policies-noindex" bash bench/run.sh
#
#   bash bench/run.sh            # full run, about 15 minutes on 2 cores
#   QUICK=1 bash bench/run.sh    # about 2 minutes, for a smoke test
#
# Costs per call only (CPU, allocations, context switches, syscalls; see
# bench/README.md for how each is counted), for a few targets:
#   PHASES="saturation counts" SKIP_STORE=1 TARGETS="nginx audit-off sqlite-policies" \
#       bash bench/run.sh
#
# Every duration and size below can be set from the environment. Needs
# cargo, python3 (for the report) and optionally nginx.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [[ "${QUICK:-0}" == 1 ]]; then
    : "${DURATION:=2}" "${RUNS:=1}" "${RATE_DURATION:=3}" "${BODY_DURATION:=2}"
    : "${STREAM_DURATION:=3}" "${STORE_EVENTS:=100000}" "${QUERIES:=200}"
    : "${COUNT_DURATION:=3}"
else
    : "${DURATION:=10}" "${RUNS:=3}" "${RATE_DURATION:=10}" "${BODY_DURATION:=5}"
    : "${STREAM_DURATION:=10}" "${STORE_EVENTS:=1000000}" "${QUERIES:=1000}"
    : "${COUNT_DURATION:=10}"
fi
: "${STORE_VIOLATIONS:=0}"    # COMPLIANCE_VIOLATION events per call of the generated store
: "${CONNS:=64}"              # connections for throughput at saturation
: "${RATE:=1000}"             # calls/s of the fixed-rate latency run
: "${RATE_CONNS:=64}"
: "${BODY_CONNS:=16}"         # connections for the 1 KB / 64 KB / 1 MB runs
: "${BODY_SIZES:=1024 65536 1048576}"
: "${STREAM_CONNS:=16}"
: "${STREAM_DELAY_MS:=10}"    # mock's pause between SSE chunks (streaming run)
: "${WARMUP:=1}"              # seconds of load before a latency run records
: "${HOLD_STREAMS:=1000}"     # concurrent open streams for the RSS figure
: "${HOLD_DELAY_MS:=1000}"    # keeps those streams open for ~20 s
: "${COUNT_RATE:=3000}"        # calls/s of the per-call counting runs
: "${COUNT_CONNS:=64}"
: "${ALLOC_RATE:=500}"         # calls/s of the allocation-counting run (probes are slow)
: "${TARGETS:=direct nginx audit-off sqlite file sqlite-policies}"
# Phases measured on each target, in this order; `shipping` (not a
# target's phase) runs bench/shipping.sh once, after the targets.
: "${PHASES:=hold saturation rate counts body stream shipping}"
: "${POLICY_TOML:=policy_packs = [\"pii-basic\", \"secrets\"]}"
: "${SKIP_STORE:=0}"
: "${QUERY_MAX_SECS:=120}"    # time cap per query kind on the generated store
# Diagnostics of the proxy go to a
# file; set PROXY_RUST_LOG to change their verbosity, e.g. "warn".
: "${PROXY_RUST_LOG:=}"

OUT=$ROOT/bench/results
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/llm-audit-bench.XXXXXX")
RAW=$WORK/raw.jsonl
: >"$RAW"
PIDS=()

cleanup() {
    [[ "${PROBES:-0}" == 1 ]] && perf probe -q -d "$PROBE_GROUP:*" 2>/dev/null
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
raw() { printf '%s\n' "$1" | tee -a "$RAW" >&2; }

# --- build -------------------------------------------------------------------
log "Building the proxy and the benchmark tools (release)."
cargo build --release --locked --bin llm-audit-proxy \
    --bench mock_upstream --bench loadgen --bench store_bench \
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
        exe = m["executable"]
print(exe)
EOF
}
# PROXY_BIN runs another build of the proxy (e.g. a copy of an earlier one).
PROXY=${PROXY_BIN:-$ROOT/target/release/llm-audit-proxy}
MOCK=$(exe mock_upstream)
LOADGEN=$(exe loadgen)
STORE_BENCH=$(exe store_bench)

# 1,000 open streams need ~3,000 descriptors across the processes.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)

# --- helpers -----------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until FILE has a line matching PATTERN; prints it.
wait_line() {
    local file=$1 pattern=$2 i
    for i in $(seq 200); do
        if grep -m1 -- "$pattern" "$file" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "Timed out waiting for '$pattern' in $file:"
    tail -5 "$file" >&2
    return 1
}

# The process and its direct children (nginx's workers).
tree_pids() { echo "$1"; pgrep -P "$1" || true; }

# utime+stime of a process tree, in milliseconds.
cpu_ms() {
    local total=0 pid t
    for pid in $(tree_pids "$1"); do
        t=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        total=$((total + ${t:-0}))
    done
    echo $((total * 1000 / CLK_TCK))
}

# --- per-call counters -------------------------------------------------------
# Context switches and syscalls are counted by the kernel for the target's
# processes (`perf stat`: a software event and the raw_syscalls:sys_enter
# tracepoint); allocations by user-space probes (uprobes) on the allocator
# entry points: mimalloc's (the proxy's Rust allocator) and libc's malloc,
# calloc and realloc (bundled SQLite's allocator, and nginx's). A probe hit
# costs about a microsecond, so allocations are counted in a run of their
# own, whose CPU is not reported. Needs root and perf; without them those
# columns stay empty.
PERF_OK=0
if command -v perf >/dev/null &&
    perf stat -e context-switches,raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
    PERF_OK=1
fi
PROBES=0
: "${PROBE_GROUP:=lapbench}"  # perf probe group; runs at the same time need their own
setup_probes() {
    [[ "$PERF_OK" == 1 ]] || return 0
    local libc
    libc=$(ldd "$PROXY" | awk '/libc\.so/ {print $3}')
    perf probe -q -d "$PROBE_GROUP:*" 2>/dev/null || true
    if perf probe -q -f -x "$PROXY" -a "$PROBE_GROUP:mi_malloc=mi_malloc_aligned" \
        -a "$PROBE_GROUP:mi_zalloc=mi_zalloc_aligned" -a "$PROBE_GROUP:mi_realloc=mi_realloc_aligned" &&
        perf probe -q -f -x "$libc" -a "$PROBE_GROUP:malloc=malloc" -a "$PROBE_GROUP:calloc=calloc" \
            -a "$PROBE_GROUP:realloc=realloc"; then
        PROBES=1
    else
        log "Cannot add allocation probes (perf probe); allocations per call are not counted."
    fi
}

# Runs a command while perf stat counts EVENTS in the target's processes;
# prints the command's output, and writes the counts to FILE as one JSON
# object.
counted() { # FILE EVENTS CMD...
    local file=$1 events=$2 perf_pid
    shift 2
    perf stat -x, --no-big-num -e "$events" -p "$(tree_pids "$TARGET_PID" | paste -sd,)" \
        -o "$file.csv" 2>/dev/null &
    perf_pid=$!
    sleep 0.5 # perf attaches before the load starts
    "$@"
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    python3 -c '
import json, sys
counts = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 2 and not line.startswith("#"):
        try:
            counts[f[2]] = counts.get(f[2], 0) + float(f[0])
        except ValueError:
            pass  # "<not counted>"
print(json.dumps(counts))' "$file.csv" >"$file"
}

# A loadgen JSON line with perf's counts (and CPU ms, when given) added.
with_counts() { # LINE COUNTS_FILE [CPU_MS]
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
r["counts"] = json.load(open(sys.argv[2]))
if len(sys.argv) > 3:
    r["cpu_ms"] = int(sys.argv[3])
print(json.dumps(r))' "$@"
}

metric() { # ADMIN NAME
    curl -sf "http://$1/metrics" | awk -v n="llm_audit_proxy_$2" '$1 == n {print $2}'
}

stored_req_resp() { # ADMIN
    curl -sf "http://$1/api/stats" | python3 -c '
import json, sys
by = json.load(sys.stdin).get("by_type", {})
print(by.get("REQUEST", 0) + by.get("RESPONSE", 0))'
}

# Waits until every event offered to the writer's queue has been written,
# dropped or given up on (pipeline counters of /api/stats), and nothing more
# was offered since the look before, so the stored count can be compared
# with the calls made: the records of the last calls of a load (large
# bodies above all) may still be being built, and offered, after the queue
# was first seen empty. The queue_depth gauge is not used: it can stay
# above zero after a race between offer and writer.
drain() {
    local admin=$1 i now last=none
    for i in $(seq 300); do
        now=$(curl -sf "http://$admin/api/stats" | python3 -c '
import json, sys
p = json.load(sys.stdin).get("pipeline") or {}
done = p.get("offered", 0) <= p.get("written", 0) + p.get("dropped", 0) + p.get("lost", 0)
print(p.get("offered", 0) if done else "busy")') || now=busy
        if [[ "$now" != busy && "$now" == "$last" ]]; then
            return 0
        fi
        last=$now
        sleep 0.2
    done
    log "Queue did not drain within 60 s."
}

loadgen() { "$LOADGEN" --addr "$ADDR" "$@"; }

start_mock() {
    "$MOCK" --listen 127.0.0.1:0 >"$WORK/mock.out" 2>&1 &
    MOCK_PID=$!
    PIDS+=("$MOCK_PID")
    MOCK_ADDR=$(wait_line "$WORK/mock.out" listen | sed 's/.*"listen":"\([^"]*\)".*/\1/')
}

start_nginx() {
    local dir=$WORK/nginx port
    port=$(free_port)
    mkdir -p "$dir/tmp"
    chmod 0777 "$dir/tmp"
    chmod 0755 "$WORK" "$dir"
    cat >"$dir/nginx.conf" <<EOF
# Plain reverse proxy: one worker, keep-alive to the upstream, no logs,
# bodies streamed both ways (as llm-audit-proxy does).
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    client_max_body_size 0;
    keepalive_requests 1000000;
    upstream mock {
        server $MOCK_ADDR;
        keepalive 256;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
    nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    ADDR=127.0.0.1:$port
    ADMIN=
    local i
    for i in $(seq 100); do
        if curl -sf -o /dev/null -X POST -d '{}' "http://$ADDR/v1/chat/completions"; then
            break
        fi
        sleep 0.1
    done
    # Memory is the worker's; CPU counts master and worker.
    RSS_PID=$(pgrep -P "$TARGET_PID" | head -1)
}

start_proxy() { # NAME [ENV=VALUE ...] -- [FLAG ...]
    local name=$1 envs=() line
    shift
    while [[ $# -gt 0 && "$1" != -- ]]; do
        envs+=("$1")
        shift
    done
    shift || true
    local logf=$WORK/$name.log
    STORE_DIR=${FORCE_STORE_DIR:-$WORK/$name-store}
    # RSS counts the binary's mapped pages, and a page fault maps the
    # neighbouring pages too when they are in the page cache: a binary just
    # copied reads over 1 MB higher than one partly evicted. Reading it whole
    # first gives every run the same state, the fully cached one.
    cat "$PROXY" >/dev/null
    env ${PROXY_RUST_LOG:+RUST_LOG=$PROXY_RUST_LOG} "${envs[@]}" "$PROXY" serve \
        --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --upstream "http://$MOCK_ADDR" --file-path "$STORE_DIR" \
        --shutdown-grace 5 --log-format json "$@" 2>"$logf" &
    TARGET_PID=$!
    RSS_PID=$TARGET_PID
    PIDS+=("$TARGET_PID")
    line=$(wait_line "$logf" '"Audit proxy listening."')
    ADDR=$(sed 's/.*"proxy":"\([^"]*\)".*/\1/' <<<"$line")
    ADMIN=$(sed 's/.*"admin":"\([^"]*\)".*/\1/' <<<"$line")
}

stop_target() {
    kill -TERM "$TARGET_PID" 2>/dev/null || true
    wait "$TARGET_PID" 2>/dev/null || true
}

# Runs every load against the started target, tagging each line NAME/phase.
measure_target() {
    local name=$1 calls=0 out i s
    # Calls sent to this target by the 1 KB and streaming loads (every phase
    # but `body`), read from the raw lines' labels (lines are written both
    # compact and with spaces, so they are parsed, not matched as text).
    local count_calls='
import json, sys
name = sys.argv[1]
n = 0
for line in open(sys.argv[2]):
    if line.strip():
        r = json.loads(line)
        label = r.get("label") or ""
        if label.startswith(name + "/") and "/body-" not in label:
            n += r.get("sent", 0)
print(n)'
    # REQUEST and RESPONSE events the body phases stored, so that lost
    # events are counted over the other loads only.
    local body_stored=0 before_body

    # Memory first, on a fresh process: VmHWM then holds startup plus the
    # open streams, not the 1 MB bodies of later phases.
    if [[ -n "$RSS_PID" && " $PHASES " == *" hold "* ]]; then
        out=$(loadgen --mode hold --streams "$HOLD_STREAMS" --chunk-delay-ms "$HOLD_DELAY_MS" \
            --pid "$RSS_PID" --label "$name/hold")
        raw "$out"
    fi

    local w0 t0 c0 c1 w1 t1 d0
    [[ -n "$ADMIN" ]] && { drain "$ADMIN"; w0=$(metric "$ADMIN" events_written_total); d0=$(metric "$ADMIN" events_dropped_total); }
    if [[ " $PHASES " == *" saturation "* ]]; then
    c0=$(cpu_ms "$TARGET_PID")
    t0=$(date +%s.%N)
    for i in $(seq "$RUNS"); do
        if [[ "$PERF_OK" == 1 ]]; then
            # Context switches only: a software event, nearly free.
            out=$(counted "$WORK/sat.counts" context-switches \
                loadgen --mode closed --conns "$CONNS" --duration "$DURATION" --label "$name/saturation")
            raw "$(with_counts "$out" "$WORK/sat.counts")"
        else
            raw "$(loadgen --mode closed --conns "$CONNS" --duration "$DURATION" --label "$name/saturation")"
        fi
    done
    c1=$(cpu_ms "$TARGET_PID")
    if [[ -n "$ADMIN" ]]; then
        drain "$ADMIN"
        t1=$(date +%s.%N)
        w1=$(metric "$ADMIN" events_written_total)
        # Store size per event now, while it holds 1 KB calls only (the
        # 1 MB bodies of later phases are stored up to the capture cap).
        local sb total
        sb=$(du -sb "$STORE_DIR" | cut -f1)
        total=$(curl -sf "http://$ADMIN/api/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("total_events",0))')
        raw "{\"label\":\"$name/writer\",\"store_bytes\":$sb,\"total_events\":$total,\"events_written\":$((w1 - w0)),\"events_dropped\":$(( $(metric "$ADMIN" events_dropped_total) - d0 )),\"secs\":$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')}"
    fi
    raw "{\"label\":\"$name/cpu\",\"cpu_ms\":$((c1 - c0))}"
    fi

    # Each phase starts with an empty queue, so it is not timed while the
    # writer still stores the previous phase's backlog.
    [[ -n "$ADMIN" ]] && drain "$ADMIN"
    # Latency phases run RUNS times too; the report takes each figure's
    # median, so one noisy stretch of a shared machine does not set a p99.
    # Each first runs WARMUP seconds unrecorded (streaming connections start
    # spread over it), so a p99 is the steady state's, not that of the
    # first calls on new connections all sent in the same instant.
    [[ " $PHASES " == *" rate "* ]] && for i in $(seq "$RUNS"); do
        raw "$(loadgen --mode rate --rate "$RATE" --conns "$RATE_CONNS" --duration "$RATE_DURATION" \
            --warmup "$WARMUP" --label "$name/rate")"
    done
    # Costs per call at a fixed, moderate rate: CPU, context switches and
    # syscalls in one run; allocations in a second run (probes slow calls).
    if [[ " $PHASES " == *" counts "* && "$PERF_OK" == 1 ]]; then
        [[ -n "$ADMIN" ]] && drain "$ADMIN"
        c0=$(cpu_ms "$TARGET_PID")
        out=$(counted "$WORK/rate.counts" context-switches,raw_syscalls:sys_enter \
            loadgen --mode rate --rate "$COUNT_RATE" --conns "$COUNT_CONNS" --duration "$COUNT_DURATION" \
            --label "$name/counts")
        [[ -n "$ADMIN" ]] && drain "$ADMIN"
        c1=$(cpu_ms "$TARGET_PID")
        raw "$(with_counts "$out" "$WORK/rate.counts" "$((c1 - c0))")"
        if [[ "$PROBES" == 1 ]]; then
            out=$(counted "$WORK/alloc.counts" "$PROBE_GROUP:*" \
                loadgen --mode rate --rate "$ALLOC_RATE" --conns "$COUNT_CONNS" --duration "$COUNT_DURATION" \
                --label "$name/allocs")
            [[ -n "$ADMIN" ]] && drain "$ADMIN"
            raw "$(with_counts "$out" "$WORK/alloc.counts")"
        fi
    fi
    if [[ " $PHASES " == *" body "* ]]; then
        [[ -n "$ADMIN" ]] && { drain "$ADMIN"; before_body=$(stored_req_resp "$ADMIN"); }
        for s in $BODY_SIZES; do
            [[ -n "$ADMIN" ]] && drain "$ADMIN"
            raw "$(loadgen --mode closed --conns "$BODY_CONNS" --duration "$BODY_DURATION" --body "$s" --label "$name/body-$s")"
        done
        [[ -n "$ADMIN" ]] && { drain "$ADMIN"; body_stored=$(($(stored_req_resp "$ADMIN") - before_body)); }
    fi
    [[ -n "$ADMIN" ]] && drain "$ADMIN"
    [[ " $PHASES " == *" stream "* ]] && for i in $(seq "$RUNS"); do
        [[ -n "$ADMIN" ]] && drain "$ADMIN"
        raw "$(loadgen --mode closed --conns "$STREAM_CONNS" --duration "$STREAM_DURATION" --stream \
            --chunk-delay-ms "$STREAM_DELAY_MS" --warmup "$WARMUP" --label "$name/stream")"
    done

    if [[ -n "$ADMIN" ]]; then
        drain "$ADMIN"
        calls=$(python3 -c "$count_calls" "$name" "$RAW")
        local stats bytes
        stats=$(curl -sf "http://$ADMIN/api/stats")
        bytes=$(du -sb "$STORE_DIR" | cut -f1)
        raw "$(python3 -c '
import json, sys
name, calls, nbytes, stats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
body_stored, phases = int(sys.argv[5]), [p for p in sys.argv[6].split() if p != "body"]
by = stats.get("by_type", {})
stored = by.get("REQUEST", 0) + by.get("RESPONSE", 0) - body_stored
total = stats.get("total_events", 0)
print(json.dumps({"label": name + "/store", "calls": calls, "stored_req_resp": stored,
    "lost": calls * 2 - stored if total and calls else None, "phases": phases,
    "total_events": total, "store_bytes": nbytes,
    "bytes_per_event": nbytes / total if total else None, "pipeline": stats.get("pipeline")}))
' "$name" "$calls" "$bytes" "$stats" "$body_stored" "$PHASES")"
    fi
}

# --- targets -----------------------------------------------------------------
[[ " $PHASES " == *" counts "* ]] && setup_probes
start_mock
log "Mock upstream on $MOCK_ADDR."

for target in $TARGETS; do
    ADMIN=
    RSS_PID=
    case $target in
    direct)
        ADDR=$MOCK_ADDR
        TARGET_PID=$MOCK_PID
        ;;
    nginx)
        if ! command -v nginx >/dev/null; then
            log "nginx is not installed: skipping the nginx baseline (install it with 'apt-get install nginx-light')."
            raw '{"label":"nginx/skipped","reason":"nginx not installed (apt-get install nginx-light)"}'
            continue
        fi
        start_nginx
        ;;
    audit-off)
        start_proxy "$target" LLM_AUDIT_PROXY_AUDIT_ENABLED=false
        ADMIN= # nothing is recorded, so there is no event count to check
        ;;
    sqlite)
        start_proxy "$target" -- --storage sqlite
        ;;
    sqlite-strict)
        # Each REQUEST committed before the call goes upstream.
        start_proxy "$target" LLM_AUDIT_PROXY_DURABILITY=strict -- --storage sqlite
        ;;
    sqlite-strict-full)
        # As sqlite-strict, with every commit synced to disk.
        start_proxy "$target" LLM_AUDIT_PROXY_DURABILITY=strict LLM_AUDIT_PROXY_SQLITE_SYNCHRONOUS=full -- --storage sqlite
        ;;
    file)
        start_proxy "$target" -- --storage file
        ;;
    sqlite-policies | sqlite-policies-noindex)
        printf '%s\n' "$POLICY_TOML" >"$WORK/policies.toml"
        if ! "$PROXY" check-config "$WORK/policies.toml" >"$WORK/check.out" 2>&1; then
            log "Skipping $target: check-config rejects a configuration with policy packs:"
            head -3 "$WORK/check.out" >&2
            raw "{\"label\":\"$target/skipped\",\"reason\":\"check-config rejected the policy configuration\"}"
            continue
        fi
        if [[ $target == sqlite-policies ]]; then
            start_proxy "$target" -- --storage sqlite --config "$WORK/policies.toml"
        else
            # As sqlite-policies, without the console's search index.
            start_proxy "$target" LLM_AUDIT_PROXY_SQLITE_SEARCH_INDEX=false -- \
                --storage sqlite --config "$WORK/policies.toml"
        fi
        ;;
    *)
        log "Unknown target $target."
        exit 64
        ;;
    esac
    log "Measuring $target on $ADDR."
    measure_target "$target"
    if [[ "$target" != direct ]]; then
        stop_target
    fi
done

# --- shipping ----------------------------------------------------------------
# Catch-up after an outage and steady shipping into a throwaway PostgreSQL
# (bench/shipping.sh, which says how each is taken), when its server
# binaries are installed.
if [[ " $PHASES " == *" shipping "* ]]; then
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        log "PostgreSQL server binaries not found: skipping the shipping phase (install them with 'apt-get install postgresql')."
        raw '{"label":"shipping/skipped","reason":"PostgreSQL server binaries not found (apt-get install postgresql)"}'
    else
        log "Measuring shipping to PostgreSQL (bench/shipping.sh)."
        # Its own phases: this script's PHASES names the targets' ones.
        if PHASES="catchup steady" PROXY_BIN=$PROXY bash "$ROOT/bench/shipping.sh" >"$WORK/shipping.jsonl"; then
            while IFS= read -r line; do
                raw "$line"
            done <"$WORK/shipping.jsonl"
        else
            log "bench/shipping.sh failed; the report has no shipping figures."
            raw '{"label":"shipping/skipped","reason":"bench/shipping.sh failed"}'
        fi
    fi
fi

# --- store figures -----------------------------------------------------------
if [[ "$SKIP_STORE" != 1 ]]; then
    log "Generating a SQLite store of $STORE_EVENTS events."
    gen=$("$STORE_BENCH" generate --dir "$WORK/big-store" --events "$STORE_EVENTS" \
        --violations "$STORE_VIOLATIONS")
    raw "$gen"
    base=$(sed 's/.*"base":"\([^"]*\)".*/\1/' <<<"$gen")
    raw "{\"store\":\"size\",\"bytes\":$(du -sb "$WORK/big-store" | cut -f1)}"
    t0=$(date +%s.%N)
    FORCE_STORE_DIR=$WORK/big-store start_proxy big -- --storage sqlite
    # serve checks the whole hash chain once at start, in the background.
    # Its time is a figure of its own; the queries and exports are timed
    # after it, so they measure the store and not the two competing.
    log "Waiting for the start-up chain check."
    for i in $(seq 3000); do
        grep -q 'Audit hash chain' "$WORK/big.log" && break
        sleep 0.1
    done
    raw "{\"store\":\"chain_check\",\"events\":$STORE_EVENTS,\"secs\":$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}'),\"verified\":$(grep -q 'Audit hash chain verified' "$WORK/big.log" && echo true || echo false)}"
    log "Querying and exporting it."
    while IFS= read -r line; do
        raw "$line"
    done < <("$STORE_BENCH" measure --admin "$ADMIN" --events "$STORE_EVENTS" \
        --violations "$STORE_VIOLATIONS" --base "$base" --pid "$TARGET_PID" --queries "$QUERIES" --max-secs "$QUERY_MAX_SECS")
    stop_target
fi

# --- report ------------------------------------------------------------------
# "2-vCPU AMD EPYC VM, 24 GB": what the machine is, from /proc/cpuinfo.
MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
case $MODEL in
*EPYC*) FAMILY="AMD EPYC" ;;
*Xeon*) FAMILY="Intel Xeon" ;;
*) FAMILY=$MODEL ;;
esac
if grep -qw hypervisor /proc/cpuinfo; then
    MACHINE="$(nproc)-vCPU $FAMILY VM"
else
    MACHINE="$(nproc)-core $FAMILY"
fi
MACHINE="$MACHINE ($MODEL), $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo)"
cp "$RAW" "$OUT/latest.jsonl"
python3 "$ROOT/bench/report.py" "$RAW" "$MACHINE" "QUICK=${QUICK:-0} RUNS=$RUNS DURATION=${DURATION}s CONNS=$CONNS RATE=$RATE WARMUP=${WARMUP}s" \
    >"$OUT/latest.md"
cat "$OUT/latest.md"
log "Wrote bench/results/latest.md and bench/results/latest.jsonl."
