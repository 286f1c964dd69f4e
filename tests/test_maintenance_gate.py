"""The maintenance gate between the controllers and the notifier: what a window holds back,
what it never swallows (a resolve of a notified incident), and the page it sends at its end
for an incident that opened inside it and is still open."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.metrics import Metrics
from reconciler.core.maintenance import MaintenanceIndex
from reconciler.server.controllers import maintenance
from reconciler.server.controllers.maintenance import MaintenanceGate
from tests.test_maintenance import FLEET, _compiled_windows, utc, window_doc

# web is covered in eu from 10:00 to 11:00.
EU_WINDOW = window_doc(
    "eu-deploy",
    "canaries: {names: [web]}\nregions: [eu]\n"
    "start: 2026-03-01T10:00:00Z\nend: 2026-03-01T11:00:00Z",
)
SUPPRESSED = 'notifications_suppressed_total{reason="maintenance"}'


def event(kind: str, incident: int, *regions: str) -> dict[str, Any]:
    return {
        "type": kind,
        "incident": incident,
        "canary": "default/web",
        "regions_down": list(regions),
    }


class Gate:
    """A gate over the fleet's windows with a clock the test moves."""

    def __init__(self, documents: dict[str, str], at: str) -> None:
        self.index: MaintenanceIndex = _compiled_windows({**FLEET, **documents})
        self.now = utc(at)
        self.sent: list[dict[str, Any]] = []
        self.metrics = Metrics()
        self.gate = MaintenanceGate(
            self.sent.append, lambda: self.index, lambda: self.now, self.metrics
        )

    def types(self) -> list[tuple[str, int]]:
        return [(e["type"], e["incident"]) for e in self.sent]

    def suppressed(self) -> str:
        return next(line for line in self.metrics.render().splitlines() if SUPPRESSED in line)


def test_a_resolve_of_a_notified_incident_goes_out_during_a_window() -> None:
    # majority over eu/us/ap: eu and us down, paged; a window opens on eu; us recovers and
    # the incident resolves with eu still down, inside the window.
    test = Gate({"w.yaml": EU_WINDOW}, "2026-03-01 09:50")
    test.gate(event("incident_opened", 1, "eu", "us"))
    test.now = utc("2026-03-01 10:20")
    test.gate(event("incident_resolved", 1, "eu"))
    assert test.types() == [("incident_opened", 1), ("incident_resolved", 1)]
    assert test.suppressed().endswith(" 0")


def test_a_resolve_naming_no_region_goes_out_under_a_window_over_every_region() -> None:
    everywhere = window_doc(
        "all", "canaries: {names: [web]}\nstart: 2026-03-01T10:00:00Z\nend: 2026-03-01T11:00:00Z"
    )
    test = Gate({"w.yaml": everywhere}, "2026-03-01 09:50")
    test.gate(event("incident_opened", 1, "eu"))
    test.now = utc("2026-03-01 10:20")  # e.g. the canary was removed inside the window
    test.gate(event("incident_resolved", 1))
    assert test.types() == [("incident_opened", 1), ("incident_resolved", 1)]


def test_an_open_inside_a_window_pages_when_it_closes_if_still_open() -> None:
    test = Gate({"w.yaml": EU_WINDOW}, "2026-03-01 10:10")
    test.gate(event("incident_opened", 2, "eu"))
    assert test.sent == [] and test.suppressed().endswith(" 1")
    assert [e["incident"] for e in test.gate.held] == [2]
    test.now = utc("2026-03-01 10:59:59")
    assert test.gate.release_due() == []
    test.now = utc("2026-03-01 11:00")
    assert [e["incident"] for e in test.gate.release_due()] == [2]
    assert test.types() == [("incident_opened", 2)]
    assert test.gate.held == [] and test.gate.release_due() == []
    test.gate(event("incident_resolved", 2))
    assert test.types() == [("incident_opened", 2), ("incident_resolved", 2)]


def test_an_event_after_the_window_releases_the_held_open_first() -> None:
    test = Gate({"w.yaml": EU_WINDOW}, "2026-03-01 10:10")
    test.gate(event("incident_opened", 2, "eu"))
    test.now = utc("2026-03-01 11:05")  # no look since the window closed, then it recovers
    test.gate(event("incident_resolved", 2))
    assert test.types() == [("incident_opened", 2), ("incident_resolved", 2)]


def test_an_incident_that_opens_and_resolves_inside_a_window_says_nothing() -> None:
    test = Gate({"w.yaml": EU_WINDOW}, "2026-03-01 10:10")
    test.gate(event("incident_opened", 3, "eu"))
    test.now = utc("2026-03-01 10:40")
    test.gate(event("incident_resolved", 3))
    test.now = utc("2026-03-01 12:00")
    assert test.gate.release_due() == []
    assert test.sent == [] and test.suppressed().endswith(" 2")


def test_a_window_closed_early_releases_the_held_open() -> None:
    test = Gate({"w.yaml": EU_WINDOW}, "2026-03-01 10:10")
    test.gate(event("incident_opened", 4, "eu"))
    test.index = _compiled_windows(FLEET)  # a commit removed (or closed) the window
    assert [e["incident"] for e in test.gate.release_due()] == [4]


def test_the_held_open_is_released_on_the_running_loop_without_another_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(maintenance, "RECHECK_SECONDS", 0.01)
    test = Gate({"w.yaml": EU_WINDOW}, "2026-03-01 10:10")

    looks: list[int] = []
    release_due = test.gate.release_due

    def counted() -> list[dict[str, Any]]:
        looks.append(1)
        return release_due()

    monkeypatch.setattr(test.gate, "release_due", counted)

    async def scenario() -> None:
        test.gate(event("incident_opened", 5, "eu"))
        async with asyncio.timeout(5):
            while len(looks) < 2:  # the timer looked twice, the window still open
                await asyncio.sleep(0.01)
        assert test.sent == [], "still inside the window"
        test.now = utc("2026-03-01 11:00")
        async with asyncio.timeout(5):
            while not test.sent:
                await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert test.types() == [("incident_opened", 5)]
