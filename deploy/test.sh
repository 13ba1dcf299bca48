#!/usr/bin/env bash
# Runs the whole test suite: unit, integration and client-compatibility tests,
# in a build with AddressSanitizer and UBSan, after checking that the release
# build compiles warning-free. Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/setup.sh --no-build

[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build

[ -f build-test/build.ninja ] || meson setup build-test -Db_sanitize=address,undefined -Db_lundef=false
ninja -C build-test

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
start=$(date +%s)
status=0
meson test -C build-test --print-errorlogs --num-processes 2 || status=$?
echo "test suite took $(( $(date +%s) - start )) s"
exit $status
