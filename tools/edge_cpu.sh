#!/usr/bin/env bash
# Edge CPU per forwarded message, end to end on loopback: an edge and a cloud qbridge (kernel
# UDP, configs/demo-*.toml), one `qbench pub` into the edge at a fixed open-loop rate, one
# `qbench sub` on the cloud. Prints the bridge's forwarded msg/s and the edge process's
# user+sys CPU per forwarded message over the measured window. For A/B runs of two builds in
# one session (docs/benchmarks.md); not a capacity figure (everything shares the cores).
#
# With --store, the edge's bridge is a store-and-forward bridge (docs/store.md) with its
# custody log under the work directory (fsync "batch"), for the store's cost end to end;
# --commit-delay D (implies --store) sets [store] commit_delay, e.g. "2ms".
#
#   tools/edge_cpu.sh [--qbridge BIN] [--qbench BIN] [--qos 0|1] [--size BYTES]
#                     [--rate MSGS_PER_S] [--seconds S] [--store] [--commit-delay D]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
qb=$root/build/release/controlplane/qbridge
bench=$root/build/release/tools/qbench
qos=0; size=64; rate=100000; secs=6; store=0; delay=1ms
while [[ $# -gt 0 ]]; do
  case $1 in
    --qbridge) qb=$2; shift 2 ;;
    --qbench) bench=$2; shift 2 ;;
    --qos) qos=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --store) store=1; shift ;;
    --commit-delay) store=1; delay=$2; shift 2 ;;
    *) sed -n '2,14p' "$0" >&2; exit 2 ;;
  esac
done
work=$(mktemp -d /tmp/qbridge-edgecpu-XXXXXX)
export QBRIDGE_CERTS=$work/certs
"$root/tools/demo_certs.sh" "$QBRIDGE_CERTS" >/dev/null 2>&1
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
"$qb" --config "$root/configs/demo-cloud.toml" >"$work/cloud.out" 2>"$work/cloud.log" & pids+=($!)
edge_config=$root/configs/demo-edge.toml
if [[ $store == 1 ]]; then
  # The demo's config, its bridge with a custody log.
  edge_config=$work/edge-store.toml
  sed "s|^\[bridges.mqtt.cloud\]|[store]\ndir = \"$work/store\"\ncommit_delay = \"$delay\"\n\n[bridges.mqtt.cloud]\nstore = true|" \
    "$root/configs/demo-edge.toml" >"$edge_config"
fi
"$qb" --config "$edge_config" >"$work/edge.out" 2>"$work/edge.log" & edge=$!; pids+=($edge)
rest() { curl -s -u admin:demo http://127.0.0.1:18082/api/v4/bridges/cloud; }
for _ in $(seq 100); do rest | grep -q '"connected":true' && break; sleep 0.2; done
rest | grep -q '"connected":true' || { echo "edge_cpu: the bridge did not come up" >&2; cat "$work/edge.log" >&2; exit 1; }
# The demo edge forwards bulk/# at QoS 0 and telemetry/# at QoS 1.
topic=$([[ $qos == 0 ]] && echo bulk/edge-cpu || echo telemetry/edge-cpu)
"$bench" sub --server 127.0.0.1:14567 --ca "$QBRIDGE_CERTS/ca.pem" --topic 'edge/#' --qos "$qos" \
  --seconds $((secs + 3)) >/dev/null 2>&1 & pids+=($!)
sleep 0.5
"$bench" pub --server 127.0.0.1:14568 --ca "$QBRIDGE_CERTS/ca.pem" --topic "$topic" --qos "$qos" \
  --rate "$rate" --size "$size" --seconds $((secs + 2)) >/dev/null 2>&1 & pids+=($!)
cpu() { awk '{print $14 + $15}' "/proc/$edge/stat"; }
tx() { rest | grep -o '"tx_messages":[0-9]*' | head -1 | cut -d: -f2; }
sleep 1.5  # past the ramp
c0=$(cpu); t0=$(tx); s0=$(date +%s%N)
sleep "$secs"
c1=$(cpu); t1=$(tx); s1=$(date +%s%N)
awk -v c=$((c1 - c0)) -v t=$((t1 - t0)) -v ns=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {
  printf "forwarded %.0f msg/s  edge CPU %.3f us/msg  edge CPU %.0f%%\n",
         t / (ns / 1e9), (c / hz * 1e6) / (t > 0 ? t : 1), 100 * (c / hz) / (ns / 1e9) }'
