"""Benchmark apply, cold plan, warm re-plan and `--ref` load on a generated config repo."""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# Running `bench/plan.py` puts bench/ first on sys.path, where bench/agent.py would shadow the
# `agent` package that the reconciler's loader imports (agent.expressions).
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]

from reconciler.core.compile import compile_config  # noqa: E402
from reconciler.core.diff import plan_changes  # noqa: E402
from reconciler.core.load import load_config  # noqa: E402
from reconciler.core.plan import Plan  # noqa: E402
from reconciler.gitsource import find_repository, worktree_revision  # noqa: E402
from reconciler.service import Loaded, Session  # noqa: E402
from reconciler.store.db import open_state, state_ref  # noqa: E402
from reconciler.store.resources import fetch_resources, read_headers  # noqa: E402
from reconciler.worktree import read_worktree  # noqa: E402

COLD_TARGET_SECONDS = 5.0
WARM_TARGET_SECONDS = 0.5

REGION_POOL = (
    "eu-west",
    "eu-central",
    "eu-north",
    "us-east",
    "us-west",
    "ca-central",
    "sa-east",
    "ap-south",
    "ap-northeast",
    "af-south",
    "me-central",
    "ap-southeast",
)
NAMESPACES = (
    "web",
    "payments",
    "identity",
    "search",
    "platform",
    "data",
    "mobile",
    "checkout",
    "growth",
    "infra",
    "media",
    "support",
)
SCHEDULES = ("@every 30s", "@every 1m", "@every 1m", "@every 2m", "@every 5m", "*/2 * * * *")
POLICIES = ("majority", "majority", "any", "all", "{count: 2}")
CHECK_KINDS = ("http", "http", "tcp", "dns", "tls")
GIT_DATE = "2024-01-01T00:00:00+00:00"


# ---------------------------------------------------------------------------------------------
# Generating the config repository
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How big the generated repository is."""

    canaries: int
    agents: int
    regions: int
    routes: int
    seed: int


@dataclass(frozen=True)
class Agent:
    """A generated agent: its name and region."""

    name: str
    region: str


@dataclass(frozen=True)
class GeneratedRepo:
    """What was written: the canary files (in order) and their agentSelectors."""

    root: Path
    files: int
    canary_files: list[Path]
    selectors: list[list[str] | None]
    canary_bytes: int


def region_names(count: int) -> list[str]:
    """`count` region names: real-looking ones first, then numbered ones."""
    extra = [f"zone-{index:02d}" for index in range(max(0, count - len(REGION_POOL)))]
    return [*REGION_POOL, *extra][:count]


def make_agents(count: int, regions: Sequence[str]) -> list[Agent]:
    """Agents spread round-robin over the regions; every tenth of a region is staging."""
    agents = []
    for index in range(count):
        region = regions[index % len(regions)]
        number = index // len(regions) + 1
        suffix = "-staging" if number % 10 == 0 else ""
        agents.append(Agent(f"{region}-{number}{suffix}", region))
    return agents


def region_yaml(regions: Sequence[str]) -> str:
    """Every Region in one multi-document file."""
    documents = [
        f"apiVersion: canary-reconciler/v1\nkind: Region\nmetadata:\n  name: {name}\n"
        f"spec:\n  displayName: {name.upper()}\n  location: Datacenter {index}\n"
        for index, name in enumerate(regions)
    ]
    return "---\n".join(documents)


def agent_yaml(agents: Sequence[Agent], rng: random.Random) -> str:
    """Every Agent in one multi-document file."""
    documents = [
        f"apiVersion: canary-reconciler/v1\nkind: Agent\nmetadata:\n  name: {agent.name}\n"
        f"spec:\n  region: {agent.region}\n"
        f"  labels: {{provider: {rng.choice(['aws', 'gcp', 'hetzner', 'ovh'])}}}\n"
        for agent in agents
    ]
    return "---\n".join(documents)


def agent_selector(
    rng: random.Random, regions: Sequence[str], agents: Sequence[Agent]
) -> list[str] | None:
    """A selector of one of the forms people write; None means no agentSelector at all."""
    roll = rng.random()
    region = rng.choice(regions)
    if roll < 0.15:
        return ["*"]
    if roll < 0.25:
        return ["!*-staging"]
    if roll < 0.55:
        return [f"{region}-*"]
    if roll < 0.65:
        return [f"{region.split('-')[0]}-*", "!*-staging"]
    if roll < 0.75:
        return ["*", f"!{region}-*", "local"]
    if roll < 0.88:
        return [agent.name for agent in rng.sample(list(agents), k=rng.randint(1, 3))]
    if roll < 0.95:
        return ["local"]
    return None


def check_yaml(kind: str, name: str, host: str, rng: random.Random) -> str:
    """One check of `kind`, as a list item under its kind's key."""
    millis = rng.choice([200, 500, 800, 1000, 1500, 2000])
    if kind == "http":
        return (
            f"    - name: {name}\n      url: https://{host}/health?probe={name}\n"
            f"      responseCodes: [200, 204]\n      thresholdMillis: {millis}\n"
            f"      test:\n        expr: \"json.status == 'ok' && elapsed < duration('2s')\"\n"
        )
    if kind == "tcp":
        port = rng.choice([443, 5432, 6379, 9200])
        return (
            f"    - name: {name}\n      endpoint: {host}:{port}\n      thresholdMillis: {millis}\n"
        )
    if kind == "dns":
        return f"    - name: {name}\n      query: {host}\n      querytype: A\n      minrecords: 1\n"
    return (
        f"    - name: {name}\n      endpoint: {host}:443\n      serverName: {host}\n"
        f"      maxSSLExpiry: {rng.choice([7, 14, 21])}\n"
    )


