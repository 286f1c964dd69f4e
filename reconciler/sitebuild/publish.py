"""Rendering pages with Jinja and writing them so that a reader never sees a half-built site.

* The first build renders everything into a hidden sibling directory and renames it into
  place: the site appears whole or not at all.
* Later builds render only pages whose key moved (the manifest, `.sitebuild.json`, remembers
  each page's key and the digest of its bytes) and rewrite only pages whose bytes changed,
  each through a temporary file and `os.replace`, so every file is always complete. Canary
  pages are written before the pages linking to them, and pages of removed canaries are
  deleted last, so no link ever points at a missing page.
* With `workers` > 1 and many pages to render, forked processes share the rendering (the
  pages' data is inherited, not pickled): Jinja runs at a few hundred pages per second per
  core.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from reconciler.sitebuild.model import Fragment, Page

SITE_DIR = Path(__file__).resolve().parents[2] / "site"
MANIFEST = ".sitebuild.json"
PARALLEL_FROM = 200  # fewer pages than this render in-process


class SiteError(Exception):
    """The output directory cannot be used."""


@dataclass(frozen=True)
class Published:
    """What a publish did."""

    pages: int  # pages in the site
    rendered: int
    written: int
    removed: int
    first: bool


class _Environment(Environment):
    """Jinja, with `row.name` looking into dicts first: contexts are plain dicts, and the
    default (attribute first, then item) pays for an AttributeError on every lookup."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _version(site_dir: Path) -> str:
    """A digest of the templates, the static files and this package's code."""
    digest = hashlib.blake2b(digest_size=16)
    sources = sorted(site_dir.rglob("*")) + sorted(Path(__file__).parent.glob("*.py"))
    for path in sources:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new bytes, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


# Set in the parent before forking; the workers read them (fork shares memory, no pickling).
_ENVIRONMENT: Environment | None = None
_JOBS: list[tuple[Page, str | None]] = []
_ROOT = Path()
_DIRECT = False  # writing into the hidden directory of a first build: no reader yet


_FRAGMENTS: dict[int, Markup] = {}


def _context(page: Page) -> dict[str, Any]:
    """A page's context with its fragments rendered (each once per process and publish)."""
    assert _ENVIRONMENT is not None
    context = page.context()
    for name, value in context.items():
        if isinstance(value, Fragment):
            html = _FRAGMENTS.get(id(value))
            if html is None:
                template = _ENVIRONMENT.get_template(value.template)
                html = _FRAGMENTS[id(value)] = Markup(template.render(value.context()))
            context[name] = html
    return context


def _emit(page: Page, previous: str | None) -> tuple[str, str, bool]:
    """Render a page and write it unless its bytes are unchanged: (path, digest, written)."""
    assert _ENVIRONMENT is not None
    data = _ENVIRONMENT.get_template(page.template).render(_context(page)).encode()
    digest = _digest(data)
    target = _ROOT / page.path
    if digest == previous and target.exists():
        return page.path, digest, False
    if _DIRECT:
        target.write_bytes(data)
    else:
        write_atomic(target, data)
    return page.path, digest, True


