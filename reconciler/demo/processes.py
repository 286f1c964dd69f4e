"""The demo's subprocesses: started in their own sessions, stopped in order, never left behind.

Each child gets its own session, so Ctrl-C in the terminal reaches only the demo, which then
stops the agents first (they ship their last results to the server), then the server (which
stops its nginx). A child that does not stop in time is killed with its process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler.server.binding import bind_problem

# Where nginx lives on Debian when /usr/sbin is not on a normal user's PATH.
SBIN_DIRECTORIES = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether 127.0.0.1:`port` is taken (something listens or it cannot be bound)."""
    return bind_problem("127.0.0.1", port) is not None


def find_nginx() -> str | None:
    """The nginx binary: on PATH, or in an sbin directory off a normal user's PATH."""
    path = os.environ.get("PATH", "")
    return shutil.which("nginx", path=os.pathsep.join([path, *SBIN_DIRECTORIES]))


def child_environment(extra: Mapping[str, str], nginx: str | None = None) -> dict[str, str]:
    """The demo's environment without RECONCILER_*/AGENT_* settings, plus `extra`.

    Settings the user exported for another server must not leak into the demo's processes;
    loopback requests never go through a proxy; nginx's directory joins PATH when needed.
    """
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RECONCILER_", "AGENT_"))
    }
    no_proxy = [p for p in environment.get("NO_PROXY", "").split(",") if p]
    environment["NO_PROXY"] = ",".join([*no_proxy, "127.0.0.1", "localhost"])
    if nginx is not None:
        directory = str(Path(nginx).parent)
        if directory not in environment.get("PATH", "").split(os.pathsep):
            environment["PATH"] = os.pathsep.join([environment.get("PATH", ""), directory])
    environment.update(extra)
    return environment


class Child:
    """One subprocess with its output in a log file."""

    def __init__(
        self, name: str, command: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path
    ) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("ab")
        self.process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The child's pid (also its process group's id)."""
        return self.process.pid

    def running(self) -> bool:
        """Whether it has not exited yet."""
        return self.process.poll() is None

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM): agents ship their results, the server drains."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill it and anything left in its process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()

    def tail(self, lines: int = 15) -> str:
        """The last lines of its log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Close the log file (after it exited)."""
        self._log_file.close()


def stop_children(
    children: Sequence[Child], timeout: float, hurry: threading.Event | None = None
) -> list[tuple[Child, str]]:
    """SIGTERM every child, wait up to `timeout` (less once `hurry` is set), kill the rest.

    Returns:
        (child, what went wrong) for every child that was killed or exited non-zero.
    """
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    while any(c.running() for c in children) and time.monotonic() < deadline:
        if hurry is not None and hurry.is_set():
            break
        time.sleep(0.05)
    problems = []
    for child in children:
        if child.running():
            child.kill()
            hurried = hurry is not None and hurry.is_set()
            why = "asked to stop at once" if hurried else f"did not stop within {timeout:g}s"
            problems.append((child, f"{why}; killed"))
        elif child.process.returncode not in (0, -signal.SIGTERM):
            problems.append((child, f"exited with status {child.process.returncode}"))
        child.close()
    return problems


def stop_stray_nginx(prefix: Path) -> bool:
    """Stop an nginx master still running on `prefix` (its server normally stops it).

    Returns:
        Whether one had to be stopped.
    """
    try:
        pid = int((prefix / "nginx.pid").read_text().strip())
    except (OSError, ValueError):
        return False
    if not _is_nginx_on(pid, prefix):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + 10
    while _is_nginx_on(pid, prefix) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _is_nginx_on(pid, prefix):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # nginx runs in its own session: workers too
    return True


def _is_nginx_on(pid: int, prefix: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"nginx" in cmdline and os.fsencode(str(prefix)) in cmdline
