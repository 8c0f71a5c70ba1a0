#!/usr/bin/env bash
# Runs every test of logsift, after installing the system tools the end-to-end tests drive:
# `logger` (bsdutils), `nc` (netcat-openbsd), `openssl` and `curl` (TLS tests), rsyslog with
# its TLS driver (rsyslog-gnutls), syslog-ng unpacked into a private prefix, Chromium and
# Node.js with playwright-core (the web UI test), the Python shipper clients, PostgreSQL 15,
# Prometheus Alertmanager and s3s-fs (an S3-protocol server).
# Safe to run again: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# jemalloc, the server's allocator, is built from C sources with configure and make.
command -v make >/dev/null 2>&1 || need+=(make)
command -v logger >/dev/null 2>&1 || need+=(bsdutils)
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ -x /usr/sbin/rsyslogd ] || need+=(rsyslog)
dpkg -s rsyslog-gnutls >/dev/null 2>&1 || need+=(rsyslog-gnutls)
# PostgreSQL 15 for tests/metastore.rs, which makes a throwaway cluster of its own.
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
# Prometheus Alertmanager 0.25 for tests/alerts.rs, which starts its own on a free port.
[ -x /usr/bin/prometheus-alertmanager ] || need+=(prometheus-alertmanager)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} for the end-to-end tests"
  apt_install "${need[@]}"
fi

# syslog-ng for tests/shippers.rs. Debian's syslog-ng and rsyslog packages conflict (both
# provide system-log-daemon), so syslog-ng-core is not installed but unpacked into a private
# prefix, and only its shared-library dependencies are installed (none of them conflicts).
syslog_ng="${LOGSIFT_SYSLOG_NG:-$HOME/.cache/logsift-syslog-ng}"
syslog_ng_runs() {
  LD_LIBRARY_PATH="$syslog_ng/usr/lib/syslog-ng" "$syslog_ng/usr/sbin/syslog-ng" --version >/dev/null 2>&1
}
if ! syslog_ng_runs; then
  echo "unpacking Debian's syslog-ng-core into $syslog_ng for the shipper tests"
  [ -n "$apt_updated" ] || { $sudo apt-get update -qq; apt_updated=1; }
  libs=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances syslog-ng-core | awk '$1 == "Depends:" && $2 ~ /^lib/ {print $2}')
  # shellcheck disable=SC2086 # one package name per word
  apt_install $libs
  debs=$(mktemp -d)
  (cd "$debs" && apt-get download -qq syslog-ng-core)
  rm -rf "$syslog_ng"
  # dpkg -x makes only the last directory: on a fresh machine ~/.cache does not exist yet.
  mkdir -p "$syslog_ng"
  dpkg -x "$debs"/syslog-ng-core_*.deb "$syslog_ng"
  rm -rf "$debs"
  syslog_ng_runs || { echo "syslog-ng in $syslog_ng does not run" >&2; exit 1; }
fi
export LOGSIFT_SYSLOG_NG="$syslog_ng"

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

# A real S3-protocol server for tests/object_storage.rs and logsift-store's tests/object.rs:
# s3s-fs from crates.io (it keeps objects as files under a directory).
s3s_fs="${LOGSIFT_S3S_FS:-$HOME/.cargo/bin/s3s-fs}"
if [ ! -x "$s3s_fs" ]; then
  echo "installing s3s-fs (an S3-protocol server) for the object storage tests"
  cargo install -q --locked s3s-fs --version 0.14.1 --features binary
fi
export LOGSIFT_S3S_FS="$s3s_fs"

if [ ! -d ../shared/corpus ]; then
  echo "note: ../shared/corpus is absent; corpus tests will skip" >&2
fi

cargo test --workspace "$@"
