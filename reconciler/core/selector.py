"""agentSelector matching: which agents a canary runs on."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import translate
from functools import lru_cache

LOCAL = "local"


@dataclass(frozen=True)
class Selection:
    """The agents a selector matched, and whether the control plane runs it too."""

    agents: tuple[str, ...]
    local: bool


@lru_cache(maxsize=4096)
def _matcher(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """All globs of a list compiled into one regex: one match call per agent, not per glob.
    Case is ignored, as canary-checker's matcher (flanksource/commons MatchItems) does."""
    if not patterns:
        return None
    return re.compile("|".join(translate(p) for p in patterns), re.IGNORECASE)


def _normalize(pattern: str) -> str:
    """A pattern as canary-checker reads it: surrounding spaces trimmed, also after `!`."""
    stripped = pattern.strip()
    if stripped.startswith("!"):
        return "!" + stripped[1:].strip()
    return stripped


def select_agents(selector: Sequence[str] | None, agents: Iterable[str]) -> Selection:
    """Match an agentSelector against agent names.

    Rules: patterns are shell globs (`*`, `?`, `[...]`) over agent names, matched
    ignoring case and with surrounding spaces trimmed (as canary-checker does); `!pattern`
    excludes, and exclusions win whatever their order; a list with no inclusion pattern
    other than `local` includes every agent, minus the exclusions; `local` (never matched by
    a glob) selects the control plane's own agent; no selector, or an empty one, means
    local only.

    Args:
        selector: the canary's agentSelector, or None when it has none.
        agents: the names of the eligible (enabled, in enabled regions) agents.

    Returns:
        The matched agent names in the order given, and whether `local` is selected.
    """
    if not selector:
        return Selection((), True)
    selector = [_normalize(p) for p in selector]
    includes = tuple(p for p in selector if not p.startswith("!") and p.lower() != LOCAL)
    excludes = tuple(p[1:] for p in selector if p.startswith("!"))
    lowered = {p.lower() for p in selector}
    local = LOCAL in lowered and LOCAL not in {p.lower() for p in excludes}
    if not includes and not excludes:
        return Selection((), local)  # ['local'] alone: the control plane only
    include, exclude = _matcher(includes), _matcher(excludes)
    matched = tuple(
        agent
        for agent in agents
        if (include is None or include.match(agent)) and not (exclude and exclude.match(agent))
    )
    return Selection(matched, local)
