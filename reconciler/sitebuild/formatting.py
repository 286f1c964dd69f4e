"""How figures read on the pages (one place, so tests can format expected values the same way)."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import Any

from reconciler.core.status import LABELS, Status

NO_DATA = "—"


def percent(passes: int, runs: int) -> str:
    """Uptime as a percentage, never rounded up to 100% (`99.99%`, `100%`, `—` without runs)."""
    if not runs:
        return NO_DATA
    if passes == runs:
        return "100%"
    return f"{math.floor(passes / runs * 10_000) / 100:.2f}%"


def millis(value: float | None) -> str:
    """A latency in milliseconds with one decimal (`1,234.5 ms`)."""
    return NO_DATA if value is None else f"{value:,.1f} ms"


def brief_millis(value: float | None) -> str:
    """A latency in three significant digits (`1.23 ms`, `45.6 ms`, `789 ms`, `1,230 ms`):
    the long windows' quantiles, read off histograms within 2%, need no more, and the finer
    digits would move with every run (`canary_page.summary`)."""
    if value is None:
        return NO_DATA
    if value <= 0:
        return "0.0 ms"
    rounded = float(f"{value:.3g}")
    # Decimals: 2 minus the power of ten (the three tests below are its common cases).
    if rounded >= 100:
        return f"{rounded:,.0f} ms"
    if rounded >= 10:
        return f"{rounded:.1f} ms"
    if rounded >= 1:
        return f"{rounded:.2f} ms"
    return f"{rounded:.{2 - math.floor(math.log10(rounded))}f} ms"


def count(value: int) -> str:
    """A whole number with thousands separators."""
    return f"{value:,}"


_UNITS = ((12, "T"), (9, "G"), (6, "M"), (3, "k"))


def compact(value: int) -> str:
    """A whole number in three significant digits, never rounded up (`987`, `1.23 k`,
    `45.6 k`, `1.30 M`): how the long windows' pages show runs, which then read the same
    from one run to the next (`canary_page.summary`)."""
    if value < 1_000:
        return str(value)
    power, unit = next((power, unit) for power, unit in _UNITS if value >= 10**power or power == 3)
    # Integer arithmetic: a float would round 1,299,999 up to `1.30 M`.
    digits = 3 - len(str(value // 10**power))
    shown = value // 10 ** (power - digits)
    whole, part = divmod(shown, 10**digits)
    return f"{whole}.{part:0{digits}d} {unit}" if digits else f"{whole} {unit}"


def moment(value: datetime | int | None, seconds: bool = False) -> str:
    """A UTC time as `2026-11-20 13:05 UTC` (an int is seconds since the epoch)."""
    if value is None:
        return NO_DATA
    when = datetime.fromtimestamp(value, UTC) if isinstance(value, int) else value.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def stored_moment(text: str | None) -> str:
    """An RFC 3339 time as the store keeps it (an incident's opening, an evaluation's time),
    shown as `2026-11-20 13:05:00 UTC`."""
    if not text:
        return NO_DATA
    return moment(datetime.fromisoformat(text), seconds=True)


def lasted(since: str, until: str) -> str:
    """How long from one stored moment (RFC 3339) to another, in words: `2 h 05 min`,
    `4 min 10 s`, `12 s`."""
    seconds = max(0, int((datetime.fromisoformat(until) - datetime.fromisoformat(since))
                         .total_seconds()))  # fmt: skip
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def iso(value: datetime | int) -> str:
    """A UTC time in RFC 3339 (for `<time datetime>`)."""
    when = datetime.fromtimestamp(value, UTC) if isinstance(value, int) else value.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_and_moment(value: datetime | int) -> tuple[str, str]:
    """`iso` and `moment` (with seconds) of one time, formatted once (a failure row has both)."""
    stamp = iso(value)
    return stamp, f"{stamp[:10]} {stamp[11:19]} UTC"


@functools.lru_cache(maxsize=64)
def status_label(status: str) -> str:
    """`partial_outage` → `Partial outage`, `unknown` → `No recent data` (core/status.py)."""
    try:
        return LABELS[Status(status)]
    except ValueError:
        return status.replace("_", " ").capitalize()


def retries(count: int) -> str:
    """`1 retry`, `2 retries`."""
    return f"{count} retr{'y' if count == 1 else 'ies'}"


def run_outcome(run: dict[str, Any]) -> str:
    """A run's outcome as the pages tell them apart (and name its CSS class): `pass`,
    `retried` (passed only after retries), `degraded` (passed, slowly) or `fail`."""
    status = str(run["status"])
    if status == "pass" and run.get("retries"):
        return "retried"
    return status if status in ("pass", "degraded") else "fail"


def outcome_text(run: dict[str, Any]) -> str:
    """A run's outcome in words: `passed`, `passed after 2 retries`, `degraded (slow)`,
    `failed`, `failed after 2 retries`."""
    outcome, count = run_outcome(run), run.get("retries") or 0
    after = f" after {retries(count)}" if count else ""
    if outcome == "degraded":
        return f"degraded (slow){',' if after else ''}{after}"
    return ("passed" if outcome in ("pass", "retried") else "failed") + after


def last_run(run: dict[str, Any] | None) -> str:
    """A status's last run as shown beside it: `last run passed`, `last run passed after 2
    retries`, `last run degraded (slow)`, `last run failed` or `` (`outcome_text`, and
    `run_time`)."""
    if run is None:
        return ""
    return f"last run {outcome_text(run)}{run_time(run)}"


def run_time(run: dict[str, Any]) -> str:
    """` at 2026-11-20 13:05 UTC` for a last run whose time the status carries (a status
    the site shows with no recent run: `core.status.document`), else ``."""
    at = run.get("at")
    return f" at {moment(datetime.fromisoformat(at))}" if at else ""


def ratio(value: float | None, digits: int = 2) -> str:
    """A plain number (ratios, thresholds)."""
    return NO_DATA if value is None else f"{value:.{digits}f}"


def rate(value: float | None) -> str:
    """A fraction as a percentage with two decimals (error rates)."""
    return NO_DATA if value is None else f"{value * 100:.2f}%"