def checks_yaml(name: str, rng: random.Random) -> str:
    """One to three checks of mixed kinds, grouped under their kinds' keys."""
    kinds = sorted(rng.choice(CHECK_KINDS) for _ in range(rng.randint(1, 3)))
    text = ""
    for kind in dict.fromkeys(kinds):
        text += f"  {kind}:\n"
        for index in range(kinds.count(kind)):
            host = f"{name}-{kind}{index}.example.com"
            text += check_yaml(kind, f"{kind}-{index}", host, rng)
    return text


def selector_yaml(selector: list[str] | None) -> str:
    """The agentSelector line, or nothing for a canary without one."""
    if selector is None:
        return ""
    return "  agentSelector: [" + ", ".join(f"'{p}'" for p in selector) + "]\n"


def canary_yaml(index: int, namespace: str, selector: list[str] | None, rng: random.Random) -> str:
    """One Canary document of roughly 600 bytes."""
    name = f"{namespace}-probe-{index:05d}"
    return (
        f"# Generated canary {index} of team {namespace}; selector {selector}.\n"
        "apiVersion: canary-reconciler/v1\nkind: Canary\nmetadata:\n"
        f"  name: {name}\n  namespace: {namespace}\n"
        f"  labels: {{team: {namespace}, tier: {rng.choice(['gold', 'silver', 'bronze'])}}}\n"
        f"spec:\n  schedule: '{rng.choice(SCHEDULES)}'\n{selector_yaml(selector)}"
        f"  incidentPolicy: {rng.choice(POLICIES)}\n"
        f"  failureThreshold: {rng.randint(2, 3)}\n"
        f"{checks_yaml(name, rng)}"
    )


def split_weights(rng: random.Random, groups: int) -> list[int]:
    """Traffic weights for 2 or 3 groups (stable, [beta,] canary) that sum to 100."""
    canary = rng.choice([0, 5, 10])
    if groups == 2:
        return [100 - canary, canary]
    beta = rng.choice([10, 20, 30])
    return [100 - beta - canary, beta, canary]


def step_weights(rng: random.Random, start: int) -> list[int]:
    """Non-decreasing canary step weights ending at 100."""
    middle = sorted(rng.sample([10, 20, 25, 40, 50, 75], k=rng.randint(2, 4)))
    return [max(start, 5), *(w for w in middle if w >= start), 100]


