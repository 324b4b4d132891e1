#!/usr/bin/env bash
# Enforces the allowed arrows of docs/architecture.md ("Rooms and arrows") on the sources.
#
# Between modules:
#   mqtt/ and quic/ are leaves and never include each other;
#   dataplane/ never reaches into controlplane/; controlplane/ sees the dataplane through
#   dataplane/api/ only.
# Within and across file groups:
#   DPDK (rte_*) only in dataplane/dpdk/; ngtcp2 only in quic/; GnuTLS only in quic/ and in
#   controlplane/password.cc (password hashing); toml++ only in the config parser
#   (controlplane/config*); cpp-httplib only in controlplane/rest.cc;
#   dataplane/api/ (all the controlplane sees) uses std, Abseil, mqtt/ and itself only;
#   dataplane/net/ (packet headers) uses std, Abseil and itself only;
#   dataplane/worker/ is backend-agnostic: no DPDK and nothing from dataplane/dpdk/;
#   dataplane/store/ (the custody log) uses std, Abseil, ISA-L and itself only, and is the
#   only user of ISA-L;
#   private headers stay in their group: dataplane/worker/conn.h, controlplane/cp_internal.h,
#   controlplane/config_reader.h, quic/ng_path.h.
#
# Usage: check_includes.sh [ROOT]   (ROOT defaults to the repository; tests pass a copy)
set -euo pipefail
root=${1:-"$(dirname "$0")/.."}
cd "$root"

fail=0
inc='^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]'

# deny WHERE REGEX WHY: no file under WHERE (a folder) includes a header matching REGEX.
deny() {
  local where=$1 re=$2 why=$3 hits
  [[ -e $where ]] || return 0
  hits=$(grep -rnE "${inc}(${re})" "$where" --include='*.h' --include='*.cc' || true)
  if [[ -n $hits ]]; then
    echo "check_includes: $why:"; echo "$hits"; fail=1
  fi
}

# only ALLOWED REGEX WHY: a header matching REGEX is included only by files whose path
# matches ALLOWED (an extended regex over paths such as controlplane/rest.cc).
only() {
  local allowed=$1 re=$2 why=$3 hits
  hits=$(grep -rnE "${inc}(${re})" mqtt quic dataplane controlplane \
           --include='*.h' --include='*.cc' 2>/dev/null | grep -vE "^(${allowed}):" || true)
  if [[ -n $hits ]]; then
    echo "check_includes: $why:"; echo "$hits"; fail=1
  fi
}

# Modules.
deny mqtt 'quic/|dataplane/|controlplane/|rte_|ngtcp2|gnutls' "mqtt/ may use std and Abseil only"
deny quic 'mqtt/|dataplane/|controlplane/|rte_' "quic/ may use std, Abseil, ngtcp2 and GnuTLS only"
deny dataplane 'controlplane/|ngtcp2|gnutls' "dataplane/ may not reach into controlplane/ or TLS"
deny controlplane 'rte_|ngtcp2|quic/|dataplane/[^a]|dataplane/a[^p]|dataplane/ap[^i]' \
  "controlplane/ sees the dataplane through dataplane/api/ only"

# Third-party libraries, each in its own room.
only 'dataplane/dpdk/[^:]*' 'rte_' "DPDK headers only in dataplane/dpdk/"
only 'quic/[^:]*' 'ngtcp2' "ngtcp2 only in quic/"
only 'quic/[^:]*|controlplane/password\.cc' 'gnutls' \
  "GnuTLS only in quic/ and controlplane/password.cc"
only 'controlplane/config[^/:]*' 'toml\+\+' "toml++ only in the config parser (controlplane/config*)"
only 'controlplane/rest\.cc' 'httplib' "cpp-httplib only in controlplane/rest.cc"
only 'dataplane/store/[^:]*' 'isa-l/' "ISA-L only in dataplane/store/"

# File groups inside the dataplane.
deny dataplane/api 'quic/|rte_|dataplane/[^a]|dataplane/a[^p]|dataplane/ap[^i]' \
  "dataplane/api/ (what the controlplane sees) uses std, Abseil, mqtt/ and itself only"
deny dataplane/net 'quic/|mqtt/|rte_|dataplane/[^n]|dataplane/n[^e]|dataplane/ne[^t]' \
  "dataplane/net/ uses std, Abseil and itself only"
deny dataplane/store 'quic/|mqtt/|rte_|dataplane/[^s]|dataplane/s[^t]|dataplane/st[^o]' \
  "dataplane/store/ uses std, Abseil, ISA-L and itself only"
deny dataplane/worker 'rte_|dataplane/dpdk/' \
  "dataplane/worker/ is backend-agnostic (the backend is PollOnce's template argument)"

# Private headers.
only 'dataplane/worker/[^:]*' 'dataplane/worker/conn\.h' "dataplane/worker/conn.h is private to dataplane/worker/"
only 'controlplane/(controlplane|south_sessions|bridges|routing)\.cc' 'controlplane/cp_internal\.h' \
  "controlplane/cp_internal.h is private to the controlplane core's files"
only 'controlplane/config[^/:]*' 'controlplane/config_reader\.h' \
  "controlplane/config_reader.h is private to the config parser"
only 'quic/connection[^/:]*' 'quic/ng_path\.h' "quic/ng_path.h is private to quic/connection*.cc"

((fail == 0)) && echo "check_includes: module boundaries hold"
exit $fail
