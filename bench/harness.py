"""What every benchmark needs: a workspace, a config repository, processes, timing, py-spy.

The scripts in bench/ run as `python bench/NAME.py`, which puts bench/ first on `sys.path`,
so they import this module as `harness`. No script in bench/ may be named like a package the
project imports (`agent`, `reconciler`, `schemas`): it would shadow that package.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token"
STARTUP_SECONDS = 60.0
STOP_SECONDS = 30.0

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# The workspace
# ---------------------------------------------------------------------------------------------


def add_keep_option(parser: argparse.ArgumentParser) -> None:
    """`--keep DIR`: work in DIR, which must not exist, and keep it (see `workspace`)."""
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="work in DIR (must not exist) and keep it"
    )


@contextlib.contextmanager
def workspace(keep: Path | None, prefix: str) -> Iterator[Path]:
    """A new temporary directory, removed afterwards; or DIR from `--keep DIR`, kept.

    Args:
        keep: The directory to create and keep, or None for a temporary one.
        prefix: The temporary directory's name prefix (which bench made it).
    """
    if keep is not None:
        if keep.exists():
            raise SystemExit(f"bench: --keep {keep} already exists; choose a new directory")
        keep.mkdir(parents=True)
        yield keep.resolve()
        return
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The config repository
# ---------------------------------------------------------------------------------------------


def git(root: Path, *args: str, date: str | None = None) -> None:
    """Run git in `root` with a fixed identity and no signing.

    Args:
        root: The repository.
        *args: The git command and its arguments.
        date: Author and committer date (ISO 8601), so that commit ids repeat; None: now.
    """
    environment = dict(os.environ)
    if date is not None:
        environment |= {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    identity = ("-c", "user.name=bench", "-c", "user.email=bench@example.invalid")
    subprocess.run(
        ["git", "-C", str(root), *identity, "-c", "commit.gpgsign=false", *args],
        check=True,
        capture_output=True,
        env=environment,
    )


def commit_all(root: Path, message: str, *, date: str | None = None) -> None:
    """Stage everything under `root` and commit it."""
    git(root, "add", "-A", date=date)
    git(root, "commit", "-q", "-m", message, date=date)


def init_repo(root: Path, message: str = "generated config", *, date: str | None = None) -> None:
    """`git init` the files written under `root` (branch main) and commit them."""
    git(root, "init", "-q", "-b", "main", date=date)
    commit_all(root, message, date=date)


def write_file(path: Path, text: str) -> None:
    """Write a text file, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def document(kind: str, name: str, spec: str, *, namespace: str | None = None) -> str:
    """One YAML document of `kind`; `spec` is its indented body, one `  key: value\\n` a line."""
    where = f"  namespace: {namespace}\n" if namespace is not None else ""
    return (
        f"apiVersion: canary-reconciler/v1\nkind: {kind}\nmetadata:\n  name: {name}\n{where}"
        f"spec:\n{spec}"
    )


def documents(texts: Iterable[str]) -> str:
    """Several documents in one file."""
    return "---\n".join(texts)


def region_doc(name: str, display_name: str | None = None) -> str:
    """An enabled Region."""
    shown = f"  displayName: {display_name}\n" if display_name is not None else ""
    return document("Region", name, f"{shown}  enabled: true\n")


def agent_doc(name: str, region: str) -> str:
    """An enabled Agent in `region`."""
    return document("Agent", name, f"  region: {region}\n  enabled: true\n")


def http_canary_doc(
    name: str,
    namespace: str,
    *,
    schedule: str,
    selector: str,
    check: str,
    url: str,
    timeout: str | None = None,
) -> str:
    """A Canary with one http check.

    Args:
        name: metadata.name.
        namespace: metadata.namespace.
        schedule: spec.schedule, e.g. `@every 30s`.
        selector: spec.agentSelector as YAML flow text, e.g. `['*']`.
        check: The check's name.
        url: The check's URL.
        timeout: The check's timeout, e.g. `400ms`; None leaves the default.
    """
    limit = f"      timeout: {timeout}\n" if timeout is not None else ""
    spec = (
        f"  schedule: '{schedule}'\n  agentSelector: {selector}\n  http:\n"
        f"    - name: {check}\n      url: {url}\n{limit}"
    )
    return document("Canary", name, spec, namespace=namespace)


# ---------------------------------------------------------------------------------------------
# Numbers and time
# ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of unsorted values; NaN for none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def timed(action: Callable[[], T]) -> tuple[float, T]:
    """Seconds one call of `action` took, and what it returned."""
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def wait_until(
    condition: Callable[[], bool], seconds: float, what: str, interval: float = 0.05
) -> None:
    """Poll `condition` every `interval` seconds until it holds; SystemExit after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {seconds:.0f}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds one process has used so far; None if it is gone (or no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clean_environment() -> dict[str, str]:
    """The environment without the caller's RECONCILER_* and AGENT_* settings.

    A bench must not pick up a setting exported for another server or agent.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "AGENT_"))}


class Process:
    """A subprocess with its output in a log file; `stop` always ends it."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log: Path,
        *,
        cwd: Path = ROOT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name, self.log = name, log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdout=self._log_file,
            stderr=self._log_file,
        )
        self.pid = self.process.pid

    def alive(self) -> bool:
        """Whether the process has not exited yet."""
        return self.process.poll() is None

    def fail_if_dead(self) -> None:
        """SystemExit with the end of the log if the process has exited."""
        if not self.alive():
            tail = self.log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"bench: {self.name} exited ({self.process.returncode}):\n{tail}")

    def stop(self, signum: int = signal.SIGTERM, seconds: float = STOP_SECONDS) -> int | None:
        """Send `signum`, wait up to `seconds`, then SIGKILL; the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)
            try:
                self.process.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        return self.process.returncode


