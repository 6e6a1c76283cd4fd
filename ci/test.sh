#!/usr/bin/env bash
# The test suite: `bash ci/test.sh [pytest arguments]` (test paths among them replace `tests`).
#
# On first use it makes .venv (or uses $MQTTFAST_VENV / the active venv), installs mqttfast[test]
# editable, and builds the C twin in place; later runs only rebuild the C twin when _codec.pyx
# changed. MQTTFAST_PURE=1 tests the pure-Python twin alone; MQTTFAST_REQUIRE_C=1 makes the suite
# fail if the C twin did not load. CI runs it both ways (.ci/run).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

ensure_venv test
build_in_place
cd "$repo"
echo "ci: MQTTFAST_PURE=${MQTTFAST_PURE:-} MQTTFAST_REQUIRE_C=${MQTTFAST_REQUIRE_C:-}" \
    "mqttfast.codec.IMPLEMENTATION=$("$py" -c 'import mqttfast.codec as c; print(c.IMPLEMENTATION)')"
# Paths given on the command line replace the default "tests"; options are passed on.
paths=(tests)
for arg in "$@"; do
    if [[ $arg != -* && -e $arg || $arg == tests/* ]]; then
        paths=()
        break
    fi
done
exec "$py" -m pytest "${paths[@]}" -q "$@"
