"""Go-style duration strings such as ``500ms``, ``30s`` and ``1h30m``."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from schemas.limits import MAX_DURATION_SECONDS, limit_hint

_UNIT_SECONDS: dict[str, Decimal] = {
    "us": Decimal("0.000001"),
    "µs": Decimal("0.000001"),  # U+00B5 micro sign
    "μs": Decimal("0.000001"),  # U+03BC Greek small letter mu
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(us|µs|μs|ms|s|m|h)")
_BARE_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_EXPECTED = "expected a number followed by a unit (ms, s, m, h), e.g. '30s' or '1h30m'"


def parse_duration(text: str) -> float:
    """Parse a Go-style duration string into seconds.

    Args:
        text: One or more ``<number><unit>`` parts, e.g. ``500ms``, ``1.5s`` or ``1h30m``.
            Units are ``us``/``µs``, ``ms``, ``s``, ``m`` and ``h``. A bare ``0`` is allowed.

    Returns:
        The duration in seconds.

    Raises:
        ValueError: If the text is not a valid, non-negative duration of at most 366 days.
    """
    stripped = text.strip()
    if stripped == "0":
        return 0.0
    if stripped.startswith("-"):
        raise ValueError(f"invalid duration {_clipped(text)}: negative durations are not allowed")
    if _BARE_NUMBER.fullmatch(stripped):
        raise ValueError(f"invalid duration {_clipped(text)}: missing unit; {_EXPECTED}")
    total = Decimal(0)
    pos = 0
    while pos < len(stripped):
        match = _PART.match(stripped, pos)
        if match is None:
            raise ValueError(f"invalid duration {_clipped(text)}: {_EXPECTED}")
        total += Decimal(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"invalid duration {_clipped(text)}: {_EXPECTED}")
    if total > MAX_DURATION_SECONDS:
        raise ValueError(
            f"duration {_clipped(text)} is out of range: allowed 0 to "
            f"{format_duration(MAX_DURATION_SECONDS)}; "
            + limit_hint("duration", format_duration(MAX_DURATION_SECONDS))
        )
    return float(total)


def _clipped(text: str) -> str:
    """A written value as quoted in an error, shortened: it may be megabytes long."""
    shown = text if len(text) <= 40 else text[:37] + "..."
    return repr(shown)


def format_duration(seconds: float) -> str:
    """Render seconds as a compact duration string, rounded to the microsecond.

    Examples: ``0s``, ``500ms``, ``1.5s``, ``1m30s``, ``5m``, ``1h30m``, ``2h``.
    The result always parses back with :func:`parse_duration`.

    Args:
        seconds: A finite, non-negative number of seconds.

    Returns:
        The compact duration string.

    Raises:
        ValueError: If ``seconds`` is negative or not finite.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}: expected a finite number >= 0")
    micros = round(seconds * 1_000_000)
    if micros == 0:
        return "0s"
    if micros < 1_000:
        return f"{micros}us"
    if micros < 1_000_000:
        return _decimal(micros, 1_000) + "ms"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        parts.append(_decimal(rest, 1_000_000) + "s")
    return "".join(parts)


def _decimal(value: int, scale: int) -> str:
    """Render ``value / scale`` without trailing zeros (``1500, 1000`` -> ``1.5``)."""
    whole, frac = divmod(value, scale)
    if not frac:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")
