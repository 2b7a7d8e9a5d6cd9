"""Callers of functions matching a regex in callgrind dumps: calls and inclusive Ir per request.
argv: requests regex files..."""
import collections
import re
import sys

reqs, pat, files = int(sys.argv[1]), re.compile(sys.argv[2]), sys.argv[3:]
edges = collections.Counter()
incl = collections.Counter()
for path in files:
    names = {}
    fn = cfn = None
    pending = None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            kind, i, n = m.groups()
            if n is not None:
                names[i] = n
            if kind == "fn":
                fn = names.get(i, i)
            else:
                cfn = names.get(i, i)
            continue
        if line.startswith("calls="):
            pending = int(line.split()[0][6:])
            continue
        if pending is not None and line and (line[0].isdigit() or line[0] in "+-*"):
            parts = line.split()
            if cfn and pat.search(cfn):
                edges[(fn, cfn)] += pending
                incl[(fn, cfn)] += int(parts[1]) if len(parts) > 1 else 0
            pending = None
for (a, b), v in sorted(edges.items(), key=lambda kv: -incl[kv[0]])[:int(__import__("os").environ.get("N", "40"))]:
    print(f"{v / reqs:7.2f} calls {incl[(a, b)] / reqs:9,.0f} Ir  {a[:110]}  ->  {b[:60]}")