def route_yaml(index: int, rng: random.Random) -> str:
    """One Route document with 2 or 3 traffic groups and canary steps."""
    name = f"svc-{index:03d}"
    weights = split_weights(rng, rng.choice([2, 3]))
    group_names = ["stable", "beta", "canary"] if len(weights) == 3 else ["stable", "canary"]
    groups = ""
    for group, weight in zip(group_names, weights, strict=True):
        backends = "".join(
            f"        - url: http://{name}-{group}-{b}.internal:8080\n"
            for b in range(rng.randint(1, 2))
        )
        groups += f"    - name: {group}\n      weight: {weight}\n      backends:\n{backends}"
    steps = step_weights(rng, weights[-1])
    step_lines = "".join(
        f"      - weight: {w}\n        pause: {rng.choice(['1m', '5m', '10m'])}\n"
        for w in steps[:-1]
    )
    return (
        "apiVersion: canary-reconciler/v1\nkind: Route\nmetadata:\n"
        f"  name: {name}\nspec:\n  path: /{name}\n  path_prefix: true\n"
        f"  traffic_split:\n{groups}"
        "  canary:\n    canary_group: canary\n    auto_start: true\n"
        f"    steps:\n{step_lines}      - weight: 100\n"
        "    analysis:\n      error_threshold: 0.05\n      latency_threshold: 500ms\n"
        "      max_error_rate_increase: 1.5\n      max_failures: 3\n      interval: 30s\n"
    )


def write(path: Path, text: str) -> None:
    """Write a file, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def generate_repo(root: Path, shape: Shape) -> GeneratedRepo:
    """Write the whole config repository under `root`, deterministically from the seed."""
    rng = random.Random(shape.seed)
    regions = region_names(shape.regions)
    agents = make_agents(shape.agents, regions)
    write(root / "regions" / "regions.yaml", region_yaml(regions))
    write(root / "agents" / "agents.yaml", agent_yaml(agents, rng))
    canary_files, selectors, canary_bytes = [], [], 0
    for index in range(shape.canaries):
        namespace = NAMESPACES[index % len(NAMESPACES)]
        selector = agent_selector(rng, regions, agents)
        text = canary_yaml(index, namespace, selector, rng)
        path = root / "canaries" / namespace / f"probe-{index:05d}.yaml"
        write(path, text)
        canary_files.append(path)
        selectors.append(selector)
        canary_bytes += len(text.encode())
    for index in range(shape.routes):
        write(root / "routes" / f"svc-{index:03d}.yaml", route_yaml(index, rng))
    files = 2 + shape.canaries + shape.routes
    return GeneratedRepo(root, files, canary_files, selectors, canary_bytes)


# ---------------------------------------------------------------------------------------------
# Git, edits and validation
# ---------------------------------------------------------------------------------------------


def git(root: Path, *args: str) -> None:
    """Run a git command in the generated repository with a fixed identity and date."""
    environment = {**os.environ, "GIT_AUTHOR_DATE": GIT_DATE, "GIT_COMMITTER_DATE": GIT_DATE}
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(
        ["git", "-C", str(root), *identity, "-c", "commit.gpgsign=false", *args],
        check=True,
        capture_output=True,
        env=environment,
    )


def commit_all(root: Path, message: str) -> None:
    """Stage everything in the generated repository and commit it."""
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)


def edit_canary(path: Path, failure_threshold: int) -> None:
    """Change one spec field of a canary file, so it and all its derived canaries update."""
    text = path.read_text()
    edited, count = re.subn(
        r"failureThreshold: \d+", f"failureThreshold: {failure_threshold}", text
    )
    if count != 1 or edited == text:
        raise SystemExit(f"bench: could not edit {path}")
    path.write_text(edited)


def pick_edit_targets(repo: GeneratedRepo) -> tuple[Path, Path]:
    """Two canaries that run on every agent (else the first two), for the cold and warm edits."""
    everywhere = [p for p, s in zip(repo.canary_files, repo.selectors, strict=True) if s == ["*"]]
    chosen = everywhere if len(everywhere) >= 2 else repo.canary_files
    return chosen[0], chosen[1]


def validate(root: Path) -> Loaded:
    """Load the generated repository and stop loudly on any error."""
    loaded = Session().load(root)
    errors = [d for d in loaded.diagnostics if d.severity == "error"]
    if errors or not loaded.ok:
        for diagnostic in errors[:20]:
            print(diagnostic.format(), file=sys.stderr)
        raise SystemExit(f"bench: the generated repository has {len(errors)} error(s)")
    return loaded


def derived_count(loaded: Loaded) -> int:
    """How many derived canaries a loaded revision compiles to."""
    assert loaded.desired is not None
    return sum(1 for r in loaded.desired.resources.values() if r.kind == "DerivedCanary")


def document_count(loaded: Loaded) -> int:
    """How many documents a loaded revision has."""
    config = loaded.result.config
    return len(config.regions) + len(config.agents) + len(config.canaries) + len(config.routes)


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """Timings of one thing, in seconds, and the target it is held to (if any)."""

    name: str
    samples: list[float] = field(default_factory=list)
    target: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "PASS" if self.median <= self.target else "MISS"


def timed(action: Callable[[], object]) -> float:
    """Seconds one call of `action` takes."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def approve_all(_plan: Plan) -> bool:
    """Approve every plan (the benchmark's --auto-approve)."""
    return True


