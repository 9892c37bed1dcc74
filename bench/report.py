"""Turns the raw JSON lines of bench/run.sh into the markdown report.

Usage: python3 bench/report.py RAW.jsonl "MACHINE" "SETTINGS" > latest.md
"""

import json
import statistics
import sys

TARGETS = ["direct", "nginx", "audit-off", "sqlite", "sqlite-strict", "sqlite-strict-full", "file", "sqlite-policies", "sqlite-policies-noindex"]
PROXIES = ["audit-off", "sqlite", "sqlite-strict", "sqlite-strict-full", "file", "sqlite-policies", "sqlite-policies-noindex"]


def load(path):
    by_label, store = {}, {}
    # bench/shipping.sh's lines, by kind (catch_up_median, steady_on, …).
    shipping = {}
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        if "label" in rec and rec["label"]:
            by_label.setdefault(rec["label"], []).append(rec)
        elif "shipping" in rec:
            shipping[rec["shipping"]] = rec
        elif "store" in rec:
            key = rec["store"] + ("/" + rec["format"] if "format" in rec else "")
            store[key] = rec
    return by_label, store, shipping


def fmt(v, digits=2):
    if v is None:
        return "—"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "—"


def added(a, b):
    return f"{a - b:+.2f}" if a is not None and b is not None else "—"


def per_call(recs, key, calls_field="sent"):
    """A count summed over runs, divided by the calls those runs sent."""
    calls = sum(r.get(calls_field, 0) for r in recs if key in r.get("counts", {}))
    total = sum(r["counts"][key] for r in recs if key in r.get("counts", {}))
    return total / calls if calls else None


def allocations(recs):
    """Rust (mimalloc probes) and C (libc probes) allocations per call.

    Probe names are GROUP:NAME; mimalloc's entry points are named mi_*.
    """
    sent = sum(r["sent"] for r in recs)
    if not sent:
        return None, None
    rust = c = 0.0
    for r in recs:
        for k, v in r.get("counts", {}).items():
            if k.split(":")[-1].startswith("mi_"):
                rust += v
            else:
                c += v
    return rust / sent, c / sent


def percall_table(w, present, L):
    if not any(L.get(f"{t}/counts") or L.get(f"{t}/cpu") for t in present):
        return
    w("## Costs per call\n")
    w("CPU is the process's utime + stime (`/proc/PID/stat`); context switches and "
      "syscalls are counted by the kernel (`perf stat -e context-switches,raw_syscalls:sys_enter "
      "-p PID`); allocations by uprobes on the allocation entry points, in a run of their own "
      "at a lower fixed rate: Rust allocations are mimalloc's (every allocation of the proxy's "
      "Rust code), C allocations libc's `malloc`, `calloc` and `realloc` (the bundled SQLite's, "
      "and all of nginx's). See bench/README.md.\n")
    w("| target | CPU µs / call (saturation) | ctx switches / call (saturation) "
      "| CPU µs / call (fixed rate) | ctx switches / call (fixed rate) | syscalls / call (fixed rate) "
      "| Rust allocations / call | C allocations / call | allocations / call (all) |")
    w("|---|---|---|---|---|---|---|---|---|")
    for t in present:
        if t == "direct":
            continue
        sat = L.get(f"{t}/saturation", [])
        calls = sum(r["sent"] for r in sat)
        cpu_sat = None
        if L.get(f"{t}/cpu") and calls:
            cpu_sat = L[f"{t}/cpu"][0]["cpu_ms"] * 1000 / calls
        counts = L.get(f"{t}/counts", [])
        sent = sum(r["sent"] for r in counts)
        cpu_rate = sum(r.get("cpu_ms", 0) for r in counts) * 1000 / sent if sent else None
        rust, c = allocations(L.get(f"{t}/allocs", []))
        total = rust + c if rust is not None and c is not None else None
        w(f"| {t} | {fmt(cpu_sat, 1)} | {fmt(per_call(sat, 'context-switches'), 1)} "
          f"| {fmt(cpu_rate, 1)} | {fmt(per_call(counts, 'context-switches'), 1)} "
          f"| {fmt(per_call(counts, 'raw_syscalls:sys_enter'), 1)} "
          f"| {fmt(rust, 0)} | {fmt(c, 0)} | {fmt(total, 0)} |")
    rate = next((r.get("target_rate") for t in present for r in L.get(f"{t}/counts", [])), None)
    arate = next((r.get("target_rate") for t in present for r in L.get(f"{t}/allocs", [])), None)
    if rate:
        w(f"\nFixed rate: {fmt(rate, 0)} calls/s ({fmt(arate, 0)} calls/s for allocations).")
    w("")


