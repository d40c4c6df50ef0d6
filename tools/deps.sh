#!/usr/bin/env bash
# Installs the Debian packages shmcast needs to build, test and run its demo, if any is missing.
# redis-server and redis-tools are the reference the CLI tests compare against, and the peer of
# the Redis bridge and the side-by-side benchmarks (hiredis); redis-tools' redis-cli also joins
# the private Redis Cluster of the bridge's cluster tests and benchmark; passwd's useradd makes the
# throwaway users of the permission tests when they run as root. The Python package builds with
# pybind11 for Debian's python3; its tests use pytest and redis-py as the reference.
set -euo pipefail

packages=(
  g++ cmake ninja-build pkg-config
  libboost-dev libfmt-dev libcli11-dev libsystemd-dev
  libgtest-dev libgmock-dev libbenchmark-dev libhiredis-dev
  redis-server redis-tools passwd
  python3-dev pybind11-dev python3-pytest python3-pytest-asyncio python3-redis
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "shmcast: installing missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  apt_get=(apt-get)
elif command -v sudo >/dev/null; then
  apt_get=(sudo apt-get)
else
  echo "shmcast: missing packages (${missing[*]}) and not root: run this as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${apt_get[@]}" update -qq
"${apt_get[@]}" install -y -qq --no-install-recommends "${missing[@]}"
