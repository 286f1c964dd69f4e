"""How many of canary-checker's published Canary files load here, file by file.

    .venv/bin/python bench/compat_canary_checker.py PATH/TO/canary-checker [-v]

Finds every YAML file under the checkout that holds a `canaries.flanksource.com/v1` Canary
using only http, tcp and dns checks, loads each file alone (as `reconcile validate` on a
directory holding just that file would) and sorts it into: loads, fails only with
"not supported" errors, or fails otherwise. `-v` prints the errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

# Running this file puts bench/ first on sys.path, where bench/agent.py would shadow the
# `agent` package that the loader imports.
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]

from reconciler.core.documents import SourceFile  # noqa: E402
from reconciler.core.load import load_config  # noqa: E402

CHECKS = {"http", "tcp", "dns"}
SPEC_FIELDS = {"replicas", "retries", "env", "interval", "schedule", "icon", "severity", "owner"}
SPEC_FIELDS |= {"resultMode", "agentSelector"}


def _only_http_tcp_dns(path: Path) -> bool:
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    canaries = [
        d
        for d in documents
        if isinstance(d, dict)
        and d.get("kind") == "Canary"
        and str(d.get("apiVersion", "")).startswith("canaries.flanksource.com")
    ]
    if not canaries:
        return False
    for canary in canaries:
        checks = set(canary.get("spec") or {}) - SPEC_FIELDS
        if not checks or not checks <= CHECKS:
            return False
    return True


def _not_supported(message: str) -> bool:
    return "not supported" in message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    files = sorted(p for p in args.checkout.rglob("*.y*ml") if _only_http_tcp_dns(p))
    tally = {"load": 0, "not supported only": 0, "other errors": 0}
    for path in files:
        relative = str(path.relative_to(args.checkout))
        content = path.read_bytes()
        result = load_config([SourceFile(path.name, relative, lambda c=content: c)])
        errors = [d for d in result.diagnostics if d.severity == "error"]
        if not errors:
            verdict = "load"
        elif all(_not_supported(d.message) for d in errors):
            verdict = "not supported only"
        else:
            verdict = "other errors"
        tally[verdict] += 1
        print(f"{verdict:<20} {relative}")
        if args.verbose:
            for diagnostic in errors:
                print(f"    {diagnostic.format()}")
    print(
        f"\n{tally['load']} of {len(files)} load; "
        + ", ".join(f"{k}: {v}" for k, v in tally.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
