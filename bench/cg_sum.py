"""Sum callgrind dumps: total events per request, and self events of the top functions.

argv: label count_function files...   (requests = calls of the function whose name fully matches
the regex count_function, summed over the dumps)
Env: TOP=30 (functions listed), CALLS=regex (also list call counts of matching functions).
"""
import collections
import os
import re
import sys

label, count_fn, files = sys.argv[1], sys.argv[2], sys.argv[3:]
TOP = int(os.environ.get("TOP", "30"))
calls_re = re.compile(os.environ.get("CALLS", r"^$"))
events = None
self_cost = collections.Counter()
calls_to = collections.Counter()
for path in files:
    names = {}
    fn = None
    cfn = None
    pending_calls = None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if line.startswith("events:"):
            events = line.split()[1:]
            continue
        m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            kind, i, name = m.groups()
            if name is not None:
                names[i] = name
            if kind == "fn":
                fn = names.get(i, i)
                cfn = None
            else:
                cfn = names.get(i, i)
            continue
        if line.startswith("calls="):
            pending_calls = int(line.split()[0][6:])
            continue
        if line and (line[0].isdigit() or line[0] in "+-*"):
            parts = line.split()
            vals = [int(x) for x in parts[1:]] if len(parts) > 1 else []
            if pending_calls is not None:
                # the inclusive cost line of a call: count the call, not self cost
                calls_to[cfn] += pending_calls
                pending_calls = None
                cfn = None
            elif fn is not None and vals:
                self_cost[fn] += vals[0]
                if len(vals) > 1:
                    self_cost[(fn, "sys")] += vals[1]
reqs = sum(v for k, v in calls_to.items() if k and re.fullmatch(count_fn, k))
ir = sum(v for k, v in self_cost.items() if not isinstance(k, tuple))
sysc = sum(v for k, v in self_cost.items() if isinstance(k, tuple))
print(f"\n## {label}: {reqs} requests (calls of *{count_fn}*) in {len(files)} dump(s)")
if reqs == 0:
    sys.exit(0)
print(f"- user instructions/request: {ir / reqs:,.0f}")
if sysc:
    print(f"- syscalls/request under valgrind (callgrind sysCount; not native: see bench/counts.sh): {sysc / reqs:.2f}")
print(f"- top {TOP} functions by self instructions/request:")
for k, v in sorted(((k, v) for k, v in self_cost.items() if not isinstance(k, tuple)), key=lambda kv: -kv[1])[:TOP]:
    print(f"  {v / reqs:9,.0f}  {k[:150]}")
sel = [(k, v) for k, v in calls_to.items() if k and calls_re.search(k)]
if sel:
    print("- calls/request:")
    for k, v in sorted(sel, key=lambda kv: -kv[1])[:40]:
        print(f"  {v / reqs:8.2f}  {k[:150]}")
cats = [("sha256 (aws-lc; AVX path under valgrind, SHA-NI natively)", r"sha256|SHA256|EVP_Digest|HMAC|hmac"),
        ("aes/rand (aws-lc)", r"aes_|RAND|rand|CTR_DRBG|aws_lc"),
        ("serde_json", r"serde_json|serde_core|zmij|itoa|ryu"),
        ("hyper/http/httparse/axum/tower", r"hyper|http::|httparse|axum|tower|http_body"),
        ("tokio/mio/futures", r"tokio|mio::|futures"),
        ("allocator + mem*", r"mi_|_mi_|memcpy|memmove|memset|memcmp|malloc|free|_int_|realloc|alloc::raw_vec|alloc::alloc"),
        ("prometheus_client + hashing", r"prometheus|sip::|DefaultHasher|hash_one|hashbrown"),
        ("fmt/strings", r"core::fmt|alloc::fmt|String|str::|from_utf8|to_string"),
        ("crc32c", r"crc32"),
        ("cordon_*", r"cordon"),
        ("nginx", r"^ngx_"),
        ]
agg = collections.Counter()
for k, v in self_cost.items():
    if isinstance(k, tuple):
        continue
    for cname, pat in cats:
        if re.search(pat, k):
            agg[cname] += v
            break
    else:
        agg["other"] += v
print("- self instructions/request by category (first matching pattern):")
for k, v in agg.most_common():
    print(f"  {v / reqs:9,.0f}  {k}")
