"""Send exactly N POSTs over C keep-alive connections (C threads), fail on any non-200.
argv: host port path n conns token body"""
import http.client
import sys
import threading

host, port, path, n, conns, token, body = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7].encode()
headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
bad = []


def run(k):
    c = http.client.HTTPConnection(host, port, timeout=60)
    for _ in range(k):
        c.request("POST", path, body=body, headers=headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            bad.append(r.status)
    c.close()


ts = [threading.Thread(target=run, args=(n // conns + (1 if i < n % conns else 0),)) for i in range(conns)]
for t in ts:
    t.start()
for t in ts:
    t.join()
if bad:
    sys.exit(f"{len(bad)} non-200 answers: {bad[:5]}")
print(n)
