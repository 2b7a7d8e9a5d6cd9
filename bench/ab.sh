#!/usr/bin/env bash
# Same-machine A/B of Cordon binaries on the pinned gateway load: the nginx upstream and Cordon on
# CPU 0, wrk -t2 on CPU 1 (as bench/run.sh), each binary started fresh per rep, binaries
# interleaved A,B,A,B,... Per run: req/s, p50/p99, Cordon's CPU per request (utime+stime delta
# over requests) and its context switches per request (all its threads). Medians per binary.
#
# Usage: bench/ab.sh OLD_BINARY NEW_BINARY [MORE...]
#   e.g. git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release -p cordon)
#        bench/ab.sh /tmp/base/target/release/cordon target/release/cordon
# Knobs: MODE=digest-strict (see mode_spec in bench/lib.sh)  REPS=3  DURATION=10s  WARMUP=3s
#        CONNS=64  PIN=1  PORT_BASE=18580 (upstream +1, cordon +3)
# Everything listens on 127.0.0.1; every run is bounded by DURATION; servers stop on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${MODE:-digest-strict}"; REPS="${REPS:-3}"; DURATION="${DURATION:-10s}"; WARMUP="${WARMUP:-3s}"
CONNS="${CONNS:-64}"; PIN="${PIN:-1}"; PORT_BASE="${PORT_BASE:-18580}"
UP_PORT=$((PORT_BASE + 1)); CORDON_PORT=$((PORT_BASE + 3))
log() { printf '[ab %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
[ "$#" -ge 2 ] || die "usage: bench/ab.sh OLD_BINARY NEW_BINARY [MORE...]"
for b in "$@"; do [ -x "$b" ] || die "not an executable: $b"; done
command -v wrk >/dev/null && command -v nginx >/dev/null || die "needs wrk and nginx (bench/run.sh installs them)"

setup_pinning "nginx upstream and cordon"
setup_scratch cordon-ab "ab-"
start_upstream "$UP_PORT"
CORDON="$1"; DATA="$TMP/data"; mkdir -p "$DATA" "$TMP/audit"
TOKEN="$("$CORDON" token --country DE --subject bench-user --ttl 7200 --data-dir "$DATA" 2>/dev/null)"
LUA="$TMP/post.lua"
write_post_lua "$LUA" "$TOKEN"
URL="http://127.0.0.1:$CORDON_PORT/v1/chat/completions"
THREADS=2; [ "$CONNS" -ge 2 ] || THREADS=1
# wrk's 812.00us / 1.23ms / 1.02s -> microseconds
to_us() { awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n*1000; else print n*1e6 }'; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status | awk '/^(non)?voluntary_ctxt_switches/{s+=$2} END{print s}'; }

run_one() { # label binary rep
  local policy="$TMP/policy-$3-$1.yaml" pid out reqs c0 c1 s0 s1 tck
  write_policy "$MODE" "$policy"
  # A fresh store per run: every binary starts from the same empty state.
  sed -i "s|$TMP/audit/$MODE/EU|$TMP/audit/$1-$3/EU|" "$policy"
  : >"$TMP/cordon.out"
  "${SRV[@]}" "$2" serve --config "$policy" --data-dir "$DATA" --listen "127.0.0.1:$CORDON_PORT" >"$TMP/cordon.out" 2>"$TMP/cordon.err" &
  pid=$!; PIDS+=("$pid")
  local deadline=$((SECONDS + 30))
  until grep -q "cordon listening on" "$TMP/cordon.out"; do
    kill -0 "$pid" 2>/dev/null || die "$1 exited: $(tail -5 "$TMP/cordon.err")"
    [ "$SECONDS" -lt "$deadline" ] || die "$1 did not start"
    sleep 0.1
  done
  "${CLI[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -s "$LUA" "$URL" >/dev/null
  tck="$(getconf CLK_TCK)"; c0="$(cpu_ticks "$pid")"; s0="$(switches "$pid")"
  out="$("${CLI[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$LUA" "$URL")"
  c1="$(cpu_ticks "$pid")"; s1="$(switches "$pid")"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  grep -q 'Non-2xx' <<<"$out" && die "$1: non-2xx answers: $out"
  reqs="$(awk '/requests in/{print $1}' <<<"$out")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$3" "$(awk '/Requests\/sec/{print $2}' <<<"$out")" \
    "$(to_us "$(awk '$1=="50%"{print $2}' <<<"$out")")" "$(to_us "$(awk '$1=="99%"{print $2}' <<<"$out")")" \
    "$(awk -v a="$c0" -v b="$c1" -v n="$reqs" -v t="$tck" 'BEGIN{printf "%.1f", (b-a)/t*1e6/n}')" \
    "$(awk -v a="$s0" -v b="$s1" -v n="$reqs" 'BEGIN{printf "%.2f", (b-a)/n}')" \
    "$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$RAW" >&2
}

printf 'binary\trep\treq/s\tp50_us\tp99_us\tcpu_us_per_req\tswitches_per_req\tload1\n' >"$RAW"
log "$PINNING; mode $MODE; $REPS reps x $DURATION; binaries: $*"
for rep in $(seq 1 "$REPS"); do
  k=0
  for b in "$@"; do k=$((k + 1)); run_one "bin$k" "$b" "$rep"; done
done
{
  echo "# Cordon A/B, $STAMP ($(nproc) CPUs, $(uname -r), $PINNING, mode $MODE, wrk -c$CONNS -d$DURATION)"
  echo
  k=0; for b in "$@"; do k=$((k + 1)); echo "- bin$k: $b"; done
  echo
  echo "| binary | median req/s | median p50 / p99 (µs) | median CPU µs/request | median switches/request | runs (req/s) |"
  echo "|---|---:|---:|---:|---:|---|"
  k=0
  for b in "$@"; do
    k=$((k + 1))
    awk -F'\t' -v b="bin$k" '$1==b' "$RAW" | python3 -c '
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in sys.stdin]
med = lambda i: st.median(float(r[i]) for r in rows)
runs = " / ".join(r[2] for r in rows)
print(f"| {rows[0][0]} | {med(2):,.0f} | {med(3):,.0f} / {med(4):,.0f} | {med(5):.1f} | {med(6):.2f} | {runs} |")'
  done
  echo
  echo "Raw rows: bench/out/ab-$STAMP.tsv"
} | tee "$OUT"
