#!/usr/bin/env bash
# From a fresh clone: installs what is missing, builds everything into build/, then starts a
# coordinator on the bus `demo` and shows messages flowing (tools/demo.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
echo
tools/demo.sh
