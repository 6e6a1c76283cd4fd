"""atheris entry point: ``python fuzz/fuzz.py TARGET [libFuzzer arguments and corpus dirs]``.

TARGET is ``codec`` (the two codec twins, differential: codec_target.py) or ``session`` (a
connected Session fed random broker bytes: session_target.py, on the codec ``mqttfast.codec``
picks; ``MQTTFAST_PURE=1`` for the pure twin). The rest goes to libFuzzer: corpus directories,
``-max_total_time=``, ``-seed=``, or files to replay (``python fuzz/fuzz.py codec crash-...``).
fuzz/run.sh runs the targets with seeds and a time budget.

The mqttfast Python modules are instrumented for coverage; the Cython twin cannot be (it is not
built with libFuzzer), so the search is guided by the pure twin and the session, and the C twin
is checked against them on every input.
"""
from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGETS = ("codec", "session")

if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
    sys.exit(f"usage: python fuzz/fuzz.py {{{','.join(TARGETS)}}} [libFuzzer arguments]")
name = sys.argv.pop(1)

with atheris.instrument_imports(include=["mqttfast"]):
    import mqttfast.codec
    import mqttfast.session  # noqa: F401
    if name == "codec":
        import mqttfast._codec_py  # noqa: F401
        import codec_target as target
    else:
        import session_target as target

print(f"fuzz: target {name}, codec {mqttfast.codec.IMPLEMENTATION}", file=sys.stderr)
atheris.Setup(sys.argv, target.check)
atheris.Fuzz()
