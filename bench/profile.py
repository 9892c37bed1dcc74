"""Groups a CPU profile of the proxy by subsystem, in µs per call.

Usage:
  perf record -F 499 --call-graph dwarf,16384 -p PID -o perf.data   # during a load
  perf script -i perf.data -F comm,tid,ip,sym,dso > script.txt
  python3 bench/profile.py script.txt HZ CALLS

HZ is perf record's -F, CALLS the calls made while it recorded. Each
sample is charged to one subsystem: the allocator when the sampled code is
the allocator's; the scheduler when the kernel was switching tasks;
otherwise the first frame, from the sampled one towards the thread's root,
that belongs to a known subsystem (so `memcpy` called by SQLite counts as
SQLite). Kernel time is charged to the user-space caller as syscalls of
that subsystem.
"""

import re
import sys
from collections import Counter

ALLOCATOR = re.compile(r"^(_?mi_|_mi_|__libc_(malloc|free|calloc|realloc)|malloc|free|cfree|realloc|calloc|__GI___libc_(malloc|free)|_int_(malloc|free)|mimalloc)")
SCHEDULER = re.compile(r"^(__schedule|schedule|finish_task_switch|futex_wait|futex_wake)")
OWNERS = [
    ("SQLite", re.compile(r"sqlite3|rusqlite|tokio_rusqlite")),
    ("SHA-256", re.compile(r"sha2::|sha256")),
    ("sockets and epoll (tokio, mio)", re.compile(r"mio::|tokio::net::|tokio::runtime::io::")),
    ("policy scan", re.compile(r"llm_audit_proxy::policy|regex_automata|regex::|aho_corasick|unicode_normalization")),
    ("serde_json (parse, Value trees, serialise)", re.compile(r"serde_json")),
    ("writer and store (Rust side)", re.compile(r"llm_audit_proxy::pipeline::writer|llm_audit_proxy::store")),
    ("record assembly, ids, queue", re.compile(r"llm_audit_proxy::(pipeline|event|capture)|uuid::")),
    ("metrics and logs", re.compile(r"prometheus_client|tracing")),
    ("request path (proxy)", re.compile(r"llm_audit_proxy::proxy")),
    ("hyper server and client", re.compile(r"hyper::|hyper_util::|httparse|h2::|http::")),
    ("tokio runtime", re.compile(r"tokio::|mio::")),
]


def samples(path):
    frames = []
    for line in open(path, errors="replace"):
        if not line.strip():
            if frames:
                yield frames
            frames = []
        elif line.startswith("\t") or line.startswith(" "):
            m = re.match(r"\s*[0-9a-f]+ (.*) \((.*)\)\s*$", line)
            if m:
                frames.append((m.group(1), m.group(2)))
    if frames:
        yield frames


def owner(frames):
    for sym, _ in frames:
        for name, pattern in OWNERS:
            if pattern.search(sym):
                return name
    return "other"


def classify(frames):
    kernel = [f for f in frames if "kernel" in f[1]]
    user = [f for f in frames if "kernel" not in f[1]]
    if frames and "kernel" in frames[0][1]:
        if any(SCHEDULER.match(s) for s, _ in kernel):
            return "scheduler (context switches, futex waits)"
        if user and ALLOCATOR.match(user[0][0]):
            return "allocator"
        return "syscalls: " + owner(user)
    if frames and ALLOCATOR.match(frames[0][0]):
        return "allocator"
    return owner(user)


def main():
    path, hz, calls = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    counts = Counter(classify(f) for f in samples(path))
    total = sum(counts.values())
    print(f"{total} samples at {hz:.0f} Hz over {calls} calls: "
          f"{total / hz / calls * 1e6:.1f} µs of CPU per call\n")
    print("| cost centre | share | µs / call |")
    print("|---|---:|---:|")
    for name, n in counts.most_common():
        print(f"| {name} | {n / total:.1%} | {n / hz / calls * 1e6:.1f} |")


if __name__ == "__main__":
    main()
