#!/usr/bin/env bash
# System packages dsserve's tests and `dsserve up --prometheus` need beyond the Python venv:
#   prometheus   - the Prometheus server (`dsserve up --prometheus`) and promtool (rule checks and unit tests)
#   nodejs, npm  - readme-generator-for-helm (pinned in helm/package.json), which scripts/helm-docs.sh runs to
#                  generate the charts' README tables and values.schema.json (tests/unit/test_helm_docs.py)
# Idempotent: installs only what is missing from PATH, and does nothing when all is there. Debian/Ubuntu
# (apt-get); runs apt-get through sudo when not root. `make test` and `make test-unit` run it first.
set -euo pipefail

packages=()
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    packages+=(prometheus)
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    packages+=(nodejs npm)
fi
if [ "${#packages[@]}" -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: no apt-get here; install ${packages[*]} so that 'prometheus' and 'promtool'" \
         "(Prometheus 2.42 or later, https://prometheus.io/download/) and 'node' and 'npm' (Node.js 18 or later)" \
         "are on PATH, then re-run" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-system-deps: need root for apt-get; run as root: apt-get update &&" \
             "apt-get install -y --no-install-recommends ${packages[*]}" >&2
        exit 1
    fi
fi

echo "==> installing ${packages[*]} (apt-get install)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
# --no-install-recommends: the Prometheus server and promtool only, not node-exporter and its friends. Debian's
# package does not start the service in containers (policy-rc.d); dsserve starts its own instance.
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}"
if [[ " ${packages[*]} " == *" prometheus "* ]]; then
    promtool --version | head -1
fi
if [[ " ${packages[*]} " == *" nodejs "* ]]; then
    echo "node $(node --version), npm $(npm --version)"
fi
