#!/usr/bin/env bash
# Installs the npm packages the build and the tests use, pinned by their lockfiles; does
# nothing for a tree already in place. No root needed.
#
#   tools/npm_deps.sh           the build's: uPlot, embedded in qbridge for the dashboard
#   tools/npm_deps.sh --tests   and the tests': @matrixai/quic, mqtt-packet, puppeteer-core
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -f controlplane/dashboard/node_modules/uplot/dist/uPlot.iife.min.js ]]; then
  echo "== npm install (controlplane/dashboard)"
  npm ci --prefix controlplane/dashboard --no-audit --no-fund
fi
if [[ ${1:-} == --tests ]]; then
  if [[ ! -d tests/interop/node_modules/@matrixai/quic || ! -d tests/interop/node_modules/mqtt-packet ||
        ! -d tests/interop/node_modules/puppeteer-core ]]; then
    echo "== npm install (tests/interop)"
    # npm ci refuses this lockfile: the package names macOS/Windows builds that the
    # registry does not have. install --no-save follows the lockfile and leaves it alone.
    npm install --prefix tests/interop --no-save --no-audit --no-fund
  fi
fi
