#!/usr/bin/env bash
# Whole-gateway load benchmark: the same OpenAI chat-completions upstream on 127.0.0.1, hit
#   (a) directly, (b) through nginx (reverse proxy, keep-alive pool), (c) through Cordon
# (JWT verification, policy decision, audit append + fsync before forwarding), with wrk.
# Runs are interleaved a,b,c,a,b,c,... and the medians are reported, together with the disk's
# fdatasync p50/p99 measured in the audit store's directory in the same run, and Cordon's RSS.
#
# Usage: bench/run.sh            (from the repository root or anywhere)
# Knobs (environment):
#   DURATION=10s  CONNS=64  THREADS=2  REPS=3  WARMUP=3s
#   MODES="digest-strict encrypted-strict digest-overlapped digest-strict-nocache"
#       (also: encrypted-strict-nocache, digest-strict-batch200, digest-strict-batch1000 = audit.batch_delay_us)
#       each mode = tier-1 audit_payload, durability, token cache (see mode_spec in bench/lib.sh); the first
#       mode is the headline configuration
#   LOW_CONNS=1   also run the first mode at this many connections (wrk -t1), where nothing
#       saturates: the added latency there is the per-request cost, not queueing (0 = skip)
#   PIN=1          pin servers (upstream nginx, proxy nginx, cordon) to CPU 0 and wrk to CPU 1
#   NGINX_WORKERS=1  worker_processes of the proxy nginx (use `auto` with PIN=0, where Cordon's
#       runtime also uses every core, for a whole-machine comparison)
#   PORT_BASE=18080  (upstream +1, nginx proxy +2, cordon +3)
#   BENCH_TMPDIR=/tmp  where the scratch dir (policy, data dir, audit store) goes: it must be on
#       the disk you want to measure (the script prints the filesystem type; tmpfs fsyncs are free)
# Everything listens on 127.0.0.1 only; every load run is bounded by DURATION; all servers are
# stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
REPS="${REPS:-3}"
WARMUP="${WARMUP:-3s}"
MODES="${MODES:-digest-strict encrypted-strict digest-overlapped digest-strict-nocache}"
PIN="${PIN:-1}"
NGINX_WORKERS="${NGINX_WORKERS:-1}"
PORT_BASE="${PORT_BASE:-18080}"
UP_PORT=$((PORT_BASE + 1))
NGX_PORT=$((PORT_BASE + 2))
CORDON_PORT=$((PORT_BASE + 3))
FSYNC_N="${FSYNC_N:-2000}"
LOW_CONNS="${LOW_CONNS:-1}"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- 1. tools and the release build
need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}" >/dev/null; then
    $SUDO apt-get update >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}" >/dev/null
  fi
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed for the fsync probe and the summary"

log "building cordon (release)"
(cd "$ROOT" && cargo build --release -p cordon >&2)
CORDON="$ROOT/target/release/cordon"
[ -x "$CORDON" ] || die "no $CORDON after the build"

setup_pinning "servers"

# ---------------------------------------------------------------- scratch dir and cleanup
setup_scratch cordon-bench ""

# ---------------------------------------------------------------- 2. upstream and nginx proxy
PROXY_CONF="$(proxy_conf "$NGINX_WORKERS")"

log "starting nginx upstream on 127.0.0.1:$UP_PORT and nginx proxy on 127.0.0.1:$NGX_PORT"
start_upstream "$UP_PORT"
"${SRV[@]}" "$NGINX" -c "$PROXY_CONF" -p "$TMP/nginx-proxy" -e "$TMP/nginx-proxy/error.log" -g 'daemon off;' 2>>"$TMP/nginx-proxy/stderr" &
PIDS+=($!)
wait_port "127.0.0.1:$NGX_PORT" 10 || die "nginx proxy did not start: $(cat "$TMP"/nginx-proxy/*.log "$TMP/nginx-proxy/stderr" 2>/dev/null)"

# ---------------------------------------------------------------- 3. identity and policies
DATA="$TMP/data"; mkdir -p "$DATA" "$TMP/audit"
TOKEN="$("$CORDON" token --country DE --subject bench-user --ttl 7200 --data-dir "$DATA" 2>/dev/null)"
[ -f "$DATA/dev-jwks.json" ] || die "cordon token did not write $DATA/dev-jwks.json"

