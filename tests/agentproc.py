"""A real `agent run` process for tests, a local HTTP target, and a switchable proxy."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests import children, httpd
from tests.conftest import ROOT
from tests.server import wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Target(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).hits += 1
        httpd.reply(self, 200, b'{"status": "healthy"}')

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_target() -> Iterator[str]:
    """A small HTTP service on 127.0.0.1 answering 200 with JSON."""
    with httpd.serving(_Target) as server:
        yield httpd.url(server, "/health")


class SwitchProxy:
    """Forwards to the control plane, or answers 503 while `failing` is set, or a 200 HTML
    page while `captive` is set (a captive portal, a proxy's sign-in page).

    While `holding` is set, result POSTs are held unanswered (a ship in flight) until
    `release()`; `held` counts the requests that arrived meanwhile.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.failing = False
        self.captive = False
        self.holding = False
        self.held = 0
        self._released = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if proxy.holding and self.command == "POST":
                    proxy.held += 1
                    proxy._released.wait(60)
                    return  # the connection closes without an answer
                if proxy.failing:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if proxy.captive:
                    page = b"<html><body>Sign in to continue</body></html>"
                    httpd.reply(self, 200, page, "text/html")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body, method=self.command
                )
                for name in ("Authorization", "If-None-Match", "Content-Type"):
                    if self.headers.get(name):
                        request.add_header(name, self.headers[name])
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        status, headers, content = answer.status, answer.headers, answer.read()
                except urllib.error.HTTPError as error:
                    status, headers, content = error.code, error.headers, error.read()
                self.send_response(status)
                for name in ("ETag", "Content-Type"):
                    if headers.get(name):
                        self.send_header(name, headers[name])
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self._server = httpd.start(Handler)
        self.url = httpd.url(self._server)

    def release(self) -> None:
        """Let held requests go (unanswered) and stop holding new ones."""
        self.holding = False
        self._released.set()

    def close(self) -> None:
        self.release()
        httpd.stop(self._server)


class AgentProcess:
    """`agent run` as a subprocess with its status endpoint on a free port."""

    def __init__(self, url: str, token: str, spool: Path, *extra: str) -> None:
        self.port = free_port()
        self.log = spool.with_name(spool.name + ".log")
        self._log_file = self.log.open("ab")
        env = {**os.environ, "RECONCILER_URL": url, "AGENT_TOKEN": token}
        self.process = children.popen(
            [
                sys.executable, "-m", "agent", "run", "--spool", str(spool),
                "--listen", f"127.0.0.1:{self.port}", "--pull-interval", "0.3",
                # Held pulls end within a second: a test sees a failing server soon.
                "--pull-wait", "1",
                "--flush-interval", "0.2", "--log-format", "json", *extra,
            ],
            cwd=ROOT, env=env, stdout=self._log_file, stderr=self._log_file,
        )  # fmt: skip
        self.status = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)
        wait_for(self._listening, 30, "the agent's status endpoint")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"agent exited:\n{self.log.read_text()}")
        try:
            self.status.get("/ready")
        except httpx.HTTPError:
            return False
        return True

    def ready(self) -> bool:
        return self.status.get("/ready").status_code == 200

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.status.get("/metrics").text.splitlines():
            if line.startswith(f"agent_{name}") and not line.startswith("#"):
                key = line.split(" ")[0]
                if key == f"agent_{name}" or key.startswith(f"agent_{name}{{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.status.close()
        self._log_file.close()
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        self.status.close()
        self._log_file.close()
