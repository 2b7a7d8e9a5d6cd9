# Shared by bench/run.sh and bench/audit.sh (sourced, after `log` is defined).

# CPU pinning: servers on CPU 0, the load generator on CPU 1 (PIN=1 and 2+ CPUs), else none.
# Sets SRV and CLI (command prefixes) and PINNING (a description); $1 names what runs on CPU 0.
setup_pinning() {
  if [ "$PIN" = 1 ] && command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    SRV=(taskset -c 0); CLI=(taskset -c 1); PINNING="$1 on CPU 0, wrk on CPU 1"
  else
    SRV=(); CLI=(); PINNING="no pinning"
  fi
}

# A scratch dir ($1: its name prefix), output paths ($2: prefix of bench/out/<prefix><stamp>.md|.tsv),
# and a cleanup trap that stops every pid in PIDS and removes the scratch dir (unless KEEP_TMP=1).
setup_scratch() {
  TMP="$(mktemp -d "${BENCH_TMPDIR:-/tmp}/$1.XXXXXX")"
  OUT_DIR="$ROOT/bench/out"; mkdir -p "$OUT_DIR"
  STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
  OUT="$OUT_DIR/$2$STAMP.md"
  RAW="$OUT_DIR/$2$STAMP.tsv"
  PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "scratch dir kept: $TMP"; else rm -rf "$TMP"; fi
}
