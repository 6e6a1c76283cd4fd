"""What a run shows: the live line (stderr, once a second), the summary (stdout), and the JSON, CSV
and PNG files. Works on the merged result of ``stats.merge_results``."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict
from typing import Any, Dict, List, Optional, TextIO

from .._version import __version__
from .runner import Options
from .stats import SERIES_COLUMNS, percentile_curve, summarize

LATENCY_NAMES = {"connect": "connect time", "ack": "publish-to-ack latency",
                 "e2e": "end-to-end latency"}


def fmt_int(value: float) -> str:
    return f"{int(round(value)):,}"


def fmt_rate(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}/s" if value >= 100 else f"{value:,.1f}/s"


def fmt_us(us: float) -> str:
    if us < 1000:
        return f"{us:.0f} us"
    if us < 1_000_000:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1_000_000:.3f} s"


def fmt_latency(stats: Optional[Dict[str, float]]) -> str:
    if not stats:
        return "no samples"
    keys = ("p50", "p90", "p99", "p99.9", "max")
    return "  ".join(f"{k} {fmt_us(stats[k])}" for k in keys) + f"  ({fmt_int(stats['count'])} samples)"


# ---------------------------------------------------------------------------------- live line

class LiveLine:
    """Formats the once-a-second progress line from cumulative totals."""

    def __init__(self, opts: Options, stream: TextIO) -> None:
        self.opts = opts
        self.stream = stream
        self.prev: Optional[Dict[str, Any]] = None

    def show(self, totals: Dict[str, Any]) -> None:
        prev = self.prev or {k: 0 for k in ("connected", "sent", "acked", "received")}
        dt = totals["elapsed"] - self.prev["elapsed"] if self.prev else totals["elapsed"]
        dt = dt if dt > 0 else 1.0
        self.prev = totals

        def per_s(key: str) -> str:
            return fmt_int((totals[key] - prev[key]) / dt)

        kind = self.opts.kind
        parts = [f"clients {totals['open']:,}/{totals['clients']:,} connected"
                 f" ({per_s('connected')}/s), {totals['failed']:,} failed"]
        if kind == "pub":
            pub = f"sent {per_s('sent')}/s"
            if self.opts.qos:
                pub += f" acked {per_s('acked')}/s"
            parts.append(pub + f" (total {totals['sent']:,})")
        elif kind == "sub":
            parts.append(f"recv {per_s('received')}/s (total {totals['received']:,})")
        parts.append(f"errors {totals['errors']:,}")
        print(f"{totals['elapsed']:6.1f}s  " + " | ".join(parts), file=self.stream, flush=True)


# ---------------------------------------------------------------------------------- summary

def _span(start: float, end: float) -> Optional[float]:
    return end - start if start and end and end > start else None


def build_summary(opts: Options, merged: Dict[str, Any]) -> Dict[str, Any]:
    """The figures of a run, JSON-ready."""
    hists = merged["histograms"]
    connect_span = _span(merged["first_start"], merged["last_connack"])
    connect_target = opts.conn_rate if opts.conn_rate else (
        1000.0 / opts.interval_ms if opts.interval_ms > 0 else None)
    summary: Dict[str, Any] = {
        "command": opts.kind,
        "broker": opts.unix_path or f"{opts.host}:{opts.port}",
        "protocol": opts.version,
        "tls": opts.tls,
        "workers": opts.workers,
        "clients": opts.count,
        "started": merged["started"],
        "connected": merged["connected"],
        "failed": merged["failed"],
        "failure_reasons": merged["failure_reasons"],
        "dropped": merged["dropped"],
        "drop_reasons": merged["drop_reasons"],
        "connect_rate": merged["connected"] / connect_span if connect_span else None,
        # The same for the first 99 % of the clients: one SYN dropped by a full accept queue
        # (re-sent after 1 s) moves the last CONNACK by a second, not this.
        "connect_rate_99": (merged["connected_99"] / span_99 if (
            span_99 := _span(merged["first_start"], merged["last_connack_99"])) else None),
        "connect_target_rate": connect_target,
        "connect_time_us": summarize(hists["connect"]),
        "elapsed_s": round(merged["run_end"] - opts.t0, 3),
        "stop_reason": merged["stop_reason"],
        "errors": merged["errors"],
        "error_reasons": merged["error_reasons"],
        "rss_kb": merged["rss_kb"],
        "rss_peak_kb": merged["rss_peak_kb"],
        "rss_kb_per_worker": merged.get("rss_kb_per_worker", [merged["rss_kb"]]),
    }
    if opts.kind == "pub":
        span = _span(merged["pub_start"], merged["pub_end"])
        rate = merged["sent"] / span if span else None
        target = opts.rate if opts.rate else (merged["target_rate"] or None)
        summary.update({
            "qos": opts.qos,
            "payload_size": opts.size,
            "payload_headers": opts.payload_hdrs,
            "limit": opts.limit or None,
            "sent": merged["sent"],
            "acked": merged["acked"],
            "publish_failed": merged["publish_failed"],
            "unacked": merged["unacked"],
            "publish_seconds": round(span, 3) if span else None,
            "publish_rate": rate,
            "target_rate": target,
            "rate_ratio": rate / target if rate and target else None,
            "ack_latency_us": summarize(hists["ack"]) if opts.qos else None,
        })
    if opts.kind == "sub":
        span = _span(merged["first_recv"], merged["last_recv"])
        summary.update({
            "qos": opts.qos,
            "topics": list(opts.topics),
            "subscribed": merged["subscribed"],
            "subscribe_failed": merged["subscribe_failed"],
            "received": merged["received"],
            "limit": opts.limit or None,
            "receive_seconds": round(span, 3) if span else None,
            "receive_rate": merged["received"] / span if span else None,
            "e2e_latency_us": summarize(hists["e2e"]),
            "lost": merged["lost"],
            "duplicated": merged["duplicated"],
            "out_of_order": merged["out_of_order"],
            "without_headers": merged["without_headers"],
            "streams": merged["streams"],
            "negative_latency": merged["negative_latency"],
        })
        if opts.workers > 1 and any(t.startswith("$share/") for t in opts.topics):
            summary["sequence_note"] = ("shared subscription split over several worker "
                                        "processes: each process sees part of every stream, so "
                                        "lost/out-of-order are not meaningful")
    return summary


def _reasons(table: Dict[str, int]) -> str:
    return ", ".join(f"{reason} ({n:,})" for reason, n in
                     sorted(table.items(), key=lambda item: -item[1]))


def summary_text(opts: Options, s: Dict[str, Any]) -> str:
    lines = []
    what = f"mqttfast bench {opts.kind}: {opts.count:,} clients -> {s['broker']}, MQTT {opts.version}"
    if opts.tls:
        what += " over TLS"
    if opts.kind in ("pub", "sub"):
        what += f", QoS {opts.qos}"
    if opts.kind == "pub":
        what += f", {s['payload_size']}-byte payloads"
    if opts.workers > 1:
        what += f", {opts.workers} processes"
    lines.append(what)
    lines.append(f"  run          {s['elapsed_s']:.2f} s, ended by: {s['stop_reason'] or 'done'}")
    conn = (f"  connections  {s['connected']:,} connected, {s['failed']:,} failed, "
            f"{s['dropped']:,} dropped")
    if s["started"] < opts.count:
        conn += f", {opts.count - s['started']:,} never started"
    lines.append(conn)
    target = s["connect_target_rate"]
    rate99 = s["connect_rate_99"]
    lines.append(f"  connect rate {fmt_rate(s['connect_rate'])}"
                 + (f" (target {fmt_rate(target)})" if target else " (unpaced)")
                 + (f"; first 99%: {fmt_rate(rate99)}" if rate99 and opts.count >= 100 else ""))
    lines.append(f"  connect time {fmt_latency(s['connect_time_us'])}")
    if s["failure_reasons"]:
        lines.append(f"  failures     {_reasons(s['failure_reasons'])}")
    if s["drop_reasons"]:
        lines.append(f"  drops        {_reasons(s['drop_reasons'])}")
    if opts.kind == "pub":
        lines.append(f"  published    {s['sent']:,} sent"
                     + (f", {s['acked']:,} acked, {s['publish_failed']:,} failed, "
                        f"{s['unacked']:,} unacked" if opts.qos else ""))
        rate = f"  publish rate {fmt_rate(s['publish_rate'])}"
        if s["target_rate"]:
            ratio = s["rate_ratio"]
            rate += f" (target {fmt_rate(s['target_rate'])}" + (
                f": {ratio * 100:.1f}%)" if ratio else ")")
        else:
            rate += " (unpaced: as fast as possible)"
        if s["publish_seconds"]:
            rate += f" over {s['publish_seconds']:.2f} s"
        lines.append(rate)
        if opts.qos:
            lines.append(f"  ack latency  {fmt_latency(s['ack_latency_us'])}")
    if opts.kind == "sub":
        lines.append(f"  subscribed   {s['subscribed']:,} of {opts.count:,} clients to "
                     f"{', '.join(opts.topics)}")
        recv = f"  received     {s['received']:,}"
        if s["receive_rate"] is not None:
            recv += f", {fmt_rate(s['receive_rate'])} over {s['receive_seconds']:.2f} s"
        lines.append(recv)
        lines.append(f"  e2e latency  {fmt_latency(s['e2e_latency_us'])}"
                     + ("" if s["e2e_latency_us"] or not s["received"] else
                        " (publish with --payload-hdrs to measure it)"))
        seq = (f"  sequence     {s['lost']:,} lost, {s['duplicated']:,} duplicated, "
               f"{s['out_of_order']:,} out of order ({s['streams']:,} streams)")
        if s["without_headers"]:
            seq += f"; {s['without_headers']:,} messages without headers"
        lines.append(seq)
        if s.get("sequence_note"):
            lines.append(f"  note         {s['sequence_note']}")
    if s["error_reasons"]:
        lines.append(f"  errors       {_reasons(s['error_reasons'])}")
    lines.append(f"  memory       {s['rss_kb'] / 1024:,.1f} MB RSS (peak "
                 f"{s['rss_peak_kb'] / 1024:,.1f} MB)"
                 + (" (largest process)" if opts.workers > 1 else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- files

def options_dict(opts: Options) -> Dict[str, Any]:
    data = asdict(opts)
    data.pop("t0", None)
    if data.get("password") is not None:
        data["password"] = "***"
    if data.get("message") is not None:
        data["message"] = opts.message.decode("utf-8", "replace")  # type: ignore[union-attr]
    return data


def series_dicts(series: List[List[int]]) -> List[Dict[str, int]]:
    return [dict(zip(SERIES_COLUMNS, row, strict=True)) for row in series]


def write_json(path: str, opts: Options, argv: List[str], summary: Dict[str, Any],
               merged: Dict[str, Any]) -> None:
    doc = {
        "tool": "mqttfast bench",
        "version": __version__,
        "command": opts.kind,
        "argv": argv,
        "options": options_dict(opts),
        "summary": summary,
        "series": series_dicts(merged["series"]),
        "latency_curves_us": {name: percentile_curve(h) for name, h in
                              merged["histograms"].items() if h.get_total_count()},
    }
    _write_text(path, json.dumps(doc, indent=2) + "\n")


def _flatten(prefix: str, value: Any, out: List[List[Any]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, list):
        out.append([prefix, " ".join(str(v) for v in value)])
    else:
        out.append([prefix, "" if value is None else value])


def csv_summary_path(path: str) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}.summary{ext or '.csv'}"


def write_csv(path: str, summary: Dict[str, Any], merged: Dict[str, Any]) -> List[str]:
    """The per-second series to ``path``, the summary (metric,value rows) next to it."""
    _ensure_dir(path)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SERIES_COLUMNS)
        writer.writerows(merged["series"])
    rows: List[List[Any]] = []
    _flatten("", summary, rows)
    other = csv_summary_path(path)
    with open(other, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["metric", "value"])
        writer.writerows(rows)
    return [path, other]


def plot_available() -> Optional[str]:
    """None when matplotlib can be used, else why not."""
    import importlib.util

    try:
        found = importlib.util.find_spec("matplotlib") is not None  # without importing it (RSS)
    except (ImportError, ValueError):
        found = False
    if not found:
        return "--plot needs matplotlib, which is not installed: pip install 'mqttfast[plot]'"
    return None


def write_plot(path: str, opts: Options, summary: Dict[str, Any], merged: Dict[str, Any]) -> None:
    """Rates over time (left) and latency distributions (right) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    series = merged["series"]
    if merged.get("series_partial_last") and len(series) > 1:
        series = series[:-1]  # a fraction of a second would plot as a drop
    seconds = [row[0] for row in series]
    columns = {name: i for i, name in enumerate(SERIES_COLUMNS)}
    shown = {"conn": ["connects", "connect_failures"],
             "pub": ["sent", "acked"] if opts.qos else ["sent"],
             "sub": ["received"]}[opts.kind]
    for name in shown:
        left.plot(seconds, [row[columns[name]] for row in series], marker=".", label=f"{name}/s")
    target = summary.get("target_rate") if opts.kind == "pub" else summary.get(
        "connect_target_rate") if opts.kind == "conn" else None
    if target:
        left.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
    left2 = left.twinx()
    left2.plot(seconds, [row[columns["connected"]] for row in series], color="tab:green",
               alpha=0.4, label="connected")
    left2.set_ylabel("clients connected")
    left.set_xlabel("second")
    left.set_ylabel("per second")
    left.set_title(f"bench {opts.kind}: rate over time")
    handles, labels = left.get_legend_handles_labels()
    h2, l2 = left2.get_legend_handles_labels()
    left.legend(handles + h2, labels + l2, loc="best", fontsize="small")
    left.grid(True, alpha=0.3)

    import math

    plotted = False
    for name, hist in merged["histograms"].items():
        if not hist.get_total_count():
            continue
        curve = percentile_curve(hist)
        xs = [-math.log10(max(1e-6, 1 - p / 100.0)) for p, _ in curve]
        ys = [v / 1000.0 for _, v in curve]
        right.plot(xs, ys, marker=".", label=LATENCY_NAMES.get(name, name))
        plotted = True
    right.set_xticks([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    right.set_xticklabels(["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "max"])
    tops = [h.get_max_value() for h in merged["histograms"].values() if h.get_total_count()]
    lows = [max(1, h.get_value_at_percentile(50)) for h in merged["histograms"].values()
            if h.get_total_count()]
    if tops and max(tops) / min(lows) > 50:
        right.set_yscale("log")  # a tail two orders of magnitude above the median
    right.set_xlabel("percentile")
    right.set_ylabel("latency (ms)")
    right.set_title("latency distribution" if plotted else "latency distribution (no samples)")
    if plotted:
        right.legend(loc="upper left", fontsize="small")
    right.grid(True, alpha=0.3)
    fig.tight_layout()
    _ensure_dir(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ensure_dir(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)


def _write_text(path: str, text: str) -> None:
    _ensure_dir(path)
    with open(path, "w") as handle:
        handle.write(text)
