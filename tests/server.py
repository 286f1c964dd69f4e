"""A real `reconcile serve` process on 127.0.0.1 for tests, and helpers to talk to it."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests import children
from tests.conftest import ROOT
from tests.waiting import wait_for

ADMIN_TOKEN = "test-admin-token"
_deliveries = itertools.count(1)
WEBHOOK_SECRET = "test-webhook-secret"
STARTUP_SECONDS = 30


class ServerCalls:
    """What tests ask of a server, in process or not: admin calls, tokens, the webhook."""

    client: httpx.Client

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.client.request(method, path, headers=headers, **kwargs)

    def token(self, agent: str) -> str:
        response = self.admin("POST", f"/operator/agents/{agent}/token")
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def webhook(self, body: bytes | None = None) -> httpx.Response:
        # Each push event's body differs; the server refuses the same signed body twice.
        body = body if body is not None else orjson.dumps({"delivery": next(_deliveries)})
        signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return self.client.post(
            "/hooks/git", content=body, headers={"X-Hub-Signature-256": f"sha256={signature}"}
        )

    def status(self) -> dict[str, Any]:
        document: dict[str, Any] = self.client.get("/api/v1/status").json()
        return document


class ServerProcess(ServerCalls):
    """`reconcile serve` as a subprocess; `url` once it is listening."""

    def __init__(self, repo: Path | str, state: Path, env: Mapping[str, str] | None = None,
                 extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.repo, self.state = repo, state
        self.log = state.with_name(state.name + ".log")
        environment = {
            **os.environ,
            "RECONCILER_ADMIN_TOKEN": ADMIN_TOKEN,
            "RECONCILER_WEBHOOK_SECRET": WEBHOOK_SECRET,
            **(env or {}),
        }
        environment = {k: v for k, v in environment.items() if v != ""}
        command = [
            sys.executable, "-m", "reconciler", "serve", "--repo", str(repo),
            "--state", str(state), "--host", "127.0.0.1", "--port", "0",
            "--debounce", "0.05", "--log-format", "json", *extra,
        ]  # fmt: skip
        self._log_file = self.log.open("wb")
        self.process = children.popen(
            command, cwd=ROOT, env=environment, stdout=self._log_file, stderr=self._log_file
        )
        info = state.with_name(state.name + ".serve.json")
        wait_for(
            lambda: info.exists() or self.process.poll() is not None,
            STARTUP_SECONDS,
            "the server to listen",
        )
        if self.process.poll() is not None:
            raise AssertionError(f"server exited at start-up:\n{self.log.read_text()}")
        self.url = orjson.loads(info.read_bytes())["url"]
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def wait_ready(self) -> None:
        wait_for(lambda: self.client.get("/readyz").status_code == 200, 20, "/readyz")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        self.client.close()
        self._log_file.close()
        return self.process.returncode


@contextmanager
def running_server(
    repo: Path | str, state: Path, env: Mapping[str, str] | None = None, extra: tuple[str, ...] = ()
) -> Iterator[ServerProcess]:
    server = ServerProcess(repo, state, env, extra)
    try:
        yield server
    finally:
        server.stop()
