#!/usr/bin/env bash
# Type-checks web/ (tsc --checkJs, zero errors) and runs the browser tests against the server
# binary in ROUNDTABLE_BIN (default target/release/roundtable).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/e2e/install.sh
echo "== tsc --checkJs web/"
npx tsc -p tsconfig.json
echo "tsc: 0 errors"
echo "== browser tests"
node tests/e2e/run.mjs
