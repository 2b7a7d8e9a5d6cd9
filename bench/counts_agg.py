"""Aggregate `perf script -F pid,tid,comm,trace` of raw_syscalls:sys_exit into per-request counts.

argv: label requests target_pid upstream_pid nr_names.tsv sw0 sw1 (each "vol nonvol") up0 up1
      cpu0 cpu1 (each "utime stime" ticks) clk_tck
"""
import collections
import re
import sys

label, reqs, pid, uppid, nrf = sys.argv[1:6]
sw0, sw1, up0, up1, c0, c1, tck = sys.argv[6:13]
reqs = int(reqs)
names = dict(line.split("\t") for line in open(nrf).read().splitlines())
line_re = re.compile(r"^\s*(.*?)\s+(\d+)/(\d+)\s+NR (\d+) = (-?\d+)")
calls = collections.Counter()
fails = collections.Counter()
zero = collections.Counter()
threads = collections.defaultdict(collections.Counter)
up = collections.Counter()
for line in sys.stdin:
    m = line_re.match(line)
    if not m:
        continue
    comm, p, tid, nr, ret = m.group(1), m.group(2), m.group(3), m.group(4), int(m.group(5))
    name = names.get(nr, "nr" + nr)
    if p == pid:
        calls[name] += 1
        threads[comm][name] += 1
        if ret < 0:
            fails[(name, ret)] += 1
        elif ret == 0:
            zero[name] += 1
    elif p == uppid:
        up[name] += 1

a0, a1 = [int(x) for x in sw0.split()], [int(x) for x in sw1.split()]
b0, b1 = [int(x) for x in up0.split()], [int(x) for x in up1.split()]
t0, t1 = [int(x) for x in c0.split()], [int(x) for x in c1.split()]
tck = int(tck)
pr = lambda x: f"{x / reqs:.3f}"
total = sum(calls.values())
print(f"\n## {label}: {reqs} requests")
print(f"- context switches/request: voluntary {pr(a1[0]-a0[0])}, nonvoluntary {pr(a1[1]-a0[1])};"
      f" upstream nginx worker: {pr(b1[0]-b0[0])} / {pr(b1[1]-b0[1])}")
print(f"- page faults/request: minor {pr(t1[2]-t0[2])}, major {pr(t1[3]-t0[3])}")
print(f"- CPU us/request (utime+stime, 10 ms ticks, noisy): user {(t1[0]-t0[0])/tck*1e6/reqs:.1f}, sys {(t1[1]-t0[1])/tck*1e6/reqs:.1f}")
print(f"- syscalls/request: {pr(total)} (upstream nginx worker: {pr(sum(up.values()))})")
for name, n in calls.most_common():
    f = sum(v for (nm, r), v in fails.items() if nm == name)
    ferr = ", ".join(f"{r}:{pr(v)}" for (nm, r), v in sorted(fails.items()) if nm == name)
    extra = f"  (failed {pr(f)}: {ferr})" if f else ""
    z = f"  (ret 0: {pr(zero[name])})" if zero[name] else ""
    print(f"  - {name}: {pr(n)}{extra}{z}")
print("- by thread (comm): " + "; ".join(
    f"{c}: " + ", ".join(f"{nm} {pr(v)}" for nm, v in cnt.most_common(8)) for c, cnt in sorted(threads.items())))
print("- upstream worker: " + ", ".join(f"{nm} {pr(v)}" for nm, v in up.most_common(8)))
