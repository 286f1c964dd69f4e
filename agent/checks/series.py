"""Per-check Prometheus series of icmp, multihttp, grpc and browser checks, named as Grafana
Synthetic Monitoring and the blackbox exporter name them (`probe_icmp_packets_sent_count`,
...); browser timings in the same style.

The last run of each check sets its series; a check that leaves the config keeps its last
values until the agent restarts (at most one set per check of the config it ran).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agent.checks.outcome import CheckOutcome
from agent.metrics import label_value, sample_value

SERIES_TYPES = frozenset({"icmp", "multihttp", "grpc", "browser"})
GRPC_SERVING_STATUSES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
HELP = {
    "probe_success": "1 when the check's last run passed (degraded included).",
    "probe_duration_seconds": "How long the check's last run took.",
    "probe_icmp_packets_sent_count": "Number of ICMP packets sent.",
    "probe_icmp_packets_received_count": "Number of ICMP packets received.",
    "probe_icmp_duration_rtt_min_seconds": "Minimum duration of round trip time phase.",
    "probe_icmp_duration_rtt_max_seconds": "Maximum duration of round trip time phase.",
    "probe_icmp_duration_seconds": "Duration of the round trip phase (average).",
    "probe_http_duration_seconds": "Duration of each step of a multi-step HTTP check.",
    "probe_grpc_status_code": "gRPC status code of the health check call (0 is OK).",
    "probe_grpc_healthcheck_response": "1 for the serving status the server answered.",
    "probe_browser_timing_seconds": "Navigation timing of a browser check's first page.",
    "probe_browser_console_errors": "Console errors the page of a browser check logged.",
}
# Browser check phases (milliseconds in the row) and their `phase` label.
BROWSER_PHASES = (
    ("dns_ms", "dns"),
    ("connect_ms", "connect"),
    ("tls_ms", "tls"),
    ("first_byte_ms", "first_byte"),
    ("dom_content_loaded_ms", "dom_content_loaded"),
    ("load_ms", "load"),
)

Labels = tuple[tuple[str, str], ...]


def _samples(kind: str, outcome: CheckOutcome) -> Iterator[tuple[str, Labels, float]]:
    phases: dict[str, Any] = outcome.phases or {}
    yield "probe_success", (), float(outcome.status in ("pass", "degraded"))
    yield "probe_duration_seconds", (), outcome.duration_ms / 1000
    if kind == "icmp":
        for key, name in (
            ("packets_sent", "probe_icmp_packets_sent_count"),
            ("packets_received", "probe_icmp_packets_received_count"),
        ):
            if key in phases:
                yield name, (), float(phases[key])
        for key, name, labels in (
            ("rtt_min_ms", "probe_icmp_duration_rtt_min_seconds", ()),
            ("rtt_max_ms", "probe_icmp_duration_rtt_max_seconds", ()),
            ("rtt_avg_ms", "probe_icmp_duration_seconds", (("phase", "rtt"),)),
        ):
            if key in phases:
                yield name, labels, phases[key] / 1000
    elif kind == "multihttp":
        for step, ms in enumerate(phases.get("steps_ms") or [], start=1):
            yield "probe_http_duration_seconds", (("step", str(step)),), ms / 1000
    elif kind == "browser":
        for key, phase in BROWSER_PHASES:
            if key in phases:
                yield "probe_browser_timing_seconds", (("phase", phase),), phases[key] / 1000
        if "console_errors" in phases:
            yield "probe_browser_console_errors", (), float(phases["console_errors"])
    elif kind == "grpc":
        if outcome.code is not None:
            yield "probe_grpc_status_code", (), float(outcome.code)
        serving = phases.get("serving_status")
        if isinstance(serving, int) and 0 <= serving < len(GRPC_SERVING_STATUSES):
            for index, status in enumerate(GRPC_SERVING_STATUSES):
                yield (
                    "probe_grpc_healthcheck_response",
                    (("serving_status", status),),
                    float(index == serving),
                )


class CheckSeries:
    """The latest per-check series, by derived canary and check name."""

    def __init__(self) -> None:
        """Start with no series."""
        self._latest: dict[tuple[str, str], list[tuple[str, Labels, float]]] = {}

    def record(self, canary: str, check: str, kind: str, outcome: CheckOutcome) -> None:
        """Keep the series of a finished run (other check types have none)."""
        if kind in SERIES_TYPES:
            self._latest[(canary, check)] = list(_samples(kind, outcome))

    def render(self) -> str:
        """The series in Prometheus' text format, one HELP/TYPE block per name."""
        by_name: dict[str, list[str]] = {}
        for (canary, check), samples in sorted(self._latest.items()):
            for name, labels, value in samples:
                pairs = (("canary", canary), ("check", check), *labels)
                text = ",".join(f'{k}="{label_value(v)}"' for k, v in pairs)
                by_name.setdefault(name, []).append(f"{name}{{{text}}} {sample_value(value)}")
        lines: list[str] = []
        for name, rendered in by_name.items():
            lines += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} gauge", *rendered]
        return "\n".join(lines) + "\n" if lines else ""
