"""Measurements of a load-generator run: HDR latency histograms, per-second series, sequence checks,
and how the results of several worker processes merge.

Latencies are recorded in microseconds. Hot paths count values in a plain dict (about 0.1 us per
message instead of 1 us for ``HdrHistogram.record_value``) and ``Latency.fold`` moves the counts
into the HDR histogram once a second; every percentile is read from the HDR histogram.
"""
from __future__ import annotations

import base64
from typing import Any, Dict, List, Optional

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

HIGHEST_US = 3_600_000_000  # an hour: anything slower is clipped to it
DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)

# Columns of a per-second row (all counts are for that second, except "connected": the number of
# clients connected at its end).
SERIES_COLUMNS = ("second", "connected", "connects", "connect_failures", "sent", "acked",
                  "received", "errors")


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_US, DIGITS)


class Latency:
    """One latency distribution: a dict of pending counts in front of an HDR histogram."""

    __slots__ = ("hist", "pending", "clipped")

    def __init__(self) -> None:
        self.hist = new_histogram()
        self.pending: Dict[int, int] = {}
        self.clipped = 0

    def fold(self) -> None:
        pending = self.pending
        if not pending:
            return
        record = self.hist.record_value
        for value, count in pending.items():
            if value < 1:
                value = 1
            elif value > HIGHEST_US:
                value = HIGHEST_US
                self.clipped += count
            record(value, count)
        pending.clear()

    def encode(self) -> str:
        self.fold()
        return self.hist.encode().decode("ascii") if self.hist.get_total_count() else ""


def decode_histogram(data: str) -> HdrHistogram:
    if not data:
        return new_histogram()
    hist = HdrHistogram.decode(data.encode("ascii") if isinstance(data, str) else data)
    return hist


def merge_histograms(encoded: List[str]) -> HdrHistogram:
    total = new_histogram()
    for data in encoded:
        if data:
            total.add(decode_histogram(data))
    return total


def summarize(hist: HdrHistogram) -> Optional[Dict[str, float]]:
    """Percentiles (p50, p90, p99, p99.9), min, mean, max and count, in microseconds."""
    count = hist.get_total_count()
    if not count:
        return None
    out: Dict[str, float] = {"count": count, "min": hist.get_min_value()}
    for p in PERCENTILES:
        out[f"p{p:g}"] = hist.get_value_at_percentile(p)
    out["max"] = hist.get_max_value()
    out["mean"] = round(hist.get_mean_value(), 1)
    return out


def percentile_curve(hist: HdrHistogram) -> List[List[float]]:
    """``[[percentile, value_us], ...]`` for plotting a latency distribution."""
    points = []
    for p in (0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999):
        points.append([p, hist.get_value_at_percentile(p)])
    points.append([100.0, hist.get_max_value()])
    return points


class SeqTracker:
    """Per-stream sequence checks. A stream is one publisher (its run id and publisher id, as one
    64-bit number) as seen by one subscriber (or one shared-subscription group).

    Each stream keeps the lowest and highest sequence seen and the set of numbers missing between
    them: a number that fills a gap is out of order, one seen before is a duplicate, and whatever
    is still missing at the end is lost. A stream starts at the first number seen (a subscriber may
    start after its publishers); gaps wider than ``MAX_GAP`` are counted as lost without tracking.
    """

    MAX_GAP = 1_000_000

    __slots__ = ("by_subscriber", "duplicated", "out_of_order", "untracked_lost")

    def __init__(self) -> None:
        # subscriber key -> {stream id: [lo, hi, missing set or None]}
        self.by_subscriber: Dict[Any, Dict[int, List[Any]]] = {}
        self.duplicated = 0
        self.out_of_order = 0
        self.untracked_lost = 0

    def streams_of(self, subscriber: Any) -> Dict[int, List[Any]]:
        """The streams of one subscriber (the hot path indexes this dict itself)."""
        streams = self.by_subscriber.get(subscriber)
        if streams is None:
            streams = self.by_subscriber[subscriber] = {}
        return streams

    def see(self, streams: Dict[int, List[Any]], stream: int, seq: int) -> None:
        state = streams.get(stream)
        if state is None:
            streams[stream] = [seq, seq, None]
            return
        hi = state[1]
        if seq == hi + 1:
            state[1] = seq
        elif seq > hi:
            self._missing(state, hi + 1, seq)
            state[1] = seq
        elif seq < state[0]:
            self.out_of_order += 1
            self._missing(state, seq + 1, state[0])
            state[0] = seq
        else:
            missing = state[2]
            if missing is not None and seq in missing:
                missing.discard(seq)
                self.out_of_order += 1
            else:
                self.duplicated += 1

    def _missing(self, state: List[Any], start: int, stop: int) -> None:
        if stop - start > self.MAX_GAP:
            self.untracked_lost += stop - start
            return
        if state[2] is None:
            state[2] = set(range(start, stop))
        else:
            state[2].update(range(start, stop))

    @property
    def lost(self) -> int:
        return self.untracked_lost + sum(len(s[2]) for streams in self.by_subscriber.values()
                                         for s in streams.values() if s[2])

    @property
    def streams(self) -> int:
        return sum(len(streams) for streams in self.by_subscriber.values())


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def merge_series(series_list: List[List[List[int]]]) -> List[List[int]]:
    """Per-second rows of several workers (same t0), summed by second."""
    by_second: Dict[int, List[int]] = {}
    for series in series_list:
        for row in series:
            have = by_second.get(row[0])
            if have is None:
                by_second[row[0]] = list(row)
            else:
                for i in range(1, len(row)):
                    have[i] += row[i]
    return [by_second[k] for k in sorted(by_second)]


def merge_results(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Merge the result dicts of several workers (see ``Runner.result``)."""
    merged: Dict[str, Any] = {}
    if len(results) == 1:
        merged.update(results[0])
        merged["histograms"] = {name: decode_histogram(data)
                                for name, data in results[0]["histograms"].items()}
        return merged
    for key, value in results[0].items():
        values = [r[key] for r in results]
        if key in ("histograms", "series"):
            continue
        if isinstance(value, bool):
            merged[key] = any(values)
        elif value is None or isinstance(value, str):
            merged[key] = next((v for v in values if v is not None), None)
        elif isinstance(value, dict):
            counts: Dict[str, int] = {}
            for v in values:
                for reason, n in v.items():
                    counts[reason] = counts.get(reason, 0) + n
            merged[key] = counts
        elif key.startswith("first_") or key.endswith("_start"):
            present = [v for v in values if v]
            merged[key] = min(present) if present else 0.0
        elif key.startswith("last_") or key.endswith("_end"):
            merged[key] = max(values)
        elif key in ("rss_kb", "rss_peak_kb"):
            merged[key] = max(values)
        else:
            merged[key] = sum(values)
    merged["histograms"] = {name: merge_histograms([r["histograms"][name] for r in results])
                            for name in results[0]["histograms"]}
    merged["series"] = merge_series([r["series"] for r in results])
    merged["rss_kb_per_worker"] = [r.get("rss_kb", 0) for r in results]
    return merged


def rss_kb(field: str = "VmRSS") -> int:
    """This process's resident set size (``VmRSS`` from /proc/self/status; ``VmHWM``: its peak),
    0 where unknown."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