def main():
    raw, machine, settings = sys.argv[1], sys.argv[2], sys.argv[3]
    L, S, SH = load(raw)
    present = [t for t in TARGETS if any(k.startswith(t + "/") and not k.endswith("/skipped") for k in L)]
    skipped = [L[t + "/skipped"][0] for t in TARGETS if t + "/skipped" in L]

    def one(t, phase, field):
        # A phase run several times reports the median of each figure.
        recs = L.get(f"{t}/{phase}")
        if not recs:
            return None
        values = [r.get(field) for r in recs]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(values) and len(numbers) > 1:
            return statistics.median(numbers)
        return values[-1]

    def sat(t):
        recs = L.get(f"{t}/saturation")
        return statistics.median(r["rps"] for r in recs) if recs else None

    full = "sqlite-policies" if "sqlite-policies" in present else "sqlite"
    out = []
    w = out.append
    w("# llm-audit-proxy overhead benchmark\n")
    w(f"Machine: {machine}. Settings: {settings}. Loopback only; load generator, mock, "
      "nginx and proxy share the cores.\n")
    for s in skipped:
        w(f"- {s['label'].split('/')[0]} skipped: {s['reason']}")
    if skipped:
        w("")

    w("## Throughput, latency, CPU\n")
    w("| target | req/s @64 conns (median) | × direct | × nginx | p50 ms @1k/s | p99 ms @1k/s "
      "| +p99 ms vs direct | +p99 ms vs nginx | CPU ms / 1k calls |")
    w("|---|---|---|---|---|---|---|---|---|")
    for t in present:
        rps = sat(t)
        cpu = None
        if t != "direct" and L.get(f"{t}/cpu") and L.get(f"{t}/saturation"):
            calls = sum(r["requests"] for r in L[f"{t}/saturation"])
            cpu = L[f"{t}/cpu"][0]["cpu_ms"] / (calls / 1000) if calls else None
        p99 = one(t, "rate", "p99_ms")
        w(f"| {t} | {fmt(rps)} | {ratio(rps, sat('direct'))} | {ratio(rps, sat('nginx'))} "
          f"| {fmt(one(t, 'rate', 'p50_ms'))} | {fmt(p99)} | {added(p99, one('direct', 'rate', 'p99_ms'))} "
          f"| {added(p99, one('nginx', 'rate', 'p99_ms'))} | {fmt(cpu, 1)} |")
    w("")

    percall_table(w, present, L)

    sizes = sorted({int(k.split("body-")[1]) for k in L if "/body-" in k})
    if sizes:
        w("## Request bodies (req/s, ratio to direct, p99 ms)\n")
        names = {1024: "1 KB", 65536: "64 KB", 1048576: "1 MB"}
        w("| target | " + " | ".join(names.get(s, f"{s} B") for s in sizes) + " |")
        w("|---|" + "---|" * len(sizes))
        for t in present:
            cells = []
            for s in sizes:
                rps = one(t, f"body-{s}", "rps")
                cells.append(f"{fmt(rps)} ({ratio(rps, one('direct', f'body-{s}', 'rps'))}, "
                             f"p99 {fmt(one(t, f'body-{s}', 'p99_ms'))})")
            w(f"| {t} | " + " | ".join(cells) + " |")
        w("")

    w("## Streaming (20 chunks + usage + [DONE])\n")
    w("| target | TTFB p50 ms | TTFB p99 ms | +TTFB p99 ms vs direct | gap p50 ms | gap p99 ms "
      "| +gap p50 ms | +gap p99 ms | frames / call |")
    w("|---|---|---|---|---|---|---|---|---|")
    for t in present:
        g = lambda f, tt=t: one(tt, "stream", f)  # noqa: E731
        d = lambda f: one("direct", "stream", f)  # noqa: E731
        w(f"| {t} | {fmt(g('ttfb_p50_ms'))} | {fmt(g('ttfb_p99_ms'))} | {added(g('ttfb_p99_ms'), d('ttfb_p99_ms'))} "
          f"| {fmt(g('gap_p50_ms'))} | {fmt(g('gap_p99_ms'))} | {added(g('gap_p50_ms'), d('gap_p50_ms'))} "
          f"| {added(g('gap_p99_ms'), d('gap_p99_ms'))} | {fmt(g('frames_per_call'), 1)} |")
    w("")

    w("## Auditing and memory\n")
    w("| target | events/s written (saturation) | calls | REQUEST+RESPONSE stored | lost | dropped "
      "| RSS MB @1,000 open streams | peak RSS MB | bytes / stored event (1 KB calls) |")
    w("|---|---|---|---|---|---|---|---|---|")
    for t in present:
        if t == "direct":
            continue
        wr = L.get(f"{t}/writer", [{}])[0]
        st = L.get(f"{t}/store", [{}])[0]
        hold = L.get(f"{t}/hold", [{}])[0]
        eps = wr["events_written"] / wr["secs"] if wr.get("secs") else None
        opened = hold.get("opened")
        rss = f"{hold['rss_kb'] / 1024:.1f} ({opened} open)" if hold.get("rss_kb") else "—"
        hwm = f"{hold['hwm_kb'] / 1024:.1f}" if hold.get("hwm_kb") else "—"
        bpe = wr["store_bytes"] / wr["total_events"] if wr.get("total_events") else None
        w(f"| {t} | {fmt(eps)} | {fmt(st.get('calls'))} | {fmt(st.get('stored_req_resp'))} "
          f"| {fmt(st.get('lost'))} | {fmt(wr.get('events_dropped'))} | {rss} | {hwm} "
          f"| {fmt(bpe, 0)} |")
    w("")

    if S:
        gen = S.get("generate", {})
        w(f"## Store: {fmt(gen.get('events'))} generated events "
          f"(generated at {fmt(gen.get('events_per_s'))} events/s, "
          f"{fmt(S.get('size', {}).get('bytes', 0) / 1e6, 0)} MB on disk)\n")
        chain = S.get("chain_check")
        if chain:
            w(f"Start-up chain check (`serve` verifies every stored event once, in the background): "
              f"{fmt(chain.get('secs'))} s for {fmt(chain.get('events'))} events, "
              f"{'verified' if chain.get('verified') else 'NOT verified'}; the figures below are taken after it.\n")
        w("| figure | queries | p50 ms | p99 ms |")
        w("|---|---|---|---|")
        for key, name in [("query_type_time", "RESPONSE + 1 h range + limit 100"),
                          ("query_request_id", "request_id"),
                          ("stats", "`/api/stats`")]:
            q = S.get(key, {})
            w(f"| {name} | {fmt(q.get('queries'))} | {fmt(q.get('p50_ms'))} | {fmt(q.get('p99_ms'))} |")
        w("")
        w("| export | events/s | MB/s | seconds | RSS before MB | RSS peak MB | growth MB |")
        w("|---|---|---|---|---|---|---|")
        for f in ["json", "ndjson", "csv"]:
            e = S.get(f"export/{f}")
            if e:
                w(f"| {f} | {fmt(e['events_per_s'])} | {fmt(e['mb_per_s'], 1)} | {fmt(e['secs'])} "
                  f"| {e['rss_before_kb'] / 1024:.1f} | {e['rss_peak_kb'] / 1024:.1f} | {e['rss_growth_kb'] / 1024:.1f} |")
        w("")

    catch_up, on, off = SH.get("catch_up_median"), SH.get("steady_on"), SH.get("steady_off")
    added_cpu = None
    if on and off and off.get("cpu_us_per_call"):
        added_cpu = on["cpu_us_per_call"] / off["cpu_us_per_call"] - 1
    if SH:
        w("## Shipping to PostgreSQL (`bench/shipping.sh`)\n")
        w("| figure | result |")
        w("|---|---|")
        if catch_up:
            runs = ", ".join(fmt(x) for x in catch_up.get("all_events_per_s", []))
            w(f"| catch-up after an outage, events/s (median of {catch_up.get('runs')}: {runs}) "
              f"| {fmt(catch_up.get('events_per_s'))} ({fmt(catch_up.get('events'))} events, "
              f"batch {fmt(catch_up.get('batch_size'))}; CPU s: proxy {fmt(catch_up.get('proxy_cpu_secs'))}, "
              f"PostgreSQL {fmt(catch_up.get('postgres_cpu_secs'))}) |")
        if on:
            w(f"| steady shipping, events/s | {fmt(on.get('events_per_s'))} "
              f"({fmt(on.get('calls'))} calls; lag after the load: {fmt(on.get('lag_after_load'))}) |")
        if on and off:
            w(f"| proxy CPU µs / call, shipping off → on | {fmt(off.get('cpu_us_per_call'), 1)} → "
              f"{fmt(on.get('cpu_us_per_call'), 1)} "
              f"({'—' if added_cpu is None else f'{added_cpu * 100:+.1f} %'}) |")
        w("")
    elif "shipping/skipped" in L:
        w(f"Shipping to PostgreSQL: skipped ({L['shipping/skipped'][0].get('reason')}).\n")

    # The targets, read off the figures above (a report, not a test).
    w(f"## Targets (full auditing = {full})\n")
    w("| target | measured | |")
    w("|---|---|---|")

    def row(name, value, ok):
        state = "—" if ok is None else ("met" if ok else "missed")
        w(f"| {name} | {value} | {state} |")

    a, n = sat(full), sat("nginx")
    row("throughput ≥ 0.90× nginx", ratio(a, n), (a / n >= 0.9) if a and n else None)
    p, d = one(full, "rate", "p99_ms"), one("direct", "rate", "p99_ms")
    row("added p99 ≤ 1 ms at 1,000 req/s", added(p, d), (p - d <= 1.0) if p is not None and d is not None else None)
    p, d = one(full, "stream", "ttfb_p99_ms"), one("direct", "stream", "ttfb_p99_ms")
    row("added TTFB p99 ≤ 1 ms", added(p, d), (p - d <= 1.0) if p is not None and d is not None else None)
    p, d = one(full, "stream", "frames_per_call"), one("direct", "stream", "frames_per_call")
    row("no chunk held back (frames / call as direct)", f"{fmt(p, 1)} vs {fmt(d, 1)}",
        (p >= d - 0.05) if p is not None and d is not None else None)
    hold = L.get(f"{full}/hold", [{}])[0]
    rss = hold.get("rss_kb")
    row("RSS ≤ 64 MB at 1,000 open streams", f"{rss / 1024:.1f} MB" if rss else "—",
        (rss / 1024 <= 64 and hold.get("opened") == hold.get("streams")) if rss else None)
    # Lost events are counted over the 1 KB and streaming loads (the body
    # phases' saturation drops, and records, what the byte budget cannot
    # hold). A target none of whose counted loads ran has nothing to show.
    stores = [(t, L[f"{t}/store"][0]) for t in PROXIES if f"{t}/store" in L and t != "audit-off"]
    measured = [(t, s) for t, s in stores if s.get("calls") and s.get("lost") is not None]
    if measured:
        row("zero events lost (1 KB and streaming loads of every audited target)",
            ", ".join(f"{t} {s['lost']} of {2 * s['calls']:,} ({' '.join(s.get('phases', []))})"
                      for t, s in measured),
            all(s["lost"] == 0 for _, s in measured))
    else:
        w("| zero events lost (1 KB and streaming loads of every audited target) | not measured | — |")
    ex = [S.get(f"export/{f}") for f in ["json", "ndjson", "csv"] if S.get(f"export/{f}")]
    if ex:
        low = min(e["events_per_s"] for e in ex)
        grow = max(e["rss_growth_kb"] for e in ex) / 1024
        row("export ≥ 200,000 events/s (slowest format)", fmt(low), low >= 200_000)
        row("export RSS growth ≤ 20 MB", f"{grow:.1f} MB", grow <= 20)
        q = max(S.get(k, {}).get("p99_ms", 0) for k in ["query_type_time", "query_request_id"])
        row("filtered query p99 ≤ 20 ms", f"{q:.2f} ms", q <= 20)
    if catch_up:
        eps = catch_up.get("events_per_s")
        row("shipping catch-up ≥ 50,000 events/s", fmt(eps), eps >= 50_000 if eps else None)
    if added_cpu is not None:
        row("steady shipping adds ≤ 10% CPU per call", f"{added_cpu * 100:+.1f} %", added_cpu <= 0.10)
    print("\n".join(out))


if __name__ == "__main__":
    main()
