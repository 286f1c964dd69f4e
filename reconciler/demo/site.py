"""The status site in the demo: the server rebuilds it; the demo asks for a build at both ends.

`reconcile serve` runs with `--site-dir <demo>/site`, so it rebuilds the site after every
applied commit and every `--site-interval` seconds by itself, writing atomically: the page a
newcomer keeps open in a browser is always current. The demo only asks for one build as soon
as the first results are in (so the site is not empty until the first timer) and one when it
stops (so the site kept afterwards has the last results), both through `POST /api/site/build`.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from reconciler.demo.output import Console
from reconciler.demo.server import DemoServer
from reconciler.demo.workspace import Workspace

BUILD_TIMEOUT = 120.0


class LiveSite:
    """The server's status site, as the demo presents it."""

    def __init__(self, workspace: Workspace, console: Console, interval: float) -> None:
        self.workspace = workspace
        self.console = console
        self.interval = interval

    @property
    def index(self) -> Path:
        """The site's front page."""
        return self.workspace.site / "index.html"

    def serve_flags(self) -> list[str]:
        """The `reconcile serve` flags that make the server keep this site up to date."""
        return ["--site-dir", str(self.workspace.site), "--site-interval", f"{self.interval:g}"]

    def build_now(self, server: DemoServer) -> str | None:
        """Ask the server to rebuild now; None when it did, else what went wrong."""
        if not server.listening:
            return "the server is not listening"
        try:
            response = server.client.post(
                "/api/site/build",
                headers={"Authorization": f"Bearer {server.admin_token}"},
                timeout=BUILD_TIMEOUT,
            )
        except httpx.HTTPError as error:
            return f"the server did not answer: {error}"
        if response.status_code != 200:
            return f"{response.status_code} {response.text[:200]}"
        return None

    def first_build(self, server: DemoServer) -> str:
        """Build once the first results are in; what the summary should say about the site."""
        problem = self.build_now(server)
        if problem is not None:
            self.console.warn(f"the status site did not build: {problem} (logs/serve.log)")
            return f"the server rebuilds it every {self.interval:g}s; the first build failed"
        self.console.detail(f"status site built: file://{self.index}")
        return f"live: the server rebuilds it every {self.interval:g}s and after each commit"

    def final_build(self, server: DemoServer) -> None:
        """Build once more before the server stops, so the kept site has the last results."""
        problem = self.build_now(server)
        if problem is not None:
            self.console.warn(f"the last status site build failed: {problem} (logs/serve.log)")
