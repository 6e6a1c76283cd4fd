#!/usr/bin/env bash
# The codec benchmark table: `bash ci/bench.sh [codec_table.py arguments, e.g. --json PATH]`.
#
# Makes .venv on first use (or uses $MQTTFAST_VENV / the active venv), installs mqttfast with its
# test and bench extras (editable), builds the C twin in place, and runs benchmarks/codec_table.py.
set -euo pipefail
unset MQTTFAST_PURE  # the table measures both twins: the C one must be built
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

ensure_venv test bench
build_in_place
cd "$repo"
exec "$py" benchmarks/codec_table.py "$@"
