"""Hostile config repositories: each one gives a clear error naming its file, never a
traceback, never a hang, and leaves the state file as it was.

The corpus is generated here (no committed fixtures): out-of-range integers and durations,
schedules the agent cannot run, header injection, malformed CEL, alias bombs and deep nesting,
too many documents, over-long strings, and files that are not regular files inside the
repository, in the working tree and in git commits.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.cli.main import main
from schemas.limits import (
    MAX_DOCUMENTS_PER_FILE,
    MAX_FILE_BYTES,
    MAX_NESTING_DEPTH,
    MAX_STRING_CHARS,
)
from tests.conftest import ConfigRepo

BASE = """\
apiVersion: canary-reconciler/v1
kind: Region
metadata: {name: eu}
---
apiVersion: canary-reconciler/v1
kind: Agent
metadata: {name: eu-1}
spec: {region: eu}
"""

# One CLI run may take this long; a hang (a FIFO opened for reading, /dev/zero read whole,
# an alias bomb walked) takes forever.
RUN_BOUND_SECONDS = 5.0
SECRET = "s3cr3t-outside-the-repo"


@dataclass
class Case:
    """One hostile repository: files to write, an optional setup, the file the error names."""

    name: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: Callable[[Path, Path], None] | None = None  # (repo, a directory outside it)
    names: str = "bad.yaml"
    git: bool = False  # read from a commit (--ref HEAD) instead of the working tree


REGION_HEAD = "apiVersion: canary-reconciler/v1\nkind: Region\n"
CANARY_HEAD = "apiVersion: canary-reconciler/v1\nkind: Canary\nmetadata: {name: c}\nspec:\n"


def canary(check: str, spec: str = "schedule: '@every 30s'\n  agentSelector: [eu-1]") -> str:
    return (
        "apiVersion: canary-reconciler/v1\nkind: Canary\nmetadata: {name: c}\n"
        f"spec:\n  {spec}\n  http:\n    - {check}\n"
    )


def http(extra: str) -> str:
    return canary("url: 'http://127.0.0.1:9/'\n      " + extra)


def alias_bomb(levels: int, width: int) -> str:
    lines = ['a0: &a0 ["lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _integers() -> list[Case]:
    huge = [
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999999",
        "0x1" + "0" * 20,
    ]
    places = [
        lambda v: http(f"thresholdMillis: {v}"),
        lambda v: http(f"maxSSLExpiry: {v}"),
        lambda v: http(f"responseCodes: [{v}]"),
        lambda v: http(f"maxRedirects: {v}"),
        lambda v: canary("url: 'http://x/'", f"schedule: '@every 30s'\n  failureThreshold: {v}"),
        lambda v: canary("url: 'http://x/'", f"interval: {v}"),
        lambda v: canary("url: 'http://x/'", f"replicas: {v}"),
        lambda v: canary("url: 'http://x/'", f"incidentPolicy: {{count: {v}}}"),
        lambda v: f"{REGION_HEAD}metadata: {{name: r, labels: {{a: {v}}}}}\n",
        lambda v: f"{v}: x\n",
    ]
    return [
        Case(f"integer-{i}-{j}", {"bad.yaml": place(value)})
        for i, place in enumerate(places)
        for j, value in enumerate(huge)
    ]


def _durations() -> list[Case]:
    timeouts = [
        "0s",
        "0",
        "9999999999999999999999h",
        "1e30h",
        "-1s",
        "1us",
        "2h",
        "8785h",
        "''",
        "[1]",
    ]
    schedules = [
        "@every 1us",
        "@every 1e30h",
        "@every 99999999h",
        "@every 10ms",
        "@every 0s",
        "*/75 * * * *",
        "0 */25 * * *",
        "0 0 */32 * *",
        "0 0 1 */13 *",
        "0 0 * * */8",
        "@every " + "9" * 5000 + "s",
        "@reboot",
    ]
    found = [
        Case(f"timeout-{i}", {"bad.yaml": http(f"timeout: {t}")}) for i, t in enumerate(timeouts)
    ]
    found.append(
        Case(
            "dns-timeout",
            {
                "bad.yaml": canary("url: 'http://x/'").replace(
                    "http:\n    - url: 'http://x/'",
                    "dns:\n    - {query: example.com, timeout: 100000}",
                )
            },
        )
    )
    found += [
        Case(f"schedule-{i}", {"bad.yaml": canary("url: 'http://x/'", f"schedule: '{s}'")})
        for i, s in enumerate(schedules)
    ]
    return found


def _headers() -> list[Case]:
    names = ['"a\\r\\nInjected: 1"', '"X-A\\n"', '"a:b"', '"a b"', '"a\\0"', "''", "x" * 300]
    values = ['"a\\r\\nInjected: 1"', '"a\\nb"', '"\\0"', '"a\\x7f"', "v" * 9000]
    found = [
        Case(f"header-name-{i}", {"bad.yaml": http(f"headers: [{{name: {n}, value: v}}]")})
        for i, n in enumerate(names)
    ]
    found += [
        Case(f"header-value-{i}", {"bad.yaml": http(f"headers: [{{name: X-A, value: {v}}}]")})
        for i, v in enumerate(values)
    ]
    return found


def _expressions() -> list[Case]:
    exprs = [
        "code ==",
        "((((",
        "1 +",
        "code = 200",
        ")",
        "a.b.c(",
        "(" * 400 + "1" + ")" * 400,
        "'unterminated",
    ]
    return [
        Case(f"cel-{i}", {"bad.yaml": http(f"test: {{expr: {e!r}}}")}) for i, e in enumerate(exprs)
    ]


def _structure() -> list[Case]:
    deep_block = (
        "".join("  " * i + "k:\n" for i in range(MAX_NESTING_DEPTH + 5)) + "  " * 70 + "v\n"
    )
    # Empty documents count too; they keep the case fast.
    docs = "---\n" * (MAX_DOCUMENTS_PER_FILE + 1) + REGION_HEAD
    region = REGION_HEAD + "metadata: {name: r}\nspec: {displayName: %s}\n"
    return [
        Case("alias-bomb-9x9", {"bad.yaml": alias_bomb(9, 9)}),
        Case("alias-bomb-30x2", {"bad.yaml": alias_bomb(30, 2)}),
        Case(
            "alias-bomb-in-spec",
            {"bad.yaml": CANARY_HEAD + textwrap.indent(alias_bomb(9, 9), "  ")},
        ),
        Case("alias-many", {"bad.yaml": "a: &a [1]\nb: [" + ", ".join(["*a"] * 10_001) + "]\n"}),
        Case("alias-recursive", {"bad.yaml": "a: &a [1, *a]\n"}),
        Case(
            "merge-bomb",
            {
                "bad.yaml": "a0: &a0 {x: 1}\n"
                + "".join(
                    f"a{i}: &a{i} {{<<: [*a{i - 1}], l{i}: [{', '.join([f'*a{i - 1}'] * 4)}]}}\n"
                    for i in range(1, 20)
                )
            },
        ),
        Case("deep-flow-70", {"bad.yaml": "a: " + "[" * 70 + "]" * 70 + "\n"}),
        Case("deep-flow-998", {"bad.yaml": "a: " + "[" * 998 + "]" * 998 + "\n"}),
        Case("deep-flow-100000", {"bad.yaml": "a: " + "[" * 100_000 + "\n"}),
        Case("deep-block", {"bad.yaml": deep_block}),
        Case("too-many-documents", {"bad.yaml": docs}),
        Case("long-display-name", {"bad.yaml": region % ("x" * (MAX_STRING_CHARS + 1))}),
        Case("display-name-2k", {"bad.yaml": region % ("x" * 2000)}),
        Case("file-too-large", {"bad.yaml": "# " + "x" * MAX_FILE_BYTES + "\n"}),
        Case(
            "ignore-file-too-large",
            {".reconcileignore": "# " + "x" * MAX_FILE_BYTES + "\n"},
            names=".reconcileignore",
        ),
        Case("region-name-newline", {"bad.yaml": REGION_HEAD + 'metadata: {name: "r\\n"}\n'}),
        Case(
            "agent-name-newline",
            {
                "bad.yaml": "apiVersion: canary-reconciler/v1\nkind: Agent\n"
                + "metadata:\n  name: |\n    a\nspec: {region: eu}\n"
            },
        ),
        Case("url-newline", {"bad.yaml": canary('url: "http://x/\\n"')}),
        Case(
            "endpoint-newline",
            {
                "bad.yaml": canary('url: "http://x/"').replace(
                    'http:\n    - url: "http://x/"', 'tcp:\n    - endpoint: "db:5432\\n"'
                )
            },
        ),
        Case("api-version-list", {"bad.yaml": "apiVersion: [a]\nkind: Region\n"}),
        Case("api-version-map", {"bad.yaml": "apiVersion: {a: 1}\nkind: Region\n"}),
        Case("kind-list", {"bad.yaml": "apiVersion: canary-reconciler/v1\nkind: [Region]\n"}),
        Case("api-version-int", {"bad.yaml": "apiVersion: 5\nkind: Region\n"}),
        Case(
            "metadata-list",
            {"bad.yaml": "apiVersion: canary-reconciler/v1\nkind: Region\nmetadata: [x]\n"},
        ),
        Case("document-list", {"bad.yaml": "- a\n- b\n"}),
        Case("document-scalar", {"bad.yaml": "just text\n"}),
        Case("invalid-utf8", {"bad.yaml": b"apiVersion: \xff\xfe\n"}),
        Case("binary", {"bad.yaml": bytes(range(256))}),
        Case("nul-bytes", {"bad.yaml": b"a: b\x00c\n"}),
        Case("tab-indent", {"bad.yaml": "a:\n\tb: c\n"}),
        Case("unterminated-quote", {"bad.yaml": "a: 'b\n"}),
        Case("duplicate-key", {"bad.yaml": "apiVersion: a\napiVersion: b\n"}),
        Case("complex-key", {"bad.yaml": "? [a]\n: b\n"}),
        Case("python-tag", {"bad.yaml": "a: !!python/object/apply:os.system ['true']\n"}),
        Case("tag-float", {"bad.yaml": http("thresholdMillis: !!float abc")}),
        Case("tag-int", {"bad.yaml": http("thresholdMillis: !!int eu-west")}),
        Case("tag-bool", {"bad.yaml": http("followRedirects: !!bool maybe")}),
        Case("bad-timestamp", {"bad.yaml": http("description: 2020-13-45")}),
        Case("float-key-inf", {"bad.yaml": http("thresholdMillis: .inf")}),
        Case("big-float", {"bad.yaml": http("thresholdMillis: 1e400")}),
    ]


def _fifo(repo: Path, _outside: Path) -> None:
    os.mkfifo(repo / "bad.yaml")


def _link(
    target: str | Callable[[Path, Path], Path], name: str = "bad.yaml"
) -> Callable[[Path, Path], None]:
    def setup(repo: Path, outside: Path) -> None:
        where = target(repo, outside) if callable(target) else target
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(where, repo / name)

    return setup


def _secret_outside(_repo: Path, outside: Path) -> Path:
    secret = outside / "secret.yaml"
    secret.write_text(f"apiVersion: {SECRET}\n")
    return secret


def _loop(repo: Path, _outside: Path) -> None:
    os.symlink("b.yaml", repo / "bad.yaml")
    os.symlink("bad.yaml", repo / "b.yaml")


def _filesystem() -> list[Case]:
    cases = [
        Case("fifo", setup=_fifo),
        Case("link-dev-zero", setup=_link("/dev/zero")),
        Case("link-dev-urandom", setup=_link("/dev/urandom")),
        Case("link-self", setup=_link("bad.yaml")),
        Case("link-loop", setup=_loop),
        Case("link-dangling", setup=_link("missing.yaml")),
        Case("link-outside-absolute", setup=_link(_secret_outside)),
        Case(
            "link-outside-relative",
            setup=_link(lambda r, o: Path("..") / o.name / _secret_outside(r, o).name),
        ),
        Case("link-to-directory", setup=_link("sub")),
        Case("link-proc", setup=_link("/proc/self/environ")),
        Case(
            "ignore-file-link-outside",
            setup=_link(_secret_outside, ".reconcileignore"),
            names=".reconcileignore",
        ),
        Case(
            "nested-fifo",
            setup=lambda r, o: (r / "d").mkdir() or os.mkfifo(r / "d" / "bad.yaml"),
            names="d/bad.yaml",
        ),
    ]
    for case in cases:
        if case.name == "link-to-directory":
            case.files = {"sub/ok.yaml": "# nothing\n"}
    git_cases = [
        Case("git-link-self", setup=_link("bad.yaml"), git=True),
        Case("git-link-loop", setup=_loop, git=True),
        Case("git-link-dangling", setup=_link("missing.yaml"), git=True),
        Case("git-link-outside-absolute", setup=_link("/etc/hostname"), git=True),
        Case("git-link-outside-relative", setup=_link("../../etc/hostname"), git=True),
        Case("git-link-to-directory", {"sub/ok.yaml": "# nothing\n"}, _link("sub"), git=True),
        Case("git-too-large", {"bad.yaml": "# " + "x" * MAX_FILE_BYTES + "\n"}, git=True),
        Case("git-alias-bomb", {"bad.yaml": alias_bomb(9, 9)}, git=True),
    ]
    return cases + git_cases


CORPUS = _integers() + _durations() + _headers() + _expressions() + _structure() + _filesystem()


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 100
    assert len({case.name for case in CORPUS}) == len(CORPUS)


def _build(case: Case, root: Path) -> Path:
    repo = root / "repo"
    outside = root / "outside"
    outside.mkdir(parents=True)
    git_repo = ConfigRepo(repo) if case.git else None
    repo.mkdir(exist_ok=True)
    (repo / "base.yaml").write_text(BASE)
    for name, content in case.files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    if case.setup is not None:
        case.setup(repo, outside)
    if git_repo is not None:
        git_repo.commit("hostile")
    return repo


def _run_bounded(*args: str | Path) -> tuple[int, str, float]:
    """Run the CLI in-process on a thread; fail (not hang) when it takes too long."""
    out, err = io.StringIO(), io.StringIO()
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["code"] = main([str(a) for a in args], out=out, err=err)
        except BaseException as error:  # a crash is a finding, reported by the test
            outcome["error"] = error

    started = time.perf_counter()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(RUN_BOUND_SECONDS)
    elapsed = time.perf_counter() - started
    assert not thread.is_alive(), f"`reconcile {args[0]}` still running after {elapsed:.1f}s"
    assert "error" not in outcome, f"raised {outcome['error']!r}"
    return int(outcome["code"]), out.getvalue() + err.getvalue(), elapsed  # type: ignore[call-overload]


def _assert_clear_error(case: Case, code: int, output: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output
    assert SECRET not in output, "the contents of a file outside the repository were shown"
    location = re.compile(rf"(^|\s){re.escape(case.names)}:\d+:\d+: ", re.MULTILINE)
    assert location.search(output), f"no {case.names}:line:column in:\n{output[:2000]}"


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.name)
def test_validate_refuses_with_a_clear_error(case: Case, tmp_path: Path) -> None:
    repo = _build(case, tmp_path)
    ref = ["--ref", "HEAD"] if case.git else []
    code, output, _ = _run_bounded("validate", "--repo", repo, *ref)
    _assert_clear_error(case, code, output)


# plan and apply load through the same path; a sample of the corpus runs through them too.
THROUGH_APPLY = [
    c
    for c in CORPUS
    if c.name
    in {
        "integer-0-2",
        "timeout-2",
        "schedule-0",
        "header-name-0",
        "cel-0",
        "alias-bomb-9x9",
        "deep-flow-998",
        "too-many-documents",
        "api-version-list",
        "fifo",
        "link-dev-zero",
        "link-loop",
        "link-outside-absolute",
        "git-link-outside-relative",
        "git-alias-bomb",
    }
]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", THROUGH_APPLY, ids=lambda case: case.name)
def test_plan_and_apply_refuse_and_leave_the_state_untouched(
    case: Case, tmp_path: Path, applied_state: Path
) -> None:
    repo = _build(case, tmp_path)
    ref = ["--ref", "HEAD"] if case.git else []
    state = tmp_path / "state.duckdb"
    state.write_bytes(applied_state.read_bytes())
    before = _digest(state)
    code, output, _ = _run_bounded("plan", "--repo", repo, *ref, "--state", state)
    _assert_clear_error(case, code, output)
    code, output, _ = _run_bounded(
        "apply", "--repo", repo, *ref, "--state", state, "--auto-approve"
    )
    _assert_clear_error(case, code, output)
    assert _digest(state) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("state")) == [
        "state.duckdb"
    ]


@pytest.fixture(scope="module")
def applied_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state file with the base config applied: what hostile applies must not change."""
    root = tmp_path_factory.mktemp("applied")
    (root / "repo").mkdir()
    (root / "repo" / "base.yaml").write_text(BASE)
    state = root / "state.duckdb"
    code, output, _ = _run_bounded(
        "apply", "--repo", root / "repo", "--state", state, "--auto-approve"
    )
    assert code == 0, output
    return state


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    repo = _build(Case("bomb", {"bad.yaml": alias_bomb(10, 10)}), tmp_path)
    code, output, elapsed = _run_bounded("validate", "--repo", repo)
    assert code == 1
    assert "expanded nodes per file" in output and "schemas/limits.py" in output
    assert elapsed < 1.0