def apply_once(root: Path, state: Path) -> float:
    """Load the repository and apply it to an empty state file; seconds taken."""
    state.unlink(missing_ok=True)
    Path(f"{state}.wal").unlink(missing_ok=True)
    started = time.perf_counter()
    session = Session()
    loaded = session.load(root)
    _, result = session.apply(loaded, state, lambda: datetime.now(UTC), approve_all)
    elapsed = time.perf_counter() - started
    if result is None or not result.wrote:
        raise SystemExit("bench: the initial apply wrote nothing")
    return elapsed


def measure_apply(root: Path, state: Path, runs: int) -> Measurement:
    """Apply to a fresh state file `runs` times; the last one stays for planning."""
    measurement = Measurement("initial apply (load + write all)")
    for _ in range(runs):
        measurement.samples.append(apply_once(root, state))
    return measurement


def plan_cold(root: Path, state: Path) -> tuple[Plan, float, float]:
    """A fresh Session's load and plan: the plan, load seconds and plan seconds."""
    session = Session()
    started = time.perf_counter()
    loaded = session.load(root)
    loaded_at = time.perf_counter()
    plan = session.plan_against_state(loaded, state)
    return plan, loaded_at - started, time.perf_counter() - loaded_at


def measure_cold(root: Path, state: Path, runs: int) -> tuple[list[Measurement], Plan]:
    """Cold in-process plans: total, load + compile, and plan against state."""
    total = Measurement("cold plan, in-process (load+plan)", target=COLD_TARGET_SECONDS)
    load = Measurement("  of which load + compile")
    diff = Measurement("  of which plan_against_state")
    plan: Plan | None = None
    for _ in range(runs):
        plan, load_seconds, plan_seconds = plan_cold(root, state)
        total.samples.append(load_seconds + plan_seconds)
        load.samples.append(load_seconds)
        diff.samples.append(plan_seconds)
    assert plan is not None
    return [total, load, diff], plan


def reconcile_executable() -> str:
    """The `reconcile` script next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "reconcile"
    found = str(beside) if beside.exists() else shutil.which("reconcile")
    if found is None:
        raise SystemExit("bench: cannot find the `reconcile` command")
    return found


def run_cli(arguments: Sequence[str]) -> float:
    """Wall-clock seconds of one `reconcile` subprocess, output discarded."""
    command = [reconcile_executable(), *arguments]
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed:\n{result.stderr.decode()}")
    return elapsed


def measure_cli(root: Path, state: Path, runs: int) -> list[Measurement]:
    """The cold plan as a user runs it, and the CLI's start-up cost alone."""
    plan = Measurement("cold plan, CLI subprocess (json)", target=COLD_TARGET_SECONDS)
    startup = Measurement("  CLI start-up only (--version)")
    arguments = ["plan", "--repo", str(root), "--state", str(state), "-q", "--format", "json"]
    for _ in range(runs):
        plan.samples.append(run_cli(arguments))
        startup.samples.append(run_cli(["--version"]))
    return [plan, startup]


