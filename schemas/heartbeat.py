"""Heartbeat checks: a job calls the control plane's ping URL; no ping in time is a failure.

Modelled on Healthchecks.io checks and Uptime Kuma push monitors: the job pings
`/api/v1/heartbeat/{token}` when it runs; a ping not seen within `period + grace` of the
previous one is a failed run, and another one for every further `period` without one.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from schemas.base import Duration, Problem, StrictModel
from schemas.durations import format_duration, parse_duration
from schemas.limits import MIN_HEARTBEAT_PERIOD_SECONDS, limit_hint

DEFAULT_GRACE = "1m"


class HeartbeatCheck(StrictModel):
    """One heartbeat: a name, how often it is expected and how late it may be."""

    name: str = Field(
        min_length=1, max_length=128, description="Unique within the canary; the check's name."
    )
    description: str | None = None
    period: Duration = Field(
        description="How often the job pings, e.g. '5m' or '24h' "
        f"(at least {format_duration(MIN_HEARTBEAT_PERIOD_SECONDS)})."
    )
    grace: Duration = Field(
        default=DEFAULT_GRACE,
        description="How late a ping may be before the run counts as failed "
        f"(0 or more; default {DEFAULT_GRACE}).",
    )

    @property
    def period_seconds(self) -> float:
        """The period in seconds."""
        return parse_duration(self.period)

    @property
    def grace_seconds(self) -> float:
        """The grace in seconds."""
        return parse_duration(self.grace)

    def problems(self) -> Iterator[Problem]:
        if self.period_seconds < MIN_HEARTBEAT_PERIOD_SECONDS:
            shortest = format_duration(MIN_HEARTBEAT_PERIOD_SECONDS)
            yield (
                ("period",),
                f"period {self.period!r} is too short: at least {shortest}; "
                + limit_hint("minimum heartbeat period", shortest),
            )


def heartbeat_schedule(heartbeats: list[HeartbeatCheck]) -> str:
    """The schedule a heartbeat canary is evaluated on: its longest `period + grace`.

    Rows arrive at least that often (a ping, or a missed deadline), so the status and the
    incidents, which call a region unknown after three schedule periods without a row,
    never take a quiet but healthy heartbeat for a silent one.
    """
    longest = max(h.period_seconds + h.grace_seconds for h in heartbeats)
    return f"@every {format_duration(longest)}"
