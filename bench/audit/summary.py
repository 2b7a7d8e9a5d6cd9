"""Summary table of bench/audit.sh: medians of the reps next to issue 3's targets.

Usage: python3 summary.py RAW.tsv WRITERS PER_WRITER CONNS DURATION DELAY_MS VERIFY_RECORDS PG_WRITERS PG_SECONDS
"""
import csv
import statistics as st
import sys

raw = sys.argv[1]
writers, per, conns, duration, delay_ms, vrecords, pgw, pgs = sys.argv[2:10]
rows = list(csv.DictReader(open(raw), delimiter="\t"))


def vals(part, variant, metric):
    out = []
    for r in rows:
        if r["part"] == part and r["variant"] == variant and r["metric"] == metric and r["value"]:
            out.append(float(r["value"]))
    return out


def med(part, variant, metric):
    v = vals(part, variant, metric)
    return st.median(v) if v else None


def span(part, variant, metric, fmt="{:.0f}"):
    v = vals(part, variant, metric)
    if not v:
        return "n/a"
    m = fmt.format(st.median(v))
    return f"{m} [{fmt.format(min(v))}-{fmt.format(max(v))}]" if len(v) > 1 else m


def loads(part):
    v = sorted({(r["rep"], r["variant"], r["load1"]) for r in rows if r["part"] == part})
    ls = [float(x[2]) for x in v if x[2]]
    return f"{min(ls):.2f}-{max(ls):.2f} (median {st.median(ls):.2f})" if ls else "n/a"


def ok(b):
    return "**met**" if b else "**not met**"


print("| figure | measured: median [min-max] | target | verdict | load avg (1 min) |")
print("|---|---|---|---|---|")
parts = {r["part"] for r in rows}
if "append" in parts:
    variants = sorted(
        {r["variant"] for r in rows if r["part"] == "append" and r["variant"] != "fsync"},
        key=lambda s: int(s.split("=")[1]),
    )
    for v in variants:
        m = med("append", v, "records_per_s")
        print(
            f"| durable appends/s, {writers} writers x {per}, batch {v.replace('delay_us=', 'delay ')} us "
            f"({span('append', v, 'records_per_fsync', '{:.1f}')} records per fsync) | "
            f"{span('append', v, 'records_per_s')} | >= 100,000 | {ok(m is not None and m >= 100_000)} | {loads('append')} |"
        )
    print(
        f"| (disk fsync right before: p50 / p99 us) | {span('append', 'fsync', 'fsync_p50_us')} / "
        f"{span('append', 'fsync', 'fsync_p99_us')} | | | |"
    )
if "gateway" in parts:
    f99 = med("gateway", "fsync", "fsync_p99_us")
    print(
        f"| disk fsync in the gateway run (p50 / p99 us, {len(vals('gateway', 'fsync', 'fsync_p99_us'))} probes) | "
        f"{span('gateway', 'fsync', 'fsync_p50_us')} / {span('gateway', 'fsync', 'fsync_p99_us')} | | | {loads('gateway')} |"
    )
    for mode in ("strict", "overlapped"):
        h99 = med("gateway", mode, "wait_p99_le_us")
        if h99 is None:
            continue
        if mode == "strict":
            target, good = f"<= fsync p99 ({f99:.0f} us)", f99 is not None and h99 <= f99
        else:
            target, good = "<= 200 us", h99 <= 200
        print(
            f"| {mode}: p99 added by the audit wait (histogram bucket bound), {conns} conns, echo {delay_ms} ms | "
            f"<= {span('gateway', mode, 'wait_p99_le_us')} us (mean {span('gateway', mode, 'wait_mean_us', '{:.0f}')} us, "
            f"p50 <= {span('gateway', mode, 'wait_p50_le_us')} us, p99 interpolated {span('gateway', mode, 'wait_p99_interp_us')} us) | {target} | {ok(good)} | {loads('gateway')} |"
        )
    if med("gateway", "strict", "sync_p99_le_us") is not None:
        print(
            f"| strict store's own fdatasync per group commit, same load (`cordon_audit_fsync_seconds`): "
            f"p50 / p99 (bucket bounds), mean, commits | <= {span('gateway', 'strict', 'sync_p50_le_us')} / "
            f"<= {span('gateway', 'strict', 'sync_p99_le_us')} us, mean {span('gateway', 'strict', 'sync_mean_us', '{:.0f}')} us, "
            f"{span('gateway', 'strict', 'sync_count', '{:.0f}')} commits | (context) | | |"
        )
    # A second reading of "what an append adds": the strict mode's end-to-end p99 over the
    # overlapped mode's (whose wait hides behind the slower upstream), against the disk's sync p99
    # under the same load and idle.
    s99, o99 = med("gateway", "strict", "e2e_p99_us"), med("gateway", "overlapped", "e2e_p99_us")
    sync99 = med("gateway", "strict", "sync_p99_le_us")
    if s99 is not None and o99 is not None:
        print(
            f"| strict: end-to-end p99 over overlapped's, same run (what the strict wait adds at the tail of whole requests) | "
            f"{s99 - o99:+.0f} us | (context) against the store's own fdatasync p99 under that load "
            f"(<= {sync99 if sync99 is not None else float('nan'):.0f} us) and the idle probe's ({f99 if f99 is not None else float('nan'):.0f} us) | | |"
        )
    for mode in ("strict", "overlapped"):
        if med("gateway", mode, "rps") is None:
            continue
        print(
            f"| {mode}: end-to-end (wrk, {duration}) p50 / p99 us, req/s | {span('gateway', mode, 'e2e_p50_us')} / "
            f"{span('gateway', mode, 'e2e_p99_us')}, {span('gateway', mode, 'rps')} req/s | (context) | | |"
        )
if "verify" in parts:
    for v in sorted({r["variant"] for r in rows if r["part"] == "verify"}):
        m = med("verify", v, "records_per_s")
        print(
            f"| verification, {int(vrecords):,} records (`{v}`) | {span('verify', v, 'records_per_s')} records/s | "
            f">= 1,500,000 | {ok(m is not None and m >= 1_500_000)} | {loads('verify')} |"
        )
        cpu = med("verify", v, "cpu_s")
        if cpu:
            print(
                f"| (`{v}`: CPU seconds, user + sys, whole process) | {span('verify', v, 'cpu_s', '{:.2f}')} s = "
                f"{cpu / int(vrecords) * 1e6:.2f} us per record: at most {int(vrecords) / cpu * 2:,.0f} records/s "
                f"on 2 idle cores | | | |"
            )
if "pg" in parts:
    v = f"writers={pgw}"
    m = med("pg", v, "rows_per_s")
    print(
        f"| PostgreSQL appends, {pgw} writers, {pgs} s (mean batch {span('pg', v, 'mean_batch', '{:.1f}')}, "
        f"mean ack {span('pg', v, 'mean_ack_ms', '{:.2f}')} ms) | {span('pg', v, 'rows_per_s')} rows/s | >= 50,000 | "
        f"{ok(m is not None and m >= 50_000)} | {loads('pg')} |"
    )
