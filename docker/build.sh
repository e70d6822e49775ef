#!/usr/bin/env bash
# Builds the container image of Concord (default tag concord:latest) from the
# release binary. No registry is needed: the image starts FROM scratch and
# holds the binary plus the shared libraries `ldd` lists for it.
#
#   docker/build.sh                          # cargo build --release, then the image
#   docker/build.sh --binary target/debug/concord --tag concord:test
#                                            # an already built binary (the CI smoke)
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
tag="concord:latest"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "docker/build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

command -v docker >/dev/null 2>&1 || { echo "docker/build.sh: docker is not installed" >&2; exit 1; }

if [ -z "$binary" ]; then
  source scripts/setup.sh
  cargo build --release --locked -p concord-cli --bin concord
  binary="${CARGO_TARGET_DIR:-target}/release/concord"
fi
[ -x "$binary" ] || { echo "docker/build.sh: no executable at $binary" >&2; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/data" "$ctx/rootfs/tmp"
cp "$binary" "$ctx/rootfs/concord"
# Debug sections (most of them RocksDB's) are 90% of an optimised build;
# the image keeps the symbols, so backtraces still name functions.
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug "$ctx/rootfs/concord"
fi
# Every shared library the binary loads, and the dynamic loader, at the
# paths the binary expects them.
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  cp --parents -L "$lib" "$ctx/rootfs/"
done
cp docker/Dockerfile "$ctx/Dockerfile"
docker build --quiet -t "$tag" "$ctx" >/dev/null
echo "built image $tag from $binary ($(du -sh "$ctx/rootfs" | cut -f1))"
