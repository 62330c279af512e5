#!/usr/bin/env bash
# System packages dsserve's tests and `dsserve up --prometheus` need beyond the Python venv:
#   prometheus  - the Prometheus server (`dsserve up --prometheus`) and promtool (rule checks and unit tests)
# Idempotent: does nothing when promtool and prometheus are already on PATH. Debian/Ubuntu (apt-get);
# runs apt-get through sudo when not root. `make test` and `make test-unit` run it first.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: no apt-get here; install Prometheus (2.42 or later) so that 'prometheus' and" \
         "'promtool' are on PATH (https://prometheus.io/download/), then re-run" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-system-deps: need root for apt-get; run as root: apt-get update &&" \
             "apt-get install -y --no-install-recommends prometheus" >&2
        exit 1
    fi
fi

echo "==> installing Prometheus and promtool (apt-get install prometheus)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
# --no-install-recommends: the server and promtool only, not node-exporter and its friends. Debian's
# package does not start the service in containers (policy-rc.d); dsserve starts its own instance.
"${SUDO[@]}" apt-get install -y -q --no-install-recommends prometheus
promtool --version | head -1