def measure_warm(
    root: Path, state: Path, target: Path, runs: int
) -> tuple[list[Measurement], Plan, list[int]]:
    """Re-plans in one Session, each after editing `target` again: timings, last plan, and
    how many files each re-load parsed."""
    total = Measurement("warm re-plan, 1 file edited", target=WARM_TARGET_SECONDS)
    load = Measurement("  of which load + compile")
    diff = Measurement("  of which plan_against_state")
    session = Session()
    session.load(root)  # fill the parse cache
    plan: Plan | None = None
    parsed = []
    for run in range(runs):
        edit_canary(target, 10 + run)
        started = time.perf_counter()
        loaded = session.load(root)
        loaded_at = time.perf_counter()
        plan = session.plan_against_state(loaded, state)
        finished = time.perf_counter()
        total.samples.append(finished - started)
        load.samples.append(loaded_at - started)
        diff.samples.append(finished - loaded_at)
        parsed.append(loaded.parsed)
    assert plan is not None
    return [total, load, diff], plan, parsed


def measure_ref_load(root: Path, runs: int) -> Measurement:
    """Cold loads of `--ref HEAD`, reading every file from git objects."""
    measurement = Measurement("cold load --ref HEAD (git objects)")
    for _ in range(runs):
        measurement.samples.append(timed(lambda: Session().load(root, "HEAD")))
    return measurement


PHASES = (
    "read_worktree (read + sha1 all files)",
    "find_repository + worktree_revision",
    "load_config (parse + validate)",
    "compile_config",
    "open_state + read_headers (all rows)",
    "plan_changes (diff + fetch moved)",
)


def phase_times(root: Path, state: Path) -> list[float]:
    """Seconds of each of PHASES in one cold plan, calling the steps Session runs."""
    clock = [time.perf_counter()]
    files = read_worktree(root)
    clock.append(time.perf_counter())
    location = find_repository(root)
    assert location is not None
    revision = worktree_revision(location)
    clock.append(time.perf_counter())
    result = load_config(files, {})
    clock.append(time.perf_counter())
    desired = compile_config(result.config)
    clock.append(time.perf_counter())
    connection = open_state(state, read_only=True)
    assert connection is not None
    with connection:
        headers = read_headers(connection)
        clock.append(time.perf_counter())
        plan_changes(
            desired,
            headers,
            lambda addresses: fetch_resources(connection, addresses),
            state_ref(connection),
            revision,
        )
    clock.append(time.perf_counter())
    return [after - before for before, after in itertools.pairwise(clock)]


def measure_phases(root: Path, state: Path, runs: int) -> list[Measurement]:
    """The cold plan split into the steps Session.load and plan_against_state run."""
    measurements = [Measurement(f"  {name}") for name in PHASES]
    for _ in range(runs):
        for measurement, seconds in zip(measurements, phase_times(root, state), strict=True):
            measurement.samples.append(seconds)
    return measurements


