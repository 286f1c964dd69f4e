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
    """All globs of a list compiled into one regex: one match call per agent, not per glob."""
    return re.compile("|".join(translate(p) for p in patterns)) if patterns else None


def select_agents(selector: Sequence[str] | None, agents: Iterable[str]) -> Selection:
    """Match an agentSelector against agent names.

    Rules: patterns are shell globs (`*`, `?`, `[...]`) over agent names; `!pattern`
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
    includes = tuple(p for p in selector if not p.startswith("!") and p != LOCAL)
    excludes = tuple(p[1:] for p in selector if p.startswith("!"))
    local = LOCAL in selector and LOCAL not in excludes
    if not includes and not excludes:
        return Selection((), local)  # ['local'] alone: the control plane only
    include, exclude = _matcher(includes), _matcher(excludes)
    matched = tuple(
        agent
        for agent in agents
        if (include is None or include.match(agent)) and not (exclude and exclude.match(agent))
    )
    return Selection(matched, local)
