#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs the appliance end to
# end on this machine:
#
#   devices (qbench pub) --QUIC--> edge qbridge --QUIC bridge--> cloud qbridge --> qbench sub
#
# The cloud qbridge stands in for a cloud broker and counts only control-stream packets for
# keepalive (as EMQX <= 5.8.1 does), so a bridge that let PINGREQs starve under load would be
# disconnected. The edge runs on the DPDK backend over net_tap when root (the kernel reaches
# it through a TAP interface, 198.18.77.0/24), on kernel UDP otherwise. Once a second it
# prints messages/s through the bridge, PINGRESP round trip and reconnects.
#
#   tools/run.sh [--seconds N] [--backend dpdk|socket] [--rate MSGS_PER_S]
#   (default: until Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=0
rate=2000
backend=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    *) echo "usage: tools/run.sh [--seconds N] [--backend dpdk|socket] [--rate N]" >&2; exit 2 ;;
  esac
done

if [[ $(id -u) -eq 0 ]]; then
  tools/setup.sh
else
  echo "run.sh: not root, so not installing packages; run 'sudo tools/setup.sh' if the build fails"
fi
if [[ -z $backend ]]; then
  if [[ $(id -u) -eq 0 && -c /dev/net/tun ]]; then backend=dpdk; else backend=socket; fi
fi
tools/npm_deps.sh  # uPlot, for the dashboard built into qbridge
cmake --preset release >/dev/null
cmake --build --preset release --target qbridge qbench

bin=$root/build/release
work=$(mktemp -d /tmp/qbridge-demo-XXXXXX)
export QBRIDGE_CERTS=$work/certs
tools/demo_certs.sh "$QBRIDGE_CERTS"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# Ports and addresses. With DPDK the edge owns 198.18.77.2 behind the TAP interface; the
# kernel side (devices, cloud) is 198.18.77.1.
if [[ $backend == dpdk ]]; then
  tap=qbdemo$$
  tap=${tap:0:15}
  edge_ip=198.18.77.2
  cloud_ip=198.18.77.1
  sed -e "s|^backend = .*|backend = \"dpdk\"|" \
      -e "s|^bind = \"127.0.0.1:14568\"|bind = \"$edge_ip:14568\"|" \
      -e "s|^server = \"mqtt-quic://127.0.0.1:14567\"|server = \"mqtt-quic://$cloud_ip:14567\"|" \
      configs/demo-edge.toml > "$work/edge.toml"
  # The DPDK port is a TAP interface into the kernel: add its EAL arguments and address to
  # the [dataplane] table.
  awk -v tap="$tap" -v ip="$edge_ip" '
    { print }
    /^workers = 1/ && !done {
      print "eal_args = [\"--no-huge\", \"--no-pci\", \"--no-shconf\", \"-m\", \"256\", \"--file-prefix=qbridge_demo\", \"--vdev=net_tap0,iface=" tap "\"]"
      print "address = \"" ip "/24\""
      done = 1
    }' "$work/edge.toml" > "$work/edge2.toml"
  mv "$work/edge2.toml" "$work/edge.toml"
  sed -e "s|^bind = \"127.0.0.1:14567\"|bind = \"$cloud_ip:14567\"|" configs/demo-cloud.toml > "$work/cloud.toml"
else
  edge_ip=127.0.0.1
  cloud_ip=127.0.0.1
  cp configs/demo-edge.toml "$work/edge.toml"
  cp configs/demo-cloud.toml "$work/cloud.toml"
fi

"$bin/controlplane/qbridge" --check-config "$work/edge.toml" >/dev/null
"$bin/controlplane/qbridge" --check-config "$work/cloud.toml" >/dev/null || true  # binds later

echo "run.sh: edge qbridge on the $backend backend"
"$bin/controlplane/qbridge" --config "$work/edge.toml" > "$work/edge.out" 2> "$work/edge.log" &
pids+=($!)
if [[ $backend == dpdk ]]; then
  for _ in $(seq 100); do ip link show "$tap" >/dev/null 2>&1 && break; sleep 0.1; done
  ip addr replace "$cloud_ip/24" dev "$tap"
  ip link set "$tap" up
