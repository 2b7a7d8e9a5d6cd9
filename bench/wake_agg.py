"""Wake-ups and switches per request from `perf script -F pid,tid,comm,event,trace`.
argv: label requests target_pid upstream_pid fds-file ("fdnum -> target" lines)"""
import collections
import re
import sys

label, reqs, pid, uppid, fdf = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
fds = {}
for line in open(fdf):
    parts = line.split()
    if len(parts) == 2:
        fds[parts[0]] = parts[1]
tids = {}  # tid -> comm, for threads of the target / upstream
wake = collections.Counter()
switch_out = collections.Counter()
writes = collections.Counter()
allsw = collections.Counter()
line_re = re.compile(r"^\s*(.*?)\s+(\d+)/(\d+)\s+([\w:]+):\s*(.*)$")
rows = []
for line in sys.stdin:
    m = line_re.match(line)
    if not m:
        continue
    comm, p, tid, ev, rest = m.groups()
    if p in (pid, uppid):
        tids[tid] = ("up:" if p == uppid else "") + comm
    rows.append((comm, p, tid, ev, rest))
def name(tid, comm):
    return tids.get(tid, "other:" + comm.split("/")[0][:12])
for comm, p, tid, ev, rest in rows:
    if ev.startswith("sched:sched_wakeup"):
        m = re.search(r"comm=(.*?) pid=(\d+)", rest)
        if not m:
            continue
        wtid = m.group(2)
        if wtid in tids and (p in (pid, uppid) or True):
            waker = name(tid, comm) if p in (pid, uppid) else ("irq/softirq-or-other:" + comm[:12])
            wake[(waker, tids[wtid])] += 1
    elif ev.startswith("sched:sched_switch"):
        mm = re.search(r"prev_comm=(.*?) prev_pid=(\d+)", rest)
        if mm:
            allsw[re.sub(r"[0-9:/]+.*$", "", mm.group(1)) or mm.group(1)] += 1
        m = re.search(r"prev_comm=(.*?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+)", rest)
        if m and m.group(2) in tids:
            switch_out[(tids[m.group(2)], "blocked" if m.group(3) not in ("R", "R+") else "preempted")] += 1
    elif ev.startswith("syscalls:sys_enter_write") and p == pid:
        m = re.search(r"fd: (0x[0-9a-f]+)", rest)
        if m:
            fd = str(int(m.group(1), 16))
            writes[(comm, fds.get(fd, "fd" + fd))] += 1
pr = lambda v: f"{v / reqs:.3f}"
print(f"\n## {label}: {reqs} requests: wake-ups (waker -> wakee) per request")
for (a, b), v in wake.most_common(20):
    print(f"  - {a} -> {b}: {pr(v)}")
print("- switched out per request (thread, why):")
for (t, why), v in switch_out.most_common(20):
    print(f"  - {t} {why}: {pr(v)}")
if writes:
    print("- write(2) per request by thread and fd target:")
    for (t, fd), v in writes.most_common(10):
        print(f"  - {t} -> {fd}: {pr(v)}")
print("- every task switched out, whole machine, per request (by comm prefix):")
for k, v in allsw.most_common(14):
    print(f"  - {k}: {pr(v)}")
