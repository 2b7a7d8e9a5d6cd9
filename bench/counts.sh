#!/usr/bin/env bash
# Per-request COUNTS (robust to a noisy machine, unlike req/s): syscalls by type (with how many
# failed, e.g. EAGAIN), context switches, for the nginx proxy and for one or more Cordon binaries,
# proxying the same nginx upstream, under the bench/run.sh setup (pinned: servers on CPU 0, wrk on
# CPU 1; the digest-strict policy; a `cordon token` JWT).
#
# Usage: bench/counts.sh CORDON_BINARY [MORE...]
# Knobs: MODE=digest-strict  DURATION=3s  WARMUP=2s  CONNS=64  PIN=1  PORT_BASE=19080  REPS=1
#        WORKERS=""  (cordon serve --workers)
#        WAKE=1     instead of syscalls: who wakes whom (sched_wakeup), why threads leave the CPU
#                   (sched_switch), write(2) by fd target (eventfd vs segment), every task's switches
#        PROFILE=1  instead of syscalls: a cpu-clock profile by symbol (us/request; perf's own
#                   sampling inflates the absolute figures, compare shares)
# Per run, always: requests (wrk), context switches of the target (voluntary / nonvoluntary, all
# its threads) and of the upstream nginx worker, minor/major faults, utime/stime per thread, CPU 0's
# /proc/stat split, CPU 0's softirqs and interrupts, loopback TCP segment counters (nstat, whole
# machine). Default mode: syscalls from `perf record -e raw_syscalls:sys_exit -a`, attributed by
# pid and thread, with failures (e.g. -11 EAGAIN) and zero returns. Every figure is divided by the
# requests wrk completed in the measured run, so the counts hold on a busy machine (the times do not).
# Everything listens on 127.0.0.1; every load is bounded by DURATION; servers stop on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${MODE:-digest-strict}"; DURATION="${DURATION:-3s}"; WARMUP="${WARMUP:-2s}"
CONNS="${CONNS:-64}"; PIN="${PIN:-1}"; PORT_BASE="${PORT_BASE:-19080}"; REPS="${REPS:-1}"
WORKERS="${WORKERS:-}"
UP_PORT=$((PORT_BASE + 1)); NGX_PORT=$((PORT_BASE + 2)); CORDON_PORT=$((PORT_BASE + 3))
log() { printf '[counts %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
[ "$#" -ge 1 ] || die "usage: bench/counts.sh CORDON_BINARY [MORE...]"
for b in "$@"; do [ -x "$b" ] || die "not an executable: $b"; done
command -v perf >/dev/null || die "needs perf"

setup_pinning "nginx upstream, nginx proxy and cordon"
setup_scratch cordon-counts "counts-"
start_upstream "$UP_PORT"
PROXY_CONF="$(proxy_conf 1)"
"${SRV[@]}" "$NGINX" -c "$PROXY_CONF" -p "$TMP/nginx-proxy" -e "$TMP/nginx-proxy/error.log" -g 'daemon off;' 2>>"$TMP/nginx-proxy/stderr" &
NGX_MASTER=$!; PIDS+=("$NGX_MASTER")
wait_port "127.0.0.1:$NGX_PORT" 10 || die "nginx proxy did not start"
UP_MASTER="${PIDS[0]}"

CORDON="$1"; DATA="$TMP/data"; mkdir -p "$DATA" "$TMP/audit"
TOKEN="$("$CORDON" token --country DE --subject bench-user --ttl 7200 --data-dir "$DATA" 2>/dev/null)"
LUA="$TMP/post.lua"
write_post_lua "$LUA" "$TOKEN"
THREADS=2; [ "$CONNS" -ge 2 ] || THREADS=1
NR_NAMES="$TMP/nr.tsv"
awk '/^#define __NR_/{sub("__NR_","",$2); print $3"\t"$2}' /usr/include/x86_64-linux-gnu/asm/unistd_64.h >"$NR_NAMES"

switches() { # pid -> "voluntary nonvoluntary" summed over its threads
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/{v+=$2} /^nonvoluntary_ctxt_switches/{n+=$2} END{print v+0, n+0}'
}
cpu_ticks() { awk '{print $14, $15, $10, $12}' "/proc/$1/stat"; } # utime stime minflt majflt

# measure label url pid [pid2 = the upstream worker, reported separately]
measure() {
  local label="$1" url="$2" pid="$3" uppid="$4" out reqs s0 s1 u0 u1 c0 c1 perfpid data
  "${CLI[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -s "$LUA" "$url" >/dev/null
  data="$TMP/perf-$label.data"
  if [ "${WAKE:-0}" = 1 ]; then
    # who wakes whom: sched_wakeup runs in the waker's context; plus write(2)'s fd (eventfd vs file)
    perf record -q -e sched:sched_wakeup,sched:sched_switch,syscalls:sys_enter_write -a -o "$data" 2>/dev/null &
  elif [ "${PROFILE:-0}" = 1 ]; then
    # cpu-clock every 20 us of on-CPU time, whole system: kernel+user time by symbol per request.
    perf record -q -e cpu-clock/period=20000/ -a -o "$data" 2>/dev/null &
  else
    perf record -q -e raw_syscalls:sys_exit -a -o "$data" 2>/dev/null &
  fi
  perfpid=$!
  sleep 0.5
  s0="$(switches "$pid")"; u0="$(switches "$uppid")"; c0="$(cpu_ticks "$pid")"
  grep '^cpu0 ' /proc/stat >"$TMP/cpu0a"
  cat /proc/softirqs >"$TMP/sirq0"; cat /proc/interrupts >"$TMP/irq0"
  nstat -n >/dev/null 2>&1 || true   # reset nstat's history: the next call reports deltas
  for t in /proc/"$pid"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14, $15}' "$t/stat")"; done >"$TMP/thr0"
  out="$("${CLI[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$LUA" "$url")"
  s1="$(switches "$pid")"; u1="$(switches "$uppid")"; c1="$(cpu_ticks "$pid")"
  nstat -z 2>/dev/null >"$TMP/nstat" || true
  grep '^cpu0 ' /proc/stat >"$TMP/cpu0b"
  cat /proc/softirqs >"$TMP/sirq1"; cat /proc/interrupts >"$TMP/irq1"
  for t in /proc/"$pid"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14, $15}' "$t/stat")"; done >"$TMP/thr1"
  kill -INT "$perfpid"; wait "$perfpid" 2>/dev/null || true
  grep -q 'Non-2xx' <<<"$out" && die "$label: non-2xx answers: $out"
  reqs="$(awk '/requests in/{print $1}' <<<"$out")"
  {
    echo "- loopback TCP, whole machine (wrk + proxy + upstream), per request:"
    awk -v n="$reqs" '$1 ~ /^(TcpInSegs|TcpOutSegs|TcpExtDelayedACKs|TcpExtTCPPureAcks|TcpExtTCPHPAcks|TcpExtTCPLossProbes|TcpExtTCPAutoCorking|TcpExtTCPDelivered|TcpExtTCPBacklogCoalesce|TcpExtTCPRcvCoalesce|TcpExtTCPHPHits|TcpExtTCPOFOQueue|TcpExtTCPWantZeroWindowAdv|TcpExtTCPToZeroWindowAdv|IpExtInOctets)$/ {printf "  - %s: %.3f\n", $1, $2/n}' "$TMP/nstat"
    paste "$TMP/cpu0a" "$TMP/cpu0b" | awk -v n="$reqs" -v t="$(getconf CLK_TCK)" '{printf "- CPU 0 (the servers core), us/request: user %.1f nice %.1f system %.1f idle %.1f iowait %.1f irq %.1f softirq %.1f steal %.1f\n", ($13-$2)/t*1e6/n, ($14-$3)/t*1e6/n, ($15-$4)/t*1e6/n, ($16-$5)/t*1e6/n, ($17-$6)/t*1e6/n, ($18-$7)/t*1e6/n, ($19-$8)/t*1e6/n, ($20-$9)/t*1e6/n}'
    echo "- CPU 0 softirqs / interrupts per request (nonzero):"
    awk -v n="$reqs" 'NR==FNR{a[$1]=$2; next} ($1 in a) && $2-a[$1] > 0 {printf "  - %s %.3f\n", $1, ($2-a[$1])/n}' "$TMP/sirq0" "$TMP/sirq1"
    awk -v n="$reqs" 'NR==FNR{a[$1]=$2; next} ($1 in a) && $2-a[$1] > 0 && ($2-a[$1])/n >= 0.001 {d=$0; sub(/^ *[^ ]+ +[0-9]+ +[0-9]+ */, "", d); printf "  - irq %s %.3f (%s)\n", $1, ($2-a[$1])/n, d}' "$TMP/irq0" "$TMP/irq1"
    echo "- per-thread CPU ticks (utime stime) during the run:"
    awk 'NR==FNR{a[$1]+=$2; b[$1]+=$3; next} {c[$1]+=$2; d[$1]+=$3} END{for (k in c) printf "  - %s: user %d sys %d\n", k, c[k]-a[k], d[k]-b[k]}' "$TMP/thr0" "$TMP/thr1"
  } | tee -a "$OUT"
  log "$label: $reqs requests, $(awk '/Requests\/sec/{print $2}' <<<"$out") req/s (noisy), load $(cut -d' ' -f1 /proc/loadavg)"
  if [ "${WAKE:-0}" = 1 ]; then
    ls -l /proc/"$pid"/fd 2>/dev/null | awk '{print $(NF-2), $NF}' >"$TMP/fds"
    perf script -i "$data" -F pid,tid,comm,event,trace 2>/dev/null | python3 "$ROOT/bench/wake_agg.py" "$label" "$reqs" "$pid" "$uppid" "$TMP/fds" | tee -a "$OUT"
    rm -f "$data"; return 0
  fi
  if [ "${PROFILE:-0}" = 1 ]; then
    log "$label: profile (us/request = samples x 20 us / requests), pid $pid"
    perf report -i "$data" --pid "$pid" --sort dso,sym --stdio -n -F overhead,sample,dso,sym 2>/dev/null \
      | awk -v n="$reqs" '/^ *[0-9.]+%/{s=$2; $1=""; $2=""; printf "%7.2f us/req  %s\n", s*20/n, $0}' | sort -rn | awk -v t="${TOP:-45}" 'NR<=t' | tee -a "$OUT"
    perf report -i "$data" --pid "$pid" --sort comm --stdio -n -F overhead,sample,comm 2>/dev/null \
      | awk -v n="$reqs" '/^ *[0-9.]+%/{printf "%7.2f us/req  thread %s\n", $2*20/n, $3}' | tee -a "$OUT"
    rm -f "$data"; return 0
  fi
  perf script -i "$data" -F pid,tid,comm,trace 2>/dev/null | python3 "$ROOT/bench/counts_agg.py" \
    "$label" "$reqs" "$pid" "$uppid" "$NR_NAMES" "$s0" "$s1" "$u0" "$u1" "$c0" "$c1" "$(getconf CLK_TCK)" | tee -a "$OUT"
  rm -f "$data"
}

worker_of() { pgrep -P "$1" | head -1; }
NGX_WORKER="$(worker_of "$NGX_MASTER")"; UP_WORKER="$(worker_of "$UP_MASTER")"
[ -n "$NGX_WORKER" ] && [ -n "$UP_WORKER" ] || die "no nginx workers"

echo "# counts $STAMP, $(nproc) CPUs, $(uname -r), $PINNING, mode $MODE, wrk -c$CONNS -d$DURATION" | tee "$OUT"
for rep in $(seq 1 "$REPS"); do
  measure "nginx-r$rep" "http://127.0.0.1:$NGX_PORT/v1/chat/completions" "$NGX_WORKER" "$UP_WORKER"
  k=0
  for b in "$@"; do
    k=$((k + 1))
    policy="$TMP/policy-$k-$rep.yaml"
    write_policy "$MODE" "$policy"
    sed -i "s|$TMP/audit/$MODE/EU|$TMP/audit/$k-$rep/EU|" "$policy"
    : >"$TMP/cordon.out"
    extra=(); [ -z "$WORKERS" ] || extra=(--workers "$WORKERS")
    "${SRV[@]}" "$b" serve --config "$policy" --data-dir "$DATA" --listen "127.0.0.1:$CORDON_PORT" "${extra[@]}" >"$TMP/cordon.out" 2>"$TMP/cordon.err" &
    cpid=$!; PIDS+=("$cpid")
    deadline=$((SECONDS + 30))
    until grep -q "cordon listening on" "$TMP/cordon.out"; do
      kill -0 "$cpid" 2>/dev/null || die "bin$k exited: $(tail -5 "$TMP/cordon.err")"
      [ "$SECONDS" -lt "$deadline" ] || die "bin$k did not start"
      sleep 0.1
    done
    measure "bin$k-r$rep" "http://127.0.0.1:$CORDON_PORT/v1/chat/completions" "$cpid" "$UP_WORKER"
    kill "$cpid"; wait "$cpid" 2>/dev/null || true
  done
done
log "written to $OUT"
