#!/usr/bin/env bash
# MQTT over TLS against plain MQTT over TCP on the south listeners, in one run: one qbridge
# with [listeners.tcp] and [listeners.ssl] (demo certificates), a `qbench sub` and a
# `qbench pub` on the same transport through it, then `qbench connect` (TCP connect, TLS
# handshake, CONNECT/CONNACK, close, one after the other). The transports alternate,
# --rounds times, so drift on a noisy VM hits both alike. Per round and transport it prints
# what the subscriber got per second and qbridge's user+sys CPU per delivered message, and
# connections per second with qbridge's CPU per connection. Everything shares the cores:
# ratios, not capacity (docs/benchmarks.md).
#
#   tools/tls_bench.sh [--qbridge BIN] [--qbench BIN] [--qos 0|1] [--size BYTES]
#                      [--rate MSGS_PER_S] [--seconds S] [--rounds N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
qb=$root/build/release/controlplane/qbridge
bench=$root/build/release/tools/qbench
qos=0; size=64; rate=200000; secs=5; rounds=2
while [[ $# -gt 0 ]]; do
  case $1 in
    --qbridge) qb=$2; shift 2 ;;
    --qbench) bench=$2; shift 2 ;;
    --qos) qos=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
  esac
done
work=$(mktemp -d /tmp/qbridge-tlsbench-XXXXXX)
"$root/tools/demo_certs.sh" "$work/certs" >/dev/null 2>&1
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cat >"$work/qbridge.toml" <<EOF
[listeners.tcp]
bind = "127.0.0.1:0"

[listeners.ssl]
bind = "127.0.0.1:0"
certfile = "$work/certs/server.pem"
keyfile = "$work/certs/server.key"
EOF
"$qb" --config "$work/qbridge.toml" >"$work/qbridge.out" 2>"$work/qbridge.log" & qpid=$!; pids+=($qpid)
for _ in $(seq 50); do [[ -s $work/qbridge.out ]] && break; sleep 0.1; done
ports=$(head -1 "$work/qbridge.out")
tcp_port=$(sed 's/.*"tcp_port": \([0-9]*\).*/\1/' <<<"$ports")
tls_port=$(sed 's/.*"tls_port": \([0-9]*\).*/\1/' <<<"$ports")
[[ $tcp_port =~ ^[0-9]+$ && $tls_port =~ ^[0-9]+$ ]] || { cat "$work/qbridge.log" >&2; exit 1; }
cpu() { awk '{print $14 + $15}' "/proc/$qpid/stat"; }
hz=$(getconf CLK_TCK)
port_of() { [[ $1 == tls ]] && echo "$tls_port" || echo "$tcp_port"; }

throughput() {  # transport -> "msg/s us/msg"
  local t=$1 port; port=$(port_of "$t")
  "$bench" sub --transport "$t" --server "127.0.0.1:$port" --ca "$work/certs/ca.pem" --topic "b/$t/#" \
    --qos "$qos" --seconds $((secs + 3)) >"$work/sub.json" 2>/dev/null & local sub=$!
  sleep 0.5
  "$bench" pub --transport "$t" --server "127.0.0.1:$port" --ca "$work/certs/ca.pem" --topic "b/$t/x" \
    --qos "$qos" --rate "$rate" --size "$size" --seconds "$secs" >"$work/pub.json" 2>/dev/null & local pub=$!
  local c0; c0=$(cpu)
  wait "$pub" || true
  local c1; c1=$(cpu)
  wait "$sub" || true
  awk -v c=$((c1 - c0)) -v hz="$hz" -v secs="$secs" '{
    match($0, /"received":[0-9]+/); n = substr($0, RSTART + 11, RLENGTH - 11) + 0
    printf "%.0f %.3f", n / secs, (c / hz * 1e6) / (n > 0 ? n : 1) }' "$work/sub.json"
}

connects() {  # transport -> "conn/s us/conn"
  local t=$1 port; port=$(port_of "$t")
  local c0; c0=$(cpu)
  "$bench" connect --transport "$t" --server "127.0.0.1:$port" --ca "$work/certs/ca.pem" \
    --seconds "$secs" >"$work/conn.json" 2>/dev/null || true
  local c1; c1=$(cpu)
  awk -v c=$((c1 - c0)) -v hz="$hz" '{
    match($0, /"connects":[0-9]+/); n = substr($0, RSTART + 11, RLENGTH - 11) + 0
    match($0, /"rate":[0-9.]+/); r = substr($0, RSTART + 7, RLENGTH - 7) + 0
    printf "%.0f %.1f", r, (c / hz * 1e6) / (n > 0 ? n : 1) }' "$work/conn.json"
}

echo "qos $qos, $size B payload, offered $rate msg/s, ${secs}s per run, $rounds rounds"
printf '%-6s %-5s %12s %16s %10s %16s\n' round proto "msg/s" "qbridge us/msg" "conn/s" "qbridge us/conn"
for r in $(seq "$rounds"); do
  for t in tcp tls; do
    read -r mps upm <<<"$(throughput "$t")"
    read -r cps upc <<<"$(connects "$t")"
    printf '%-6s %-5s %12s %16s %10s %16s\n' "$r" "$t" "$mps" "$upm" "$cps" "$upc"
    if [[ ${mps:-0} == 0 || ${cps:-0} == 0 ]]; then
      echo "tls_bench: nothing got through over $t" >&2; cat "$work/qbridge.log" >&2; exit 1
    fi
  done
done
