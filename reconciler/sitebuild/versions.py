"""The site on disk: `out` is a symbolic link to the current version of the whole site.

    site -> .site.versions/000042        (relative, so the parent directory can move)
    .site.versions/000041/               the previous version, kept until the next build
    .site.versions/000042/               index.html, canary/…, static/…, .sitebuild.json

A build fills a new version directory that no reader can see yet: the pages it rendered with
new bytes are new files, every other file is a hard link to the same file of the current
version (so an unchanged page keeps its inode and mtime). Then one `rename` of a new link over
`out` publishes the whole site at once: a reader resolving `out/…` finds the old version or
the new one, never a mix of both, and never a partly written file.

Why versions rather than `os.replace` page by page (as earlier releases did): the swap is
atomic for the whole site, and a page written is no longer a file replaced. Measured on the
benchmark's machine (ext4), replacing the 3,000 pages of a full rebuild with two render
processes took 0.8-2 s: the kernel allocates the new file's blocks on the spot and frees the
old file's. New files cost too, there: ext4 without a journal does not reuse an inode freed
in the last 30 seconds and walks past each one, so after a build had deleted 3,000 files,
creating one took 0.1-0.4 ms instead of 0.03 ms. So files are recycled: a file only a
retired version had goes to `spare/` (up to one site's worth, its length in its name), and
a page with new bytes is written into a spare of about its length (rename, overwrite),
which allocates no inode. HTML pages are padded with spaces to whole 4 KiB blocks: that
machine reclaims the page cache within seconds, so a spare's blocks are on disk only, and
overwriting part of a block (which reads it first) or cutting the file cost 80-150 µs a
page, against 15-35 µs for whole blocks.

The previous version stays until the next build, so a reader that resolved the link just
before a swap still finds its files; older ones are retired after that build's swap, on a
thread. Serve `out` by its path (`nginx root`, `python -m http.server -d out`): a process
whose working directory is inside a version keeps that version until it is retired.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import shutil
import stat
import threading
from pathlib import Path

MANIFEST = ".sitebuild.json"
SPARE = "spare"
# The thread retiring old versions of each site (by store), to wait for before the next build.
_RETIRING: dict[Path, threading.Thread] = {}
_RETIRING_LOCK = threading.Lock()


class SiteError(Exception):
    """The output directory cannot be used."""


def _store_name(out: Path) -> str:
    return f".{out.name}.versions"


def site_root(path: Path) -> Path:
    """The site's link, absolute, for a path that may name one of its versions (a resolved
    `out`)."""
    path = Path(os.path.normpath(path.absolute()))
    parent = path.parent
    if parent.name.startswith(".") and parent.name.endswith(".versions"):
        out = parent.parent / parent.name[1 : -len(".versions")]
        if out.is_symlink() and Path(os.readlink(out)).parent.name == parent.name:
            return out
    return path


class SiteDir:
    """The versions of one site and the link naming the current one."""

    def __init__(self, out: Path) -> None:
        self.out = site_root(out)
        self.store = self.out.parent / _store_name(self.out)

    def current(self) -> Path | None:
        """The version `out` links to (or `out` itself if an older release built it there);
        None before the first build or when `out` is not a site."""
        out = self.out
        if out.is_symlink():
            target = Path(os.readlink(out))
            version = self.store / target.name
            ours = not target.is_absolute() and target.parent.name == self.store.name
            return version if ours and version.is_dir() else None
        return out if (out / MANIFEST).is_file() else None

    def adopt(self) -> Path | None:
        """Check that `out` may be written and return the current version.

        An `out` built by an older release (a plain directory with a manifest) becomes a
        version here: it is moved into the store and linked back in its place (the one moment a
        reader may find no site). An empty directory is removed: the first build links its
        version there.

        Raises:
            SiteError: `out` is something `reconcile site build` did not make.
        """
        out = self.out
        if out.is_symlink():
            if self.current() is None and (
                Path(os.readlink(out)).parent.name != self.store.name or out.exists()
            ):
                raise SiteError(
                    f"{out} is a symbolic link to {os.readlink(out)}, which reconcile site "
                    "build did not make; pass the directory itself or remove the link"
                )
            return self.current()
        if not out.exists():
            return None
        if not out.is_dir():
            raise SiteError(f"{out} is a file, not a directory; choose an empty or new directory")
        if not (out / MANIFEST).is_file() and any(out.iterdir()):
            raise SiteError(
                f"{out} is not empty and holds no site built by `reconcile site build`; "
                "choose an empty or new directory"
            )
        if not (out / MANIFEST).is_file():
            out.rmdir()
            return None
        self.store.mkdir(exist_ok=True)
        version = self.store / f"{self._latest() + 1:06d}"
        os.rename(out, version)
        self._point_at(version)
        return version

    def begin(self) -> Path:
        """A new, empty version directory (the next number)."""
        self.store.mkdir(exist_ok=True)
        version = self.store / f"{self._latest() + 1:06d}"
        version.mkdir()
        return version

    def publish(self, version: Path) -> None:
        """Make `version` the site, atomically."""
        self._point_at(version)

    @property
    def spare(self) -> Path:
        """Where files of retired versions wait to be written again (see `prune`)."""
        return self.store / SPARE

    def spares(self) -> list[str]:
        """The names of the spare files."""
        return os.listdir(self.spare) if self.spare.is_dir() else []

    def prune(self, keep: list[Path], limit: int, fill: bool = False) -> None:
        """Retire every version but `keep`, on a thread, after a build has published (the
        next build, or `settle`, waits for it).

        A file only a retired version had (one link) is moved to `spare/`, up to `limit`
        spares, for a later build to write a page into; the rest are unlinked. Done after
        the swap rather than while pages render, it takes no core from the rendering
        (0.1-0.15 s of unlinking and renaming a build at 7,000 pages), and the next build
        finds its spares ready.

        With `fill` (a server, whose builds are a minute apart), the spares are then made up
        to `limit` with new files of the sizes of the newest kept version's: a build that
        draws more pages than the one two before it (the first minutes of a day) finds a
        spare for each. A page written into a new file, rather than over a spare, cost this
        machine's kernel up to 1.5 ms (`bench/README.md`).
        """
        self.settle()
        kept = {path.name for path in keep}
        stale = [p for p in self._versions() if p.name not in kept]
        spare = self.spare
        room = limit - len(self.spares())
        if not stale and not (fill and room > 0):
            return

        def retire() -> None:
            nonlocal room
            spare.mkdir(exist_ok=True)
            for version in stale:
                files = (
                    os.path.join(d, name) for d, _, names in os.walk(version) for name in names
                )
                for index, path in enumerate(files):
                    with contextlib.suppress(OSError):  # a spare less is no harm
                        found = os.stat(path)
                        if room > 0 and found.st_nlink == 1:
                            named = f"{version.name}.{index}.{found.st_size}"
                            os.rename(path, spare / named)
                            room -= 1
                shutil.rmtree(version, ignore_errors=True)
            if fill and room > 0:
                _fill_spares(spare, keep[-1], room)

        thread = threading.Thread(target=retire, name="site-prune")
        with _RETIRING_LOCK:
            _RETIRING[self.store] = thread
        thread.start()

    def settle(self) -> None:
        """Wait until the versions this process is retiring (`prune`) are gone."""
        with _RETIRING_LOCK:
            thread = _RETIRING.pop(self.store, None)
        if thread is not None:
            thread.join()

    def _point_at(self, version: Path) -> None:
        link = self.out.with_name(f".{self.out.name}.link-{os.getpid()}")
        link.unlink(missing_ok=True)
        os.symlink(f"{self.store.name}/{version.name}", link)
        os.replace(link, self.out)

    def _versions(self) -> list[Path]:
        if not self.store.is_dir():
            return []
        return [p for p in self.store.iterdir() if p.name.isdigit()]

    def _latest(self) -> int:
        return max((int(p.name) for p in self._versions()), default=0)


class Folders:
    """Open directories of one tree, by folder: thousands of file operations a build go
    relative to them (`dir_fd`) instead of resolving the whole path each time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._descriptors: dict[str, int] = {}

    def locate(self, path: str) -> tuple[int, str]:
        """The descriptor of the folder holding `path` (relative to the root) and its name."""
        folder, _, name = path.rpartition("/")
        descriptor = self._descriptors.get(folder)
        if descriptor is None:
            directory = self.root / folder if folder else self.root
            descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            self._descriptors[folder] = descriptor
        return descriptor, name

    def exists(self, path: str) -> bool:
        """Whether `path` is a file here."""
        descriptor, name = self.locate(path)
        try:
            return stat.S_ISREG(os.stat(name, dir_fd=descriptor).st_mode)
        except FileNotFoundError:
            return False

    def size(self, path: str) -> int:
        """The length of the file `path` (0: none, or no folder holding it)."""
        try:
            descriptor, name = self.locate(path)
            return os.stat(name, dir_fd=descriptor).st_size
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        """Close every descriptor."""
        for descriptor in self._descriptors.values():
            os.close(descriptor)
        self._descriptors.clear()


