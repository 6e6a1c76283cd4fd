# Sourced by the ci/*.sh scripts: find or make the virtualenv, install the package into it
# (editable, with the extras asked for), and build the C twin in place.
#
# The venv is $MQTTFAST_VENV if set, else the active one ($VIRTUAL_ENV), else .venv in the repo.
# It is made with ${PYTHON:-python3} when missing. The install is redone when pyproject.toml or
# setup.py change (a stamp file in the venv remembers what was installed).

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MQTTFAST_VENV:-${VIRTUAL_ENV:-$repo/.venv}}
py=$venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

# The build requirements, read from pyproject.toml so that they are written in one place.
build_requires() {
    "$py" - "$repo/pyproject.toml" <<'EOF'
import re
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11: the one list we need, by pattern
    text = open(sys.argv[1]).read()
    block = re.search(r"^\[build-system\]$(.*?)(?=^\[|\Z)", text, re.S | re.M).group(1)
    print("\n".join(re.findall(r'"([^"]+)"', re.search(r"requires\s*=\s*\[(.*?)\]", block, re.S)[1])))
else:
    with open(sys.argv[1], "rb") as f:
        print("\n".join(tomllib.load(f)["build-system"]["requires"]))
EOF
}

# ensure_venv EXTRA...: the venv exists and holds mqttfast (editable) with these extras.
ensure_venv() {
    if [[ ! -x $py ]]; then
        echo "ci: making the virtualenv $venv" >&2
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    local stamp key missing=() extra
    key=$(cat "$repo/pyproject.toml" "$repo/setup.py" | cksum | cut -d' ' -f1)
    for extra in "$@"; do
        stamp=$venv/.mqttfast-$extra.stamp
        [[ -f $stamp && $(cat "$stamp") == "$key $repo" ]] || missing+=("$extra")
    done
    ((${#missing[@]})) || return 0
    local extras
    extras=$(IFS=,; echo "$*")
    echo "ci: installing mqttfast[$extras] (editable) into $venv" >&2
    local requires
    mapfile -t requires < <(build_requires)
    # -U: a venv's bundled setuptools may satisfy the pin yet predate its own bdist_wheel, which
    # an editable install without build isolation needs (older ones need the wheel package).
    "$py" -m pip install -q -U "${requires[@]}" wheel
    (cd "$repo" && "$py" -m pip install -q --no-build-isolation -e ".[$extras]")
    for extra in "$@"; do
        echo "$key $repo" >"$venv/.mqttfast-$extra.stamp"
    done
}

# build_in_place: (re)build the C twin next to its source when it is missing or older than
# _codec.pyx (a no-op otherwise). Skipped when MQTTFAST_PURE is set.
build_in_place() {
    [[ -z ${MQTTFAST_PURE:-} ]] || return 0
    local out
    # MQTTFAST_REQUIRE_C: a compile failure fails here, not a fallback to the pure twin (setup.py)
    if ! out=$(cd "$repo" && MQTTFAST_REQUIRE_C=1 "$py" setup.py build_ext --inplace 2>&1); then
        echo "$out" >&2
        echo "ci: building the C twin failed (output above)" >&2
        return 1
    fi
    if grep -q "^building 'mqttfast._codec'" <<<"$out"; then
        echo "ci: C twin (re)built in place" >&2
    fi
}
