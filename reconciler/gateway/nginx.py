"""The nginx data plane: one nginx master of our own, its route configs, and its access log.

Layout of `directory` (the nginx prefix):

    nginx.conf              main config, rewritten by `start()`
    routes/<id>.conf        per route, http context: one upstream per group, split_clients, map
    routes/<id>.locations   per route, server context: the location(s) proxying to the split
    logs/access.json        one JSON line per response (see `accesslog`)
    logs/error.log          nginx's error log; logs/stderr.log its standard error
    nginx.pid, temp/        the master's pid file and nginx's temporary files
    generation              the last config generation applied (never reused)

`<id>` is the route name with every character but [a-z0-9] written as `_xx` (hex), so it is
safe as a file name and inside nginx variable and upstream names. The first lines of each
`routes/<id>.conf` carry the applied weights and the config generation as JSON: the file nginx
tested is the record of what is applied. The generation grows with every applied route config;
`generation` keeps the last one, so removing every route does not start it again from 1.

A change is written beside the files it replaces, each old file kept aside (a hard link, so
putting it back needs no free space) until `nginx -t` passes; any failure, a refused config
or an unwritable directory or full disk alike, is a `GatewayError` and leaves the old files.

nginx runs in the foreground of its own session (`daemon off`), so it outlives a controller
restart; a later `start()` adopts the master named by `nginx.pid` when /proc shows it runs our
config. A master killed outright (`kill -9`, the OOM killer) leaves its workers running, and
they hold the listening socket, so no new master could bind it: `start()` and `revive()` stop
them first (they are the rest of the dead master's process group).

When run as root, nginx's workers drop to `nobody` and need to traverse `directory` to buffer
large request bodies in `temp/`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from reconciler.gateway.accesslog import LogEntry, aggregate, parse_line
from reconciler.gateway.base import GatewayError, GroupMetrics
from reconciler.gateway.logfollow import LogFollower
from reconciler.gateway.nginx_config import ident, render_main, render_route
from reconciler.gateway.processes import (
    children,
    exited,
    is_nginx,
    process_group,
    runs,
    send_signal,
    wait_until,
)
from reconciler.gateway.route_files import failure, put_back, read_state, set_aside, write_atomic
from schemas.route import RouteSpec

# How long the workers a killed master left get to close their connections (SIGQUIT) before
# they are killed: until they close the listening socket, no new master can bind it.
ORPHAN_GRACE_SECONDS = 5.0
_INSTALL_HINT = (
    "install it with `apt-get install nginx` (Debian/Ubuntu) or pass its path as "
    "NginxGateway(nginx=...)"
)


class NginxGateway:
    """A gateway backed by an nginx master process this object starts, reloads and stops.

    `apply` and `metrics` work whether or not nginx runs: config applied while it is stopped
    is served from `start()`. A reload is asynchronous; responses carry the config generation
    in `X-Gateway-Generation`, and `generation(route)` says which one `apply` wrote.
    """

    def __init__(
        self,
        directory: Path,
        listen: tuple[str, int],
        nginx: str = "nginx",
        *,
        worker_processes: int | Literal["auto"] = "auto",
        split_key: str = "$request_id",
        retention: timedelta = timedelta(hours=1),
    ) -> None:
        """Set up the adapter; nothing is written or started yet.

        Args:
            directory: nginx's prefix, owned by this gateway.
            listen: the (address, port) nginx listens on.
            nginx: the nginx binary, a name on PATH or a path.
            worker_processes: nginx worker processes.
            split_key: what split_clients hashes; `$request_id` splits per request, a cookie
                variable would keep a client on one group.
            retention: how long parsed access-log entries are kept for `metrics`.
        """
        self._dir = directory.resolve()
        self._listen = listen
        self._nginx = nginx
        self._workers = worker_processes
        self._split_key = split_key
        self._retention_ms = int(retention.total_seconds() * 1000)
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._log = LogFollower(self._dir / "logs" / "access.json")
        self._entries: dict[str, deque[LogEntry]] = {}
        self._retiring: set[int] = set()  # workers of configs replaced by a reload
        # Started and not stopped: a master found gone is started again (`revive`, `apply`).
        self._wanted = False

    # -- interface --------------------------------------------------------------------------

    def apply(self, route: str, spec: RouteSpec, weights: Mapping[str, int]) -> None:
        """Write the route's config, check it with `nginx -t` and reload nginx.

        Raises:
            GatewayError: the weights or spec cannot be rendered, or nginx rejected the
                config; the previous files are restored and nginx keeps serving them.
        """
        with self._lock:
            try:
                generation = self._next_generation()
            except OSError as error:
                raise GatewayError(
                    f"route {route!r} not applied, the previous config keeps serving: cannot "
                    f"read {error.filename or self._dir}: {error.strerror or error}"
                ) from None
            http, locations = render_route(route, spec, weights, generation, self._split_key)
            self._replace(route, http, locations, generation)

    def remove(self, route: str) -> None:
        """Stop serving `route` (its requests get 404).

        Raises:
            GatewayError: nginx rejected the config left, or the files could not be changed;
                the route's files are restored and nginx keeps serving them.
        """
        with self._lock:
            self._replace(route, None, None)

    def weights(self, route: str) -> dict[str, int] | None:
        """The weights in the route's applied config file, None when it has none."""
        state = read_state(self._route_file(route, "conf"))
        return None if state is None else dict(state["weights"])

    def routes(self) -> list[str]:
        """The routes with a config file (applied and not removed, by this adapter or an
        earlier one), by the name their state line records."""
        found = []
        for path in sorted((self._dir / "routes").glob("*.conf")):
            state = read_state(path)
            if state is not None and isinstance(state.get("route"), str):
                found.append(state["route"])
        return found

    def generation(self, route: str) -> int | None:
        """The config generation `apply` last wrote for `route` (the X-Gateway-Generation)."""
        state = read_state(self._route_file(route, "conf"))
        return None if state is None else int(state["generation"])

    def metrics(self, route: str, since: datetime) -> dict[str, GroupMetrics]:
        """Per group: requests, 5xx and latencies logged from `since` (naive means UTC).

        Groups of the applied config appear even when they served nothing. Entries older than
        the retention are forgotten, so a `since` further back sees only the retained ones.
        """
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        with self._lock:
            self._read_log()
            state = read_state(self._route_file(route, "conf"))
            groups = state["weights"] if state is not None else ()
            entries = self._entries.get(route, deque())
            return aggregate(entries, route, int(since.timestamp() * 1000), groups)

    # -- process ----------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """nginx's prefix directory, absolute."""
        return self._dir

    @property
    def listen(self) -> tuple[str, int]:
        """The (address, port) nginx listens on."""
        return self._listen

    @property
    def running(self) -> bool:
        """Whether our nginx master is alive."""
        return self._master_pid() is not None

    @property
    def master_pid(self) -> int | None:
        """Our live nginx master's pid; None when it is not running."""
        return self._master_pid()

    def start(self, timeout: float = 10.0) -> None:
        """Write nginx.conf and start nginx, or adopt (and reload) a master already running.

        Raises:
            GatewayError: nginx is missing, or exited at start (its message included).
        """
        with self._lock:
            self._start(timeout)
            self._wanted = True

    def revive(self) -> int | None:
        """Start nginx again if it was started and its master is gone (killed, crashed), with
        every route's config as applied; the workers the master left are stopped first.

        Returns:
            The new master's pid, or None when nothing was done (it runs, or was stopped).

        Raises:
            GatewayError: nginx did not start again (its message included).
        """
        with self._lock:
            if not self._wanted or self._master_pid() is not None:
                return None
            self._start()
            return self._master_pid()

    def _start(self, timeout: float = 10.0) -> None:
        """`start`, holding the lock."""
        binary = self._binary()
        config = self._main_config()
        if self._master_pid() is not None:
            self._swap({self._dir / "nginx.conf": config}, "nginx.conf")
            return
        self._stop_orphans()
        write_atomic(self._dir / "nginx.conf", config)
        self._pid_file.unlink(missing_ok=True)
        stderr_path = self._dir / "logs" / "stderr.log"
        with open(stderr_path, "ab") as stderr:
            offset = stderr.tell()
            self._process = subprocess.Popen(
                [binary, *self._args()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # survives the controller's Ctrl-C and restarts
            )
        process = self._process
        ready = wait_until(
            lambda: process.poll() is not None or self._pid_written(process.pid), timeout
        )
        if process.poll() is not None or not ready:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own group: workers too
            process.wait()
            self._process = None
            with open(stderr_path, "rb") as stderr:
                stderr.seek(offset)
                message = stderr.read().decode(errors="replace").strip()
            raise GatewayError(
                f"nginx did not start (listen {self._listen_address()}, prefix {self._dir}): "
                f"{message or f'no pid file after {timeout:g}s'}"
            )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop nginx gracefully (SIGQUIT: in-flight requests finish); SIGTERM after `timeout`."""
        with self._lock:
            self._wanted = False
            pid = self._master_pid()
            if pid is not None:
                send_signal(pid, signal.SIGQUIT)
                if not self._wait_exit(pid, timeout):
                    send_signal(pid, signal.SIGTERM)
                    self._wait_exit(pid, 5.0)
            self._process = None
            self._log.close()

    def wait_reloaded(self, timeout: float = 30.0) -> bool:
        """Wait until every worker that predates the last reload has exited.

        nginx reloads asynchronously, and old workers accept for a moment after the new ones
        start, then finish their open connections. Once they are gone, only the newest config
        serves. False on timeout: nginx refused the reload (see logs/error.log) or long-lived
        connections keep old workers (at most `worker_shutdown_timeout`, 30s).
        """
        pid = self._master_pid()
        if pid is None:
            return True
        done = wait_until(lambda: not self._retiring & children(pid), timeout)
        if done:
            self._retiring.clear()
        return done

    def reopen_logs(self) -> None:
        """Make nginx reopen its logs (SIGUSR1), e.g. after logrotate renamed them."""
        pid = self._master_pid()
        if pid is not None:
            send_signal(pid, signal.SIGUSR1)

    def __enter__(self) -> NginxGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------

    @property
    def _pid_file(self) -> Path:
        return self._dir / "nginx.pid"

    def _route_file(self, route: str, suffix: str) -> Path:
        return self._dir / "routes" / f"{ident(route)}.{suffix}"

    def _binary(self) -> str:
        found = shutil.which(self._nginx)
        if found is None:
            raise GatewayError(f"nginx binary {self._nginx!r} not found; {_INSTALL_HINT}")
        return found

    def _args(self) -> list[str]:
        error_log = str(self._dir / "logs" / "error.log")
        return ["-p", f"{self._dir}/", "-c", str(self._dir / "nginx.conf"), "-e", error_log]

    def _listen_address(self) -> str:
        host, port = self._listen
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _main_config(self) -> str:
        for sub in ("routes", "logs", "temp"):
            (self._dir / sub).mkdir(parents=True, exist_ok=True)
        return render_main(self._workers, self._listen_address())

    @property
    def _generation_file(self) -> Path:
        return self._dir / "generation"

    def _next_generation(self) -> int:
        """One more than any generation applied: the route files' and the one recorded (the
        files alone would start again from 1 once every route is removed)."""
        try:
            recorded = int(self._generation_file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            recorded = 0
        states = (read_state(path) for path in (self._dir / "routes").glob("*.conf"))
        found = (int(state["generation"]) for state in states if state)
        return 1 + max([recorded, *found])

    def _replace(
        self, route: str, http: str | None, locations: str | None, generation: int | None = None
    ) -> None:
        files = {
            self._route_file(route, "conf"): http,
            self._route_file(route, "locations"): locations,
        }
        if generation is not None:
            files[self._generation_file] = f"{generation}\n"
        subject = f"route {route!r}"
        if not (self._dir / "nginx.conf").exists():
            try:
                write_atomic(self._dir / "nginx.conf", self._main_config())
            except OSError as error:
                raise GatewayError(
                    f"{subject} not applied, the previous config keeps serving: {failure(error)}"
                ) from None
        self._swap(files, subject)

    def _swap(self, files: Mapping[Path, str | None], subject: str) -> None:
        """Write `files`; put the old ones back unless `nginx -t` passes, else reload nginx.

        Raises:
            GatewayError: `nginx -t` failed, or a file could not be set aside or written (a
                read-only directory, a full disk); the old files are back in place.
        """
        kept: dict[Path, Path | None] = {}
        try:
            for path, text in files.items():
                kept[path] = set_aside(path)
                write_atomic(path, text)
            self._test_config()
        except (GatewayError, OSError) as error:
            problems = put_back(kept)
            also = (
                f"; the previous files could not all be put back ({'; '.join(problems)}): "
                "nginx serves them until its next reload, but the files on disk differ"
                if problems
                else ""
            )
            raise GatewayError(
                f"{subject} not applied, the previous config keeps serving: {failure(error)}{also}"
            ) from None
        for old in kept.values():
            if old is not None:
                with contextlib.suppress(OSError):
                    old.unlink()
        try:
            self._reload()
        except OSError as error:
            raise GatewayError(f"{subject} written, but nginx was not reloaded: {error}") from None

    def _test_config(self) -> None:
        """Run `nginx -t` on the files as they are on disk."""
        try:
            result = subprocess.run(
                [self._binary(), "-t", "-q", *self._args()],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            raise GatewayError("`nginx -t` did not finish within 60s") from None
        if result.returncode != 0:
            raise GatewayError(f"nginx -t failed: {result.stderr.strip()}")

    def _reload(self) -> None:
        pid = self._master_pid()
        if pid is not None:
            self._retiring |= children(pid)
            send_signal(pid, signal.SIGHUP)
        elif self._wanted:  # started, and gone since: it reads every route's file at start
            self._start()

    def _stop_orphans(self) -> None:
        """Stop the workers of a master of ours that died without them (no master runs): the
        rest of its process group, named by the pid file. Gracefully first (SIGQUIT: they
        close the listening socket and finish their requests), for `ORPHAN_GRACE_SECONDS`."""
        try:
            group = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if runs(group):  # the pid is another process's now: so is the group
            return
        orphans = {pid for pid in process_group(group) if is_nginx(pid)}
        for pid in orphans:
            send_signal(pid, signal.SIGQUIT)
        # Exited, their listening socket closed with them: the new master binds the port.
        if not wait_until(lambda: all(exited(pid) for pid in orphans), ORPHAN_GRACE_SECONDS):
            for pid in orphans:
                if not exited(pid):
                    send_signal(pid, signal.SIGKILL)
            wait_until(lambda: all(exited(pid) for pid in orphans), ORPHAN_GRACE_SECONDS)

    def _pid_written(self, pid: int) -> bool:
        try:
            return self._pid_file.read_text().strip() == str(pid)
        except FileNotFoundError:
            return False

    def _master_pid(self) -> int | None:
        """The live master's pid: our child, or the pid file's nginx if it runs on our prefix."""
        if self._process is not None:
            if self._process.poll() is None:
                return self._process.pid
            self._process = None
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        """Whether `pid` is an nginx master on our config (not a reused pid)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return False
        return b"nginx" in cmdline and os.fsencode(str(self._dir / "nginx.conf")) in cmdline

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        process = self._process
        if process is not None and process.pid == pid:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return wait_until(lambda: not self._is_ours(pid), timeout)

    def _read_log(self) -> None:
        """Parse what nginx appended to the access log and forget entries past retention."""
        for line in self._log.lines():
            entry = parse_line(line)
            if entry is not None:
                self._entries.setdefault(entry.route, deque()).append(entry)
        horizon = int(time.time() * 1000) - self._retention_ms
        for entries in self._entries.values():
            while entries and entries[0].time_ms < horizon:
                entries.popleft()