CORDON_PID=""
start_cordon() { # policy-file
  : >"$TMP/cordon.out"
  "${SRV[@]}" "$CORDON" serve --config "$1" --data-dir "$DATA" --listen "127.0.0.1:$CORDON_PORT" \
    >"$TMP/cordon.out" 2>"$TMP/cordon.err" &
  CORDON_PID=$!
  PIDS+=("$CORDON_PID")
  local deadline=$((SECONDS + 30))
  until grep -q "cordon listening on" "$TMP/cordon.out"; do
    kill -0 "$CORDON_PID" 2>/dev/null || die "cordon exited: $(tail -20 "$TMP/cordon.err")"
    [ "$SECONDS" -lt "$deadline" ] || die "cordon did not start within 30 s: $(tail -20 "$TMP/cordon.err")"
    sleep 0.1
  done
}
stop_cordon() {
  [ -n "$CORDON_PID" ] || return 0
  kill "$CORDON_PID" 2>/dev/null || true
  wait "$CORDON_PID" 2>/dev/null || true
  CORDON_PID=""
}

# ---------------------------------------------------------------- 4. wrk
LUA="$TMP/post.lua"
write_post_lua "$LUA" "$TOKEN"

url_of() {
  case "$1" in
    direct) echo "http://127.0.0.1:$UP_PORT/v1/chat/completions" ;;
    nginx) echo "http://127.0.0.1:$NGX_PORT/v1/chat/completions" ;;
    cordon) echo "http://127.0.0.1:$CORDON_PORT/v1/chat/completions" ;;
  esac
}

# Sanity: every target answers 200 with a chat.completion (and Cordon with its decision header).
check_target() {
  local hdr body code
  hdr="$TMP/check.hdr"
  body="$(curl -sS -o - -D "$hdr" -w '\n%{http_code}' -X POST -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $TOKEN" --data "$BODY" "$(url_of "$1")")" || die "$1: curl failed"
  code="${body##*$'\n'}"
  [ "$code" = 200 ] || die "$1 answered $code: ${body%$'\n'*}"
  grep -q '"chat.completion"' <<<"$body" || die "$1: not a chat.completion: $body"
  if [ "$1" = cordon ]; then grep -qi '^x-cordon-decision-id' "$hdr" || die "cordon: no x-cordon-decision-id"; fi
}

# to microseconds: 812.00us / 1.23ms / 1.02s
to_us() { awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n*1000; else if (v ~ /m$/) print n*60e6; else print n*1e6 }'; }

# run_wrk mode target rep duration [conns threads] -> appends a TSV row to $RAW
run_wrk() {
  local mode="$1" target="$2" rep="$3" dur="$4" c="${5:-$CONNS}" th="${6:-$THREADS}" out p50 p99 rps non2xx errs load1
  load1="$(cut -d' ' -f1 /proc/loadavg)"
  local sampler=""
  if [ "$target" = cordon ] && [ -n "$CORDON_PID" ]; then
    ( while kill -0 "$CORDON_PID" 2>/dev/null; do
        awk '/^VmRSS:/{print $2}' "/proc/$CORDON_PID/status" 2>/dev/null || true
        sleep 0.5
      done ) >>"$TMP/rss-samples" &
    sampler=$!
  fi
  out="$("${CLI[@]}" wrk -t"$th" -c"$c" -d"$dur" --latency -s "$LUA" "$(url_of "$target")")"
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; fi
  printf '%s\n' "$out" >>"$TMP/wrk.log"
  p50="$(to_us "$(awk '$1=="50%"{print $2}' <<<"$out")")"
  p99="$(to_us "$(awk '$1=="99%"{print $2}' <<<"$out")")"
  rps="$(awk '$1=="Requests/sec:"{print $2}' <<<"$out")"
  non2xx="$(awk '/Non-2xx or 3xx responses:/{print $NF}' <<<"$out")"; non2xx="${non2xx:-0}"
  errs="$(awk '/Socket errors:/{s=0; for(i=1;i<=NF;i++) if ($i ~ /^[0-9]+,?$/) s+=$i; print s}' <<<"$out")"; errs="${errs:-0}"
  [ "$non2xx" = 0 ] || log "WARNING: $target ($mode rep $rep): $non2xx non-2xx responses"
  [ "$errs" = 0 ] || log "WARNING: $target ($mode rep $rep): $errs socket errors"
  if [ "$rep" != warmup ]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$target" "$rep" "$rps" "$p50" "$p99" "$non2xx" "$errs" "$load1" >>"$RAW"
  fi
  log "$mode $target rep $rep (c$c, load $load1): $rps req/s, p50 ${p50} us, p99 ${p99} us"
}

# ---------------------------------------------------------------- 5. fsync probe
# The same probe as bench/audit.sh: N x (64-byte O_APPEND write + fdatasync), p50/p99/p99.9/max us.
FSYNC_PY="$ROOT/bench/audit/fsync.py"

# ---------------------------------------------------------------- run
printf 'mode\ttarget\trep\trps\tp50_us\tp99_us\tnon2xx\tsocket_errors\tload1\n' >"$RAW"
RSS_ROWS=()
MEANS_ROWS=()
FIRST_MODE="${MODES%% *}"
FSTYPE="$(stat -f -c %T "$TMP")"
log "scratch dir $TMP ($FSTYPE), $PINNING, wrk -t$THREADS -c$CONNS -d$DURATION, $REPS reps, modes: $MODES"

