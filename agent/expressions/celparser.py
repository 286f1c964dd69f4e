"""cel-python's CEL parser, built once per machine instead of once per process.

cel-python builds its lark LALR parser from the grammar on first use, ~0.1 s of CPU in every
process that compiles an expression (`reconcile validate` on a repository with one CEL `test`
pays it each run). lark can save the analysed parser and load it in ~8 ms; this module
installs the parser cel-python would build, loaded from (or saved to) a cache file. The file
name carries a digest of the grammar and the lark, cel-python and Python versions, so an
upgrade never loads a stale table, and a lock file beside it keeps processes starting
together from reading half a file. A cache directory that cannot be written only costs
the build.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import celpy
import lark
from celpy.celparser import CELParser

CACHE_ENV = "RECONCILER_CEL_CACHE"


def cache_dir() -> Path | None:
    """Where the parser is cached: `$RECONCILER_CEL_CACHE`, else the user's cache directory.

    Returns:
        The directory, or None when `RECONCILER_CEL_CACHE` is set to `off` or there is no home
        directory to put it in (build every time).
    """
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no passwd entry (some service accounts)
            return None
    return Path(base) / "canary-reconciler"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _cache_file(directory: Path, grammar: str) -> Path:
    digest = hashlib.sha256()
    for part in (
        grammar,
        lark.__version__,
        _package_version("cel-python"),
        sys.version,
    ):
        digest.update(part.encode() + b"\0")
    return directory / f"cel-parser-{digest.hexdigest()[:20]}.lark"


def _build(grammar: str, cache: str | bool) -> lark.Lark:
    # The options cel-python's CELParser passes, so the parser behaves exactly as its own.
    return lark.Lark(
        grammar,
        parser="lalr",
        start="expr",
        debug=True,
        g_regex_flags=re.M,
        lexer_callbacks={"IDENT": CELParser.ambiguous_literals},
        propagate_positions=True,
        maybe_placeholders=False,
        priority="invert",
        tree_class=celpy.InterpretedRunner.tree_node_class,
        cache=cache,
    )


def install_cached_parser() -> Path | None:
    """Give cel-python its parser from the cache, saving it there on a miss.

    Call before the first `celpy.Environment()`; cel-python keeps one parser per process
    (`CELParser.CEL_PARSER`) and builds it only when none is set.

    Returns:
        The cache file used, or None when caching is off or the directory is not writable
        (the parser is then left for cel-python to build).
    """
    if CELParser.CEL_PARSER is not None:
        return None
    directory = cache_dir()
    if directory is None:
        return None
    grammar = (Path(celpy.__file__).parent / "cel.lark").read_text()
    target = _cache_file(directory, grammar)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = os.open(target.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        # lark writes its cache file in place: one process at a time reads or writes it, so
        # none loads a half-written table (loading takes ~8 ms, the wait is short).
        fcntl.flock(lock, fcntl.LOCK_EX)
        CELParser.CEL_PARSER = _build(grammar, str(target))
    except OSError:
        return None  # a file system without locks: cel-python builds its own
    finally:
        os.close(lock)
    return target if target.is_file() else None
