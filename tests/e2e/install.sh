#!/usr/bin/env bash
# Installs what the browser tests need, idempotently: Debian's Chromium and the pinned npm
# dev dependencies (playwright-core, typescript) from package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if [ -f package-lock.json ]; then
  if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/typescript ]; then
    npm ci --no-audit --no-fund
  fi
else
  npm install --no-audit --no-fund
fi
