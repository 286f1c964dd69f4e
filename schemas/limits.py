"""The fixed limits on what a config repository may hold, in one place (docs/limits.md)."""

from __future__ import annotations

from typing import Final

# Where every limit here is set, named in each error so a user knows it is not a typo of theirs.
WHERE: Final = "schemas/limits.py, see docs/limits.md"

# A config file is read whole before parsing; bigger files are refused unread.
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
# YAML documents (`---`) in one file.
MAX_DOCUMENTS_PER_FILE: Final = 10_000
# Nodes of one file counted as if every alias were written out: a billion-laughs file is a few
# hundred bytes that expand to 10^9 nodes, and everything after the parser walks the expansion.
MAX_EXPANDED_NODES: Final = 250_000
# Alias uses (`*name`, merge keys included) in one file.
MAX_ALIASES: Final = 10_000
# Mappings and lists inside one another; the deepest real document is under 10.
MAX_NESTING_DEPTH: Final = 64
# Characters in one scalar (a key or a value); an HTTP body or a CA bundle fits.
MAX_STRING_CHARS: Final = 256 * 1024
# Integers are stored in DuckDB BIGINT columns and JSON fingerprints: 64-bit signed.
MIN_INTEGER: Final = -(2**63)
MAX_INTEGER: Final = 2**63 - 1

# Any duration (timeouts, schedule periods, pauses, TTLs): at most 366 days.
MAX_DURATION_SECONDS: Final = 366 * 24 * 3600
# `@every` schedules: the agent cannot usefully run one canary more often than this.
MIN_SCHEDULE_SECONDS: Final = 0.1
# Heartbeat checks: how often a job must ping at the least (one row per ping is stored).
MIN_HEARTBEAT_PERIOD_SECONDS: Final = 1.0
# A check's timeout: above 0 (0 would fail every run) and at most an hour.
MIN_TIMEOUT_SECONDS: Final = 0.001
MAX_TIMEOUT_SECONDS: Final = 3600.0

# HTTP request headers of a check (RFC 9110 field names and values).
MAX_HEADER_NAME_CHARS: Final = 256
MAX_HEADER_VALUE_CHARS: Final = 8 * 1024
# CEL `test.expr` / `display.expr`: compiled at validate time, whose parser recurses per level.
MAX_EXPRESSION_CHARS: Final = 4_096
# Short human text shown on the site (display names, locations).
MAX_TEXT_CHARS: Final = 1_024


def limit_hint(name: str, value: object) -> str:
    """The tail of every limit error: which limit, its value and where it is set."""
    return f"limit '{name}' is {value} (set in {WHERE})"
