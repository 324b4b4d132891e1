#!/usr/bin/env bash
# The dashboard in a real browser: starts the demo topology (tools/run.sh's: a cloud qbridge,
# an edge qbridge bridged to it over QUIC, devices publishing through the edge), adds a
# device whose client id is HTML and a forward whose topic is HTML, and runs dashboard.mjs
# (Puppeteer driving Debian's headless Chromium) against the edge's dashboard.
#
#   tests/dashboard/dashboard_test.sh BUILD_DIR [SCREENSHOT_DIR]
#
# Screenshots go to SCREENSHOT_DIR (default BUILD_DIR/dashboard); docs/img/ holds the ones
# the README shows (tests/dashboard/dashboard_test.sh build/release docs/img).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(cd "${1:?usage: dashboard_test.sh BUILD_DIR [SCREENSHOT_DIR]}" && pwd)
shots=${2:-$bin/dashboard}
mkdir -p "$shots"
shots=$(cd "$shots" && pwd)
# Exit 77 (ctest: skipped) without a browser: tools/setup.sh installs chromium and
# tools/npm_deps.sh --tests puppeteer-core; a build as another user may have neither.
chromium=$(command -v chromium || true)
if [[ -z $chromium ]]; then
  echo "dashboard_test: skipped: chromium is missing (tools/setup.sh installs it)" >&2
  exit 77
fi
if [[ ! -d $root/tests/interop/node_modules/puppeteer-core ]]; then
  echo "dashboard_test: skipped: puppeteer-core is missing (tools/npm_deps.sh --tests)" >&2
  exit 77
fi

work=$(mktemp -d /tmp/qbridge-dashboard-XXXXXX)
pids=()
cleanup() {
  local p
  [[ -f $work/edge.pid ]] && pids+=("$(cat "$work/edge.pid")")
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {  # a port the kernel had free a moment ago ($1: tcp or udp)
  python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=='udp' else socket.SOCK_STREAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}
json_port() {  # the port named $2 in qbridge's start-up line in file $1
  for _ in $(seq 100); do
    if grep -q "\"$2\"" "$1" 2>/dev/null; then grep -o "\"$2\": [0-9]*" "$1" | head -1 | grep -o '[0-9]*$'; return; fi
    sleep 0.1
  done
  echo "dashboard_test: no $2 in $1" >&2
  return 1
}

export QBRIDGE_CERTS=$work/certs
"$root/tools/demo_certs.sh" "$QBRIDGE_CERTS"
qbridge=$bin/controlplane/qbridge
qbench=$bin/tools/qbench

sed -e 's|^bind = "127.0.0.1:14567"|bind = "127.0.0.1:0"|' -e 's|^bind = "127.0.0.1:18081"|bind = "127.0.0.1:0"|' \
  "$root/configs/demo-cloud.toml" > "$work/cloud.toml"
"$qbridge" --config "$work/cloud.toml" > "$work/cloud.out" 2> "$work/cloud.log" &
pids+=($!)
cloud_port=$(json_port "$work/cloud.out" quic_port)

# The edge keeps its ports across the restart the browser test asks for.
edge_quic=$(free_port udp)
edge_tcp=$(free_port tcp)
edge_http=$(free_port tcp)
evil_topic='x/<img src=x onerror="window.__xss=3">/#'
# The bridge also sends credentials (the cloud takes any), so the config page has a bridge
# password to mask besides the REST one.
sed -e "s|^bind = \"127.0.0.1:14568\"|bind = \"127.0.0.1:$edge_quic\"|" \
    -e "s|^clientid = \"edge-demo\"|&\nusername = \"edge\"\npassword = \"bridge-s3cret\"|" \
    -e "s|^bind = \"127.0.0.1:18082\"|bind = \"127.0.0.1:$edge_http\"|" \
    -e "s|mqtt-quic://127.0.0.1:14567|mqtt-quic://127.0.0.1:$cloud_port|" \
    -e "s|^  { local_topic = \"bulk/#\"\(.*\)$|&\n  { local_topic = '$evil_topic', remote_topic = \"\", prefix = \"edge/\", qos = 0, stream = 1 },|" \
    "$root/configs/demo-edge.toml" > "$work/edge.toml"
printf '\n[listeners.tcp]\nbind = "127.0.0.1:%s"\n' "$edge_tcp" >> "$work/edge.toml"
"$qbridge" --check-config "$work/edge.toml" > /dev/null

# The browser test stops the edge (SIGTERM; SIGKILL after 10 s) and starts it again.
cat > "$work/start_edge.sh" <<START
#!/usr/bin/env bash
"$qbridge" --config "$work/edge.toml" >> "$work/edge.out" 2>> "$work/edge.log" &
echo \$! > "$work/edge.pid"
START
cat > "$work/stop_edge.sh" <<STOP
#!/usr/bin/env bash
pid=\$(cat "$work/edge.pid")
kill -TERM "\$pid" 2>/dev/null || exit 0
for _ in \$(seq 100); do kill -0 "\$pid" 2>/dev/null || exit 0; sleep 0.1; done
kill -KILL "\$pid" 2>/dev/null || true
STOP
chmod +x "$work/start_edge.sh" "$work/stop_edge.sh"
"$work/start_edge.sh"
json_port "$work/edge.out" http_port > /dev/null

# Devices: QoS 1 telemetry and QoS 0 bulk data over QUIC, and one over TCP whose client id
# is HTML (the page must show it as text). They run until the cleanup stops them; qbench
# gives up on a connection the restart breaks, which the test no longer needs by then.
evil_id='<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>evil-device'
"$qbench" sub --server "127.0.0.1:$cloud_port" --ca "$QBRIDGE_CERTS/ca.pem" --topic 'edge/#' --qos 1 \
  --seconds 0 > /dev/null 2> "$work/sub.log" &
pids+=($!)
"$qbench" pub --server "127.0.0.1:$edge_quic" --ca "$QBRIDGE_CERTS/ca.pem" --topic telemetry/line-1 \
  --qos 1 --rate 500 --size 256 --seconds 0 > /dev/null 2> "$work/pub1.log" &
pids+=($!)
"$qbench" pub --server "127.0.0.1:$edge_quic" --ca "$QBRIDGE_CERTS/ca.pem" --topic bulk/line-1 \
  --qos 0 --rate 500 --size 1024 --streams 2 --seconds 0 > /dev/null 2> "$work/pub0.log" &
pids+=($!)
mosquitto_sub -h 127.0.0.1 -p "$edge_tcp" -V mqttv5 -i "$evil_id" -t 'down/#' -k 30 > /dev/null 2>&1 &
pids+=($!)

status=0
node "$root/tests/dashboard/dashboard.mjs" --url "http://127.0.0.1:$edge_http/dashboard/" \
  --user admin --password demo --chromium "$chromium" --shots "$shots" \
  --stop "$work/stop_edge.sh" --start "$work/start_edge.sh" --evil-id "$evil_id" --evil-topic "$evil_topic" || status=$?
if [[ $status -ne 0 ]]; then
  echo "--- edge log"; tail -n 40 "$work/edge.log"
  echo "--- cloud log"; tail -n 20 "$work/cloud.log"
fi
exit $status