def profile_cold(root: Path, state: Path, top: int) -> str:
    """cProfile of one cold in-process plan: the `top` entries by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    plan_cold(root, state)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def describe_plan(plan: Plan) -> str:
    """`N changes (+add ~change -destroy)`."""
    summary = plan.summary
    return f"{len(plan.changes)} changes (+{summary.add} ~{summary.change} -{summary.destroy})"


def print_counts(counts: Sequence[tuple[str, str]]) -> None:
    """The sizes the timings belong to."""
    print("counts")
    for label, value in counts:
        print(f"  {label:<28} {value}")
    print()


def print_table(measurements: Sequence[Measurement]) -> None:
    """One line per measurement: runs, median, min, target and verdict."""
    header = f"{'measurement':<40} {'runs':>4} {'median':>9} {'min':>9} {'target':>8}  result"
    print(header)
    print("-" * len(header))
    for m in measurements:
        target = f"<= {m.target:g}s" if m.target is not None else ""
        line = (
            f"{m.name:<40} {len(m.samples):>4} {m.median:>8.3f}s {m.best:>8.3f}s "
            f"{target:>8}  {m.verdict}"
        )
        print(line.rstrip())
    print()


def print_verdicts(measurements: Sequence[Measurement]) -> None:
    """A PASS/MISS line per target (information only: the exit code does not depend on it)."""
    for m in measurements:
        if m.target is not None:
            print(
                f"{m.verdict}: {m.name.strip()}: median {m.median:.3f}s "
                f"against a target of {m.target:g}s"
            )


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--canaries", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--regions", type=int, default=10)
    parser.add_argument("--routes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (min 3)")
    parser.add_argument("--apply-runs", type=int, default=3, help="initial applies (min 3)")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="build in DIR (must not exist) and keep it"
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="cProfile a cold plan: top N entries"
    )
    return parser.parse_args(argv)


def workspace(keep: Path | None) -> Path:
    """The directory for the repository and state: DIR from --keep, else a temporary one."""
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="reconcile-bench-"))
    if keep.exists():
        raise SystemExit(f"bench: --keep {keep} already exists; choose a new directory")
    keep.mkdir(parents=True)
    return keep.resolve()


def run_benchmark(arguments: argparse.Namespace, base: Path) -> None:
    """Generate, validate, apply, then time every kind of plan and print the report."""
    runs, apply_runs = max(3, arguments.runs), max(3, arguments.apply_runs)
    shape = Shape(
        arguments.canaries, arguments.agents, arguments.regions, arguments.routes, arguments.seed
    )
    root, state = base / "repo", base / "state.duckdb"
    print(f"generating {shape} in {base} ...", flush=True)
    repo = generate_repo(root, shape)
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "generated config")
    loaded = validate(root)
    warnings = sum(1 for d in loaded.diagnostics if d.severity == "warning")

    print(f"applying {apply_runs}x ...", flush=True)
    measurements = [measure_apply(root, state, apply_runs)]
    cold_target, warm_target = pick_edit_targets(repo)
    edit_canary(cold_target, 9)
    print(f"timing cold plans ({runs}x each) ...", flush=True)
    cold, cold_plan = measure_cold(root, state, runs)
    measurements += cold + measure_cli(root, state, runs)
    phases = measure_phases(root, state, runs)
    profile = profile_cold(root, state, arguments.profile) if arguments.profile else ""
    print("timing warm re-plans ...", flush=True)
    warm, warm_plan, parsed = measure_warm(root, state, warm_target, runs)
    measurements += warm
    commit_all(root, "edit two canaries")
    measurements.append(measure_ref_load(root, runs))
    print()

    print_counts(
        [
            ("files", f"{repo.files:,}"),
            ("documents", f"{document_count(loaded):,}"),
            ("avg canary file size", f"{repo.canary_bytes / max(1, shape.canaries):.0f} bytes"),
            ("derived canaries", f"{derived_count(loaded):,}"),
            ("resources in state", f"{len(loaded.desired.resources) if loaded.desired else 0:,}"),
            ("load warnings", str(warnings)),
            ("cold plan", describe_plan(cold_plan)),
            ("last warm re-plan", describe_plan(warm_plan)),
            ("files parsed per re-plan", ", ".join(str(n) for n in parsed)),
        ]
    )
    print_table(measurements)
    print("cold plan by phase (fresh parse cache each run)")
    print_table(phases)
    print_verdicts(measurements)
    if profile:
        print(f"\ncProfile of one cold in-process plan (top {arguments.profile} cumulative)")
        print(profile)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 0 whatever the timings, 1 when generation fails."""
    arguments = parse_arguments(argv)
    base = workspace(arguments.keep)
    try:
        run_benchmark(arguments, base)
    finally:
        if arguments.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
