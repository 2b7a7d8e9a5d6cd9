#!/usr/bin/env bash
# Audit-log benchmarks against issue 3's targets (docs/PERFORMANCE.md, "The audit log"):
#   append   durable appends/s, 64 concurrent writers, each acked only after fsync (group commit),
#            with batch_delay 0 and $BATCH_DELAY_US; the disk's fsync p50/p99 right before
#            (target >= 100,000 records/s)
#   gateway  what waiting for the decision record's durability adds to a request, per durability
#            mode: `cordon serve` with an echo endpoint answering after 5 ms, 64 connections (wrk),
#            p99 of cordon_audit_wait_seconds{durability} from /metrics (bucket upper bound, 25 us
#            buckets below 1 ms; and interpolated inside the bucket) and
#            the end-to-end p50/p99, with the fsync p99 measured in the same run
#            (targets: overlapped adds <= 0.2 ms p99; strict adds <= the fsync p99)
#   verify   verify_store over 1,000,000 records (target >= 1,500,000 records/s)
#   pg       PostgreSQL appends/s, 64 writers, 5 s (target >= 50,000 rows/s)
# Every measurement REPS times, interleaved where there are several variants; medians reported
# with the 1-minute load average at the start of each run.
#
# Usage: bench/audit.sh   (from anywhere)
# Knobs (environment):
#   PARTS="append gateway verify pg"  REPS=3
#   WRITERS=64 PER_WRITER=5000 BATCH_DELAY_US=100        (append)
#   CONNS=64 THREADS=2 DURATION=10s WARMUP=2s DELAY_MS=5 PIN=1 PORT_BASE=18480   (gateway)
#   VERIFY_RECORDS=1000000 VERIFY_BINS="path ..." (compare verify_speed binaries, interleaved)
#   PG_WRITERS=64 PG_SECONDS=5  CORDON_TEST_PG (connection string, see pg_throughput.rs)
#   FSYNC_N=2000  BENCH_TMPDIR=/tmp (must be on the disk you mean to measure)  KEEP_TMP=0
#   BUILD=1 (cargo build --release of what is needed)
# Everything listens on 127.0.0.1 only; every run is bounded by `timeout`; everything started is
# stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/bench/audit"
PARTS="${PARTS:-append gateway verify pg}"
REPS="${REPS:-3}"
WRITERS="${WRITERS:-64}"
PER_WRITER="${PER_WRITER:-5000}"
BATCH_DELAY_US="${BATCH_DELAY_US:-100}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
DELAY_MS="${DELAY_MS:-5}"
PIN="${PIN:-1}"
PORT_BASE="${PORT_BASE:-18480}"
VERIFY_RECORDS="${VERIFY_RECORDS:-1000000}"
PG_WRITERS="${PG_WRITERS:-64}"
PG_SECONDS="${PG_SECONDS:-5}"
FSYNC_N="${FSYNC_N:-2000}"
BUILD="${BUILD:-1}"

