#!/usr/bin/env bash
# tools/check_includes.sh must catch what it claims to: each case plants one forbidden
# include in a copy of the sources and expects the matching complaint and a failing exit.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

fresh() {
  rm -rf "$work/tree" && mkdir -p "$work/tree"
  cp -r "$repo"/{mqtt,quic,dataplane,controlplane} "$work/tree/"
}

# expect FILE INCLUDE MESSAGE
expect() {
  local file=$1 include=$2 message=$3 out rc
  fresh
  printf '#include %s\n' "$include" >> "$work/tree/$file"
  out=$("$repo/tools/check_includes.sh" "$work/tree" 2>&1); rc=$?
  if [[ $rc -eq 0 || $out != *"$message"* ]]; then
    echo "FAIL: $include in $file: rc=$rc, wanted \"$message\", got:"; echo "$out"
    failures=$((failures + 1))
  else
    echo "ok: $include in $file is refused"
  fi
}

fresh
if ! out=$("$repo/tools/check_includes.sh" "$work/tree" 2>&1); then
  echo "FAIL: the unchanged sources are refused:"; echo "$out"; failures=$((failures + 1))
fi
expect mqtt/types.h '"quic/buffer.h"' "mqtt/ may use std and Abseil only"
expect quic/buffer.h '"mqtt/types.h"' "quic/ may use std, Abseil, ngtcp2 and GnuTLS only"
expect controlplane/bridges.cc '"dataplane/worker/worker.h"' "controlplane/ sees the dataplane through dataplane/api/ only"
expect controlplane/auth.cc '<gnutls/gnutls.h>' "GnuTLS only in quic/ and controlplane/password.cc"
expect controlplane/main.cc '<toml++/toml.h>' "toml++ only in the config parser"
expect controlplane/main.cc '<httplib.h>' "cpp-httplib only in controlplane/rest.cc"
expect dataplane/runtime.cc '<ngtcp2/ngtcp2.h>' "dataplane/ may not reach into controlplane/ or TLS"
expect dataplane/udp_socket.cc '<rte_mbuf.h>' "DPDK headers only in dataplane/dpdk/"
expect dataplane/worker/rings.cc '"dataplane/dpdk/dpdk_io.h"' "dataplane/worker/ is backend-agnostic"
expect dataplane/api/msg.h '"quic/buffer.h"' "dataplane/api/ (what the controlplane sees)"
expect dataplane/net/headers.h '"mqtt/types.h"' "dataplane/net/ uses std, Abseil and itself only"
expect dataplane/runtime.cc '"dataplane/worker/conn.h"' "dataplane/worker/conn.h is private"
expect controlplane/rest.cc '"controlplane/cp_internal.h"' "controlplane/cp_internal.h is private"
expect controlplane/main.cc '"controlplane/config_reader.h"' "controlplane/config_reader.h is private"
expect quic/endpoint.cc '"quic/ng_path.h"' "quic/ng_path.h is private"
expect dataplane/worker/bridge.cc '<isa-l/crc.h>' "ISA-L only in dataplane/store/"
expect dataplane/store/log.cc '"mqtt/types.h"' "dataplane/store/ uses std, Abseil, ISA-L and itself only"

echo "check_includes_test: $failures failed"
exit $((failures > 0))
