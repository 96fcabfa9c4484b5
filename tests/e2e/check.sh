#!/usr/bin/env bash
# Type-checks web/ (tsc --checkJs, zero errors) and runs the browser tests against the server
# binary in ROUNDTABLE_BIN (default target/release/roundtable), then measures the join time.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/e2e/install.sh
echo "== tsc --checkJs web/"
npx tsc -p tsconfig.json
echo "tsc: 0 errors"
echo "== browser tests"
node tests/e2e/run.mjs
echo "== ICE restart through a cut network (UDP relay)"
node tests/e2e/ice-restart.mjs
echo "== join time: a newcomer beside the room only (p50 of 5, target E2E_JOIN_TARGET_MS, default 1000)"
JOIN_RUNS=5 JOIN_TARGET_MS="${E2E_JOIN_TARGET_MS:-1000}" node tests/e2e/join-probe.mjs | grep -E '^(PASS|FAIL|median)'
