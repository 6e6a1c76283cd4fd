#!/usr/bin/env bash
# The package as users get it: `bash ci/test_wheel.sh`.
#
# 1. `python -m build` makes an sdist, and a wheel from that sdist (isolated build: the sdist must
#    carry everything the C twin needs).
# 2. The wheel goes into a fresh venv with its test extras; the test suite runs there from a copy of
#    tests/ in a temporary directory, so the source tree's mqttfast/ cannot be imported. A pytest
#    plugin fails the run unless the mqttfast the tests imported is the venv's and its codec is "c".
# 3. MQTTFAST_PURE=1 installs the sdist into another fresh venv with CC=false (any compile step
#    would fail), checks no extension was installed and the codec is "python", and runs the suite.
#
# pytest's exit status 5 (no tests collected) is reported and tolerated here; .ci/run does the same.
# KEEP_TMP=1 keeps the temporary directory.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

ensure_venv test
# (from /: the repo holds a build/ directory that would pass for the package)
(cd / && "$py" -c 'import build.__main__') 2>/dev/null || "$py" -m pip install -q build

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mqttfast-wheel.XXXXXX")
if [[ -n ${KEEP_TMP:-} ]]; then
    echo "ci: keeping $tmp" >&2
else
    trap 'rm -rf "$tmp"' EXIT
fi

echo "== build: sdist, then a wheel from it"
if ! (cd "$tmp" && "$py" -m build --outdir "$tmp/dist" "$repo") >"$tmp/build.log" 2>&1; then
    tail -n 60 "$tmp/build.log"
    echo "ci: python -m build failed (log above)" >&2
    exit 1
fi
sdist=$(echo "$tmp"/dist/*.tar.gz)
wheel=$(echo "$tmp"/dist/*.whl)
ls -l "$tmp/dist"
case $wheel in
    *-none-any.whl) echo "ci: the wheel is pure ($wheel): the C twin was not built" >&2; exit 1 ;;
esac

# The suite, from a directory holding only a copy of the tests and the pytest configuration.
mkdir -p "$tmp/run"
cp -r "$repo/tests" "$tmp/run/tests"
cp "$repo/pyproject.toml" "$tmp/run/"
[[ ! -f $repo/conftest.py ]] || cp "$repo/conftest.py" "$tmp/run/"
find "$tmp/run" -name __pycache__ -prune -exec rm -rf {} +
cat >"$tmp/run/_mqttfast_installed.py" <<'EOF'
"""pytest plugin: the run fails unless it tested the installed mqttfast with the expected codec."""
import os
import sys
import sysconfig

EXPECTED = os.environ["MQTTFAST_EXPECT_IMPLEMENTATION"]


def _problems():
    import mqttfast
    import mqttfast.codec

    where = os.path.realpath(mqttfast.__file__)
    site = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    problems = []
    if not any(where.startswith(s + os.sep) for s in site):
        problems.append(f"mqttfast came from {where}, not from this venv's site-packages {site}")
    if mqttfast.codec.IMPLEMENTATION != EXPECTED:
        problems.append(f"mqttfast.codec.IMPLEMENTATION is {mqttfast.codec.IMPLEMENTATION!r}, "
                        f"expected {EXPECTED!r}")
    return where, mqttfast.codec.IMPLEMENTATION, problems


def pytest_sessionstart(session):
    where, implementation, _ = _problems()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    reporter.write_line(f"ci: mqttfast under test: {where} (codec {implementation!r})")


def pytest_sessionfinish(session, exitstatus):
    # What the tests imported is what sys.modules holds now.
    _, _, problems = _problems()
    if problems:
        for p in problems:
            print(f"\nci: {p}", file=sys.stderr)
        session.exitstatus = 1
EOF

failed=()
run_suite() {  # run_suite NAME VENV EXPECTED_IMPLEMENTATION [env(1) options and assignments...]
    local name=$1 venv_dir=$2 expected=$3 rc=0
    shift 3
    (cd "$tmp/run" && env "$@" MQTTFAST_EXPECT_IMPLEMENTATION="$expected" \
        "$venv_dir/bin/python" -m pytest tests -q -p no:cacheprovider -p _mqttfast_installed) || rc=$?
    if ((rc == 5)); then
        echo "ci: WARNING: pytest collected no tests" >&2
    elif ((rc != 0)); then
        failed+=("$name: pytest exit $rc")
    fi
}

base_python=$("$py" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')

echo "== the wheel in a fresh venv"
"$base_python" -m venv "$tmp/venv-wheel"
"$tmp/venv-wheel/bin/python" -m pip install -q "$wheel[test]"
run_suite "the wheel" "$tmp/venv-wheel" c -u MQTTFAST_PURE MQTTFAST_REQUIRE_C=1

echo "== MQTTFAST_PURE=1: the sdist without a compiler, in a fresh venv"
"$base_python" -m venv "$tmp/venv-pure"
CC=false CXX=false MQTTFAST_PURE=1 \
    "$tmp/venv-pure/bin/python" -m pip install -q --no-cache-dir "$sdist[test]"
(cd "$tmp/run" && env -u MQTTFAST_PURE "$tmp/venv-pure/bin/python" - <<'EOF'
import glob
import os

import mqttfast
import mqttfast.codec

here = os.path.dirname(mqttfast.__file__)
built = glob.glob(os.path.join(here, "*.so")) + glob.glob(os.path.join(here, "*.pyd"))
assert not built, f"a pure install holds compiled modules: {built}"
assert "site-packages" in here, here
assert mqttfast.codec.IMPLEMENTATION == "python", mqttfast.codec.IMPLEMENTATION
print(f"ci: pure install at {here}: codec {mqttfast.codec.IMPLEMENTATION!r}, no extension")
EOF
)
run_suite "the pure install" "$tmp/venv-pure" python -u MQTTFAST_PURE -u MQTTFAST_REQUIRE_C

if ((${#failed[@]})); then
    printf 'ci: FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "ci: wheel and pure install OK"
