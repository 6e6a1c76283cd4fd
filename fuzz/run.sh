#!/usr/bin/env bash
# Run the fuzzers: `bash fuzz/run.sh [--seconds N] [--corpus DIR] [--seed N] [TARGET...]`.
#
# TARGETs: codec (the two codec twins, differential), session (a Session on the C twin fed random
# broker bytes), session-pure (the same on the pure twin); default all three. --seconds is the
# whole budget, split evenly between the targets (default 4 hours: a run by hand; CI gives 60).
# --corpus (default fuzz/corpus) keeps what each target learnt, in DIR/TARGET, across runs; the
# seeds (from tests/packet_cases.py and tests/test_malformed.py) are rewritten to DIR/seeds each
# run. --seed fixes libFuzzer's random seed (default: libFuzzer picks one). A finding is written to
# DIR/findings/ and makes the script exit non-zero, with the command that replays it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=${PYTHON_FUZZ:-${MQTTFAST_VENV:-$here/../.venv}/bin/python}
seconds=14400
corpus=$here/corpus
seed=
targets=()
while (($#)); do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --corpus) corpus=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}"; exit 0 ;;
        codec|session|session-pure) targets+=("$1"); shift ;;
        *) echo "fuzz/run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
((${#targets[@]})) || targets=(codec session session-pure)

# No atheris is a failure, not a skip: a fuzz step that passes without fuzzing hides that.
if ! "$py" -c 'import atheris' 2>/dev/null; then
    echo "fuzz/run.sh: atheris is not importable by $py (pip install -e '.[fuzz]')" >&2
    exit 3
fi
"$py" -c 'import mqttfast._codec' || {
    echo "fuzz/run.sh: the C twin is not built (python setup.py build_ext --inplace)" >&2
    exit 3
}

"$py" "$here/seeds.py" "$corpus/seeds"
mkdir -p "$corpus/findings"
each=$((seconds / ${#targets[@]}))
((each > 0)) || each=1
failed=()
for target in "${targets[@]}"; do
    name=${target%-pure}
    mkdir -p "$corpus/$target"
    env=()
    [[ $target == *-pure ]] && env=(MQTTFAST_PURE=1)
    args=(-max_total_time="$each" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$corpus/findings/$target-")
    [[ -n $seed ]] && args+=(-seed="$seed")
    echo "== fuzz $target for $each s (corpus $corpus/$target)"
    set +e  # the fuzzer's exit status, through a filter of its per-input progress lines
    env "${env[@]}" "$py" "$here/fuzz.py" "$name" "${args[@]}" "$corpus/$target" \
        "$corpus/seeds/$name" 2>&1 | grep -v -E '^INFO: Instrumenting|^#[0-9]+[[:space:]]+(NEW|REDUCE)'
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc != 0)); then
        failed+=("$target")
        echo "fuzz/run.sh: $target found something (exit $rc); replay it with:" >&2
        for finding in "$corpus/findings/$target-"*; do
            [[ -e $finding ]] && echo "  ${env[*]} $py $here/fuzz.py $name $finding" >&2
        done
    fi
done
if ((${#failed[@]})); then
    echo "fuzz/run.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/run.sh: no finding in ${targets[*]}"
