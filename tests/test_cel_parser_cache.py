"""The CEL parser is built once per machine: the first process that compiles an expression
saves it to the cache directory, later ones load it (bench/startup.py times `validate`), and
a damaged, unwritable or disabled cache only costs the build, never a wrong answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SAMPLE_REPO

# Compiles a good and a bad expression and evaluates one, as validate and the agent do.
PROBE = """
from datetime import timedelta
from agent.expressions.cel import check_expression, evaluate
from agent.expressions.celvars import http_context
print(check_expression("json.hits.size() > 0", ["json"]))
print(check_expression("code ==", ["code"]))
context = http_context(200, [("content-type", "application/json")], "{}", {"hits": [1]},
                       timedelta(milliseconds=5))
print(evaluate("code == 200 && json.hits.size() == 1", context))
"""
EXPECTED = [
    "None",
    "CEL expression does not compile: syntax error at column 6 of 'code =='",
    "True",
]


def run(env_cache: str, *command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECONCILER_CEL_CACHE": env_cache}
    return subprocess.run(
        list(command), capture_output=True, text=True, check=False, cwd=ROOT, env=env, timeout=60
    )


def probe(env_cache: str) -> list[str]:
    done = run(env_cache, sys.executable, "-c", PROBE)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.splitlines()


def cache_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("cel-parser-*.lark"))


def test_validate_saves_the_parser_once_and_later_runs_load_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    validate = (sys.executable, "-m", "reconciler", "validate", "--repo", str(SAMPLE_REPO), "-q")
    first = run(str(cache), *validate)
    assert first.returncode == 0, first.stderr
    [saved] = cache_files(cache)
    written = saved.stat().st_mtime_ns
    second = run(str(cache), *validate)
    assert (second.returncode, second.stdout) == (0, first.stdout)
    assert cache_files(cache) == [saved]
    assert saved.stat().st_mtime_ns == written, "the second run loaded the file, not rebuilt it"


def test_a_loaded_parser_answers_as_a_built_one(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert probe("off") == EXPECTED
    assert probe(str(cache)) == EXPECTED  # builds and saves
    assert probe(str(cache)) == EXPECTED  # loads


def test_a_damaged_cache_file_is_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    probe(str(cache))
    [saved] = cache_files(cache)
    saved.write_bytes(saved.read_bytes()[:200])
    assert probe(str(cache)) == EXPECTED
    assert len(saved.read_bytes()) > 200, "the damaged file was written again"


def test_no_cache_when_turned_off_or_not_writable(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    assert probe(str(blocked / "cache")) == EXPECTED
    assert probe("off") == EXPECTED
    assert list(tmp_path.rglob("cel-parser-*")) == []
