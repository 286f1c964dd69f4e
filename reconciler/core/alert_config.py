"""Reference rules of the alerting kinds: one AlertRouting, and routes name declared receivers."""

from __future__ import annotations

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.documents import Config


def routing_diagnostics(config: Config) -> list[Diagnostic]:
    """Errors and warnings about Receiver and AlertRouting documents taken together.

    Args:
        config: every valid document of a revision.

    Returns:
        An error for a second AlertRouting and for a route naming an undeclared receiver; a
        warning for receivers declared without any AlertRouting (nothing would reach them).
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
    for routing in routings:
        spec = routing.model.spec
        if spec.receiver not in config.receivers:
            message = f"receiver {spec.receiver!r} is not a declared Receiver (receivers: {known})"
            found.append(routing.diagnostic(("spec", "receiver"), message))
        for index, route in enumerate(spec.routes):
            if route.receiver not in config.receivers:
                message = (
                    f"receiver {route.receiver!r} is not a declared Receiver (receivers: {known})"
                )
                found.append(routing.diagnostic(("spec", "routes", index, "receiver"), message))
    if config.receivers and not routings:
        for receiver in config.receivers.values():
            message = "no AlertRouting sends events to this receiver: declare one"
            found.append(receiver.diagnostic(("metadata", "name"), message, "warning"))
    return found
