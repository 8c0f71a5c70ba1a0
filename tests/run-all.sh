#!/usr/bin/env bash
# Runs every test of logsift, after installing the system tools the end-to-end tests drive:
# `logger` (bsdutils), `nc` (netcat-openbsd), `openssl` and `curl` (TLS tests), Chromium and Node.js with playwright-core (the
# web UI test). Safe to run again: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v logger >/dev/null 2>&1 || need+=(bsdutils)
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${need[*]} for the end-to-end tests"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -d tests/ui/node_modules/playwright-core ]; then
  echo "installing playwright-core for the UI test (npm ci in tests/ui)"
  (cd tests/ui && npm ci --no-audit --no-fund --silent)
fi

if [ ! -d ../shared/corpus ]; then
  echo "note: ../shared/corpus is absent; corpus tests will skip" >&2
fi

cargo test --workspace "$@"
