"""The disk's own fsync latency: N x (64-byte O_APPEND write + fdatasync) in a directory.

Used by bench/run.sh and bench/audit.sh. Prints p50, p99, p99.9, max in microseconds, tab-separated.
Usage: python3 fsync.py DIR N
"""
import os
import sys
import time

d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
p = os.path.join(d, "fsync-probe.bin")
fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
rec = b"x" * 63 + b"\n"
ts = []
try:
    for _ in range(n):
        os.write(fd, rec)
        t = time.perf_counter_ns()
        os.fdatasync(fd)
        ts.append(time.perf_counter_ns() - t)
finally:
    os.close(fd)
    os.unlink(p)
ts.sort()


def q(f):
    return ts[min(len(ts) - 1, int(f * len(ts)))] / 1000.0


print(f"{q(0.50):.1f}\t{q(0.99):.1f}\t{q(0.999):.1f}\t{ts[-1] / 1000.0:.1f}")
