#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs what qbridge can
# do today, end to end on this machine with live figures.
#
# The appliance binary does not exist yet (see docs/status.md). Until it lands, this runs
# qbridge's MQTT core against a real broker: a private mosquitto on a loopback port, a
# publisher and a subscriber speaking MQTT only through qbridge's codec and QoS state, and
# one line of figures per second (messages/s acknowledged and received, PUBLISH->PUBACK
# time, reordering).
#
#   tools/run.sh [--seconds N] [--version 3.1|3.1.1|5] [--window N] [--payload BYTES]
#   (default: 10 seconds; --seconds 0 runs until Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -eq 0 ]]; then
  tools/setup.sh
else
  echo "run.sh: not root, so not installing packages; run 'sudo tools/setup.sh' if the build fails"
fi
cmake --preset release >/dev/null
cmake --build --preset release --target mqtt_probe
echo "run.sh: qbridge MQTT codec <-> mosquitto on loopback"
exec build/release/tools/mqtt_probe --spawn-mosquitto "$@"
