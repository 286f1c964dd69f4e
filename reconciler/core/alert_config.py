"""Reference rules of the alerting kinds: one AlertRouting, and routes name declared receivers."""

from __future__ import annotations

from collections.abc import Collection

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.documents import Config


def routing_diagnostics(config: Config, failed: Collection[str] = ()) -> list[Diagnostic]:
    """Errors about Receiver and AlertRouting documents taken together.

    Args:
        config: every valid document of a revision.
        failed: names of Receivers declared in documents that did not validate: routes
            naming them are not told they do not exist.

    Returns:
        An error for a second AlertRouting and for a route naming an undeclared receiver.
    """
    found: list[Diagnostic] = []
    # The first in file order is kept; line numbers compare as numbers (":8" before ":13").
    routings = sorted(
        config.alert_routing.values(),
        key=lambda d: (d.path, int(d.location().rpartition(":")[2])),
    )
    for extra in routings[1:]:
        message = (
            f"only one AlertRouting is allowed; {routings[0].subject} is declared at "
            f"{routings[0].location()}"
        )
        found.append(extra.diagnostic(("metadata", "name"), message))
    known = ", ".join(sorted(config.receivers)) or "none declared"
    declared = set(config.receivers) | set(failed)
    for routing in routings:
        spec = routing.model.spec
        if spec.receiver not in declared:
            message = f"receiver {spec.receiver!r} is not a declared Receiver (receivers: {known})"
            found.append(routing.diagnostic(("spec", "receiver"), message))
        for index, route in enumerate(spec.routes):
            if route.receiver not in declared:
                message = (
                    f"receiver {route.receiver!r} is not a declared Receiver (receivers: {known})"
                )
                found.append(routing.diagnostic(("spec", "routes", index, "receiver"), message))
    return found


def unrouted_receivers(config: Config) -> list[Diagnostic]:
    """A warning for each Receiver when no AlertRouting is declared: nothing would reach
    them. Only for a revision without errors (an AlertRouting may have failed to load)."""
    if not config.receivers or config.alert_routing:
        return []
    message = "no AlertRouting sends events to this receiver: declare one"
    return [
        r.diagnostic(("metadata", "name"), message, "warning") for r in config.receivers.values()
    ]
