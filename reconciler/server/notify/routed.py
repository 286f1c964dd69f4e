"""Routed notifications: the config repository's AlertRouting decides who hears of an event.

The pure `Dispatcher` (core/routing.py) groups events and says when each group notifies;
this module runs its clock (one timer task), hands due notifications to one worker per
receiver (a slow receiver never delays another), retries each integration with backoff, and
keeps the recent deliveries for `GET /api/v1/notifications` and the counters for `/metrics`.
Without an AlertRouting in the served revision, events go to the `--notify-url` hooks as
before. The recent deliveries and the grouping state (reminders due) are stored through the
state file's writer and read back at start (store/notifications.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import orjson

from agent.metrics import Metrics
from reconciler.core.resources import Resource
from reconciler.core.routing import (
    Dispatcher,
    Notification,
    RoutingTable,
    routing_table,
    without_ended,
)
from reconciler.server.notify.hooks import Hook, Notifier, host_of
from reconciler.server.notify.receivers import Broken, DeliveryError, Integration, integrations
from reconciler.server.supervise import Supervisor
from reconciler.store.handle import StateHandle
from reconciler.store.incidents import open_incident_ids
from reconciler.store.notifications import (
    load_groups,
    recent_deliveries,
    record_delivery,
    save_groups,
)

log = logging.getLogger("reconciler.server.notify")

DELIVERY_METRIC = "notification_deliveries_total"
DELIVERY_HELP = "Notification deliveries by receiver, integration and outcome."
# How many recent deliveries `GET /api/v1/notifications` can show.
RECENT_DELIVERIES = 500


@dataclass(frozen=True)
class Delivery:
    """One delivery of one notification through one integration (or one legacy hook)."""

    receiver: str
    integration: str
    events: tuple[str, ...]
    status: str  # delivered | failed | skipped
    attempts: int
    error: str | None
    at: datetime
    group: str | None = None
    reminder: bool = False

    def document(self) -> dict[str, Any]:
        """The delivery as the API shows it."""
        return {
            "receiver": self.receiver,
            "integration": self.integration,
            "events": list(self.events),
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "group": self.group,
            "reminder": self.reminder,
        }


class Notifications:
    """Routes events when the served revision has an AlertRouting, else posts them to the
    `--notify-url` hooks; either way every delivery is counted and kept for the API."""

    def __init__(
        self,
        hooks: list[Hook],
        secret: str | None,
        metrics: Metrics,
        clock: Callable[[], datetime],
        environ: Mapping[str, str],
        loops: Supervisor | None = None,
        attempts: int = 6,
        first_delay: float = 1.0,
        state: StateHandle | None = None,
    ) -> None:
        self._metrics = metrics
        self._state = state
        # Stored groups read at start, taken back once the routing is known.
        self._stored_groups: list[dict[str, Any]] | None = None
        self._groups_changed = False
        self._writes: set[asyncio.Task[None]] = set()
        self._clock = clock
        self._environ = environ
        self._loops = loops
        self._attempts = attempts
        self._first_delay = first_delay
        self.recent: deque[Delivery] = deque(maxlen=RECENT_DELIVERIES)
        self.problems: list[str] = []
        self._legacy = (
            Notifier(hooks, secret, metrics, clock, attempts, first_delay, loops, self._record_hook)
            if hooks
            else None
        )
        self._dispatcher: Dispatcher | None = None
        self._fingerprint: tuple[str, ...] | None = None
        self._integrations: dict[str, list[Integration]] = {}
        self._queues: dict[str, asyncio.Queue[Notification]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        # Says which due reminders to hold back (an open maintenance window): `hold_reminders`.
        self._hold: Callable[[Notification], bool] | None = None
        metrics.help.setdefault(DELIVERY_METRIC, DELIVERY_HELP)

    def hold_reminders(self, hold: Callable[[Notification], bool]) -> None:
        """Skip each due reminder `hold` says to hold (it is due again a `repeat_interval`
        later, and goes out then unless held again); first notices and resolves always go."""
        self._hold = hold

    @property
    def routed(self) -> bool:
        """Whether the served revision routes events (an AlertRouting is declared)."""
        return self._dispatcher is not None

    def start(self) -> None:
        """Start the legacy hooks' workers and the routing timer."""
        self._client = httpx.AsyncClient(timeout=10.0)
        if self._legacy is not None:
            self._legacy.start()
        self._timer = asyncio.create_task(self._tick(), name="notify timer")

    async def restore(self) -> None:
        """Read the stored deliveries and groups (call once the stored revision is served).

        A state file that cannot be read is reported; notifications start empty then.
        """
        if self._state is None:
            return
        try:
            groups = await self._state.read(load_groups)
            opened = await self._state.read(open_incident_ids)
            stored = await self._state.read(recent_deliveries)
        except Exception as error:  # noqa: BLE001 - reported; notifications start empty
            self._failed(error, "reading the stored notifications")
            return
        for item in reversed(stored):
            self.recent.append(
                Delivery(
                    item["receiver"],
                    item["integration"],
                    tuple(item["events"]),
                    item["status"],
                    item["attempts"],
                    item["error"],
                    item["at"],
                    item["group"],
                    item["reminder"],
                )
            )
        self._stored_groups = without_ended(groups, opened) if isinstance(groups, list) else None
        if self._dispatcher is not None and self._stored_groups is not None:
            self._dispatcher.restore(self._stored_groups)
            self._stored_groups = None
        self._wake.set()

    def _failed(self, error: BaseException, doing: str) -> None:
        if self._loops is None:
            log.error("%s failed: %s", doing, error)
        else:
            self._loops.failed("notify", error, doing)

    async def stop(self, wait_seconds: float = 5.0) -> None:
        """Give queued notifications a moment to go out, then stop."""
        if self._legacy is not None:
            await self._legacy.stop(wait_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(q.join() for q in self._queues.values())), wait_seconds
            )
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        tasks = [*self._workers.values(), *([self._timer] if self._timer else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()

    # -- configuration ---------------------------------------------------------------------

    def configure(self, resources: Mapping[str, Resource]) -> None:
        """Take the routing and receivers of a newly served revision.

        A receiver whose secret is missing is reported (the `notify` loop's error in
        `/api/v1/status`, the log) and fails its deliveries with that reason; the others work.
        """
        routing = [r for r in resources.values() if r.kind == "AlertRouting"]
        receivers = {r.name: r for r in resources.values() if r.kind == "Receiver"}
        key = tuple(sorted(r.fingerprint for r in (*routing, *receivers.values())))
        if key == self._fingerprint:
            return
        self._fingerprint = key
        if not routing:
            self._dispatcher = None
            self._integrations = {}
            self.problems = []
            return
        table: RoutingTable = routing_table(
            routing[0].spec, {name: r.spec for name, r in receivers.items()}
        )
        built = {name: integrations(name, r.spec, self._environ) for name, r in receivers.items()}
        self.problems = [
            i.problem for parts in built.values() for i in parts if isinstance(i, Broken)
        ]
        for problem in self.problems:
            if self._loops is not None:
                self._loops.failed("notify", RuntimeError(problem), "loading the receivers")
            else:
                log.error("%s", problem)
        self._integrations = built
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(table)
            if self._stored_groups is not None:
                self._dispatcher.restore(self._stored_groups)
                self._stored_groups = None
        else:
            self._dispatcher.replace_table(table)
        self._wake.set()
        log.info("notifications routed to %d receiver(s) by %s", len(receivers), routing[0].address)
        if self._legacy is not None:
            log.warning("--notify-urls is not used: %s routes the events", routing[0].address)

    # -- events ----------------------------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
        """Take an event (returns at once): routed when routing is declared, else to the hooks."""
        if self._dispatcher is None:
            if self._legacy is not None:
                self._legacy.send(event)
            return
        stamped = {"at": self._clock().isoformat(), **event}
        self._dispatcher.add(stamped, self._clock())
        self._groups_changed = True
        self._wake.set()

    async def _tick(self) -> None:
        """Flush due groups, then sleep until the next is due or an event arrives."""
        while True:
            # Cleared before looking, so an event that arrives while due groups are stored
            # wakes the next round instead of being missed.
            self._wake.clear()
            wait: float | None = None
            dispatcher = self._dispatcher
            if dispatcher is not None:
                try:
                    now = self._clock()
                    for notification in dispatcher.due(now):
                        self._groups_changed = True
                        if notification.reminder and self._hold and self._hold(notification):
                            continue
                        self._enqueue(notification)
                    if self._groups_changed:
                        self._groups_changed = False
                        await self._save_groups(dispatcher)
                    upcoming = dispatcher.next_due()
                    if upcoming is not None:
                        wait = max(0.0, (upcoming - self._clock()).total_seconds())
                except Exception as error:  # noqa: BLE001 - reported; routing goes on
                    if self._loops is None:
                        log.exception("routing notifications failed")
                    else:
                        self._loops.failed("notify", error, "routing notifications")
                    wait = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _save_groups(self, dispatcher: Dispatcher) -> None:
        """Store the grouping state, so a restart keeps reminders on time and re-sends nothing
        already sent (one small row, written on the state's writer thread)."""
        if self._state is None:
            return
        snapshot = dispatcher.snapshot()
        now = self._clock()
        await self._state.write(lambda c: save_groups(c, snapshot, now))

    def _enqueue(self, notification: Notification) -> None:
        receiver = notification.receiver
        queue = self._queues.get(receiver)
        if queue is None:
            queue = self._queues[receiver] = asyncio.Queue()
            self._workers[receiver] = asyncio.create_task(
                self._work(queue), name=f"notify {receiver}"
            )
        queue.put_nowait(notification)

    async def _work(self, queue: asyncio.Queue[Notification]) -> None:
        while True:
            notification = await queue.get()
            try:
                for integration in self._integrations.get(notification.receiver, []):
                    await self._deliver(integration, notification)
            except Exception as error:  # noqa: BLE001 - one bad notification must not stop it
                if self._loops is None:
                    log.exception("notification to %s failed", notification.receiver)
                else:
                    self._loops.failed("notify", error, f"receiver {notification.receiver}")
            finally:
                queue.task_done()

    async def _deliver(self, integration: Integration, notification: Notification) -> None:
        assert self._client is not None
        events = tuple(str(e.get("type")) for e in (*notification.firing, *notification.resolved))
        if not integration.takes(notification):
            self._note(integration, notification, events, "skipped", 0, "no alert to send")
            return
        delay = self._first_delay
        problem = ""
        for attempt in range(1, self._attempts + 1):
            try:
                await integration.send(notification, self._client)
            except DeliveryError as error:
                problem = str(error)
                if not error.retry:
                    self._note(integration, notification, events, "failed", attempt, problem)
                    return
            else:
                self._note(integration, notification, events, "delivered", attempt, None)
                if self._loops is not None:
                    self._loops.succeeded("notify")
                return
            if attempt < self._attempts:
                log.warning(
                    "notification to %s (%s) failed (%s); retry %d in %.1fs",
                    integration.receiver, integration.kind, problem, attempt, delay,
                )  # fmt: skip
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 300.0)
        self._note(integration, notification, events, "failed", self._attempts, problem)

    # -- records ---------------------------------------------------------------------------

    def _note(
        self,
        integration: Integration,
        notification: Notification,
        events: tuple[str, ...],
        status: str,
        attempts: int,
        error: str | None,
    ) -> None:
        self._metrics.count(
            DELIVERY_METRIC,
            receiver=integration.receiver,
            integration=integration.kind,
            outcome=status,
        )
        if status == "failed":
            log.error(
                "gave up on notification to %s (%s): %s",
                integration.receiver,
                integration.kind,
                error,
            )
        self._keep(
            Delivery(
                integration.receiver,
                integration.kind,
                events,
                status,
                attempts,
                error,
                self._clock(),
                notification.group_key,
                notification.reminder,
            )
        )

    def _keep(self, delivery: Delivery) -> None:
        """Remember a delivery, and store it through the state's writer (in the background:
        a delivery never waits on the state file)."""
        self.recent.append(delivery)
        if self._state is None:
            return
        document = {**delivery.document(), "at": delivery.at}
        write = self._state.write(lambda c: record_delivery(c, document))

        async def stored() -> None:
            try:
                await write
            except Exception as error:  # noqa: BLE001 - reported; the delivery stays in memory
                self._failed(error, "storing a notification delivery")

        task = asyncio.create_task(stored())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _record_hook(
        self, url: str, event: dict[str, Any], status: str, attempts: int, error: str | None
    ) -> None:
        # A hook is named by its host only: Slack webhook URLs carry their token in the path.
        receiver = f"notify-url {host_of(url)}"  # never user:password@ of the URL
        self._metrics.count(DELIVERY_METRIC, receiver=receiver, integration="hook", outcome=status)
        self._keep(
            Delivery(
                receiver, "hook", (str(event.get("type")),), status, attempts, error, self._clock()
            )
        )

    def deliveries(self, limit: int) -> list[dict[str, Any]]:
        """The most recent deliveries, newest first."""
        newest = list(self.recent)[-limit:]
        return [d.document() for d in reversed(newest)]


def announcer(notifications: Notifications | None) -> Callable[[dict[str, Any]], None]:
    """Where controllers hand their events: the log always, the notifications when present."""

    def announce(event: dict[str, Any]) -> None:
        log.info("event %s", orjson.dumps(event).decode())
        if notifications is not None:
            notifications.send(event)

    return announce
