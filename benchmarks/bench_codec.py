"""The codec benchmark under pytest-benchmark (the same cases as ``codec_table.py``).

    python -m pytest benchmarks/bench_codec.py                 # all cells
    python -m pytest benchmarks/bench_codec.py -k decode_chunk  # some of them
    python -m pytest benchmarks/bench_codec.py --benchmark-json=out.json

Not collected by the test run (``testpaths = ["tests"]``, and the file name is not ``test_*``).
pytest-benchmark times one call of a small function per round, so its absolute figures carry that
call's overhead; for the table, with per-packet figures and ratios, run ``codec_table.py``. Chunk
cases store their per-packet time in ``extra_info["ns_per_packet"]``.
"""
from __future__ import annotations

import os

import pytest

import codec_cases as cc

CONTENDERS = cc.load_contenders()


def _params():
    for op, protocol, _label, _unit in cc.OPERATIONS:
        for name in ("c", "python", "mqtt5", "paho"):
            proto = f"v{protocol}" if protocol else "any"
            yield pytest.param(op, protocol, name, id=f"{op}-{proto}-{name}")


@pytest.mark.parametrize("op,protocol,name", list(_params()))
def test_codec(benchmark, op, protocol, name):
    who = CONTENDERS[name]
    if name == "c" and who.missing and os.environ.get("MQTTFAST_REQUIRE_C"):
        pytest.fail(f"MQTTFAST_REQUIRE_C is set but the C twin is {who.missing}")
    case = cc.make_case(op, protocol, who)
    if isinstance(case, str):
        pytest.skip(f"{who.title}: {case}")
    case.run_check()
    run = case.function()
    benchmark.group = f"{op} {cc.PROTOCOL_NAMES.get(protocol, '')}".strip()
    benchmark.extra_info["packets_per_call"] = case.per_call
    benchmark(run)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["ns_per_packet"] = benchmark.stats.stats.min / case.per_call * 1e9


@pytest.mark.parametrize("protocol", cc.PROTOCOLS, ids=["v5", "v4"])
def test_paho_decode_publish_body_only(benchmark, protocol):
    """paho's private body decoder alone: a footnote, not a contender (see codec_cases)."""
    case = cc.paho_body_case(protocol, CONTENDERS["paho"])
    if isinstance(case, str):
        pytest.skip(case)
    case.run_check()
    benchmark.group = f"paho body only {cc.PROTOCOL_NAMES[protocol]}"
    benchmark(case.function())
