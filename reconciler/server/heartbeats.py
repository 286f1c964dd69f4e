"""Heartbeat checks on the control plane: pings in, missed deadlines out, as result rows.

A ping (`/api/v1/heartbeat/{token}`, http/heartbeat_api.py) stores a `pass` row (`fail` for
`/fail`) and a watchdog stores a `fail` row for every deadline missed (core/heartbeats.py).
Both go through the control plane's ingest as agent `local` in the control plane's region,
the agent a heartbeat canary is derived for, so incidents, uptime, the site and `/metrics`
treat them as any other check's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from reconciler.core.heartbeats import (
    HeartbeatTarget,
    Key,
    heartbeat_targets,
    missed_deadlines,
    missed_row,
    ping_row,
)
from reconciler.core.refusal import RequestRefused
from reconciler.core.selector import LOCAL
from reconciler.server.control_plane import ControlPlane
from reconciler.store.heartbeats import (
    TOKEN_PREFIX,
    Heartbeat,
    ensure_table,
    load_heartbeats,
    mint_heartbeat_token,
    record_pings,
    record_start,
)
from reconciler.store.tokens import hash_token

log = logging.getLogger("reconciler.heartbeats")

PingKind = Literal["ping", "fail", "start"]
LOOP = "heartbeats"
# The one answer to every token that is not a served heartbeat's: malformed, unknown, rotated,
# or of a heartbeat no longer in the config. It never says which.
UNKNOWN = "no heartbeat has this token"
# Longer strings are not tokens of ours (`crh_` and 43 characters); refused before hashing.
MAX_TOKEN_CHARS = 128
# Pings of one heartbeat of the same kind closer than this are answered but stored once: a
# job in a retry loop (or a leaked token) cannot turn one check into a write per request.
MIN_PING_SPACING = timedelta(seconds=1)
# Missed deadlines are kept a little younger than the oldest row ingest accepts.
_AGE_MARGIN = timedelta(minutes=1)
# A ping that arrives at its very deadline is on time.
_JUST_BEFORE = timedelta(microseconds=1)

HELP = {
    "heartbeat_pings_total": "Heartbeat pings by outcome (stored, coalesced, unknown_token, "
    "dropped).",
    "heartbeat_missed_total": "Failed rows stored for heartbeat deadlines that passed without a "
    "ping.",
    "heartbeat_missed_skipped_total": "Missed heartbeat deadlines not stored because more than "
    "the bound passed at once (the newest are stored).",
}


@dataclass(frozen=True)
class HeartbeatView:
    """One heartbeat as the operator API lists it."""

    target: HeartbeatTarget
    stored: Heartbeat | None
    since: datetime | None  # what its next deadline counts from (None: no token)

    def document(self) -> dict[str, Any]:
        stored = self.stored
        due = None
        if self.since is not None:
            due = self.since + timedelta(seconds=self.target.period + self.target.grace)
        return {
            "canary": self.target.key[0],
            "check": self.target.key[1],
            "derived_canary": self.target.derived,
            "period_seconds": self.target.period,
            "grace_seconds": self.target.grace,
            "has_token": stored is not None,
            "last_ping": _iso(stored.last_ping_at if stored else None),
            "due_by": _iso(due),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class Heartbeats:
    """Receives pings and stores missed deadlines for the served revision's heartbeats.

    Args:
        control: the control plane (its state, clock, ingest, supervisor and metrics).
        interval: seconds between two looks for missed deadlines.
    """

    def __init__(self, control: ControlPlane, interval: float = 1.0) -> None:
        self._control = control
        self.interval = interval
        self._stored: dict[Key, Heartbeat] = {}
        self._by_hash: dict[str, Key] = {}
        self._targets: dict[Key, HeartbeatTarget] = {}
        self._written: dict[Key, datetime] = {}  # newest missed deadline stored
        # When a heartbeat came (back) into the served revision after the start: added, or
        # resumed after `replicas: 0`. Nothing was due before, so its deadlines count from
        # then. Heartbeats served at the start count from their last ping, so the deadlines
        # missed while the server was down are stored.
        self._appeared: dict[Key, datetime] = {}
        self._refreshed = False
        self._started: dict[Key, datetime] = {}  # `/start` pings awaiting their end
        self._last: dict[tuple[Key, PingKind], datetime] = {}
        self._task: asyncio.Task[None] | None = None
        # Last pings waiting to be written, and the future their write sets (group commit:
        # pings that arrive while one write runs share the next).
        self._batch: dict[Key, datetime] = {}
        self._batch_written: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for name, text in HELP.items():
            self._control.metrics.help.setdefault(name, text)
        self._control.loops.watch(LOOP)  # in /metrics and /api/v1/status from the start
        await self._control.state.write(ensure_table)
        stored = await self._control.state.read(load_heartbeats)
        self._remember(stored)
        # Runs started before a restart are timed by their end as if it had not happened.
        self._started = {k: h.started_at for k, h in stored.items() if h.started_at is not None}
        self._control.on_publish.append(self.refresh)
        self.refresh()
        self._task = self._control.loops.task(LOOP, self._loop)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def refresh(self) -> None:
        """Follow the served revision's heartbeat checks."""
        targets = heartbeat_targets(self._control.resources.values())
        if self._refreshed:
            now = self._control.clock()
            for key in targets.keys() - self._targets.keys():
                self._appeared[key] = now
        self._refreshed = True
        self._targets = targets
        for gone in [key for key in self._appeared if key not in targets]:
            del self._appeared[gone]
        for gone in [key for key in self._written if key not in self._targets]:
            del self._written[gone]

    def _remember(self, stored: dict[Key, Heartbeat]) -> None:
        self._stored = stored
        self._by_hash = {heartbeat.token_hash: key for key, heartbeat in stored.items()}

    # -- tokens ----------------------------------------------------------------------------

    def target(self, canary: str, check: str) -> HeartbeatTarget:
        """A served heartbeat.

        Raises:
            RequestRefused: 404 when the served revision has no such heartbeat check.
        """
        found = self._targets.get((canary, check))
        if found is None:
            raise RequestRefused(
                404, f"canary {canary} has no heartbeat check {check!r} in the served revision"
            )
        return found

    async def mint(self, canary: str, check: str) -> str:
        """Mint (or rotate) a heartbeat's token; the old one stops working at once."""
        key = self.target(canary, check).key
        now = self._control.clock()
        token = await self._control.state.write(lambda c: mint_heartbeat_token(c, key, now))
        self._remember(await self._control.state.read(load_heartbeats))
        return token

    def views(self) -> list[HeartbeatView]:
        """Every served heartbeat with what is stored of it, by canary and check."""
        return [
            HeartbeatView(target, self._stored.get(key), self._since(key))
            for key, target in sorted(self._targets.items())
        ]

    def _since(self, key: Key) -> datetime | None:
        """What a heartbeat's next deadline counts from: its last ping, else its token's
        minting, or when it came (back) into the served revision if that is later."""
        stored = self._stored.get(key)
        if stored is None:
            return None
        since = stored.last_ping_at or stored.minted_at
        appeared = self._appeared.get(key)
        return appeared if appeared is not None and appeared > since else since

    def key_of(self, token: str) -> Key:
        """The heartbeat a token belongs to, or a 404 that does not say what was wrong.

        The lookup is by the SHA-256 of the presented token: its timing depends on that
        hash, which an attacker cannot steer towards a stored one, never on how much of
        the token was right; the final comparison is constant time.
        """
        try:
            return self._key_of(token)
        except RequestRefused:
            self._control.metrics.count("heartbeat_pings_total", outcome="unknown_token")
            raise

    def _key_of(self, token: str) -> Key:
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            raise RequestRefused(404, UNKNOWN)
        presented = hash_token(token)
        key = self._by_hash.get(presented)
        stored = self._stored.get(key) if key is not None else None
        if key is None or stored is None or not hmac.compare_digest(presented, stored.token_hash):
            raise RequestRefused(404, UNKNOWN)
        if key not in self._targets:
            raise RequestRefused(404, UNKNOWN)
        return key

    # -- pings -----------------------------------------------------------------------------

    async def ping(self, key: Key, kind: PingKind, message: str | None) -> str:
        """Take one ping of the heartbeat `key_of` found; returns what became of it
        (`stored`, `coalesced`, or `dropped` when ingest refused the row).

        Raises:
            RequestRefused: 404 when the heartbeat left the served revision meanwhile.
        """
        metrics = self._control.metrics
        target = self._targets.get(key)
        if target is None:
            raise RequestRefused(404, UNKNOWN)
        now = self._control.clock()
        previous = self._last.get((key, kind))
        if previous is not None and now - previous < MIN_PING_SPACING:
            metrics.count("heartbeat_pings_total", outcome="coalesced", kind=kind)
            return "coalesced"
        self._last[(key, kind)] = now
        if kind == "start":
            self._started[key] = now
            await self._control.state.write(functools.partial(record_start, key=key, at=now))
            metrics.count("heartbeat_pings_total", outcome="stored", kind=kind)
            return "stored"
        duration = 0.0
        started = self._started.pop(key, None)
        if started is not None and now - started <= timedelta(seconds=target.period + target.grace):
            duration = (now - started).total_seconds() * 1000
        row = ping_row(target, now, kind == "fail", message, duration)
        # A deadline passed since the watchdog's last look is stored before the ping moves
        # the next one: a ping a moment late is still a missed deadline.
        await self._store_missed(self._missed(key, now - _JUST_BEFORE))
        await self._save_ping(key, now)
        stored = self._stored.get(key)
        if stored is not None:
            self._stored[key] = replace(stored, last_ping_at=now)
        answer = await self._control.ingest(LOCAL, [row], None)
        outcome = "dropped" if answer["dropped"] else "stored"
        metrics.count("heartbeat_pings_total", outcome=outcome, kind=kind)
        if answer["dropped"]:
            log.warning("a ping of %s %r was not stored: %s", *key, answer["dropped"])
        return outcome

    async def _save_ping(self, key: Key, at: datetime) -> None:
        """Write a last ping, sharing one transaction with the pings that arrive meanwhile."""
        self._batch[key] = at
        if self._batch_written is None:
            self._batch_written = asyncio.get_running_loop().create_future()
        written = self._batch_written
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(), name="heartbeat-pings")
        await asyncio.shield(written)

    async def _write_batches(self) -> None:
        while self._batch:
            batch, written = self._batch, self._batch_written
            self._batch, self._batch_written = {}, None
            assert written is not None
            try:
                await self._control.state.write(functools.partial(record_pings, pings=batch))
            except Exception as error:  # noqa: BLE001 - each waiting ping answers with it
                written.set_exception(error)
            else:
                written.set_result(None)

    # -- missed deadlines ------------------------------------------------------------------

    async def look(self, now: datetime | None = None) -> int:
        """Store a failed row for each deadline missed up to `now` (default: the clock).

        Returns:
            How many rows were handed to ingest.
        """
        now = now or self._control.clock()
        rows = [row for key in self._targets for row in self._missed(key, now)]
        await self._store_missed(rows)
        return len(rows)

    def _missed(self, key: Key, now: datetime) -> list[dict[str, Any]]:
        """The failed rows of the deadlines a heartbeat missed up to `now`, not yet stored."""
        target, since = self._targets.get(key), self._since(key)
        if target is None or since is None:  # no token yet: nothing can ping it
            return []
        oldest = now - self._control.policy.max_age + _AGE_MARGIN
        missed = missed_deadlines(target, since, now, self._written.get(key), oldest)
        if missed.skipped:
            self._control.metrics.count("heartbeat_missed_skipped_total", missed.skipped)
        if not missed.deadlines:
            return []
        self._written[key] = missed.deadlines[-1]
        return [missed_row(target, deadline, since) for deadline in missed.deadlines]

    async def _store_missed(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            # Re-sent after a restart, a deadline is a duplicate row: only new ones count.
            answer = await self._control.ingest(LOCAL, rows, None)
            self._control.metrics.count("heartbeat_missed_total", answer["accepted"])

    async def _loop(self) -> None:
        loops = self._control.loops
        while True:
            await asyncio.sleep(self.interval + loops.delay(LOOP))
            if not self._targets:
                continue
            try:
                await self.look()
            except Exception as error:  # noqa: BLE001 - reported; the next look tries again
                loops.failed(LOOP, error, "storing missed heartbeat deadlines")
            else:
                loops.succeeded(LOOP)
