#!/usr/bin/env bash
# The charts' generated docs: the "Parameters" table of each chart's README.md and its values.schema.json, both
# from the ## @param lines of its values.yaml, with readme-generator-for-helm (pinned in helm/package.json and
# helm/package-lock.json, installed into helm/node_modules by `npm ci`), plus the constraints of
# values.schema.overlay.json laid over the schema by scripts/helm_schema.py.
#
#   scripts/helm-docs.sh           regenerate README.md and values.schema.json of every chart
#   scripts/helm-docs.sh --check   regenerate into a scratch directory and fail if the committed files differ
#                                  (tests/unit/test_helm_docs.py runs this in `make test`)
#
# Needs node and npm (scripts/install-system-deps.sh installs them); `npm ci` reaches the npm registry once,
# later runs are offline. PYTHON (default: .venv/bin/python, else python3) runs helm_schema.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELM="$ROOT/helm"
# helm_schema.py needs PyYAML: the project's venv has it.
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ -x "$ROOT/.venv/bin/python" ] && PYTHON="$ROOT/.venv/bin/python"
fi
# Subcharts first: the parent's schema embeds theirs (scripts/helm_schema.py, "$subchart").
CHARTS=(dsserve/charts/loadtest dsserve)
TOOL="$HELM/node_modules/.bin/readme-generator"

check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

for cmd in node npm; do
    command -v "$cmd" >/dev/null 2>&1 || {
        echo "helm-docs: '$cmd' is not on PATH; run scripts/install-system-deps.sh (apt-get install nodejs npm)" >&2
        exit 2
    }
done

# Install the pinned tool unless node_modules already holds exactly the locked version.
pinned="$(node -p "require('$HELM/package-lock.json').packages['node_modules/@bitnami/readme-generator-for-helm'].version")"
installed="$(node -p "try { require('$HELM/node_modules/@bitnami/readme-generator-for-helm/package.json').version } catch (e) { '' }")"
if [ "$installed" != "$pinned" ] || [ ! -x "$TOOL" ]; then
    echo "helm-docs: installing @bitnami/readme-generator-for-helm@$pinned (npm ci in helm/)" >&2
    (cd "$HELM" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
status=0
for chart in "${CHARTS[@]}"; do
    dir="$HELM/$chart"
    work="$scratch/$chart"
    mkdir -p "$work"
    cp "$dir/README.md" "$work/README.md"
    "$TOOL" --values "$dir/values.yaml" --readme "$work/README.md" --schema "$work/generated.json" >"$work/log" 2>&1 || {
        cat "$work/log" >&2
        echo "helm-docs: readme-generator failed on helm/$chart/values.yaml (above)" >&2
        exit 2
    }
    "$PYTHON" "$ROOT/scripts/helm_schema.py" "$dir" "$work/generated.json" --out "$work/values.schema.json"
    for file in README.md values.schema.json; do
        if [ "$check" = 1 ]; then
            if ! diff -u "$dir/$file" "$work/$file" >&2; then
                echo "helm-docs: helm/$chart/$file is not what values.yaml generates; run scripts/helm-docs.sh" >&2
                status=1
            fi
        else
            cp "$work/$file" "$dir/$file"
        fi
    done
done
exit "$status"
