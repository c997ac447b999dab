#!/usr/bin/env bash
# Runs every test of Quaero on a fresh machine: installs what the tests need (Chromium and
# tmux from Debian, playwright-core from npm, schemathesis from PyPI), then format + lint
# checks, the Rust tests (unit, property, end to end against the real daemon, the TUI in
# tmux), schemathesis against the OpenAPI document, and the browser test in headless
# Chromium. Usage: bash tests/run.sh   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
if ((${#need_apt[@]})); then
  echo "== installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo build (the binaries the end-to-end tests start)"
cargo build --workspace --locked

echo "== cargo nextest (unit, property, end-to-end, TUI in tmux)"
cargo nextest run --workspace --locked --no-fail-fast

echo "== benchmark, quick variant (checks the harness runs; numbers are not asserted)"
if [ -f quaero-bench/Cargo.toml ]; then
  cargo run --release --locked -p quaero-bench -- --quick --out target/bench-quick.json
fi

echo "== API fuzzing: schemathesis against the OpenAPI document (all checks, bounded)"
bash tests/api-fuzz/run.sh target/debug/quaerod

echo "== browser test (headless Chromium via playwright-core)"
npm ci --prefix tests/browser --no-audit --no-fund --silent
QUAERO_BIN=target/debug/quaerod CHROMIUM="$(command -v chromium)" node --test tests/browser/

echo "== all tests passed"
