"""How the gateway project's own published config files load: run against a checkout of it.

    git clone https://github.com/wudi/gateway /tmp/gw
    .venv/bin/python bench/compat_gateway.py /tmp/gw [-v]

Reads the project's complete config files and every fenced `yaml` block of its Markdown that
has a top-level `listeners:` (a complete config) or `routes:` (a route snippet), loads each
with `load_config`, compiles what loads, and prints how many load, how many of their routes
are not driven on nginx, and the messages of those that do not load.
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

from reconciler.core.compile import compile_config
from reconciler.core.documents import SourceFile
from reconciler.core.load import load_config

CONFIG_FILES = (
    "configs/runway.yaml",
    "perf/configs/runway-perf.yaml",
    "perf/compare/configs/runway-compare.yaml",
    "ui/e2e/fixtures/test-config.yaml",
)
_BLOCK = re.compile(r"```ya?ml\n(.*?)```", re.S)


def corpus(root: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(complete configs, route snippets) as (name, text)."""
    complete = [
        (name, (root / name).read_text()) for name in CONFIG_FILES if (root / name).exists()
    ]
    snippets = []
    for markdown in sorted(root.rglob("*.md")):
        relative = markdown.relative_to(root)
        if relative.parts[0] in ("website", "node_modules") or "node_modules" in relative.parts:
            continue
        for index, match in enumerate(_BLOCK.finditer(markdown.read_text())):
            block = match.group(1)
            if re.search(r"^listeners:", block, re.M):
                complete.append((f"{relative}#{index}", block))
            elif re.search(r"^routes:", block, re.M):
                snippets.append((f"{relative}#{index}", block))
    return complete, snippets


def report(label: str, items: list[tuple[str, str]], verbose: bool) -> None:
    loaded = routes = not_driven = 0
    failures: collections.Counter[str] = collections.Counter()
    for name, text in items:
        result = load_config([SourceFile("gateway.yaml", name, text.encode)])
        errors = [d for d in result.diagnostics if d.severity == "error"]
        if not errors:
            loaded += 1
            routes += len(result.config.routes)
            not_driven += len(compile_config(result.config).not_driven)
            continue
        failures[errors[0].message[:100]] += 1
        if verbose:
            print(f"  {name}: {errors[0].format()}")
    print(f"{label}: {loaded} of {len(items)} load; {routes} routes, {not_driven} not driven")
    for message, count in failures.most_common():
        print(f"  {count:3d} x {message}")


def main() -> None:
    complete, snippets = corpus(Path(sys.argv[1]))
    verbose = "-v" in sys.argv
    report("complete configs (top-level listeners:)", complete, verbose)
    report("route snippets (routes: without listeners:)", snippets, verbose)


if __name__ == "__main__":
    main()
