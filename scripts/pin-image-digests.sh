#!/usr/bin/env bash
# Pin the base images of docker/Dockerfile* by digest.
#
# The Dockerfiles pin their bases by tag only (ARG <NAME>_BASE=image:tag, used by FROM ${<NAME>_BASE}), because
# they were written where no registry is reachable. Run this where one is: it resolves each FROM image's tag to
# the digest of its (multi-platform) index and rewrites the ARG default as image:tag@sha256:<digest>, so builds
# are reproducible and a moved tag cannot change them. Run it again to move the pins to the tags' current
# digests; review and commit the diff like any other dependency bump.
#
#   scripts/pin-image-digests.sh [--list | --dry-run] [DOCKERFILE...]     (default: docker/Dockerfile*)
#
#   --list      print every FROM image (after ARG defaults), one per line, and exit; needs no registry
#   --dry-run   print the pins it would write, change nothing
#
# Resolver, the first found: crane (`crane digest`), docker buildx (`docker buildx imagetools inspect`),
# skopeo (`skopeo inspect`). PIN_RESOLVER=crane|docker|skopeo picks one. Stages built from another stage
# (FROM wheel) are skipped. Exit 0 done, 1 a resolve failed, 2 bad usage or no resolver.
set -euo pipefail

cd "$(dirname "$0")/.."

mode=write
files=()
for arg in "$@"; do
  case "$arg" in
    --list) mode=list ;;
    --dry-run) mode=dry-run ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) files+=("$arg") ;;
  esac
done
if [ ${#files[@]} -eq 0 ]; then
  files=(docker/Dockerfile*)
fi

# ARG defaults of a Dockerfile as NAME=VALUE lines.
arg_defaults() {
  sed -nE 's/^[[:space:]]*ARG[[:space:]]+([A-Za-z_][A-Za-z0-9_]*)=([^[:space:]]+).*$/\1=\2/p' "$1"
}

# Every FROM of a Dockerfile as "ARGNAME IMAGE" (ARGNAME is - for a literal image); stages are skipped.
from_images() {
  local file=$1 stages ref name value
  stages=" $(sed -nE 's/^[[:space:]]*FROM[[:space:]].*[[:space:]][Aa][Ss][[:space:]]+([^[:space:]]+).*$/\1/p' "$file" | tr '\n' ' ') "
  while read -r ref; do
    [ -n "$ref" ] || continue
    if [[ $ref =~ ^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$ ]]; then
      name=${BASH_REMATCH[1]}
      value=$(arg_defaults "$file" | sed -n "s/^${name}=//p" | head -n 1)
      if [ -z "$value" ]; then
        echo "$file: FROM $ref: ARG $name has no default" >&2
        return 1
      fi
      echo "$name $value"
    elif [[ $stages == *" $ref "* ]]; then
      continue
    else
      echo "- $ref"
    fi
  done < <(sed -nE 's/^[[:space:]]*FROM[[:space:]]+(--platform=[^[:space:]]+[[:space:]]+)?([^[:space:]]+).*$/\2/p' "$file")
}

resolver() {
  local want=${PIN_RESOLVER:-}
  for r in ${want:-crane docker skopeo}; do
    case "$r" in
      crane) command -v crane >/dev/null 2>&1 && { echo crane; return; } ;;
      docker) command -v docker >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1 && { echo docker; return; } ;;
      skopeo) command -v skopeo >/dev/null 2>&1 && { echo skopeo; return; } ;;
      *) echo "PIN_RESOLVER=$r: choose crane, docker or skopeo" >&2; return 2 ;;
    esac
  done
  echo "no resolver: install crane, docker with buildx, or skopeo (and reach the registry)" >&2
  return 2
}

# The digest of IMAGE (a name:tag, without any @digest) as sha256:<64 hex>.
resolve() {
  local tool=$1 image=$2 out
  case "$tool" in
    crane) out=$(crane digest "$image") ;;
    docker) out=$(docker buildx imagetools inspect "$image" | awk '/^Digest:/ {print $2; exit}') ;;
    skopeo) out=$(skopeo inspect --format '{{.Digest}}' "docker://$image") ;;
  esac
  if [[ ! $out =~ ^sha256:[0-9a-f]{64}$ ]]; then
    echo "$image: $tool answered '${out}', not a sha256 digest" >&2
    return 1
  fi
  echo "$out"
}

if [ "$mode" = list ]; then
  for f in "${files[@]}"; do
    from_images "$f" | awk '{print $2}'
  done | sort -u
  exit 0
fi

tool=$(resolver) || exit 2
status=0
for f in "${files[@]}"; do
  entries=$(from_images "$f" | sort -u) || { status=1; continue; }   # read before rewriting; once per ARG
  while read -r name image; do
    [ -n "$name" ] || continue
    base=${image%@*}                       # re-resolve the tag, whatever digest is there now
    if ! digest=$(resolve "$tool" "$base"); then
      status=1
      continue
    fi
    pinned="$base@$digest"
    if [ "$mode" = dry-run ]; then
      echo "$f: ${name/#-/FROM} $pinned"
      continue
    fi
    if [ "$name" = - ]; then
      escaped=$(printf '%s' "$image" | sed 's/[][\.*^$/]/\\&/g')
      sed -i -E "s/^([[:space:]]*FROM[[:space:]]+(--platform=[^[:space:]]+[[:space:]]+)?)${escaped}([[:space:]]|$)/\1${pinned//\//\\/}\3/" "$f"
    else
      sed -i -E "s/^([[:space:]]*ARG[[:space:]]+${name}=)[^[:space:]]+/\1${pinned//\//\\/}/" "$f"
    fi
    echo "$f: ${name/#-/FROM} $pinned"
  done <<< "$entries"
done
exit $status