def link_files(source: Folders, target: Folders, paths: list[str]) -> None:
    """Hard-link each of `paths` from one version into another."""
    for path in paths:
        source_folder, name = source.locate(path)
        target_folder, _ = target.locate(path)
        os.link(name, name, src_dir_fd=source_folder, dst_dir_fd=target_folder)


# Pages are written in whole blocks of this size (`write_file`).
BLOCK = 4096
# A spare up to this much longer than a page is kept whole, the page padded to its length.
SLACK = 2 * BLOCK


def write_file(
    target: Folders,
    path: str,
    data: bytes,
    spares: Folders,
    spare: str | None,
    pad: bool = False,
) -> None:
    """Write a file of a new version, into the spare file `spare` when there is one.

    With `pad` (HTML, where trailing white space means nothing), the bytes are followed by
    spaces up to a whole number of blocks, or up to the spare's own length when that is at
    most `SLACK` more: the write then replaces whole blocks, which needs no read of the
    spare's old bytes, and the file is not cut (a cut frees blocks). Where the page cache
    is reclaimed early, as on the benchmarks' machine, a spare's blocks are on disk only,
    and overwriting part of one, or cutting the file, cost 80-150 µs a page.
    """
    folder, name = target.locate(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if spare is not None:
        spare_folder, spare_name = spares.locate(spare)
        try:
            os.rename(spare_name, name, src_dir_fd=spare_folder, dst_dir_fd=folder)
            flags = os.O_WRONLY  # overwritten in place, then cut to length
        except FileNotFoundError:
            pass
    descriptor = os.open(name, flags, 0o644, dir_fd=folder)
    try:
        size = 0 if flags & os.O_TRUNC else os.fstat(descriptor).st_size
        if pad:
            length = _blocks(len(data))
            if length < size <= length + SLACK:
                length = _blocks(size)
            if length > len(data):
                data = data + b" " * (length - len(data) - 1) + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        if size > len(data):  # a spare longer than the page
            os.ftruncate(descriptor, len(data))
    finally:
        os.close(descriptor)


def _fill_spares(spare: Path, model: Path, count: int) -> None:
    """Make `count` new spare files, their lengths those of the files the build of version
    `model` wrote (one link: the others it shares with the version before), in turn."""
    sizes = []
    for folder, _, names in os.walk(model):
        for name in names:
            with contextlib.suppress(OSError):
                found = os.stat(os.path.join(folder, name))
                if found.st_nlink == 1:
                    sizes.append(found.st_size)
    if not sizes:
        return
    sizes.sort()
    for index in range(count):
        size = sizes[index * len(sizes) // count]
        path = spare / f"{model.name}-fill.{index}.{size}"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(descriptor, b" " * size)
            finally:
                os.close(descriptor)
        except FileExistsError:
            continue
        except OSError:
            # Fewer spares are no harm; a full disk is no place for more.
            with contextlib.suppress(OSError):
                path.unlink()
            return


def _blocks(length: int) -> int:
    return -(-length // BLOCK) * BLOCK


def spare_size(name: str) -> int:
    """A spare file's length, from its name (`SiteDir.prune`: version.index.length)."""
    _, _, size = name.rpartition(".")
    return int(size) if size.isdigit() and name.count(".") >= 2 else 0


def match_spares(spares: list[str], sizes: list[int]) -> list[str | None]:
    """A spare for each of the files to write, by their expected `sizes`: the longest one at
    most `SLACK` past the size's whole blocks (written over without a cut: `write_file`),
    or else the shortest left; None when the spares run out. Among spares of one length, the
    last by name goes first (the shortest left: the first).

    Spares are kept by length (a few lengths, thousands of spares: a page's is found by a
    search over the lengths, not over every spare left)."""
    by_length: dict[int, list[str]] = {}
    for name in sorted(spares):
        by_length.setdefault(spare_size(name), []).append(name)
    lengths = sorted(by_length)
    chosen: list[str | None] = []
    for size in sizes:
        if not lengths:
            chosen.append(None)
            continue
        fits = bisect.bisect_right(lengths, _blocks(size) + SLACK) - 1
        length = lengths[max(fits, 0)]
        names = by_length[length]
        chosen.append(names.pop() if fits >= 0 else names.pop(0))
        if not names:
            del by_length[length]
            lengths.remove(length)
    return chosen
