"""fdatasync after a small append vs after an overwrite inside a zero-filled (written, not
fallocated) region: does growing the file cost an extra metadata write per sync?

Interleaves the two modes in rounds so both see the same neighbours. Prints one line per mode:
mode, p50, p99, p99.9, max in microseconds (tab-separated).
Usage: python3 fsync_modes.py DIR N [WRITE_BYTES]
"""
import os
import sys
import time

d, n = sys.argv[1], int(sys.argv[2])
size = int(sys.argv[3]) if len(sys.argv) > 3 else 64
os.makedirs(d, exist_ok=True)
rec = (b"x" * (size - 1)) + b"\n"
pa = os.path.join(d, "probe-append.bin")
po = os.path.join(d, "probe-overwrite.bin")
fa = os.open(pa, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
fo = os.open(po, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
# Preallocate by writing zeros (real blocks, not unwritten extents), then make it durable.
zero = b"\0" * (1 << 20)
need = n * size + (1 << 20)
done = 0
while done < need:
    done += os.write(fo, zero)
os.fsync(fo)
ts = {"append": [], "overwrite": []}
pos = 0
try:
    for i in range(n):
        for mode in (("append", "overwrite") if i % 2 == 0 else ("overwrite", "append")):
            if mode == "append":
                os.write(fa, rec)
                t = time.perf_counter_ns()
                os.fdatasync(fa)
            else:
                os.pwrite(fo, rec, pos)
                t = time.perf_counter_ns()
                os.fdatasync(fo)
            ts[mode].append(time.perf_counter_ns() - t)
        pos += size
finally:
    os.close(fa)
    os.close(fo)
    os.unlink(pa)
    os.unlink(po)
for mode, v in ts.items():
    v.sort()

    def q(f):
        return v[min(len(v) - 1, int(f * len(v)))] / 1000.0

    print(f"{mode}\t{q(0.50):.1f}\t{q(0.99):.1f}\t{q(0.999):.1f}\t{v[-1] / 1000.0:.1f}")