def test_symlinks_inside_the_repository_still_load(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    (repo.path / "real").mkdir()
    (repo.path / "real" / "base.txt").write_text(BASE)
    os.symlink("real/base.txt", repo.path / "linked.yaml")
    repo.commit("a link inside the repository")
    for ref in ([], ["--ref", "HEAD"]):
        code, output, _ = _run_bounded("validate", "--repo", repo.path, *ref)
        assert code == 0, output
        assert "valid (2 documents" in output


def test_docs_limits_names_every_config_limit() -> None:
    import schemas.limits as limits
    from schemas.durations import format_duration
    from tests.conftest import ROOT

    doc = (ROOT / "docs" / "limits.md").read_text()
    config_part = doc.split("## Agent")[0]
    for name in dir(limits):
        value = getattr(limits, name)
        if not name.isupper() or not isinstance(value, (int, float)):
            continue
        shown = (
            [format_duration(value)]
            if name.endswith("SECONDS")
            else [str(value), f"{value:,}", str(value).replace("-", "−")]
        )
        assert any(text in config_part for text in shown), f"{name} is not in docs/limits.md"
    assert doc.index("## Config repository") < doc.index("## Agent") < doc.index("## HTTP server")


def test_a_link_out_of_a_config_subdirectory_is_outside_the_repository(tmp_path: Path) -> None:
    repo = ConfigRepo(tmp_path / "repo")
    (repo.path / "cfg").mkdir()
    (repo.path / "cfg" / "base.yaml").write_text(BASE)
    (repo.path / "shared.yaml").write_text(f"apiVersion: {SECRET}\n")
    os.symlink("../shared.yaml", repo.path / "cfg" / "link.yaml")
    repo.commit("a link out of the config directory")
    for ref in ([], ["--ref", "HEAD"]):
        code, output, _ = _run_bounded("validate", "--repo", repo.path / "cfg", *ref)
        assert code == 1, output
        assert "link.yaml:1:1: is a symbolic link to a file outside the repository" in output
        assert SECRET not in output


def test_a_link_out_of_the_repository_does_not_tell_whether_its_target_exists(
    tmp_path: Path,
) -> None:
    """Reading a repository must not probe the machine: a link to an outside path that exists
    and one to an outside path that does not get the same words."""
    repo = ConfigRepo(tmp_path / "repo")
    (repo.path / "base.yaml").write_text(BASE)
    (tmp_path / "there.yaml").write_text("x: 1\n")
    os.symlink(tmp_path / "there.yaml", repo.path / "there.yaml")
    os.symlink(tmp_path / "not-there.yaml", repo.path / "not-there.yaml")
    repo.commit("two links out")
    for ref in ([], ["--ref", "HEAD"]):
        code, output, _ = _run_bounded("validate", "--repo", repo.path, *ref)
        assert code == 1, output
        for name in ("there.yaml", "not-there.yaml"):
            assert f" {name}:1:1: is a symbolic link to a file outside the repository" in output


DEEP_LEVELS = 1_200  # deeper than Python's recursion limit


def _deep_tree(root: Path) -> None:
    # os.makedirs recurses once per level: one level at a time, relative to the last.
    descriptor = os.open(root, os.O_RDONLY)
    try:
        for _ in range(DEEP_LEVELS):
            os.mkdir("d", dir_fd=descriptor)
            inner = os.open("d", os.O_RDONLY, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
        bad = os.open("bad.yaml", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=descriptor)
        os.write(bad, b"apiVersion: [a]\n")
        os.close(bad)
    finally:
        os.close(descriptor)


def _remove_tree(top: Path) -> None:
    """Remove a tree without recursion: shutil.rmtree recurses once per level too, and so
    does pytest's clean-up of old temporary directories, so this tree never lives there."""
    stack: list[tuple[str, bool]] = [(str(top), False)]
    while stack:
        path, emptied = stack.pop()
        if emptied:
            os.rmdir(path)
            continue
        stack.append((path, True))
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, False))
                else:
                    os.unlink(entry.path)


def test_a_repository_nested_deeper_than_the_stack_is_read() -> None:
    root = Path(tempfile.mkdtemp(prefix="hostile-deep-"))
    try:
        (root / "base.yaml").write_text(BASE)
        _deep_tree(root)
        code, output, _ = _run_bounded("validate", "--repo", root)
        case = Case("deep-directories", names="d/" * DEEP_LEVELS + "bad.yaml")
        _assert_clear_error(case, code, output)
    finally:
        _remove_tree(root)


def test_thousands_of_bad_values_are_listed_up_to_a_bound_and_counted(tmp_path: Path) -> None:
    codes = ", ".join(["99999999999999999999"] * 5_000)
    repo = _build(Case("many", {"bad.yaml": http(f"responseCodes: [{codes}]")}), tmp_path)
    code, output, _ = _run_bounded("validate", "--repo", repo)
    _assert_clear_error(Case("many"), code, output)
    assert len(output.splitlines()) < 250
    assert "and 4900 more value(s) out of range (the first 100 are listed)" in output
    assert "and 4900 more error(s) in this document (the first 100 are listed)" in output
