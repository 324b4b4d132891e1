#!/usr/bin/env bash
# The README's second command: installs what is missing, builds, and runs every test —
# unit, integration (real peers on loopback), a fuzz smoke run of every fuzz target, and
# benchmark smoke runs (tools/bench.sh --smoke among them, through ctest). Exits non-zero
# on any failure.
#
#   QBRIDGE_FUZZ_SECONDS  seconds per fuzz target (default 20)
#   QBRIDGE_JOBS          parallel build and test jobs (default: number of cores)
set -euo pipefail
cd "$(dirname "$0")/.."

fuzz_seconds=${QBRIDGE_FUZZ_SECONDS:-20}
jobs=${QBRIDGE_JOBS:-$(nproc)}

if [[ $(id -u) -eq 0 ]]; then
  tools/setup.sh
else
  echo "test.sh: not root, so not installing packages; run 'sudo tools/setup.sh' if the build fails"
fi

# From npm, pinned by lockfiles: uPlot (built into the dashboard), and the independent peers
# of the interop tests (@matrixai/quic, mqtt-packet) and the dashboard's browser driver
# (puppeteer-core).
tools/npm_deps.sh --tests

echo "== release build and tests"
cmake --preset release
cmake --build --preset release -j "$jobs"
ctest --preset release -j "$jobs"

echo "== fuzz smoke (${fuzz_seconds}s per target)"
cmake --preset fuzz
cmake --build --preset fuzz -j "$jobs"
for target in mqtt_framer topic quic_endpoint tls_record net_parse config store_recovery; do
  work=$(mktemp -d)
  log=build/fuzz/${target}_fuzz.log
  if ! build/fuzz/tests/fuzz/${target}_fuzz -max_total_time="$fuzz_seconds" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 "$work" "tests/fuzz/corpus/$target" >"$log" 2>&1; then
    rm -rf "$work"
    echo "fuzz target $target found a failure:"; tail -n 60 "$log"
    exit 1
  fi
  rm -rf "$work"
  echo "$target: $(grep -E '^Done' "$log")"
done
echo "test.sh: all tests passed"