log() { printf '[audit-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
has() { [[ " $PARTS " == *" $1 "* ]]; }
load1() { cut -d' ' -f1 /proc/loadavg; }
command -v python3 >/dev/null 2>&1 || die "python3 is needed (fsync probe, histogram, summary)"

# ---------------------------------------------------------------- build
# Target selection: examples and the `cordon` binary need separate invocations (`--example`
# alone builds no bins).
if [ "$BUILD" = 1 ]; then
  if has append || has verify; then
    log "cargo build --release -p cordon-audit --example throughput --example verify_speed"
    (cd "$ROOT" && cargo build --release -p cordon-audit --example throughput --example verify_speed >&2)
  fi
  if has pg; then
    log "cargo build --release -p cordon-audit-pg --example pg_throughput"
    (cd "$ROOT" && cargo build --release -p cordon-audit-pg --example pg_throughput >&2)
  fi
  if has gateway; then
    log "cargo build --release -p cordon"
    (cd "$ROOT" && cargo build --release -p cordon >&2)
  fi
fi
if has gateway; then
  command -v wrk >/dev/null 2>&1 || die "wrk is needed for the gateway part (apt-get install wrk)"
fi
setup_pinning "cordon"

# ---------------------------------------------------------------- scratch dir and cleanup
setup_scratch cordon-audit-bench "audit-"
FSTYPE="$(stat -f -c %T "$TMP")"
# Private copies of the binaries: other builds in the same target dir cannot swap them mid-run.
mkdir -p "$TMP/bin"
for b in examples/throughput examples/verify_speed examples/pg_throughput cordon; do
  [ -x "$ROOT/target/release/$b" ] && cp "$ROOT/target/release/$b" "$TMP/bin/"
done
REL="$TMP/bin"
log "scratch dir $TMP ($FSTYPE), parts: $PARTS, $REPS reps"
# part  variant  rep  metric  value  load1
printf 'part\tvariant\trep\tmetric\tvalue\tload1\n' >"$RAW"
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RAW"; }

fsync_probe() { # dir variant rep -> rows fsync_p50/p99/p999/max
  local f l; l="$(load1)"
  f="$("${SRV[@]}" python3 "$HERE/fsync.py" "$1" "$FSYNC_N")"
  read -r p50 p99 p999 pmax <<<"$f"
  row "$2" fsync "$3" fsync_p50_us "$p50" "$l"
  row "$2" fsync "$3" fsync_p99_us "$p99" "$l"
  row "$2" fsync "$3" fsync_p999_us "$p999" "$l"
  log "$2 rep $3 fsync (load $l): p50 $p50 us, p99 $p99 us, p99.9 $p999 us, max $pmax us"
}

# ---------------------------------------------------------------- (a) durable appends/s
if has append; then
  for rep in $(seq 1 "$REPS"); do
    fsync_probe "$TMP/append-probe" append "$rep"
    for delay in 0 "$BATCH_DELAY_US"; do
      l="$(load1)"
      rm -rf "$TMP/append"
      out="$(BATCH_DELAY_US=$delay AUDIT_DIR="$TMP/append" timeout 300 \
        "$REL/throughput" "$WRITERS" "$PER_WRITER")" || die "throughput example failed: $out"
      rate="$(sed -n 's/.*s: \([0-9]*\)\/s, \([0-9]*\) fsyncs (\([0-9.]*\) records\/fsync).*/\1/p' <<<"$out")"
      per="$(sed -n 's/.*(\([0-9.]*\) records\/fsync).*/\1/p' <<<"$out")"
      row append "delay_us=$delay" "$rep" records_per_s "$rate" "$l"
      row append "delay_us=$delay" "$rep" records_per_fsync "$per" "$l"
      log "append delay ${delay}us rep $rep (load $l): $(head -1 <<<"$out")"
    done
  done
  rm -rf "$TMP/append"
fi

# ---------------------------------------------------------------- (b) gateway, per durability mode
if has gateway; then
  CORDON="$REL/cordon"
  [ -x "$CORDON" ] || die "no $CORDON"
  TOKDIR="$TMP/token"; mkdir -p "$TOKDIR"
  TOKEN="$("$CORDON" token --country DE --subject bench-user --ttl 7200 --data-dir "$TOKDIR" 2>/dev/null)"
  [ -f "$TOKDIR/dev-jwks.json" ] || die "cordon token did not write $TOKDIR/dev-jwks.json"
  LUA="$TMP/post.lua"
  write_post_lua "$LUA" "$TOKEN"
  declare -A PORT CPID
  i=0
  for mode in strict overlapped; do
    i=$((i + 1)); PORT[$mode]=$((PORT_BASE + i))
    mkdir -p "$TMP/$mode/data"
    if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$mode]}") 2>/dev/null; then
      die "port ${PORT[$mode]} is taken (another benchmark?): set PORT_BASE"
    fi
    cat >"$TMP/$mode/policy.yaml" <<YAML
# Generated by bench/audit.sh (durability $mode).
gateway: { id: bench, region: "aws:eu-central-1" }
identity:
  issuers:
    - issuer: cordon-dev
      audiences: [cordon]
      jwks_file: "$TOKDIR/dev-jwks.json"
      algorithms: [EdDSA]
      residency_claim: country
tiers:
  1: { audit_payload: digest, durability: $mode }
models:
  bench-chat:
    endpoints:
      - { id: eu, provider: echo, regions: ["aws:eu-central-1"], delay_ms: $DELAY_MS }
audit:
  stores:
    EU: { path: "$TMP/$mode/audit/EU", region: "aws:eu-central-1" }