class Server:
    """`reconcile serve` as a subprocess on 127.0.0.1, port 0, ready once constructed.

    The URL is read from `<state>.serve.json`; the log goes to `serve.log` beside the state.
    The admin token is `ADMIN_TOKEN`.
    """

    def __init__(
        self,
        repo: Path,
        state: Path,
        *,
        env: Mapping[str, str] | None = None,
        extra: Sequence[str] = (),
        profile: Path | None = None,
    ) -> None:
        """Start the server and wait for `/readyz`.

        Args:
            repo: The config repository.
            state: The DuckDB state file.
            env: More environment variables for the server.
            extra: More `reconcile serve` arguments.
            profile: Run the server under cProfile, writing its stats here.
        """
        started = time.perf_counter()
        environment = clean_environment() | {"RECONCILER_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
        runner = [sys.executable]
        if profile is not None:
            runner += ["-m", "cProfile", "-o", str(profile)]
        command = [
            *runner, "-m", "reconciler", "serve", "--repo", str(repo), "--state", str(state),
            "--host", "127.0.0.1", "--port", "0", "--log-format", "json", *extra,
        ]  # fmt: skip
        self.state = state
        self.process = Process(
            "reconcile serve", command, state.with_name("serve.log"), env=environment
        )
        self.log = self.process.log
        try:
            info = state.with_name(state.name + ".serve.json")

            def listening() -> bool:
                self.process.fail_if_dead()
                return info.exists()

            wait_until(listening, STARTUP_SECONDS, "the server to listen")
            served = orjson.loads(info.read_bytes())
            self.url: str = served["url"]
            self.pid: int = served["pid"]

            def ready() -> bool:
                self.process.fail_if_dead()
                try:
                    return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(ready, STARTUP_SECONDS, "the server's /readyz")
        except BaseException:
            self.process.stop()
            raise
        self.startup = time.perf_counter() - started

    def mint_tokens(self, agents: Iterable[str]) -> dict[str, str]:
        """A fresh token per agent through `POST /operator/agents/NAME/token`."""
        tokens = {}
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=self.url, timeout=10, headers=headers) as client:
            for agent in agents:
                response = client.post(f"/operator/agents/{agent}/token")
                if response.status_code != 201:
                    raise SystemExit(
                        f"bench: minting a token for {agent}: {response.status_code} "
                        f"{response.text}"
                    )
                tokens[agent] = str(response.json()["token"])
        return tokens

    def stop(self, seconds: float = STOP_SECONDS) -> int | None:
        """SIGTERM, wait up to `seconds` (then SIGKILL); the exit code."""
        return self.process.stop(signal.SIGTERM, seconds)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# py-spy
# ---------------------------------------------------------------------------------------------

NO_SAMPLES = "py-spy wrote no samples (is ptrace allowed?)"


@dataclass
class Profile:
    """py-spy samples counted: the busy ones by thread, by leaf frame and by every frame."""

    rate: int
    idle: int = 0
    threads: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    @property
    def busy(self) -> int:
        """Busy samples (at least 1, so that shares can be computed)."""
        return sum(self.threads.values()) or 1

    def lines(self, top: int, own_title: str, inclusive_title: str) -> list[str]:
        """Busy samples by thread, then the `top` frames by own and by inclusive samples."""
        busy = self.busy
        lines = [
            "busy samples by thread: "
            + ", ".join(f"{name} {n / busy:.0%}" for name, n in self.threads.most_common()),
            own_title,
        ]
        lines += [f"  {n / busy:6.1%}  {frame}" for frame, n in self.own.most_common(top)]
        lines.append(inclusive_title)
        lines += [f"  {n / busy:6.1%}  {frame}" for frame, n in self.inclusive.most_common(top)]
        return lines


class Sampler:
    """py-spy recording one process from construction until `stop` (`pip install py-spy`)."""

    ATTACH_SECONDS = 0.5

    def __init__(self, pid: int, output: Path, rate: int) -> None:
        """Start py-spy and give it time to attach before the load starts.

        Args:
            pid: The process to sample.
            output: Where py-spy writes its raw (collapsed stacks) output.
            rate: Samples per second.
        """
        executable = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(executable).exists():
            raise SystemExit("bench: --py-spy needs py-spy: .venv/bin/pip install py-spy")
        self.output, self.rate = output, rate
        self.process = subprocess.Popen(
            [executable, "record", "--pid", str(pid), "--format", "raw", "--output", str(output),
             "--threads", "--nolineno", "--nonblocking", "--rate", str(rate)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # py-spy says nothing when it has attached; a sample missed here is not load anyway.
        time.sleep(self.ATTACH_SECONDS)

    def stop(self) -> None:
        """Stop sampling: py-spy writes its file on SIGINT."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def read(self, idle: Callable[[str], bool], inclusive: Callable[[str], bool]) -> Profile | None:
        """Count the samples; None if py-spy wrote none.

        Args:
            idle: Whether a stack whose leaf frame is this one waits rather than works (a
                thread blocked in C that py-spy did not see as idle); such samples are only
                counted, in `Profile.idle`.
            inclusive: Whether a frame is listed by inclusive samples.
        """
        if not self.output.exists():
            return None
        profile = Profile(self.rate)
        for line in self.output.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            thread, *calls = stack.split(";")
            count = int(count_text)
            if not calls or idle(calls[-1]):
                profile.idle += count
                continue
            profile.threads[thread.split(": ", 1)[-1].rstrip("_0123456789")] += count
            profile.own[calls[-1]] += count
            for frame in set(calls):
                if inclusive(frame):
                    profile.inclusive[frame] += count
        return profile
