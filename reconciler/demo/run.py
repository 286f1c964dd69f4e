"""The demo from start to stop: backends, config, plan, server, agents, traffic, site.

Start-up runs in six numbered steps; then a status line every `status_interval` seconds until
Ctrl-C, SIGTERM or `--duration`, while the server rebuilds the status site every
`site_interval` seconds and after each applied commit. Stopping goes in reverse: traffic,
agents (they ship their last results), one last site build, the server (it stops its nginx),
the backends.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from reconciler.demo.agents import AgentChoice, choose_agents, start_agent
from reconciler.demo.backends import DemoBackends
from reconciler.demo.errors import DemoError, StopRequested
from reconciler.demo.output import (
    INSTALL_NGINX,
    Console,
    Summary,
    rewrite_lines,
    status_line,
    summary_text,
)
from reconciler.demo.processes import (
    Child,
    find_nginx,
    free_port,
    port_in_use,
    stop_children,
    stop_stray_nginx,
)
from reconciler.demo.results import results_by_region
from reconciler.demo.rewrite import DemoRoute, Rewrite, rewrite_config
from reconciler.demo.server import DemoServer
from reconciler.demo.site import LiveSite
from reconciler.demo.traffic import REQUESTS_PER_SECOND, Traffic, wait_routed
from reconciler.demo.workspace import Workspace, commit, copy_config, create_workspace
from reconciler.render.text import diagnostic_lines, render_text
from reconciler.session import Session, Settings, SourceError
from reconciler.store.db import StateError

LOCAL_REGION = "default"  # the server's own region: `local` checks report here
FIRST_RESULTS_TIMEOUT = 45.0
AGENT_STOP_TIMEOUT = 20.0
SERVER_STOP_TIMEOUT = 40.0


@dataclass(frozen=True)
class DemoOptions:
    """What `reconcile demo` was asked for."""

    repo: Path
    directory: Path | None = None
    port: int = 8080
    gateway: str = "auto"  # auto | nginx | none
    gateway_port: int | None = None
    duration: float | None = None
    status_interval: float = 15.0
    site_interval: float = 15.0


def _cli() -> str:
    """How to call `reconcile` from another terminal."""
    script = Path(sys.executable).parent / "reconcile"
    return str(script) if script.exists() else "reconcile"


class Demo:
    """One run of the demo. `run()` returns the exit code; `request_stop` may come from a
    signal handler at any time (a second request stops without waiting)."""

    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.stop = threading.Event()
        self.hurry = threading.Event()
        self.stop_reason = ""
        self.failures: list[str] = []
        self.started_at = datetime.now(UTC)
        self._clock = time.monotonic()
        self.workspace: Workspace | None = None
        self.backends: DemoBackends | None = None
        self.server: DemoServer | None = None
        self.agents: list[Child] = []
        self.choices: list[AgentChoice] = []
        self.traffic: Traffic | None = None
        self.site: LiveSite | None = None
        self.routes: list[DemoRoute] = []
        self._gateway_url: str | None = None
        self._exited: set[str] = set()

    # -- control --------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop soon; when already stopping, stop without waiting for the children."""
        if self.stop.is_set():
            self.hurry.set()
            return
        self.stop_reason = reason
        self.stop.set()

    def elapsed(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self._clock

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise StopRequested

    def run(self) -> int:
        """Start everything, watch until asked to stop, stop everything; the exit code."""
        timer = None
        if self.options.duration is not None:
            timer = threading.Timer(self.options.duration, self.request_stop, ["--duration"])
            timer.daemon = True
            timer.start()
        try:
            self._start()
            self._watch()
        except StopRequested:
            pass
        except (DemoError, SourceError, StateError, httpx.HTTPError, OSError) as error:
            self.console.error(str(error) or type(error).__name__)
            self.failures.append(str(error))
        finally:
            if timer is not None:
                timer.cancel()
            self._shutdown()
        return 1 if self.failures else 0

    # -- start-up -------------------------------------------------------------------------

    def _start(self) -> None:
        console, options = self.console, self.options
        nginx = self._gateway()
        port, gateway_port = self._ports(nginx)
        console.step(1, f"copying {options.repo} to a new git repository the server follows")
        workspace = self.workspace = create_workspace(options.directory)
        copy_config(options.repo, workspace)
        console.detail(f"{workspace.config}")
        self._check_stop()

        console.step(2, "starting local backends and pointing the config at them")
        console.detail("(the sample's *.example.com hosts do not resolve without network)")
        self.backends = DemoBackends(workspace.backends)
        changes, self.routes = rewrite_config(workspace.config, self.backends)
        sha = commit(workspace.config, "demo: point checks and routes at local backends")
        self._report_backends(changes, sha)
        self._check_stop()

        console.step(3, "planning the config (the plan the server applies when it starts)")
        self._plan(workspace)
        self._check_stop()

        self.server = self._serve(workspace, nginx, port, gateway_port)
        self._check_stop()

        console.step(5, "minting agent tokens and starting one agent per enabled agent")
        self._start_agents(workspace)
        if self._gateway_url is not None and self.routes:
            self._start_traffic(self._gateway_url)

        console.step(6, "waiting for the first results")
        self._wait_for_results()
        assert self.site is not None
        site_note = self.site.first_build(self.server)
        console.show(summary_text(self._summary(site_note)))

    def _report_backends(self, changes: list[Rewrite], sha: str) -> None:
        assert self.backends is not None and self.workspace is not None
        services = self.backends.services()
        width = max(len(name) for name, _, _ in services)
        for name, address, what in services:
            self.console.detail(f"{name:<{width}}  {address:<24} {what}")
        self.console.detail(f"rewrote {len(changes)} fields (commit {sha}):")
        for line in rewrite_lines(changes):
            self.console.detail(f"  {line}")
        self.console.detail(f"see the whole change: git -C {self.workspace.config} show {sha}")

    def _plan(self, workspace: Workspace) -> None:
        session = Session(Settings(LOCAL_REGION))
        loaded = session.load(workspace.config)
        if not loaded.ok:
            for line in diagnostic_lines(loaded.diagnostics):
                self.console.error(line)
            raise DemoError(f"the config in {workspace.config} is invalid; nothing was started")
        self.console.show(render_text(session.plan_against_state(loaded, workspace.state)))

    def _gateway(self) -> str | None:
        """The nginx binary when the gateway is on; explains when it is off."""
        choice = self.options.gateway
        nginx = find_nginx() if choice != "none" else None
        if choice == "nginx" and nginx is None:
            raise DemoError(f"--gateway nginx: nginx is not installed; {INSTALL_NGINX}")
        if nginx is None and choice == "auto":
            self.console.warn(f"nginx is not installed: no gateway; {INSTALL_NGINX}")
        return nginx

    def _ports(self, nginx: str | None) -> tuple[int, int | None]:
        port, gateway = self.options.port, self.options.gateway_port
        if nginx is not None and gateway is None:
            gateway = 0 if port == 0 else 8088
        if nginx is not None and gateway == 0:
            gateway = free_port()
        for label, number in (("--port", port), ("--gateway-port", gateway)):
            if number and port_in_use(number):
                raise DemoError(
                    f"127.0.0.1:{number} is in use; pass {label} with another port "
                    "(0 picks a free one)"
                )
        return port, gateway if nginx is not None else None

    def _serve(
        self, workspace: Workspace, nginx: str | None, port: int, gateway_port: int | None
    ) -> DemoServer:
        listen = f"127.0.0.1:{gateway_port}" if gateway_port is not None else None
        where = f"127.0.0.1:{port}" if port else "a free port on 127.0.0.1"
        gateway = f"nginx gateway on {listen}" if listen else "no gateway"
        self.console.step(4, f"starting reconcile serve on {where} ({gateway})")
        self.site = LiveSite(workspace, self.console, self.options.site_interval)
        flags = self.site.serve_flags()
        server = DemoServer(workspace, port, secrets.token_hex(16), listen, nginx, flags)
        self.server = server
        url = server.wait_listening(self.stop)
        status = server.wait_ready(self.stop)
        revision = (status.get("current_revision") or {}).get("label", "?")
        self.console.detail(f"ready at {url}; applied {revision} (log: logs/serve.log)")
        self._gateway_url = f"http://{listen}" if listen else None
        return server

    def _start_agents(self, workspace: Workspace) -> None:
        assert self.server is not None
        self.choices = choose_agents(self.server)
        for choice in self.choices:
            self._check_stop()
            if choice.skipped:
                self.console.detail(f"{choice.name:<18} not started: {choice.skipped}")
                continue
            token = self.server.mint_token(choice.name)
            self.agents.append(start_agent(workspace, self.server.url, choice.name, token))
            self.console.detail(f"{choice.name:<18} region {choice.region}")
        self.console.detail(f"{'(the server)':<18} region {LOCAL_REGION}: the `local` checks")

    def _start_traffic(self, gateway_url: str) -> None:
        paths = [route.path for route in self.routes]
        if not wait_routed(gateway_url, paths, self.stop):
            self._check_stop()
            self.console.warn(f"nginx does not route {', '.join(paths)} yet; see logs/serve.log")
        self.traffic = Traffic(gateway_url, paths)
        self.traffic.start()
        self.console.detail(
            f"traffic: ~{REQUESTS_PER_SECOND} requests/s to each of {', '.join(paths)} "
            f"through nginx on {gateway_url}"
        )

    def _featured_route(self) -> DemoRoute | None:
        """The route the summary shows: `checkout` in the sample, else the first canary."""
        canaries = [r for r in self.routes if r.canary_group]
        return next(
            (r for r in canaries if r.name == "checkout"), canaries[0] if canaries else None
        )

    def _agent_rows(self) -> list[dict[str, Any]]:
        assert self.server is not None
        try:
            rows: list[dict[str, Any]] = self.server.get("/operator/agents", admin=True)["agents"]
        except (httpx.HTTPError, KeyError, ValueError):
            return []
        return rows

    def _wait_for_results(self) -> None:
        regions = {c.region for c in self.choices if not c.skipped}
        wanted = min(3, len(regions))
        deadline = time.monotonic() + FIRST_RESULTS_TIMEOUT
        seen: set[str] = set()
        while time.monotonic() < deadline:
            self._check_stop()
            seen = {str(a["region"]) for a in self._agent_rows() if a.get("results_last_hour")}
            if len(seen) >= wanted:
                break
            self.stop.wait(1)
        if seen:
            self.console.detail(
                f"results from {', '.join(sorted(seen))} after {self.elapsed():.0f}s"
            )
        else:
            self.console.warn(
                f"no agent results after {FIRST_RESULTS_TIMEOUT:g}s; see the logs in "
                f"{self.workspace.logs if self.workspace else 'the demo directory'}"
            )

    def _summary(self, site_note: str) -> Summary:
        assert self.server is not None and self.workspace is not None
        route = self._featured_route()
        canary_backend = None
        if route is not None and self.backends is not None and route.canary_group:
            group = self.backends.groups.get((route.name, route.canary_group))
            canary_backend = group.backends[0].url if group and group.backends else None
        regions = sorted({c.region for c in self.choices if not c.skipped} | {LOCAL_REGION})
        route_file = None
        if route is not None:
            found = sorted(self.workspace.config.rglob(f"{route.name}.yaml"))
            route_file = found[0].relative_to(self.workspace.config).as_posix() if found else None
        return Summary(
            server_url=self.server.url,
            admin_token=self.server.admin_token,
            root=str(self.workspace.root),
            state=str(self.workspace.state),
            config=str(self.workspace.config),
            gateway_url=self._gateway_url,
            route_path=route.path if route else None,
            canary_backend=canary_backend,
            route=route.name if route else None,
            route_file=route_file or "routes/ROUTE.yaml",
            site_index=str(self.site.index) if self.site else None,
            site_note=site_note,
            agents=len(self.agents),
            regions=regions,
            duration=self.options.duration,
            cli=_cli(),
            heartbeat=self.server.first_heartbeat(),
        )

    # -- running --------------------------------------------------------------------------

    def _watch(self) -> None:
        next_status = time.monotonic() + self.options.status_interval
        while not self.stop.is_set():
            self._check_children()
            now = time.monotonic()
            if now >= next_status:
                self._print_status()
                next_status = now + self.options.status_interval
            self.stop.wait(1)

    def _check_children(self) -> None:
        assert self.server is not None
        if not self.server.child.running():
            message = (
                f"reconcile serve exited unexpectedly (status "
                f"{self.server.child.process.returncode}); the end of its log:\n"
                f"{self.server.child.tail()}"
            )
            self.console.error(message)
            self.failures.append(message)
            self.request_stop("the server exited")
        for agent in self.agents:
            if not agent.running() and agent.name not in self._exited:
                self._exited.add(agent.name)
                message = (
                    f"{agent.name} exited (status {agent.process.returncode}); see {agent.log}"
                )
                self.console.warn(message)
                self.failures.append(message)

    def _print_status(self) -> None:
        assert self.server is not None
        try:
            canaries = self.server.get("/canary")["canaries"]
        except (httpx.HTTPError, KeyError, ValueError):
            canaries = []
        traffic = self.traffic.snapshot() if self.traffic else {}
        self.console.show(status_line(self.elapsed(), self._agent_rows(), canaries, traffic))

    # -- stopping -------------------------------------------------------------------------

    def _shutdown(self) -> None:
        console = self.console
        if self.server is not None:
            why = f" ({self.stop_reason})" if self.stop_reason else ""
            console.detail(
                f"stopping{why}: the agents (they ship their last results), then the server "
                "and its nginx, then the backends (Ctrl-C again: at once)"
            )
        if self.traffic is not None:
            self.traffic.stop()
        problems = stop_children(self.agents, AGENT_STOP_TIMEOUT, self.hurry)
        if self.site is not None and self.server is not None and not self.hurry.is_set():
            self.site.final_build(self.server)
        if self.server is not None:
            problems += stop_children([self.server.child], SERVER_STOP_TIMEOUT, self.hurry)
            self.server.close()
        for child, problem in problems:
            message = f"{child.name} {problem}; see {child.log}"
            console.warn(message)
            self.failures.append(message)
        if self.workspace is not None and stop_stray_nginx(self.workspace.gateway):
            console.warn("the server left its nginx running; the demo stopped it")
        if self.backends is not None:
            self.backends.close()
        if self.workspace is None or self.server is None:
            return
        regions = {c.name: c.region for c in self.choices} | {"local": LOCAL_REGION}
        counts = results_by_region(self.workspace.state, self.started_at, regions)
        stored = ", ".join(f"{r} {n}" for r, n in sorted(counts.items())) or "none"
        console.show(
            f"demo stopped after {self.elapsed():.0f}s; results stored by region: {stored}\n"
            f"everything is kept in {self.workspace.root} (state: {self.workspace.state.name}, "
            "config: config/, logs: logs/)"
        )
