#!/usr/bin/env bash
# The standard benchmark scenarios in one command: builds qbridge and qbench if needed, then
# runs tools/bench.py (throughput against mosquitto, 10,000-device fan-in, handshakes,
# memory per session, one worker against two), writing docs/bench/*.json, PNG plots and
# docs/bench/README.md. Takes about 15 minutes; --smoke runs each scenario small (under a
# minute) into a temporary directory and checks it. Options: tools/bench.py --help.
#
#   tools/bench.sh [--smoke] [--only throughput,fanin,handshakes,memory,scaling] [--seconds S]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ ! -x $root/build/release/controlplane/qbridge || ! -x $root/build/release/tools/qbench ]]; then
  (cd "$root" && cmake --preset release >/dev/null && cmake --build --preset release --target qbridge qbench)
fi
exec python3 "$root/tools/bench.py" "$@"