YAML
    "$CORDON" policy check "$TMP/$mode/policy.yaml" >&2 || die "policy check failed ($mode)"
    # Both gateways run side by side (idle when not driven), so the reps can be interleaved.
    "${SRV[@]}" "$CORDON" serve --config "$TMP/$mode/policy.yaml" --data-dir "$TMP/$mode/data" \
      --listen "127.0.0.1:${PORT[$mode]}" >"$TMP/$mode/out" 2>"$TMP/$mode/err" &
    CPID[$mode]=$!; PIDS+=("${CPID[$mode]}")
    deadline=$((SECONDS + 30))
    until grep -qs "cordon listening on" "$TMP/$mode/out"; do
      kill -0 "${CPID[$mode]}" 2>/dev/null || die "cordon ($mode) exited: $(tail -20 "$TMP/$mode/err")"
      [ "$SECONDS" -lt "$deadline" ] || die "cordon ($mode) did not start within 30 s"
      sleep 0.1
    done
    code="$(curl -sS -o "$TMP/check.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      -H "Authorization: Bearer $TOKEN" --data "$BODY" "http://127.0.0.1:${PORT[$mode]}/v1/chat/completions")"
    [ "$code" = 200 ] || die "cordon ($mode) answered $code: $(head -c 400 "$TMP/check.json")"
    "${CLI[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -s "$LUA" \
      "http://127.0.0.1:${PORT[$mode]}/v1/chat/completions" >/dev/null
  done
  to_us() { awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n*1000; else if (v ~ /m$/) print n*60e6; else print n*1e6 }'; }
  for rep in $(seq 1 "$REPS"); do
    fsync_probe "$TMP/strict/audit/EU" gateway "$rep"
    for mode in strict overlapped; do
      url="http://127.0.0.1:${PORT[$mode]}"
      l="$(load1)"
      curl -sS "$url/metrics" >"$TMP/m0" || die "no /metrics ($mode)"
      out="$(timeout 120 "${CLI[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$LUA" "$url/v1/chat/completions")"
      curl -sS "$url/metrics" >"$TMP/m1" || die "no /metrics ($mode)"
      printf '%s\n' "$out" >>"$TMP/wrk.log"
      read -r n mean h50 h99 i99 <<<"$(python3 "$HERE/histdiff.py" "$TMP/m0" "$TMP/m1" "$mode")"
      # The store's own fdatasync per group commit under this load (the writer's histogram).
      read -r sn smean s50 s99 si99 <<<"$(python3 "$HERE/histdiff.py" "$TMP/m0" "$TMP/m1" store=EU cordon_audit_fsync_seconds)"
      p50="$(to_us "$(awk '$1=="50%"{print $2}' <<<"$out")")"
      p99="$(to_us "$(awk '$1=="99%"{print $2}' <<<"$out")")"
      rps="$(awk '$1=="Requests/sec:"{print $2}' <<<"$out")"
      non2xx="$(awk '/Non-2xx or 3xx responses:/{print $NF}' <<<"$out")"; non2xx="${non2xx:-0}"
      [ "$non2xx" = 0 ] || log "WARNING: $mode rep $rep: $non2xx non-2xx responses"
      for kv in "wait_count $n" "wait_mean_us $mean" "wait_p50_le_us $h50" "wait_p99_le_us $h99" "wait_p99_interp_us $i99" \
        "e2e_p50_us $p50" "e2e_p99_us $p99" "rps $rps" "non2xx $non2xx" \
        "sync_count $sn" "sync_mean_us $smean" "sync_p50_le_us $s50" "sync_p99_le_us $s99"; do
        row gateway "$mode" "$rep" ${kv% *} "${kv#* }" "$l"
      done
      log "gateway $mode rep $rep (load $l): $rps req/s, e2e p50 $p50 us p99 $p99 us; audit wait n=$n mean $mean us, p50 <= $h50 us, p99 <= $h99 us (interpolated $i99 us)"
    done
  done
  for mode in strict overlapped; do kill "${CPID[$mode]}" 2>/dev/null || true; wait "${CPID[$mode]}" 2>/dev/null || true; done
fi

# ---------------------------------------------------------------- (c) verification speed
if has verify; then
  BINS="${VERIFY_BINS:-$REL/verify_speed}"
  # Each binary verifies a store it wrote itself: the on-disk format may differ between builds
  # (the chain link changed once). Same record count and sizes, so the stores are comparable.
  declare -A VDIR
  n=0
  for bin in $BINS; do
    n=$((n + 1)); VDIR[$bin]="$TMP/verify/$n/EU"
    log "writing $VERIFY_RECORDS records for verification with $bin"
    AUDIT_DIR="${VDIR[$bin]}" timeout 900 "$bin" "$VERIFY_RECORDS" 0 >&2 || die "verify_speed (write) failed"
    log "store: $(du -sm "${VDIR[$bin]}" | cut -f1) MB"
  done
  # Write the just-written stores back before timing: otherwise the kernel's writeback of ~400 MB
  # of dirty pages runs during the first verifications and takes CPU from them (rep 1 measured
  # 1.24 M records/s against 1.52-1.60 M for reps 2 and 3 in run audit-20261206T121330Z).
  log "syncing the stores to disk (the page cache stays warm)"
  sync
  log "page cache warm (just written); verifying $REPS x per binary, interleaved"
  for rep in $(seq 1 "$REPS"); do
    for bin in $BINS; do
      l="$(load1)"
      # CPU seconds (user + sys) of the whole process too: less sensitive to neighbours than
      # the wall clock on a shared box.
      out="$(AUDIT_DIR="${VDIR[$bin]}" timeout 300 /usr/bin/time -f 'cpu_s %U %S' "$bin" "$VERIFY_RECORDS" 1 2>&1)" ||
        die "verify_speed failed: $out"
      rate="$(sed -n 's/.*: \([0-9]*\) records\/s$/\1/p' <<<"$out" | head -1)"
      cpu="$(awk '$1=="cpu_s"{print $2+$3}' <<<"$out")"
      row verify "$(basename "$bin")" "$rep" records_per_s "$rate" "$l"
      row verify "$(basename "$bin")" "$rep" cpu_s "$cpu" "$l"
      log "verify $(basename "$bin") rep $rep (load $l): $(head -1 <<<"$out")"
    done
  done
  rm -rf "$TMP/verify"
fi

# ---------------------------------------------------------------- (d) PostgreSQL
if has pg; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    log "PostgreSQL is not listening on 127.0.0.1:5432; starting the local cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start >&2 || die "could not start PostgreSQL"
    sleep 2
  fi
  for rep in $(seq 1 "$REPS"); do
    l="$(load1)"
    out="$(timeout 120 "$REL/pg_throughput" "$PG_WRITERS" "$PG_SECONDS")" || die "pg_throughput failed: $out"
    rate="$(sed -n 's/.* rows\/s=\([0-9]*\) .*/\1/p' <<<"$out")"
    batch="$(sed -n 's/.* mean_batch=\([0-9.]*\) .*/\1/p' <<<"$out")"
    lat="$(sed -n 's/.* mean_ack_latency_ms=\([0-9.]*\).*/\1/p' <<<"$out")"
    row pg "writers=$PG_WRITERS" "$rep" rows_per_s "$rate" "$l"
    row pg "writers=$PG_WRITERS" "$rep" mean_batch "$batch" "$l"
    row pg "writers=$PG_WRITERS" "$rep" mean_ack_ms "$lat" "$l"
    log "pg rep $rep (load $l): $(head -1 <<<"$out")"
  done
fi

# ---------------------------------------------------------------- summary
CPU="$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
{
  echo "# Cordon audit-log benchmark, $STAMP"
  echo
  echo "- machine: $(nproc) CPUs, ${CPU:-unknown CPU}, kernel $(uname -r); load now: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes in the tree)'); scratch dir on $FSTYPE; $PINNING"
  echo "- $REPS reps per figure (medians; min-max in brackets), 1-minute load average at the start of each run"
  echo
  python3 "$HERE/summary.py" "$RAW" "$WRITERS" "$PER_WRITER" "$CONNS" "$DURATION" "$DELAY_MS" "$VERIFY_RECORDS" "$PG_WRITERS" "$PG_SECONDS"
  echo
  echo "Raw rows: bench/out/audit-$STAMP.tsv"
} | tee "$OUT"
log "summary written to $OUT"
