"""CPU per CEL test evaluation, as an http check pays it on every run.

For each expression: the variables built for it (`free_variables`), then evaluated the way
the agent does (compiled closures where `celfast` takes the expression on, else the
interpreter), and, beside it, cel-python's interpreter alone with every variable built, which
is close to what each run cost before (then the interpreter also rebuilt its base activation
and walked the pass-through nodes: 162 µs for `code == 200`). `process_time` over N runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.expressions.cel import _program, evaluate, free_variables  # noqa: E402
from agent.expressions.celvars import check_context, http_context  # noqa: E402

EXPRESSIONS = [
    "code == 200",
    "code == 200 && content.contains('ok')",
    "json.status == 'healthy' && elapsed < duration('2s')",
    "headers['Content-Type'] == 'application/json' && check.name == 'health'",
    "json.hits.exists(h, h > 2)",  # a macro: the interpreter
]
CHECK = {"name": "health", "url": "http://127.0.0.1/health", "canary": {"name": "bench"}}
HEADERS = [
    ("Server", "nginx"),
    ("Date", "Fri, 04 Dec 2026 23:00:00 GMT"),
    ("Content-Type", "application/json"),
    ("Content-Length", "40"),
    ("Connection", "keep-alive"),
]
BODY = {"status": "healthy", "hits": [1, 2, 3]}
TEXT = '{"status": "healthy", "hits": [1, 2, 3]} ok'


def per_run(run: Callable[[], Any], runs: int) -> float:
    """Microseconds of CPU per call."""
    run()
    started = time.process_time()
    for _ in range(runs):
        run()
    return (time.process_time() - started) / runs * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3000, help="evaluations of each (3000)")
    args = parser.parse_args()
    elapsed = timedelta(milliseconds=1.2)
    print(f"{'expression':<74} {'agent':>9} {'interpreter, all variables':>27}")
    for expr in EXPRESSIONS:
        runner = _program(expr)

        def agent(expr: str = expr) -> bool:
            wanted = free_variables(expr)
            built = http_context(200, HEADERS, TEXT, BODY, elapsed, None, wanted)
            return evaluate(expr, {**built, **check_context(CHECK, wanted)})

        def interpreter(runner: Any = runner) -> Any:
            built = http_context(200, HEADERS, TEXT, BODY, elapsed)
            return runner._interpret(runner.ast, {**built, **check_context(CHECK)})

        how = "compiled" if runner.fast is not None else "interpreted"
        fast, slow = per_run(agent, args.runs), per_run(interpreter, args.runs)
        print(f"{expr:<74} {fast:6.1f} µs {slow:24.1f} µs  ({how})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
