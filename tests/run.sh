#!/usr/bin/env bash
# Runs every test of roundtable on a fresh machine: installs what the tests need, then
# formatting, lints, unit/property/integration tests and a bounded benchmark smoke run.
# Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need: the Rust toolchain (on the machine) with rustfmt and clippy, and coturn
# (Debian) for the relay test, which starts its own turnserver on loopback. Later issues add
# Chromium and Janus here (apt-get) and npm packages.
if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy; fi
if ! command -v turnserver >/dev/null 2>&1; then
  echo "== installing coturn"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq coturn >/dev/null
fi
# The relay test must run, not skip, in CI.
export ROUNDTABLE_REQUIRE_COTURN=1

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
cargo test --workspace --all-targets 2>&1 | tee /tmp/roundtable-tests.log
echo "== benchmark smoke (websocket fan-out, 100 clients)"
cargo run --release --quiet --bin rt-bench -- fanout --clients 100 --rounds 20 --out target/bench-smoke/fanout.json
echo "== benchmark smoke (media, baku with 4 delegates; debug build, reuses the test build's dependencies)"
ulimit -n 4096 2>/dev/null || true
cargo run --quiet -p roundtable-headless --example rt-media-bench -- baku --delegates 4 --secs 5 --out target/bench-smoke/baku.json
echo "== all tests passed"