check_target direct
check_target nginx
for mode in $MODES; do
  POLICY="$TMP/policy-$mode.yaml"
  write_policy "$mode" "$POLICY"
  start_cordon "$POLICY"
  start_hwm="$(awk '/^VmHWM:/{print $2}' "/proc/$CORDON_PID/status")"
  : >"$TMP/rss-samples"
  check_target cordon
  if [ "$mode" = "$FIRST_MODE" ]; then
    log "fsync probe: $FSYNC_N x (64-byte append + fdatasync) in $TMP/audit"
    FSYNC="$("${SRV[@]}" python3 "$FSYNC_PY" "$TMP/audit/$mode/probe" "$FSYNC_N")"
    log "fsync p50/p99/p99.9/max us: $FSYNC"
  fi
  for t in direct nginx cordon; do run_wrk "$mode" "$t" warmup "$WARMUP"; done
  for rep in $(seq 1 "$REPS"); do
    for t in direct nginx cordon; do run_wrk "$mode" "$t" "$rep" "$DURATION"; done
  done
  if [ "$mode" = "$FIRST_MODE" ] && [ "$LOW_CONNS" -gt 0 ]; then
    for rep in $(seq 1 "$REPS"); do
      for t in direct nginx cordon; do run_wrk "$mode/c$LOW_CONNS" "$t" "$rep" "$DURATION" "$LOW_CONNS" 1; done
    done
  fi
  # Cordon's own view (cumulative over this mode's runs, warm-up included): mean total, mean
  # upstream wait, mean gateway overhead (total minus upstream wait).
  curl -sS "http://127.0.0.1:$CORDON_PORT/metrics" >"$TMP/metrics-$mode.txt" || true
  MEANS_ROWS+=("$mode	$(awk '
    /^cordon_request_duration_seconds_sum\{operation="chat"\}/{ts=$2}
    /^cordon_request_duration_seconds_count\{operation="chat"\}/{tc=$2}
    /^cordon_upstream_duration_seconds_sum\{operation="chat"\}/{us=$2}
    /^cordon_gateway_overhead_seconds_sum\{operation="chat"\}/{os=$2}
    END{ if (tc>0) printf "%.0f\t%.0f\t%.0f", ts/tc*1e6, us/tc*1e6, os/tc*1e6; else printf "\t\t" }' "$TMP/metrics-$mode.txt")")
  hwm="$(awk '/^VmHWM:/{print $2}' "/proc/$CORDON_PID/status")"
  rss="$(awk '/^VmRSS:/{print $2}' "/proc/$CORDON_PID/status")"
  maxrss="$(sort -n "$TMP/rss-samples" | tail -1)"
  RSS_ROWS+=("$mode	$hwm	$rss	$start_hwm	${maxrss:-0}")
  log "$mode: cordon VmHWM ${hwm} kB (after start ${start_hwm} kB), max sampled VmRSS under load ${maxrss:-?} kB, VmRSS now ${rss} kB"
  stop_cordon
done

# Restart on the first mode's store (now holding every record of its runs): what opening an
# existing store costs in memory, with no load at all.
REOPEN_HWM=""
if [ "${REOPEN:-1}" = 1 ]; then
  start_cordon "$TMP/policy-$FIRST_MODE.yaml"
  check_target cordon
  REOPEN_HWM="$(awk '/^VmHWM:/{print $2}' "/proc/$CORDON_PID/status")"
  store_mb="$(du -sm "$TMP/audit/$FIRST_MODE/EU" | cut -f1)"
  log "restart on the existing $FIRST_MODE store (${store_mb} MB): VmHWM ${REOPEN_HWM} kB with one request"
  stop_cordon
fi

# ---------------------------------------------------------------- 6. summary
CPU="$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
{
  echo "# Cordon load benchmark, $STAMP"
  echo
  echo "- machine: $(nproc) CPUs, ${CPU:-unknown CPU}, kernel $(uname -r), load before run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- scratch/audit dir: $TMP ($FSTYPE); $PINNING"
  echo "- wrk -t$THREADS -c$CONNS -d$DURATION --latency, POST $BODY, $REPS interleaved reps (medians), warm-up $WARMUP each"
  echo "- upstream: nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') 'return 200' fixed chat.completion (${#RESP} bytes), worker_processes 1; proxy: separate nginx, worker_processes $NGINX_WORKERS, keepalive pool"
  echo
  python3 - "$RAW" "$FSYNC" "$(printf '%s\n' "${RSS_ROWS[@]}")" "$(printf '%s\n' "${MEANS_ROWS[@]}")" "$REOPEN_HWM" <<'PY'
import sys, statistics as st, csv
raw, fsync, rss, means, reopen = sys.argv[1], sys.argv[2].split("\t"), sys.argv[3], sys.argv[4], sys.argv[5]
meansd = {l.split("\t")[0]: l.split("\t")[1:] for l in means.splitlines() if l.strip()}
rows = list(csv.DictReader(open(raw), delimiter="\t"))
rssd = {l.split("\t")[0]: l.split("\t")[1:] for l in rss.splitlines() if l.strip()}
modes = list(dict.fromkeys(r["mode"] for r in rows))
f50, f99 = float(fsync[0]), float(fsync[1])
print(f"fsync (64-byte append + fdatasync, idle, same directory as the audit store): p50 {f50:.0f} us, p99 {f99:.0f} us, p99.9 {float(fsync[2]):.0f} us, max {float(fsync[3]):.0f} us")
print()
def med(mode, target, key):
    return st.median(float(r[key]) for r in rows if r["mode"] == mode and r["target"] == target)
print("Medians of the interleaved reps; 'added' = this target minus direct; 'p99 vs nginx' = this target's p99 minus nginx's.")
print()
print("| mode | target | req/s | p50 (us) | p99 (us) | added p50 (us) | added p99 (us) | p99 vs nginx (us) | req/s vs nginx | RSS: max under load / HWM / after start (MiB) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
verdicts = []
for m in modes:
    d50, d99 = med(m, "direct", "p50_us"), med(m, "direct", "p99_us")
    nrps, n99 = med(m, "nginx", "rps"), med(m, "nginx", "p99_us")
    for t in ("direct", "nginx", "cordon"):
        rps, p50, p99 = med(m, t, "rps"), med(m, t, "p50_us"), med(m, t, "p99_us")
        add50 = "" if t == "direct" else f"{p50 - d50:+.0f}"
        add99 = "" if t == "direct" else f"{p99 - d99:+.0f}"
        ratio = "" if t == "direct" else f"{rps / nrps:.2f}"
        vsn = f"{p99 - n99:+.0f}" if t == "cordon" else ""
        mem = ""
        if t == "cordon" and m in rssd:
            mem = f"{int(rssd[m][3]) / 1024:.1f} / {int(rssd[m][0]) / 1024:.1f} / {int(rssd[m][2]) / 1024:.1f}"
        print(f"| {m} | {t} | {rps:.0f} | {p50:.0f} | {p99:.0f} | {add50} | {add99} | {vsn} | {ratio} | {mem} |")
    c99, crps = med(m, "cordon", "p99_us"), med(m, "cordon", "rps")
    budget = 1000 + f99
    hwm = int(rssd[m][3]) / 1024 if m in rssd else None
    verdicts.append((m, c99 - d99, c99 - n99, budget, crps / nrps, hwm, d99 > n99))
if reopen:
    print()
    print(f"Restarting Cordon on the first mode's (now full) audit store: VmHWM {int(reopen) / 1024:.1f} MiB after one request, no load.")
loads = [float(r["load1"]) for r in rows if r.get("load1")]
if loads:
    print()
    print(f"1-minute load average at the start of the runs: min {min(loads):.2f}, median {st.median(loads):.2f}, max {max(loads):.2f} (2 CPUs; the benchmark itself accounts for ~2-3 of it)")
if meansd:
    print()
    print("Cordon's own /metrics (means over each mode's runs, warm-up included): total / upstream wait / gateway overhead, us")
    print()
    for m, v in meansd.items():
        if v and v[0]:
            print(f"- {m}: {v[0]} / {v[1]} / {v[2]}")
print()
print("Targets (p99 added < 1 ms + fsync p99; req/s >= 0.8 x nginx; RSS < 64 MiB):")
print()
for m, add99, vs_nginx, budget, ratio, hwm, noisy in verdicts:
    ok = lambda b: "met" if b else "NOT met"
    note = (" (direct's p99 is above nginx's: the direct tail is noise, so the added-over-direct figure "
            "understates; p99 over nginx's is the safer reading)") if noisy else ""
    mem = f"max RSS under load {hwm:.1f} MiB: {ok(hwm < 64)}" if hwm is not None else "RSS: see the 64-connection row"
    print(f"- {m}: p99 added over direct {add99:.0f} us (over nginx {vs_nginx:.0f} us) vs budget {budget:.0f} us: "
          f"{ok(add99 < budget)}{'' if not noisy else ' by the letter, ' + ok(vs_nginx < budget) + ' against nginx'}{note}; "
          f"throughput {ratio:.2f} x nginx: {ok(ratio >= 0.8)}; {mem}")
PY
  echo
  echo "Raw rows: bench/out/$STAMP.tsv"
} | tee "$OUT"
log "summary written to $OUT"