def _emit_share(share: tuple[int, int]) -> list[tuple[str, str, bool]]:
    """Render the index-th of `count` contiguous slices of the jobs (a canary's pages, which
    share fragments, mostly fall in one slice)."""
    index, count = share
    size = -(-len(_JOBS) // count)
    return [_emit(page, previous) for page, previous in _JOBS[index * size : (index + 1) * size]]


class Publisher:
    """Renders pages into one output directory, build after build."""

    def __init__(self, out_dir: Path, site_dir: Path = SITE_DIR, workers: int = 1) -> None:
        self.out = out_dir
        self.site_dir = site_dir
        self.workers = max(1, workers)
        self.environment = _Environment(
            loader=FileSystemLoader(site_dir / "templates"),
            # Compiled templates kept in the user's temporary directory: a CLI build is one
            # process, and compiling the templates costs about 0.1 s of it.
            bytecode_cache=FileSystemBytecodeCache(),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.version = _version(site_dir)
        self.manifest = self._load()

    def _load(self) -> dict[str, tuple[str | None, str]]:
        path = self.out / MANIFEST
        if not path.exists():
            return {}
        try:
            document = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            return {}
        # Digests stay valid across versions (they describe bytes on disk); keys do not.
        same = document.get("version") == self.version
        return {
            p: (entry[0] if same else None, entry[1])
            for p, entry in document.get("pages", {}).items()
        }

    def stale(self, pages: Iterable[Page]) -> list[Page]:
        """The pages to render: unkeyed, new, missing, or whose key moved (all on a first build)."""
        if not (self.out / MANIFEST).exists():
            self.manifest = {}
        chosen = []
        for page in pages:
            known = self.manifest.get(page.path)
            moved = page.key is None or known is None or known[0] != page.key
            if moved or not (self.out / page.path).exists():
                chosen.append(page)
        return chosen

    def publish(self, pages: Sequence[Page], render: Sequence[Page]) -> Published:
        """Write the site: `render` (a subset of `pages`) is rendered; the rest are kept.

        Raises:
            SiteError: the output directory exists, is not empty and was not built here.
        """
        first = not (self.out / MANIFEST).exists()
        if first and self.out.exists() and any(self.out.iterdir()):
            raise SiteError(
                f"{self.out} is not empty and holds no site built by `reconcile site build`; "
                "choose an empty or new directory"
            )
        root = self.out.with_name(f".{self.out.name}.building-{os.getpid()}") if first else self.out
        if first:
            # Hidden directories of first builds that were interrupted (builds never overlap:
            # the state file's lock or the server's build lock serialises them).
            for stale in self.out.parent.glob(f".{self.out.name}.building-*"):
                shutil.rmtree(stale, ignore_errors=True)
            self.manifest = {}
            render = list(pages)
        # New pages first, so that no page ever links to one not written yet; then leaf pages
        # (canaries) before the pages that list them. Removed pages go last.
        fresh = [p for p in render if p.path not in self.manifest]
        known = [p for p in render if p.path in self.manifest]
        try:
            written = self._copy_static(root)
            results = []
            for group in (fresh, known):
                results += self._render(root, [p for p in group if p.leaf])
                results += self._render(root, [p for p in group if not p.leaf], parallel=False)
        except BaseException:
            if first:
                shutil.rmtree(root, ignore_errors=True)
            raise
        keys = {page.path: page.key for page in pages}
        manifest = {path: entry for path, entry in self.manifest.items() if path in keys}
        for path, digest, changed in results:
            manifest[path] = (keys[path], digest)
            written += changed
        removed = [path for path in self.manifest if path not in keys]
        for path in removed:
            (root / path).unlink(missing_ok=True)
        document = {"version": self.version, "pages": {p: list(e) for p, e in manifest.items()}}
        write_atomic(root / MANIFEST, orjson.dumps(document))
        if first:
            if self.out.exists():
                self.out.rmdir()
            os.rename(root, self.out)
        self.manifest = manifest
        return Published(len(pages), len(results), written, len(removed), first)

    def _copy_static(self, root: Path) -> int:
        written = 0
        for source in sorted((self.site_dir / "static").rglob("*")):
            if not source.is_file():
                continue
            target = root / "static" / source.relative_to(self.site_dir / "static")
            data = source.read_bytes()
            if not target.exists() or target.read_bytes() != data:
                write_atomic(target, data)
                written += 1
        return written

    def _render(
        self, root: Path, pages: list[Page], parallel: bool = True
    ) -> list[tuple[str, str, bool]]:
        global _ENVIRONMENT, _JOBS, _ROOT, _DIRECT  # noqa: PLW0603 - shared with forked workers
        _ENVIRONMENT, _ROOT, _DIRECT = self.environment, root, root != self.out
        for folder in {(root / page.path).parent for page in pages}:
            folder.mkdir(parents=True, exist_ok=True)
        _JOBS = [(page, (self.manifest.get(page.path) or (None, None))[1]) for page in pages]
        try:
            if not parallel or self.workers == 1 or len(pages) < PARALLEL_FROM:
                return _emit_share((0, 1))
            context = multiprocessing.get_context("fork")
            with context.Pool(self.workers) as pool:
                shares = pool.map(_emit_share, [(i, self.workers) for i in range(self.workers)])
            return [result for share in shares for result in share]
        finally:
            _JOBS = []
            _FRAGMENTS.clear()
