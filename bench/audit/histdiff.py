"""p99 (and p50, mean) of a histogram between two /metrics scrapes: by default
cordon_audit_wait_seconds{durability=D}; with LABEL=VALUE and a METRIC, e.g.
`store=EU cordon_audit_fsync_seconds`, that series instead (the audit store's own fdatasync per
group commit, measured under the same load).

The histogram is cumulative over the server's life, so the difference of two scrapes taken
around one load run is that run's distribution. `p50_le`/`p99_le` are the smallest bucket upper
bound whose cumulative count reaches the quantile (a bound: the true quantile is at most this);
`p99_interp` interpolates linearly inside that bucket (Prometheus' histogram_quantile: an
estimate, not a bound). The audit-wait and fsync histograms have 25 us buckets up to 1 ms and
100 us buckets up to 5 ms, so there the bound is at most 25 (100) us above the true quantile.
Prints: count, mean_us, p50_le_us, p99_le_us, p99_interp_us (tab-separated).
Usage: python3 histdiff.py BEFORE AFTER DURABILITY
       python3 histdiff.py BEFORE AFTER LABEL=VALUE METRIC
"""
import re
import sys

SELECT = sys.argv[3] if "=" in sys.argv[3] else f"durability={sys.argv[3]}"
KEY, VALUE = SELECT.split("=", 1)
METRIC = sys.argv[4] if len(sys.argv) > 4 else "cordon_audit_wait_seconds"
LINE = re.compile(rf"^{re.escape(METRIC)}_(bucket|sum|count)\{{([^}}]*)\}}\s+(\S+)")


def read(path):
    buckets, total, count = {}, 0.0, 0.0
    for line in open(path):
        m = LINE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if labels.get(KEY) != VALUE:
            continue
        v = float(m.group(3))
        if m.group(1) == "bucket":
            buckets[float(labels["le"])] = v
        elif m.group(1) == "sum":
            total = v
        else:
            count = v
    return buckets, total, count


b0, s0, c0 = read(sys.argv[1])
b1, s1, c1 = read(sys.argv[2])
n = c1 - c0
if n <= 0:
    print("0\t\t\t\t")
    sys.exit(0)


def q(f):
    for le in sorted(b1):
        if b1[le] - b0.get(le, 0.0) >= f * n:
            return le * 1e6
    return float("inf")


def interp(f):
    lo, below = 0.0, 0.0
    for le in sorted(b1):
        c = b1[le] - b0.get(le, 0.0)
        if c >= f * n:
            if le == float("inf"):
                return lo * 1e6
            return (lo + (le - lo) * (f * n - below) / max(c - below, 1e-9)) * 1e6
        lo, below = le, c
    return float("inf")


print(f"{n:.0f}\t{(s1 - s0) / n * 1e6:.1f}\t{q(0.50):g}\t{q(0.99):g}\t{interp(0.99):.0f}")
