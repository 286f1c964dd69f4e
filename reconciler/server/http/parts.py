"""The controllers the HTTP routes reach, held by the app beside the control plane."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.server.controllers.agent_silence import AgentSilence
from reconciler.server.controllers.deployments import DeploymentController
from reconciler.server.controllers.incidents import IncidentController
from reconciler.server.controllers.site_rebuilds import SiteRebuilder
from reconciler.server.heartbeats import Heartbeats
from reconciler.server.notify import Notifications


@dataclass(frozen=True)
class Controllers:
    """What the server runs besides the control plane; each route asks for the one it needs."""

    incidents: IncidentController
    deployments: DeploymentController
    site: SiteRebuilder
    silence: AgentSilence | None = None  # None: --agent-silent-after 0
    notifications: Notifications | None = None
    heartbeats: Heartbeats | None = None
