#!/usr/bin/env bash
# The main job: `bash ci/bench.sh [--quick]`.
#
# Makes .venv on first use (or uses $MQTTFAST_VENV / the active venv), installs mqttfast with its
# test and bench extras (editable), builds the C twin in place, installs mosquitto if it is
# missing, then prints two tables, each figure a ratio to a reference measured in the same run:
#   1. the codec (benchmarks/codec_table.py): C and pure twins against mqtt5 and paho;
#   2. the clients (benchmarks/bench_clients.py): mqttfast, paho-mqtt and gmqtt against a local
#      mosquitto it starts itself, with the raw-socket ceilings and mosquitto_sub, and broker-free
#      against the stand-in peer.
# JSON results go to benchmarks/results/. --quick makes both runs short (a smoke test).
set -euo pipefail
unset MQTTFAST_PURE  # the tables measure the C twin: it must be built
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

if ! command -v mosquitto >/dev/null 2>&1 && [[ ! -x /usr/sbin/mosquitto ]]; then
    echo "ci: installing mosquitto (needs root)"
    apt-get update -qq && apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi
ensure_venv test bench
build_in_place
cd "$repo"
mkdir -p benchmarks/results
"$py" benchmarks/codec_table.py --json benchmarks/results/codec.json "$@"
echo
exec "$py" benchmarks/bench_clients.py --json benchmarks/results/clients.json "$@"
