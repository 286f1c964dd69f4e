"""The demo's agents: one `agent run` subprocess per enabled agent of an enabled region."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from reconciler.demo.processes import Child, child_environment
from reconciler.demo.server import DemoServer
from reconciler.demo.workspace import Workspace

PULL_INTERVAL = "2"  # seconds: a commit reaches the agents within moments
FLUSH_INTERVAL = "1"  # seconds: results show up on the server almost at once


@dataclass(frozen=True)
class AgentChoice:
    """An agent of the config and whether the demo runs it."""

    name: str
    region: str
    skipped: str | None = None


def choose_agents(server: DemoServer) -> list[AgentChoice]:
    """Every agent the server knows, with why it is skipped (disabled, or its region is)."""
    agents = server.get("/operator/agents", admin=True)["agents"]
    regions = {r["name"]: r for r in server.get("/operator/regions", admin=True)["regions"]}
    choices = []
    for agent in sorted(agents, key=lambda a: str(a["name"])):
        region = str(agent["region"])
        skipped = None
        if not agent.get("enabled", True):
            skipped = "the agent is disabled"
        elif not regions.get(region, {}).get("enabled", True):
            skipped = f"region {region} is disabled"
        choices.append(AgentChoice(str(agent["name"]), region, skipped))
    return choices


def start_agent(workspace: Workspace, url: str, name: str, token: str) -> Child:
    """Start `agent run` for one agent; its log is logs/agent-NAME.log."""
    command = [
        sys.executable, "-m", "agent", "run", "--url", url,
        "--spool", str(workspace.agents / f"{name}.sqlite"), "--listen", "off",
        "--pull-interval", PULL_INTERVAL, "--flush-interval", FLUSH_INTERVAL,
        "--shutdown-timeout", "5", "--log-format", "text",
    ]  # fmt: skip
    environment = child_environment({"AGENT_TOKEN": token})
    log = workspace.logs / f"agent-{name}.log"
    return Child(f"agent {name}", command, environment, log, workspace.root)
