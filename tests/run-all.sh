#!/usr/bin/env bash
# Runs every test of logsift, after installing the system tools the end-to-end tests drive:
# `logger` (bsdutils), `nc` (netcat-openbsd), `openssl` and `curl` (TLS tests), rsyslog,
# Chromium and Node.js with playwright-core (the web UI test), and the Python shipper clients.
# Safe to run again: installs only what is missing.
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
[ -x /usr/sbin/rsyslogd ] || need+=(rsyslog)
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
# The real shipper clients that tests/compat.rs drives (the Python Elasticsearch client and the
# OpenTelemetry SDK with its OTLP/HTTP and OTLP/gRPC exporters), in a virtualenv outside the
# repository.
venv="${LOGSIFT_VENV:-$HOME/.cache/logsift-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import elasticsearch, opentelemetry.sdk._logs, opentelemetry.exporter.otlp.proto.http._log_exporter, opentelemetry.exporter.otlp.proto.grpc._log_exporter' 2>/dev/null; then
  echo "installing the Python shipper clients into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    'elasticsearch>=8.12,<9' 'opentelemetry-sdk>=1.20' 'opentelemetry-exporter-otlp-proto-http>=1.20' \
    'opentelemetry-exporter-otlp-proto-grpc>=1.20'
fi
export LOGSIFT_PYTHON="$venv/bin/python"

if [ ! -d ../shared/corpus ]; then
  echo "note: ../shared/corpus is absent; corpus tests will skip" >&2
fi

cargo test --workspace "$@"
