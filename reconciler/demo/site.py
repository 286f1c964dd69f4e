"""The status site: rebuilt with `reconcile site build` when this version has that command.

The site is built by another part of the product. The demo asks `reconcile site --help`
whether it exists, passes `--server` when `site build` takes one (the server holds the state
file's lock while it runs), and otherwise builds from the state file: while the server runs
that may be refused as locked, and the demo builds once more after the server has stopped.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.demo.output import Console
from reconciler.demo.workspace import Workspace

BUILD_TIMEOUT = 120.0


@dataclass(frozen=True)
class SiteBuild:
    """The outcome of one build."""

    ok: bool
    locked: bool
    message: str


def _help(args: list[str], env: Mapping[str, str]) -> str | None:
    """The help text of `reconcile ARGS --help`, None when the command does not exist."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(env),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


class SiteBuilder:
    """Runs `reconcile site build --state STATE --out DIR [--server URL]`."""

    def __init__(self, workspace: Workspace, env: Mapping[str, str], console: Console) -> None:
        self.workspace = workspace
        self.env = dict(env)
        self.console = console
        self.locked = False  # refused while the server holds the state: built at the end
        self.available = _help(["site"], env) is not None
        build_help = _help(["site", "build"], env) if self.available else None
        self.available = self.available and build_help is not None
        self.takes_server = build_help is not None and "--server" in build_help
        self.takes_lock_timeout = build_help is not None and "--lock-timeout" in build_help
        self.builds = 0

    @property
    def index(self) -> Path:
        """The site's front page."""
        return self.workspace.site / "index.html"

    def build(self, server_url: str | None, stop: threading.Event | None = None) -> SiteBuild:
        """Build the site once; a `stop` request ends a running build early."""
        if not self.available:
            return SiteBuild(False, False, "`reconcile site build` is not in this version")
        command = [
            sys.executable, "-m", "reconciler", "site", "build",
            "--state", str(self.workspace.state), "--out", str(self.workspace.site),
        ]  # fmt: skip
        if server_url and self.takes_server:
            command += ["--server", server_url]
        elif server_url and self.takes_lock_timeout:
            command += ["--lock-timeout", "2"]  # the server holds the state: fail fast
        log = self.workspace.logs / "site.log"
        with log.open("ab") as output:
            start = output.tell()
            process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=self.env,
                stdin=subprocess.DEVNULL, cwd=self.workspace.root,
            )  # fmt: skip
            deadline = time.monotonic() + BUILD_TIMEOUT
            while process.poll() is None:
                if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    return SiteBuild(False, False, "the site build was interrupted")
                time.sleep(0.05)
        with log.open("rb") as output:
            output.seek(start)
            text = output.read().decode(errors="replace").strip()
        if process.returncode == 0:
            self.builds += 1
            return SiteBuild(True, False, text.splitlines()[-1] if text else "built")
        locked = any(word in text.lower() for word in ("lock", "in use"))
        last = text.splitlines()[-1] if text else f"exit status {process.returncode}"
        return SiteBuild(False, locked, last)

    def first_build(self, server_url: str, stop: threading.Event, interval: float) -> str:
        """Build once while the demo starts; what the summary should say about the site."""
        if not self.available:
            self.console.detail("status site: `reconcile site build` is not in this version yet")
            return (
                "not built: `reconcile site build` is not in this version yet; "
                "the read API has the same data"
            )
        result = self.build(server_url, stop)
        if result.ok:
            self.console.detail(f"status site built: {self.index}")
            return f"rebuilt every {interval:g}s"
        if result.locked:
            self.locked = True
            self.console.detail(
                "status site: `reconcile site build` cannot read the state file while the "
                "server holds it (the site needs the server hook); it is built when the demo stops"
            )
            return "built when the demo stops: the server holds the state file"
        self.console.warn(f"the status site did not build: {result.message} (logs/site.log)")
        return "did not build; see logs/site.log"

    def rebuild(self, server_url: str | None, stop: threading.Event) -> None:
        """Rebuild while the demo runs (not once the state file was found locked)."""
        if not self.available or self.locked:
            return
        result = self.build(server_url, stop)
        if result.locked:
            self.locked = True
            self.console.warn(
                "the status site cannot be rebuilt while the server holds the state file "
                "(it needs the server hook); it is built when the demo stops"
            )
        elif not result.ok and not stop.is_set():
            self.console.warn(f"the status site did not build: {result.message} (logs/site.log)")

    def final_build(self) -> None:
        """Build from the state file after the server stopped."""
        if not self.available:
            return
        result = self.build(None)
        if result.ok:
            self.console.detail(f"status site: file://{self.index}")
        else:
            self.console.warn(f"the status site did not build: {result.message} (logs/site.log)")
