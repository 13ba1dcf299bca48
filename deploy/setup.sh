#!/usr/bin/env bash
# Installs every Debian package the project needs (only those missing) and
# builds it into ./build. Safe to run again: it does only what is left to do.
#   deploy/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  gcc meson ninja-build pkg-config
  libev-dev liblmdb-dev libyaml-dev libjansson-dev check
  libprotobuf-c-dev protobuf-c-compiler libnghttp2-dev
  iproute2 procps
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js runs the client-compatibility tests; keep an existing installation.
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "${1:-}" != "--no-build" ]; then
  [ -f build/build.ninja ] || meson setup build --buildtype=release
  ninja -C build
fi
