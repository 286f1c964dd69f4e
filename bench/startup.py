"""How fast the `reconcile` command line starts: `--version`, and `validate` on sample-repo.

Runs each command N times as a new process (wall clock, median and best; CPU time, which
is what the wall clock would be on a quiet machine), prints them beside the targets with
PASS/MISS on the wall-clock median, and with `--importtime` the modules that cost the most
to import (`python -X importtime`, by top-level package, self time).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"--version": 0.2, "validate sample-repo": 0.6}


def reconcile_command() -> list[str]:
    """The installed `reconcile` script beside this Python, else `python -m reconciler`."""
    script = Path(sys.executable).with_name("reconcile")
    return [str(script)] if script.exists() else [sys.executable, "-m", "reconciler"]


def arguments(name: str) -> list[str]:
    """The command line of a measured case."""
    if name == "--version":
        return ["--version"]
    return ["validate", "--repo", str(ROOT / "sample-repo"), "-q"]


def child_cpu() -> float:
    """User + system CPU seconds of every finished child so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_runs(command: Sequence[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each run; SystemExit when one fails.

    The CPU time is what the run costs on a quiet machine; on a shared one the wall clock
    also counts the time spent waiting for a core.
    """
    wall, cpu = [], []
    for _ in range(runs):
        started, used = time.perf_counter(), child_cpu()
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
        wall.append(time.perf_counter() - started)
        cpu.append(child_cpu() - used)
        if done.returncode != 0:
            raise SystemExit(f"bench: {' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return wall, cpu


def import_offenders(args: Sequence[str], top: int) -> list[str]:
    """The `top` top-level packages by self import time in one `-X importtime` run."""
    code = "import sys; from reconciler.cli.main import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    totals: Counter[str] = Counter()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _, name = line.removeprefix("import time:").split("|")
        totals[name.strip().split(".")[0]] += int(own)
    return [f"    {us / 1000:7.1f} ms  {name}" for name, us in totals.most_common(top)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=11, help="runs of each command")
    parser.add_argument(
        "--importtime", type=int, metavar="N", help="also list the N costliest imports"
    )
    args = parser.parse_args()
    command = reconcile_command()
    print(f"{' '.join(command)}: {args.runs} runs each, wall clock")
    for name, target in TARGETS.items():
        wall, cpu = time_runs([*command, *arguments(name)], args.runs)
        median = statistics.median(wall)
        verdict = "PASS" if median <= target else "MISS"
        print(
            f"  reconcile {name}: median {median:.3f}s, best {min(wall):.3f}s, "
            f"CPU median {statistics.median(cpu):.3f}s (target <= {target:g}s) {verdict}"
        )
        if args.importtime:
            print("\n".join(import_offenders(arguments(name), args.importtime)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