fi
echo "run.sh: cloud qbridge (the upstream) on $cloud_ip:14567"
"$bin/controlplane/qbridge" --config "$work/cloud.toml" > "$work/cloud.out" 2> "$work/cloud.log" &
pids+=($!)

# Wait for the bridge.
bridge() { curl -s -u admin:demo http://127.0.0.1:18082/api/v4/bridges/cloud; }
for _ in $(seq 150); do
  if bridge | grep -q '"connected":true'; then break; fi
  sleep 0.2
done
if ! bridge | grep -q '"connected":true'; then
  echo "run.sh: the bridge did not come up; logs:" >&2
  cat "$work/edge.log" "$work/cloud.log" >&2
  exit 1
fi
echo "run.sh: bridge up; devices publish telemetry (QoS 1) and bulk data (QoS 0) to the edge"
echo "run.sh: dashboard at http://127.0.0.1:18082/dashboard/ (user admin, password demo)"

run_for=$([[ $seconds -gt 0 ]] && echo $((seconds + 2)) || echo 0)
"$bin/tools/qbench" sub --server "$cloud_ip:14567" --ca "$QBRIDGE_CERTS/ca.pem" \
  --topic 'edge/telemetry/#' --qos 1 --seconds "$run_for" > "$work/sub.json" 2> "$work/sub.log" &
pids+=($!)
sleep 0.5
"$bin/tools/qbench" pub --server "$edge_ip:14568" --ca "$QBRIDGE_CERTS/ca.pem" \
  --topic telemetry/line-1 --qos 1 --rate "$rate" --size 256 --seconds "$seconds" \
  > "$work/pub1.json" 2> "$work/pub1.log" &
pids+=($!)
"$bin/tools/qbench" pub --server "$edge_ip:14568" --ca "$QBRIDGE_CERTS/ca.pem" \
  --topic bulk/line-1 --qos 0 --rate "$rate" --size 1024 --streams 2 --seconds "$seconds" \
  > "$work/pub0.json" 2> "$work/pub0.log" &
pids+=($!)

num() { grep -o "\"$1\":[0-9.e+-]*" | head -1 | cut -d: -f2; }
start=$(date +%s%N)
last_tx=0
last_t=$start
printf '%6s %12s %12s %14s %12s %10s %12s\n' time "bridge msg/s" "QoS1 recv/s" "PINGRESP RTT" "PINGREQs" reconnects "ctrl idle"
while :; do
  sleep 1
  now=$(date +%s%N)
  b=$(bridge)
  tx=$(echo "$b" | num tx_messages); tx=${tx:-0}
  rtt=$(echo "$b" | num pingresp_rtt_last_ms); rtt=${rtt:-0}
  pings=$(echo "$b" | num pingreqs_sent); pings=${pings:-0}
  rec=$(echo "$b" | num reconnects); rec=${rec:-0}
  idle=$(echo "$b" | num control_stream_idle_ms); idle=${idle:-0}
  recv=$(tail -1 "$work/sub.log" 2>/dev/null | sed -n 's/.*received *\([0-9]*\)\/s.*/\1/p')
  per_s=$(( (tx - last_tx) * 1000000000 / (now - last_t) ))
  printf '%5ss %12s %12s %11.2f ms %12s %10s %9.0f ms\n' $(( (now - start) / 1000000000 )) "$per_s" \
    "${recv:-0}" "$rtt" "$pings" "$rec" "$idle"
  last_tx=$tx
  last_t=$now
  if [[ $seconds -gt 0 && $(( (now - start) / 1000000000 )) -ge $seconds ]]; then break; fi
done
sleep 3
sub_summary=$(cat "$work/sub.json" 2>/dev/null)
echo "run.sh: subscriber's summary: received $(num received <<<"$sub_summary"), missing" \
  "$(num missing <<<"$sub_summary"), duplicates $(num duplicates <<<"$sub_summary"), latency p99" \
  "$(num latency_p99_ms <<<"$sub_summary") ms"
echo "run.sh: the dashboard (http://127.0.0.1:18082/dashboard/) and metrics (/metrics) were up while it ran (admin/demo)"
