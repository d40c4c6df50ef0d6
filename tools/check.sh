#!/usr/bin/env bash
# Runs every test: the normal build, a 10-second soak, the same suite under ASan+UBSan, and
# the thread-based stress tests under TSan. Each build has its own folder: build/, build-asan/, build-tsan/.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/deps.sh

jobs=$(nproc)
configure_and_build() {  # folder, targets ("" for all), extra cmake arguments...
  local dir=$1 targets=$2
  shift 2
  cmake -S . -B "$dir" -G Ninja -DSHMCAST_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j "$jobs" ${targets:+--target $targets}
}

echo "== build and test (Release)"
configure_and_build build "" -DCMAKE_BUILD_TYPE=Release
ctest --test-dir build -j "$jobs" --output-on-failure

echo "== soak (10 s): processes come and go, random SIGKILLs, the books must balance"
build/bin/shmcast-soak --seconds 10

echo "== ASan + UBSan"
configure_and_build build-asan "" -DCMAKE_BUILD_TYPE=Debug -DSHMCAST_SANITIZE=address,undefined \
  -DSHMCAST_BUILD_BENCH=OFF -DSHMCAST_BUILD_EXAMPLES=OFF
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -j "$jobs" --output-on-failure

echo "== TSan (thread-based stress tests)"
configure_and_build build-tsan "ring_thread_stress_test registry_thread_stress_test subscriber_fd_thread_stress_test loan_thread_stress_test" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHMCAST_SANITIZE=thread \
  -DSHMCAST_BUILD_BENCH=OFF -DSHMCAST_BUILD_EXAMPLES=OFF
# TSan's shadow memory needs the address layout it expects: run without ASLR.
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  setarch "$(uname -m)" -R ctest --test-dir build-tsan -j "$jobs" --output-on-failure -L tsan

echo "== all test runs passed"
