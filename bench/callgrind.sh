#!/usr/bin/env bash
# User-space instructions per request, exactly (callgrind), for the nginx proxy and for Cordon
# binaries, in the bench/run.sh setup (nginx upstream on 127.0.0.1, digest-strict policy, a
# `cordon token` JWT). The target runs under `valgrind --tool=callgrind --instr-atstart=no`;
# after WARM requests, instrumentation is switched on for exactly N requests (bench/nreq.py: C
# keep-alive connections, every answer must be 200), then off, and the profile is dumped. The
# requests in the window are counted from the profile itself (calls of forward::respond for
# Cordon, ngx_http_create_request for nginx). Caveat: under valgrind aws-lc takes its AVX SHA-256
# path (no SHA-NI), so SHA-256's share is several times what it is natively; and the sysCount
# column reflects valgrind's serialized threads (tiny audit batches), not native syscall counts
# (bench/counts.sh measures those).
#
# Usage: bench/callgrind.sh CORDON_BINARY [MORE...]
# Knobs: N=2000  C=8  WARM=300  PORT_BASE=19180  NGINX_TOO=1  SYSTIME=1 (--collect-systime)  WORKERS=
#        TOP=30 (functions listed)  CALLS=regex (call counts per request of matching functions)
# Output: bench/out/cg-<stamp>/{nginx,binK}.<pid>.1 (callgrind_annotate / bench/cg_callers.py) and
# bench/out/cg-<stamp>.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${MODE:-digest-strict}"; N="${N:-2000}"; C="${C:-8}"; WARM="${WARM:-300}"
PORT_BASE="${PORT_BASE:-19180}"; NGINX_TOO="${NGINX_TOO:-1}"; PIN=0
UP_PORT=$((PORT_BASE + 1)); NGX_PORT=$((PORT_BASE + 2)); CORDON_PORT=$((PORT_BASE + 3))
log() { printf '[cg %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
[ "$#" -ge 1 ] || die "usage: bench/callgrind.sh CORDON_BINARY [MORE...]"
setup_pinning ""
setup_scratch cordon-cg "cg-"
CG_DIR="$OUT_DIR/cg-$STAMP"; mkdir -p "$CG_DIR"
start_upstream "$UP_PORT"
CORDON="$1"; DATA="$TMP/data"; mkdir -p "$DATA" "$TMP/audit"
TOKEN="$("$CORDON" token --country DE --subject bench-user --ttl 7200 --data-dir "$DATA" 2>/dev/null)"
write_post_lua "$TMP/post.lua" "$TOKEN"
VG=(valgrind --tool=callgrind --instr-atstart=no --dump-instr=no)
[ "${SYSTIME:-1}" = 0 ] || VG+=(--collect-systime=nsec)

# run_cg label url pid
run_cg() {
  local label="$1" url="$2" pid="$3" port
  port="${url#http://127.0.0.1:}"; port="${port%%/*}"
  timeout 300 python3 "$ROOT/bench/nreq.py" 127.0.0.1 "$port" /v1/chat/completions "$WARM" "$C" "$TOKEN" "$BODY" >/dev/null
  callgrind_control -i on "$pid" >/dev/null
  timeout 600 python3 "$ROOT/bench/nreq.py" 127.0.0.1 "$port" /v1/chat/completions "$N" "$C" "$TOKEN" "$BODY" >"$TMP/nreq-$label.txt"
  callgrind_control -i off "$pid" >/dev/null
  callgrind_control -d "$label" "$pid" >/dev/null
  sleep 1
  log "$label: $(cat "$TMP/nreq-$label.txt") requests sent"
}

wait_log() { # file pattern seconds pid
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    kill -0 "$4" 2>/dev/null || die "exited: $(tail -5 "$1" "$1".err 2>/dev/null)"
    [ "$SECONDS" -lt "$deadline" ] || die "no '$2' in $1 within $3 s"
    sleep 0.5
  done
}

if [ "$NGINX_TOO" = 1 ]; then
  PROXY_CONF="$(proxy_conf 1)"
  NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
  (cd "$CG_DIR" && exec "${VG[@]}" --callgrind-out-file="$CG_DIR/nginx.%p" "$NGINX" -c "$PROXY_CONF" -p "$TMP/nginx-proxy" \
    -e "$TMP/nginx-proxy/error.log" -g 'daemon off; master_process off;' >"$TMP/vg-nginx.log" 2>&1) &
  vpid=$!; PIDS+=("$vpid")
  wait_port "127.0.0.1:$NGX_PORT" 120 || die "nginx under valgrind did not start"
  run_cg nginx "http://127.0.0.1:$NGX_PORT/v1/chat/completions" "$vpid"
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
  python3 "$ROOT/bench/cg_sum.py" nginx ngx_http_create_request "$CG_DIR"/nginx.* | tee -a "$OUT"
fi

k=0
for b in "$@"; do
  k=$((k + 1))
  policy="$TMP/policy-$k.yaml"
  write_policy "$MODE" "$policy"
  sed -i "s|$TMP/audit/$MODE/EU|$TMP/audit/$k/EU|" "$policy"
  (cd "$CG_DIR" && exec "${VG[@]}" --callgrind-out-file="$CG_DIR/bin$k.%p" "$b" serve --config "$policy" --data-dir "$DATA" \
    --listen "127.0.0.1:$CORDON_PORT" ${WORKERS:+--workers "$WORKERS"} >"$TMP/cordon-$k.out" 2>"$TMP/cordon-$k.out.err") &
  vpid=$!; PIDS+=("$vpid")
  wait_log "$TMP/cordon-$k.out" "cordon listening on" 180 "$vpid"
  run_cg "bin$k" "http://127.0.0.1:$CORDON_PORT/v1/chat/completions" "$vpid"
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
  python3 "$ROOT/bench/cg_sum.py" "bin$k" "cordon_gateway::forward::respond" "$CG_DIR"/bin"$k".* | tee -a "$OUT"
done
log "profiles in $CG_DIR; summary $OUT"
