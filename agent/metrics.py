"""Counters, gauges and latency histograms in Prometheus' text exposition format.

Shared by the agent and the control plane (the reconciler may import the agent package,
never the other way round).
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Labels = tuple[tuple[str, str], ...]

HELP = {
    "reconciles_total": "Reconcile attempts by result (applied, unchanged or error).",
    "notifications_total": "Notification webhook deliveries by outcome (delivered or failed).",
    "apply_errors_total": "Valid revisions whose apply to the state file failed.",
    "invalid_revisions_total": "Revisions not applied because the config did not load.",
    "ingest_rows_total": "Result rows stored (accepted) or skipped as already stored (duplicate).",
    "probe_metrics_errors_total": "Scrapes whose per-check series could not be read (logged).",
    "ingest_rows_dropped_total": "Result rows dropped by validation, by reason.",
    "http_request_duration_seconds": "HTTP request latency by route and status class.",
}


def label_value(value: str) -> str:
    """A label value escaped as the exposition format wants: backslash, newline, quote."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def sample_value(value: float) -> str:
    """A sample's value, exactly: integers in full (`{:g}` had six digits, so a counter
    past 999,999 read `1e+06` and a timestamp lost its seconds), other numbers as the
    shortest text that reads back the same, and `+Inf`, `-Inf`, `NaN`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**63:
        return str(int(value))
    return repr(float(value))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{label_value(v)}"' for k, v in labels) + "}"


class Metrics:
    """In-process metrics; the values live as long as the process."""

    def __init__(
        self, prefix: str = "reconciler", help_texts: dict[str, str] | None = None
    ) -> None:
        self.prefix = prefix
        self.help = {**HELP, **(help_texts or {})}
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, list[float]]] = defaultdict(dict)

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add to a counter."""
        key = tuple(sorted(labels.items()))
        series = self._counters[name]
        series[key] = series.get(key, 0) + amount

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Record a latency."""
        key = tuple(sorted(labels.items()))
        series = self._histograms[name].setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 2))
        series[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        series[-1] += seconds

    def render(self, gauges: Iterable[tuple[str, str, Labels, float]] = ()) -> str:
        """The exposition text; `gauges` are (name, help, labels, value) computed by the caller.

        A computed value named `…_total` is a count since the process started, typed
        `counter` as Prometheus names it (`promtool check metrics` flags a gauge so named)."""
        lines: list[str] = []
        for name, series in sorted(self._counters.items()):
            lines += [f"# HELP {self.prefix}_{name} {self.help.get(name, name)}"]
            lines += [f"# TYPE {self.prefix}_{name} counter"]
            lines += [
                f"{self.prefix}_{name}{_labels(k)} {sample_value(v)}"
                for k, v in sorted(series.items())
            ]
        seen: set[str] = set()
        for name, help_text, labels, value in gauges:
            if name not in seen:
                kind = "counter" if name.endswith("_total") else "gauge"
                lines += [
                    f"# HELP {self.prefix}_{name} {help_text}",
                    f"# TYPE {self.prefix}_{name} {kind}",
                ]
                seen.add(name)
            lines.append(f"{self.prefix}_{name}{_labels(labels)} {sample_value(value)}")
        for name, histograms in sorted(self._histograms.items()):
            lines += [f"# HELP {self.prefix}_{name} {self.help.get(name, name)}"]
            lines += [f"# TYPE {self.prefix}_{name} histogram"]
            for key, buckets in sorted(histograms.items()):
                total = 0.0
                for bound, count in zip(LATENCY_BUCKETS, buckets, strict=False):
                    total += count
                    bucket = _labels((*key, ("le", f"{bound:g}")))
                    lines.append(f"{self.prefix}_{name}_bucket{bucket} {sample_value(total)}")
                total += buckets[len(LATENCY_BUCKETS)]
                everything = _labels(key + (("le", "+Inf"),))
                lines.append(f"{self.prefix}_{name}_bucket{everything} {sample_value(total)}")
                lines.append(f"{self.prefix}_{name}_count{_labels(key)} {sample_value(total)}")
                lines.append(f"{self.prefix}_{name}_sum{_labels(key)} {sample_value(buckets[-1])}")
        return "\n".join(lines) + "\n"
