"""What the demo prints: numbered start-up steps, the summary box, and status lines."""

from __future__ import annotations

import re
import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from reconciler.demo.rewrite import Rewrite

STEPS = 6
RULE = "=" * 78
INSTALL_NGINX = "install nginx (apt-get install nginx) to see canary steps on a real gateway"


def _write(stream: TextIO, text: str) -> None:
    """Write and flush; a closed terminal or pipe must not stop the demo from cleaning up."""
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass


class Console:
    """Start-up progress and warnings on stderr; the plan, summary and status on stdout."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err

    def step(self, number: int, message: str) -> None:
        """`[n/6] message`."""
        _write(self.err, f"[{number}/{STEPS}] {message}\n")

    def detail(self, message: str) -> None:
        """An indented line under the current step."""
        _write(self.err, f"      {message}\n")

    def warn(self, message: str) -> None:
        """A warning the user should read."""
        _write(self.err, f"reconcile demo: warning: {message}\n")

    def error(self, message: str) -> None:
        """Why the demo cannot go on."""
        _write(self.err, f"Error: {message}\n")

    def show(self, text: str) -> None:
        """Text on stdout (a newline is added when missing)."""
        _write(self.out, text if text.endswith("\n") else text + "\n")


def rewrite_lines(changes: Sequence[Rewrite]) -> list[str]:
    """One line per rewritten field, grouped by file and document."""
    lines: list[str] = []
    last = None
    for change in changes:
        where = (change.file, change.subject)
        if where != last:
            lines.append(f"{change.file}  {change.subject}")
            last = where
        lines.append(f"  {change.field}: {change.old} -> {change.new}")
    return lines


@dataclass(frozen=True)
class Summary:
    """Everything the summary box shows."""

    server_url: str
    admin_token: str
    root: str
    state: str
    config: str
    gateway_url: str | None
    route_path: str | None
    canary_backend: str | None
    route: str | None
    route_file: str | None
    site_index: str | None
    site_note: str
    agents: int
    regions: Sequence[str]
    duration: float | None
    cli: str = "reconcile"
    heartbeat: tuple[str, str] | None = None  # (canary, check) of a heartbeat check


def summary_text(s: Summary) -> str:
    """The box printed once the demo is up: URLs, then what to try, copy-pasteable."""
    config, state = shlex.quote(s.config), shlex.quote(s.state)
    auth = f'-H "Authorization: Bearer {s.admin_token}"'
    lines = [
        RULE,
        f"canary-reconciler demo: {s.agents} agents in {len(s.regions)} regions "
        f"({', '.join(s.regions)}) report to one control plane",
        RULE,
        f"  status API     {s.server_url}/api/v1/status",
        f"  targets        {s.server_url}/api/v1/targets",
        f"  canary runs    {s.server_url}/canary",
        f"  operator API   {s.server_url}/operator/regions   ({auth})",
        f"  API docs       {s.server_url}/docs",
    ]
    if s.site_index:
        lines.append(f"  status site    file://{s.site_index}   ({s.site_note})")
    else:
        lines.append(f"  status site    {s.site_note}")
    if s.gateway_url and s.route_path:
        lines.append(
            f"  gateway        {s.gateway_url}{s.route_path}   (nginx, owned by the server)"
        )
    else:
        lines.append(f"  gateway        none: {INSTALL_NGINX}")
    lines += [
        f"  demo directory {s.root}   (kept after exit; logs in logs/)",
        f"  admin token    {s.admin_token}",
        "",
        "What to try (in another terminal):",
        "",
        "  1. Commit a change and watch the plan apply: the server follows the repository.",
        f"       cd {config}",
        "       sed -i 's/Add to cart/Sold out/' canaries/homepage.yaml",
        "       git commit -qam 'homepage: expect Sold out'",
        f"       curl -s {s.server_url}/api/v1/status      # the new revision",
        f"       curl -s {s.server_url}/api/v1/incidents   # homepage fails everywhere",
        "       git revert --no-edit HEAD                  # and back",
    ]
    if s.route and s.gateway_url:
        lines += [
            "",
            f"  2. Watch route {s.route} step through its canary (pauses of 30s per step):",
            f"       curl -s {s.server_url}/canary | python3 -m json.tool",
            f"       {s.cli} canary status --state {state}",
        ]
        if s.canary_backend:
            lines += [
                "",
                "  3. Break the canary backend and watch the rollback (a few evaluations later):",
                f"       curl -X POST {s.canary_backend}/break     # and {s.canary_backend}/fix",
                f"       curl -s {s.server_url}/canary | python3 -m json.tool",
            ]
        lines += [
            "",
            "  4. Roll back (or pause, resume, promote) by hand:",
            f"       curl -X POST {auth} {s.server_url}/canary/{s.route}/rollback",
            "",
            "  5. Start a new run: a finished run stays finished; commit a change to the route:",
            f"       cd {config} && sed -i 's/pause: 30s/pause: 20s/' {s.route_file}"
            " && git commit -qam 'faster steps'",
        ]
    elif s.route:
        lines += ["", f"  2. Canary steps of route {s.route} need a gateway: {INSTALL_NGINX}."]
    if s.heartbeat:
        canary, check = (shlex.quote(part) for part in s.heartbeat)
        number = 1 + sum(1 for line in lines if re.match(r"  \d+\. ", line))
        lines += [
            "",
            f"  {number}. Be {s.heartbeat[0]}'s job: mint its heartbeat token, then ping it "
            "(it reads Operational at the next build):",
            f"       TOKEN=$(RECONCILER_ADMIN_TOKEN={s.admin_token} {s.cli} heartbeats token "
            f"{canary} {check} --state {state})",
            f"       curl -s {s.server_url}/api/v1/heartbeat/$TOKEN/start   # the job starts",
            f"       curl -s {s.server_url}/api/v1/heartbeat/$TOKEN         # and is done",
        ]
    stop = (
        f"Stops by itself after {s.duration:g}s (--duration)"
        if s.duration
        else "Ctrl-C stops everything"
    )
    lines += ["", f"{stop}; the demo directory is kept.", RULE]
    return "\n".join(lines) + "\n"


def status_line(
    elapsed: float,
    agents: Sequence[Mapping[str, Any]],
    canaries: Sequence[Mapping[str, Any]],
    traffic: Mapping[str, Counter[str]],
) -> str:
    """`[  45s] results (1h): eu-west 24, ... | checkout: progressing 2/4, canary 25% | ...`."""
    by_region: Counter[str] = Counter()
    for agent in agents:
        by_region[str(agent.get("region"))] += int(agent.get("results_last_hour") or 0)
    regions = ", ".join(f"{r} {n}" for r, n in sorted(by_region.items()) if n) or "none yet"
    parts = [f"[{elapsed:5.0f}s] results (1h): {regions}"]
    for view in canaries:
        weights = view.get("gateway_weights") or view.get("weights") or {}
        canary = view.get("canary_group")
        steps = len(view.get("steps") or [])
        step = int(view.get("step", -1)) + 1
        share = f", {canary} {weights.get(canary, 0)}%" if canary in weights else ""
        parts.append(f"{view.get('route')}: {view.get('state')} {step}/{steps}{share}")
    for path, seen in traffic.items():
        errors = sum(n for key, n in seen.items() if not key.startswith("2"))
        parts.append(f"{path}: {sum(seen.values())} requests, {errors} failed")
    return " | ".join(parts)
