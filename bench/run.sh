#!/usr/bin/env bash
# The benchmarks (docs/PERFORMANCE.md, issue 6), with bounded durations: builds in release
# mode, runs each scenario, writes bench/results/latest.json and updates the results table in
# docs/PERFORMANCE.md. Not part of CI (a smoke version of each tool runs in tests/run.sh).
#
#   bash bench/run.sh                 # everything (about 5 minutes on 2 cores)
#   BAKU_SECS=20 FANOUT_ROUNDS=100 RAMP_SECS=5   # the bounds, with their defaults
#   BENCH_JANUS=0                     # without Janus (else started as root, or with sudo)
#
# Run it on a quiet machine: browsers or builds beside it distort every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results
mkdir -p "$OUT"
ulimit -n 8192 2>/dev/null || ulimit -n 4096 2>/dev/null || true
command -v python3 >/dev/null || { echo "bench/run.sh needs python3 (apt-get install python3)"; exit 1; }

echo "== build (release)"
cargo build --release --quiet --bin roundtable --bin rt-bench
cargo build --release --quiet -p roundtable-headless --example rt-media-bench

# Janus VideoRoom beside it (bench/janus/janus.sh: its own network namespace, which needs root).
JANUS_URL=""
if [ "${BENCH_JANUS:-1}" = 1 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  trap '$SUDO bash bench/janus/janus.sh stop >/dev/null 2>&1 || true' EXIT
  if $SUDO bash bench/janus/janus.sh start; then
    JANUS_URL=$(bash bench/janus/janus.sh url)
  else
    echo "!! Janus did not start: the results will have no Janus figures (janus: null)"
  fi
fi

echo "== baku: 30 delegates, the server in a child process, the bare floor, then Janus on the same load"
target/release/examples/rt-media-bench baku --secs "${BAKU_SECS:-20}" --spawn-server \
  ${JANUS_URL:+--janus "$JANUS_URL"} --out "$OUT/baku.json"
echo "== fanout: 1,000 websocket clients"
target/release/rt-bench fanout --clients 1000 --rounds "${FANOUT_ROUNDS:-100}" \
  --spawn-server target/release/roundtable --out "$OUT/fanout.json"

echo "== ramp (and forum, its step at 300): audio-only delegates in steps of 10, roundtable then Janus"
target/release/examples/rt-media-bench ramp --spawn-server --secs "${RAMP_SECS:-5}" \
  ${JANUS_URL:+--janus "$JANUS_URL"} --out "$OUT/ramp.json"

echo "== latest.json and docs/PERFORMANCE.md"
python3 bench/summarize.py "$OUT" docs/PERFORMANCE.md
echo "== done: $OUT/latest.json"
