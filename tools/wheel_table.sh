#!/usr/bin/env bash
# Which edge dependencies install from wheels alone (no compiler) on aarch64, per Python version.
# Prints a Markdown table: the version pip would fetch, or "no wheel". Needs PyPI access.
# Usage: bash tools/wheel_table.sh [package ...]   (default: every edge dependency)
set -uo pipefail
PY=${PYTHON:-python3}
PACKAGES=("$@")
[ ${#PACKAGES[@]} -gt 0 ] || PACKAGES=(numpy opencv-python-headless ai-edge-litert psutil prometheus-client
  requests charset-normalizer cryptography cffi click tqdm flatbuffers protobuf annoy "psutil==5.9.5")
VERSIONS=(3.10 3.11 3.12 3.13)
# Every manylinux tag up to glibc 2.35: JetPack 6 (Ubuntu 22.04) has 2.35, Raspberry Pi OS 12/13 2.36/2.41.
# pip does not widen a --platform to older glibc tags itself, so each one is listed.
PLATFORMS=(--platform manylinux2014_aarch64)
for g in $(seq 17 35); do PLATFORMS+=(--platform "manylinux_2_${g}_aarch64"); done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '| package |'; printf ' %s |' "${VERSIONS[@]}"; printf '\n|---|'; printf -- '---|%.0s' "${VERSIONS[@]}"; echo
for pkg in "${PACKAGES[@]}"; do
  printf '| %s |' "$pkg"
  for v in "${VERSIONS[@]}"; do
    d="$tmp/$pkg-$v"
    if "$PY" -m pip download -q --no-deps --only-binary :all: "${PLATFORMS[@]}" --python-version "$v" \
         --implementation cp -d "$d" "$pkg" >/dev/null 2>&1; then
      whl=$(basename "$(ls "$d"/*.whl | head -1)")
      ver=$(echo "$whl" | cut -d- -f2); tag=$(echo "$whl" | rev | cut -d- -f1 | rev | sed 's/\.whl$//')
      printf ' %s (%s) |' "$ver" "$tag"
    else
      printf ' no wheel |'
    fi
  done
  echo
done
