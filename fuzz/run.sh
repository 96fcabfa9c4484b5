#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: FUZZ_SECS per target (default 60).
# Installs cargo-fuzz from crates.io when missing. The corpus lives in fuzz/corpus/<target>
# (kept in the repo; new inputs found by a run are added there) and the protocol parser's is
# seeded from signaling/fixtures/client. A crash fails the run and leaves its input in
# fuzz/artifacts/<target>/.
#
# Usage: bash fuzz/run.sh [target ...]        (FUZZ_SECS=600 for a longer run)
set -euo pipefail
cd "$(dirname "$0")"
SECS="${FUZZ_SECS:-60}"
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then TARGETS=(protocol_parser floor_engine media_input); fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
# Stable toolchain: no sanitizer (the crates forbid unsafe code; panics and invariant
# failures are what the targets look for), debug assertions on.
FUZZ_FLAGS=(--sanitizer none --debug-assertions)
mkdir -p corpus/protocol_parser corpus/floor_engine corpus/media_input
cp -n ../signaling/fixtures/client/*.json corpus/protocol_parser/ 2>/dev/null || true
echo "== building the fuzz targets"
for t in "${TARGETS[@]}"; do
  # A build that fails fails the run (set -e; the log shows why).
  cargo fuzz build "${FUZZ_FLAGS[@]}" "$t" > "/tmp/roundtable-fuzz-build-$t.log" 2>&1 \
    || { tail -30 "/tmp/roundtable-fuzz-build-$t.log"; exit 1; }
done
for t in "${TARGETS[@]}"; do
  echo "== fuzzing $t for ${SECS} s"
  rc=0
  cargo fuzz run "${FUZZ_FLAGS[@]}" "$t" "corpus/$t" -- -max_total_time="$SECS" -max_len=4096 \
    -print_final_stats=1 > "/tmp/roundtable-fuzz-$t.log" 2>&1 || rc=$?
  grep -E "^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+.*DONE)|panicked|ERROR|SUMMARY" \
    "/tmp/roundtable-fuzz-$t.log" || true
  # libFuzzer exits non-zero on a crash, a timeout or running out of memory, and leaves the
  # input in artifacts/<target>/.
  if [ "$rc" -ne 0 ] || compgen -G "artifacts/$t/*" >/dev/null; then
    echo "!! $t failed (exit $rc): see /tmp/roundtable-fuzz-$t.log and fuzz/artifacts/$t"
    tail -40 "/tmp/roundtable-fuzz-$t.log"
    exit 1
  fi
done
echo "== fuzzing: no crash"
