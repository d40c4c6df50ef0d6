#!/usr/bin/env bash
# From a fresh clone: installs what is missing, builds everything into build/, then runs the
# micro-benchmarks of the core pieces (glob matcher and ring) for a first look at the numbers.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
echo
echo "== micro-benchmarks (build/bin/shmcast-microbench)"
build/bin/shmcast-microbench --benchmark_min_time=0.2
