"""Per-check Prometheus series of the latest run of every derived canary's checks (pure).

Named as Prometheus' blackbox_exporter and Grafana Synthetic Monitoring name them, so their
dashboards and alert rules read our results: `probe_success`, `probe_duration_seconds`,
`probe_http_status_code`, `probe_http_duration_seconds{phase}`, plus
`probe_last_run_timestamp_seconds` (when the run started) for staleness alerts. Labels:
`canary`, `namespace`, `check`, `region`, `agent` (and `type`). docs/metrics.md has the
cardinality and the `--probe-metrics` levels that bound it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.metrics import label_value, sample_value

ProbeLevel = Literal["off", "basic", "full"]
LEVELS: tuple[ProbeLevel, ...] = ("off", "basic", "full")

# Our phases (ms) → blackbox_exporter's `probe_http_duration_seconds{phase}`.
HTTP_PHASES = (("connect_ms", "connect"), ("tls_ms", "tls"), ("first_byte_ms", "processing"))

HELP = {
    "probe_success": "1 if the latest run of the check passed, else 0.",
    "probe_duration_seconds": "How long the latest run took.",
    "probe_last_run_timestamp_seconds": "When the latest run started (Unix time).",
    "probe_degraded": "1 if the latest run passed slower than the check's "
    "degradedThresholdMillis (probe_success is 1 then too), else 0.",
    "probe_http_status_code": "HTTP status of the latest run (0 when none came back).",
    "probe_http_duration_seconds": "Phases of the latest run of an http check.",
    "probe_icmp_packet_loss_ratio": "Echo requests lost in the latest run of an icmp check.",
    "probe_ssl_earliest_cert_expiry": "When the certificate seen by the latest run expires "
    "(Unix time; http and tls checks).",
}
BASIC = ("probe_success", "probe_duration_seconds", "probe_last_run_timestamp_seconds")


@dataclass(frozen=True)
class ProbeRun:
    """The latest run of one check of one derived canary."""

    parent: str  # namespace/name
    region: str
    agent: str
    check: str
    check_type: str
    passed: bool
    duration_ms: float
    started_at: float  # Unix seconds
    code: int | None
    phases: dict[str, Any] | None
    degraded: bool = False  # passed, slower than the check's degradedThresholdMillis


def _labels(run: ProbeRun, extra: str = "") -> str:
    namespace, _, name = run.parent.rpartition("/")
    return (
        f'{{canary="{label_value(name)}",namespace="{label_value(namespace)}",'
        f'check="{label_value(run.check)}",region="{label_value(run.region)}",'
        f'agent="{label_value(run.agent)}",type="{label_value(run.check_type)}"{extra}}}'
    )


def render(runs: Sequence[ProbeRun], level: ProbeLevel) -> str:
    """The series of `runs` at `level` (`off`: none), in Prometheus' text format."""
    if level == "off" or not runs:
        return ""
    samples: dict[str, list[str]] = {name: [] for name in HELP}
    for run in sorted(runs, key=lambda r: (r.parent, r.region, r.agent, r.check)):
        labels = _labels(run)
        samples["probe_success"].append(f"probe_success{labels} {int(run.passed)}")
        samples["probe_duration_seconds"].append(
            f"probe_duration_seconds{labels} {sample_value(run.duration_ms / 1000)}"
        )
        samples["probe_last_run_timestamp_seconds"].append(
            f"probe_last_run_timestamp_seconds{labels} {sample_value(run.started_at)}"
        )
        phases = run.phases or {}
        if phases.get("cert_not_after") is not None:
            expiry = sample_value(float(phases["cert_not_after"]))
            samples["probe_ssl_earliest_cert_expiry"].append(
                f"probe_ssl_earliest_cert_expiry{labels} {expiry}"
            )
        if level != "full":
            continue
        samples["probe_degraded"].append(f"probe_degraded{labels} {int(run.degraded)}")
        if run.check_type == "http":
            samples["probe_http_status_code"].append(
                f"probe_http_status_code{labels} {run.code or 0}"
            )
            for key, phase in HTTP_PHASES:
                if phases.get(key) is not None:
                    phased = _labels(run, ',phase="' + phase + '"')
                    seconds = sample_value(float(phases[key]) / 1000)
                    samples["probe_http_duration_seconds"].append(
                        f"probe_http_duration_seconds{phased} {seconds}"
                    )
        if run.check_type == "icmp" and phases.get("packet_loss_percent") is not None:
            samples["probe_icmp_packet_loss_ratio"].append(
                f"probe_icmp_packet_loss_ratio{labels} "
                f"{sample_value(float(phases['packet_loss_percent']) / 100)}"
            )
    return "".join(_family(name, lines) for name, lines in samples.items() if lines)


def _family(name: str, lines: Iterable[str]) -> str:
    body = "\n".join(lines)
    return f"# HELP {name} {HELP[name]}\n# TYPE {name} gauge\n{body}\n"


def series_per_check(level: ProbeLevel, check_type: str = "http") -> int:
    """How many series one check of one derived canary adds at `level` (for the docs)."""
    if level == "off":
        return 0
    if level == "basic":
        return len(BASIC)
    return len(BASIC) + 1 + (1 + len(HTTP_PHASES) if check_type == "http" else 0)
