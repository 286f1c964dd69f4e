"""Rendering pages with Jinja into a new version of the site, and publishing it in one swap.

* Pages whose key moved (the manifest, `.sitebuild.json`, remembers each page's key, and the
  digest of the bytes of a page without one) are rendered; an unkeyed page whose bytes come
  out the same is not written.
  Everything not written is a hard link to the current version's file (`versions.py`), and
  the new version replaces the old one in one rename: there is no order in which pages must
  be written, and a reader never sees a half-built site.
* With `workers` > 1 and many pages to render, `workers` - 1 forked processes and this one
  share the rendering (the pages' data is inherited, not pickled), each taking the next
  chunk of pages as it goes: a canary page takes 0.2-0.3 ms of one core (context, chart,
  filling, write). This process links the untouched pages first. A server forks them too
  (`render_processes.py`), and draws its share on the thread publishing. A render process killed
  mid-build (the OOM killer) sends nothing back; this process then draws what it took.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from reconciler.sitebuild.model import Page
from reconciler.sitebuild.render_processes import (
    collect,
    fork_render_processes,
    settle_render_processes,
)
from reconciler.sitebuild.versions import (
    MANIFEST,
    Folders,
    SiteDir,
    SiteError,
    link_files,
    match_spares,
    write_file,
)

SITE_DIR = Path(__file__).resolve().parents[2] / "site"
# Fewer pages than this render in-process: for a few hundred, forking a process that holds
# DuckDB's buffers (and the page copies that follow) costs what a second core saves (0.25-0.45 s
# for the 210 pages of a minute's rebuild either way).
PARALLEL_FROM = 400
# A page that lists the canaries (an overview, a region's report, the status page) has a row
# for each; it weighs as many canary pages as the site has pages over this (at 1,000
# canaries, 7,034 pages: 50, the 13 ms such a page takes), so that a build drawing only them
# (nothing new: 34 of them, 0.25 s in one process) forks too.
LISTING_WEIGHT_PAGES = 140
CHUNK = 48  # pages per task handed to a worker (a multiple of 3: a canary's pages together)

__all__ = ["SITE_DIR", "Published", "Publisher", "SiteError"]


@dataclass(frozen=True)
class Published:
    """What a publish did."""

    pages: int  # pages in the site
    rendered: int
    written: int  # files written (pages and static files); the rest are links
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


# The manifest's digest of a keyed page: its bytes were not digested (`_emit`).
KEYED = "-"


def _digest(data: bytes) -> str:
    # Tells whether a page's bytes changed, nothing more; only unkeyed pages are digested (a
    # few dozen a build). BLAKE2b is Python's own, not OpenSSL's: a render process forked
    # from a server takes no lock that another of the server's threads may have held.
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
_JOBS: list[tuple[Page, str | None, str | None]] = []  # (page, its digest, a spare file)
_TARGET: Folders | None = None  # the new version
_CURRENT: Folders | None = None  # the current version
_SPARES: Folders | None = None  # spare files
_CHUNKS: list[tuple[int, int]] = []  # ranges of `_JOBS`, drawn in turn
_NEXT: Synchronized[int] | None = None  # the next of `_CHUNKS` to draw
# Flat pages' skeletons, by template and shape (see `_fill`): literal parts, and the context
# names whose values go between them.
_SKELETONS: dict[tuple[Any, ...], tuple[list[str], list[str]]] = {}
_SLOT = "\x00"  # marks a value in a skeleton (never in a page: HTML has no NUL)


def _fill(template: str, context: dict[str, Any]) -> str:
    """A flat page (`Page.flat`): its template rendered once per shape with a marker for each
    value, then the values put between the literal parts, as Jinja would print them.

    A page's shape is which values are true (what `{% if %}` sees) and the false ones
    themselves (printed as they are): pages of one shape differ only in the values printed.
    Jinja cost about a fifth of drawing a canary page, and every canary page with a new run
    is drawn on every build.
    """
    assert _ENVIRONMENT is not None
    shape = (
        template,
        *((name, True) if value else (name, repr(value)) for name, value in context.items()),
    )
    skeleton = _SKELETONS.get(shape)
    if skeleton is None:
        names = list(context)
        marked = {
            name: Markup(f"{_SLOT}{index}{_SLOT}") if value else value
            for index, (name, value) in enumerate(context.items())
        }
        parts = _ENVIRONMENT.get_template(template).render(marked).split(_SLOT)
        skeleton = _SKELETONS[shape] = (parts[0::2], [names[int(i)] for i in parts[1::2]])
    literals, slots = skeleton
    out = [literals[0]]
    for name, literal in zip(slots, literals[1:], strict=True):
        value = context[name]
        out.append(value if isinstance(value, Markup) else escape(value))
        out.append(literal)
    return "".join(out)


class Drawn(NamedTuple):
    """A page drawn (`_emit`)."""

    path: str
    digest: str
    written: bool  # False: the current version has these bytes
    length: int  # its bytes, unpadded


def _emit(page: Page, previous: str | None, spare: str | None) -> Drawn:
    """Render a page; write it unless the current version has these bytes.

    A keyed page is drawn because its key moved, and its key digests what it shows: it is
    written without digesting its bytes (`KEYED`), 20 µs a canary page, on thousands a build.
    """
    assert _ENVIRONMENT is not None and _TARGET is not None and _SPARES is not None
    if page.raw is not None:
        data = page.raw
    elif page.flat:
        data = _fill(page.template, page.context()).encode()
    else:
        data = _ENVIRONMENT.get_template(page.template).render(page.context()).encode()
    if page.key is None:
        digest = _digest(data)
        if digest == previous and _CURRENT is not None and _CURRENT.exists(page.path):
            return Drawn(page.path, digest, False, len(data))
    else:
        digest = KEYED
    write_file(_TARGET, page.path, data, _SPARES, spare, pad=page.html)
    return Drawn(page.path, digest, True, len(data))


def _emit_range(bounds: tuple[int, int]) -> list[Drawn]:
    start, stop = bounds
    return [_emit(page, previous, spare) for page, previous, spare in _JOBS[start:stop]]


def _emit_claimed() -> list[Drawn]:
    """Draw chunks of `_JOBS` until none is left, each claimed from `_NEXT` (shared by the
    parent and its render processes)."""
    assert _NEXT is not None
    drawn: list[Drawn] = []
    while True:
        with _NEXT.get_lock():
            index = _NEXT.value
            _NEXT.value = index + 1
        if index >= len(_CHUNKS):
            return drawn
        drawn += _emit_range(_CHUNKS[index])


def _chunks(count: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous ranges of jobs: small enough to balance the workers, big enough to be cheap."""
    size = max(3, min(CHUNK, count // (workers * 4) // 3 * 3))
    return [(start, min(start + size, count)) for start in range(0, count, size)]


class Publisher:
    """Renders pages into new versions of one site, build after build."""

    def __init__(
        self,
        out_dir: Path,
        site_dir: Path = SITE_DIR,
        workers: int = 1,
        fill_spares: bool = False,
    ) -> None:
        self.site = SiteDir(out_dir)
        # Spares made up to one a page after each publish (`SiteDir.prune`): a server's.
        self.fill_spares = fill_spares
        self.out = self.site.out
        self.site_dir = site_dir
        self.workers = max(1, workers)
        self.environment = _Environment(
            loader=FileSystemLoader(site_dir / "templates"),
            # Compiled templates kept in the user's temporary directory: a CLI build is one
            # process, and compiling the templates costs about 0.1 s of it.
            bytecode_cache=FileSystemBytecodeCache(),
            autoescape=True,
            # Templates do not change while a publisher lives (their digest is the version):
            # no stat of every template file on every page.
            auto_reload=False,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.version = _version(site_dir)
        self.manifest = self._load(self.site.current())
        # Seconds the last publish spent rendering, and linking, writing and swapping.
        self.timings: dict[str, float] = {}
        # Each page's length as this publisher last drew it, unpadded: what its next version
        # is matched to a spare by, without a stat of its current file.
        self.lengths: dict[str, int] = {}

    def settle(self) -> None:
        """Wait until the old versions the last publish retires are gone (`SiteDir.prune`),
        and its render processes have exited (`render_processes.py`)."""
        self.site.settle()
        settle_render_processes()

    def _load(self, current: Path | None) -> dict[str, tuple[str | None, str]]:
        if current is None:
            return {}
        try:
            document = orjson.loads((current / MANIFEST).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        # Digests stay valid across versions (they describe bytes on disk); keys do not.
        same = document.get("version") == self.version
        return {
            p: (entry[0] if same else None, entry[1])
            for p, entry in document.get("pages", {}).items()
        }

    def stale(self, pages: Iterable[Page]) -> list[Page]:
        """The pages to render: unkeyed, new, missing, or whose key moved (all on a first build)."""
        current = self.site.current()
        if current is None:
            self.manifest = {}
            return list(pages)
        chosen = []
        files = Folders(current)
        try:
            for page in pages:
                known = self.manifest.get(page.path)
                moved = page.key is None or known is None or known[0] != page.key
                if moved or not files.exists(page.path):
                    chosen.append(page)
        finally:
            files.close()
        return chosen

    def publish(
        self, pages: Sequence[Page], render: Sequence[Page], *, partial: bool = False
    ) -> Published:
        """Write the site: `render` (a subset of `pages`) is rendered; the rest are kept.

        Args:
            partial: `pages` are some of the site's (`SiteBuilder.draw_ahead`): every other
                page of the current version is kept as it is, rather than removed.

        Raises:
            SiteError: the output directory exists, is not empty and was not built here.
        """
        started = time.perf_counter()
        self.site.settle()  # the last build's retiring: its spares are this build's
        current = self.site.adopt()
        if current is None:
            self.manifest = {}
            render = list(pages)
        new = self.site.begin()
        kept = [new] if current is None else [current, new]
        try:
            written, keep = self._static(current, new)
            keys = {page.path: page.key for page in pages}
            others = [path for path in self.manifest if path not in keys] if partial else []
            # Folders from the paths' text: a `Path` per page cost 0.03 s at 7,000 pages.
            for folder in {path.rpartition("/")[0] for path in [*keys, *others]}:
                (new / folder).mkdir(parents=True, exist_ok=True)
            chosen = {page.path for page in render}
            untouched = [path for path in keys if path not in chosen] + others
            # Pages that list others first: they take longest, and workers take chunks in order.
            jobs = sorted(render, key=lambda page: page.leaf)
            rendering = time.perf_counter()
            listing = max(1, len(pages) // LISTING_WEIGHT_PAGES)
            work = sum(1 if page.leaf else listing for page in jobs)
            results = list(
                self._render(new, current, jobs, lambda: self._link(current, new, untouched), work)
            )
            rendered = time.perf_counter()
            manifest = {
                path: entry for path, entry in self.manifest.items() if partial or path in keys
            }
            same = []
            for path, digest, changed, length in results:
                manifest[path] = (keys[path], digest)
                self.lengths[path] = length
                written += changed
                if not changed:
                    same.append(path)
            removed = [] if partial else [path for path in self.manifest if path not in keys]
            document = orjson.dumps(
                {"version": self.version, "pages": {p: list(e) for p, e in manifest.items()}}
            )
            if current is not None and not written and not removed:
                # Nothing a reader would see changed: keep the current version.
                shutil.rmtree(new)
                kept = [current]
                if (current / MANIFEST).read_bytes() != document:
                    write_atomic(current / MANIFEST, document)
            else:
                self._link(current, new, keep + same)
                (new / MANIFEST).write_bytes(document)
                self.site.publish(new)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        # The version before `current` goes now: it had a whole build's time for its readers.
        self.site.prune(kept, len(manifest), fill=self.fill_spares)
        self.manifest = manifest
        for path in removed:
            self.lengths.pop(path, None)
        done = time.perf_counter()
        self.timings = {
            "render": rendered - rendering,
            "publish": done - rendered + rendering - started,
        }
        return Published(len(pages), len(results), written, len(removed), current is None)

    @staticmethod
    def _link(current: Path | None, new: Path, paths: list[str]) -> None:
        """Hard-link files of the current version into the new one (a first build has none)."""
        if not paths:
            return
        assert current is not None  # a first build renders every page
        source, target = Folders(current), Folders(new)
        try:
            link_files(source, target, paths)
        finally:
            source.close()
            target.close()

    def _static(self, current: Path | None, new: Path) -> tuple[int, list[str]]:
        """Copy the static files that changed into `new`; the others are to be linked."""
        written, keep = 0, []
        for source in sorted((self.site_dir / "static").rglob("*")):
            if not source.is_file():
                continue
            path = (Path("static") / source.relative_to(self.site_dir / "static")).as_posix()
            data = source.read_bytes()
            (new / path).parent.mkdir(parents=True, exist_ok=True)
            old = current / path if current is not None else None
            if old is not None and old.is_file() and old.read_bytes() == data:
                keep.append(path)
                continue
            (new / path).write_bytes(data)
            written += 1
        return written, keep

    def _render(
        self,
        root: Path,
        current: Path | None,
        pages: Sequence[Page],
        meanwhile: Callable[[], None],
        work: int,
    ) -> Iterator[Drawn]:
        """Render `pages` into `root`, calling `meanwhile` while workers are busy (`work`:
        the pages weighed as canary pages; forked from `PARALLEL_FROM`)."""
        global _ENVIRONMENT, _JOBS, _TARGET, _CURRENT, _SPARES, _CHUNKS, _NEXT  # noqa: PLW0603 - shared with forked workers
        _ENVIRONMENT = self.environment
        _TARGET, _SPARES = Folders(root), Folders(self.site.spare)
        _CURRENT = Folders(current) if current is not None else None
        # Each page gets a spare of about its current file's length (`match_spares`): as
        # this publisher last drew it, or else as the file says (a stat: 15-20 ms a build
        # at 5,000 pages).
        lengths = self.lengths
        sizes = [
            length
            if (length := lengths.get(p.path)) is not None
            else (_CURRENT.size(p.path) if _CURRENT else 0)
            for p in pages
        ]
        spares = match_spares(self.site.spares(), sizes)
        _JOBS = [
            (page, (self.manifest.get(page.path) or (None, None))[1], spare)
            for page, spare in zip(pages, spares, strict=True)
        ]
        try:
            if self.workers == 1 or work < PARALLEL_FROM:
                meanwhile()
                yield from _emit_range((0, len(_JOBS)))
                return
            # This process draws too, once the untouched pages are linked: a render process
            # fewer to fork (25 ms each from a server holding 2 GB), and its share starts
            # at once. Each takes the next chunk of pages as it goes (`_emit_claimed`).
            _CHUNKS = _chunks(len(_JOBS), self.workers)
            _NEXT = multiprocessing.get_context("fork").Value("l", 0)
            others = fork_render_processes(self.workers - 1, _emit_claimed)
            try:
                meanwhile()
                drawn = _emit_claimed()
            except BaseException:
                with _NEXT.get_lock():  # the others stop after the chunk in hand
                    _NEXT.value = len(_CHUNKS)
                for other in others:
                    with contextlib.suppress(Exception):
                        collect(other)
                raise
            lost = False
            for other in others:
                sent = collect(other)
                lost |= sent is None
                drawn += sent or []
            if lost:
                # A render process was killed with the pages it took: they are drawn here
                # (a page it left half written is written whole over it).
                done = {page.path for page in drawn}
                drawn += [_emit(*job) for job in _JOBS if job[0].path not in done]
            yield from drawn
        finally:
            for folders in (_TARGET, _CURRENT, _SPARES):
                if folders is not None:
                    folders.close()
            _JOBS, _TARGET, _CURRENT, _SPARES, _CHUNKS, _NEXT = [], None, None, None, [], None
            _SKELETONS.clear()
