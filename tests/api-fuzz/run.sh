#!/usr/bin/env bash
# Fuzzes quaerod's REST API with schemathesis (from PyPI) against its own OpenAPI document:
# starts the daemon on a free port with a temp data dir and the example definitions, runs
# every check with a bounded number of examples per operation and a bounded time, and fails
# on any finding. Usage: bash tests/api-fuzz/run.sh [path/to/quaerod]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# A relative path is the caller's: resolve it before moving into this folder.
bin="${1:-$here/../../target/debug/quaerod}"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
cd "$here"

if ! command -v st >/dev/null 2>&1 && ! python3 -c 'import schemathesis' 2>/dev/null; then
  echo "== installing schemathesis"
  python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi
st_cmd=(st)
command -v st >/dev/null 2>&1 || st_cmd=(python3 -m schemathesis.cli)

tmp="$(mktemp -d)"
"$bin" --port 0 --data "$tmp/data" --definitions ../../jobs >"$tmp/out" 2>"$tmp/err" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
  url="$(sed -n 's/^quaerod listening on \(http:[^ ]*\).*/\1/p' "$tmp/out")"
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "${url:-}" ] || { echo "quaerod did not start:"; cat "$tmp/err"; exit 1; }

"${st_cmd[@]}" run "$url/api/openapi.json" --checks all --max-time 240 --request-timeout 10 \
  --continue-on-failure --no-color
if ! kill -0 $pid 2>/dev/null; then
  echo "quaerod exited during the fuzzing:"; cat "$tmp/err"; exit 1
fi
