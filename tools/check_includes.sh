#!/usr/bin/env bash
# Enforces the module boundaries of docs/architecture.md on the sources:
#   mqtt/ and quic/ are leaves and never include each other;
#   rte_* (DPDK) only in dataplane/; ngtcp2/gnutls only in quic/;
#   controlplane/ sees dataplane/ through dataplane/api/ only.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
check() {  # check DIR REGEX WHY
  local dir=$1 re=$2 why=$3 hits
  [[ -d $dir ]] || return 0
  hits=$(grep -rnE "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($re)" "$dir" \
           --include='*.h' --include='*.cc' || true)
  if [[ -n $hits ]]; then
    echo "check_includes: $why:"; echo "$hits"; fail=1
  fi
}

check mqtt 'quic/|dataplane/|controlplane/|rte_|ngtcp2|gnutls' "mqtt/ may use std and Abseil only"
check quic 'mqtt/|dataplane/|controlplane/|rte_' "quic/ may use std, Abseil, ngtcp2 and GnuTLS only"
check dataplane 'controlplane/|ngtcp2|gnutls' "dataplane/ may not reach into controlplane/ or TLS"
check controlplane 'rte_|ngtcp2|gnutls|quic/|dataplane/[^a]|dataplane/a[^p]|dataplane/ap[^i]' \
  "controlplane/ sees the dataplane through dataplane/api/ only"
((fail == 0)) && echo "check_includes: module boundaries hold"
exit $fail
