"""`reconcile serve` as the demo runs it, and the few API calls the demo makes to it."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import httpx
import orjson

from reconciler.demo.errors import DemoError, StopRequested
from reconciler.demo.processes import Child, child_environment
from reconciler.demo.workspace import Workspace
from reconciler.server.address_file import server_file

# Resolved by the server from its environment into the payments check's Authorization header
# (`valueFrom: {env: PAYMENTS_CANARY_TOKEN}` in the sample); never written to the state.
PAYMENTS_TOKEN = "Bearer demo-payments-token"


def wait_until(condition: Any, stop: threading.Event, timeout: float, what: str) -> None:
    """Poll `condition()` until true.

    Raises:
        StopRequested: `stop` was set meanwhile.
        DemoError: `timeout` seconds passed.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if stop.is_set():
            raise StopRequested
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:g}s waiting for {what}")
        stop.wait(0.1)


class DemoServer:
    """The control plane subprocess, on 127.0.0.1."""

    def __init__(
        self,
        workspace: Workspace,
        port: int,
        admin_token: str,
        gateway_listen: str | None,
        nginx: str | None,
        extra_flags: list[str],
    ) -> None:
        self.admin_token = admin_token
        self._state = workspace.state
        command = [
            sys.executable, "-m", "reconciler", "serve",
            "--repo", str(workspace.config), "--state", str(workspace.state),
            "--host", "127.0.0.1", "--port", str(port),
            "--debounce", "0.3", "--canary-interval", "1", "--log-format", "text",
        ]  # fmt: skip
        if gateway_listen is not None:
            command += ["--gateway", "nginx", "--gateway-listen", gateway_listen]
            command += ["--gateway-dir", str(workspace.gateway)]
        else:
            command += ["--gateway", "none"]
        command += extra_flags
        environment = child_environment(
            {"RECONCILER_ADMIN_TOKEN": admin_token, "PAYMENTS_CANARY_TOKEN": PAYMENTS_TOKEN},
            nginx,
        )
        self.child = Child(
            "reconcile serve", command, environment, workspace.logs / "serve.log", workspace.root
        )
        self.url = ""
        self._client: httpx.Client | None = None

    def _exited(self) -> DemoError:
        return DemoError(
            f"reconcile serve exited with status {self.child.process.returncode}; the end of "
            f"{self.child.log}:\n{self.child.tail()}"
        )

    def wait_listening(self, stop: threading.Event, timeout: float = 60) -> str:
        """Wait until the server says its URL (next to the state file); the URL."""
        info = server_file(self._state)
        wait_until(lambda: info.exists() or not self.child.running(), stop, timeout, "the server")
        if not self.child.running():
            raise self._exited()
        self.url = str(orjson.loads(info.read_bytes())["url"])
        self._client = httpx.Client(base_url=self.url, timeout=10, trust_env=False)
        return self.url

    def wait_ready(self, stop: threading.Event, timeout: float = 60) -> dict[str, Any]:
        """Wait for /readyz (the first revision applied); the server's status."""

        def ready() -> bool:
            if not self.child.running():
                raise self._exited()
            try:
                return self.client.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, stop, timeout, "/readyz (the first revision to be applied)")
        status: dict[str, Any] = self.get("/api/v1/status")
        return status

    @property
    def listening(self) -> bool:
        """Whether the server said its URL (and `client` can be used)."""
        return self._client is not None

    @property
    def client(self) -> httpx.Client:
        """An HTTP client for the server (after `wait_listening`)."""
        assert self._client is not None, "wait_listening first"
        return self._client

    def get(self, path: str, admin: bool = False) -> Any:
        """GET a JSON document.

        Raises:
            httpx.HTTPError: the request failed or was refused.
        """
        headers = {"Authorization": f"Bearer {self.admin_token}"} if admin else {}
        response = self.client.get(path, headers=headers)
        response.raise_for_status()
        return response.json()

    def first_heartbeat(self) -> tuple[str, str] | None:
        """The (canary, check) of the served revision's first heartbeat check, if any."""
        listed = self.get("/operator/heartbeats", admin=True).get("heartbeats", [])
        return (str(listed[0]["canary"]), str(listed[0]["check"])) if listed else None

    def mint_token(self, agent: str) -> str:
        """Mint an agent's token through the operator API.

        Raises:
            DemoError: the server refused.
        """
        response = self.client.post(
            f"/operator/agents/{agent}/token",
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        if response.status_code != 201:
            raise DemoError(f"minting a token for {agent}: {response.status_code} {response.text}")
        return str(response.json()["token"])

    def close(self) -> None:
        """Close the HTTP client (the process is stopped with the other children)."""
        if self._client is not None:
            self._client.close()
