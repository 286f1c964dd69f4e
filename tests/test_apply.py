"""Apply: one transaction, revisions, idempotency, saved plans and concurrent writers."""

from __future__ import annotations

import json
import os
import pty
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from tests import children
from tests.conftest import ROOT, ConfigRepo, agent_doc, canary_doc, region_doc, run_cli


@pytest.fixture
def repo(config_repo: ConfigRepo) -> ConfigRepo:
    config_repo.write("regions.yaml", region_doc("eu"))
    config_repo.write("agents/eu-1.yaml", agent_doc("eu-1", "eu"))
    config_repo.write("canaries/web.yaml", canary_doc("web"))
    config_repo.commit("initial config")
    return config_repo


def query(state: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(state), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def serial(state: Path) -> int:
    [(value,)] = query(state, "SELECT value FROM meta WHERE key = 'serial'")
    return int(str(value))


def apply(repo: ConfigRepo, state: Path, *extra: str) -> str:
    result = run_cli("apply", "--repo", repo.path, "--state", state, "--auto-approve", *extra)
    assert result.code == 0, result.err
    return result.out


def test_apply_records_resources_and_the_revision(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    out = apply(repo, state)

    assert "Apply complete! Resources: 4 added, 0 changed, 0 destroyed. State serial 1." in out
    assert sorted(row[0] for row in query(state, "SELECT address FROM resources")) == [
        "agent.eu-1",
        "canary.default/web",
        "derived_canary.default/web@eu-1",
        "region.eu",
    ]
    [(sha, author, message, added)] = query(
        state, "SELECT sha, author, message, added FROM revisions"
    )
    assert sha == repo.git("rev-parse", "HEAD")
    assert author == "Test Author <author@example.com>"
    assert (message, added) == ("initial config", 4)


def test_applying_the_same_commit_twice_changes_nothing(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    [(lineage,)] = query(state, "SELECT value FROM meta WHERE key = 'lineage'")

    out = apply(repo, state)

    assert "No changes." in out
    assert serial(state) == 1
    assert query(state, "SELECT value FROM meta WHERE key = 'lineage'") == [(lineage,)]
    assert len(query(state, "SELECT * FROM revisions")) == 1


def test_serial_bumps_and_lineage_stays(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    [(lineage,)] = query(state, "SELECT value FROM meta WHERE key = 'lineage'")
    repo.write("agents/eu-2.yaml", agent_doc("eu-2", "eu"))
    repo.commit("add eu-2")

    apply(repo, state)

    assert serial(state) == 2
    assert query(state, "SELECT value FROM meta WHERE key = 'lineage'") == [(lineage,)]
    assert query(state, "SELECT serial, added FROM revisions ORDER BY serial") == [(1, 4), (2, 2)]


def test_saved_plan_is_applied_exactly(repo: ConfigRepo, tmp_path: Path) -> None:
    state, saved = tmp_path / "state.duckdb", tmp_path / "plan.json"
    planned = run_cli("plan", "--repo", repo.path, "--state", state, "--out", saved, "-q")
    assert planned.code == 0
    # Edits after planning are not part of the saved plan.
    repo.write("agents/eu-2.yaml", agent_doc("eu-2", "eu"))

    result = run_cli("apply", saved, "--state", state)

    assert result.code == 0, result.err
    assert sorted(row[0] for row in query(state, "SELECT name FROM resources")) == [
        "default/web",
        "default/web@eu-1",
        "eu",
        "eu-1",
    ]


def test_stale_saved_plan_is_refused(repo: ConfigRepo, tmp_path: Path) -> None:
    state, saved = tmp_path / "state.duckdb", tmp_path / "plan.json"
    apply(repo, state)
    repo.write("agents/eu-2.yaml", agent_doc("eu-2", "eu"))
    assert run_cli("plan", "--repo", repo.path, "--state", state, "--out", saved).code == 0
    repo.write("agents/eu-3.yaml", agent_doc("eu-3", "eu"))
    apply(repo, state)  # the state moves on to serial 2

    result = run_cli("apply", saved, "--state", state)

    assert result.code == 1
    assert "stale plan: it was made at serial 1, the state is now at serial 2" in result.err
    assert serial(state) == 2


def test_saved_plan_for_another_state_file_is_refused(repo: ConfigRepo, tmp_path: Path) -> None:
    first, second, saved = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "plan.json"
    apply(repo, first)
    apply(repo, second)
    repo.write("agents/eu-2.yaml", agent_doc("eu-2", "eu"))
    assert run_cli("plan", "--repo", repo.path, "--state", first, "--out", saved).code == 0

    result = run_cli("apply", saved, "--state", second)

    assert result.code == 1
    assert "the plan belongs to another state file" in result.err


def test_a_failed_load_leaves_the_state_untouched(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    before = state.read_bytes()
    repo.write("canaries/web.yaml", canary_doc("web").replace("url:", "uri:"))

    result = run_cli("apply", "--repo", repo.path, "--state", state, "--auto-approve")

    assert result.code == 1
    assert "canaries/web.yaml:11:7: Canary/default/web: spec.http[0].uri: unknown field" in (
        result.err
    )
    assert state.read_bytes() == before


def test_invalid_repo_never_creates_a_state_file(repo: ConfigRepo, tmp_path: Path) -> None:
    repo.write("agents/eu-1.yaml", agent_doc("eu-1", "nowhere"))
    state = tmp_path / "state.duckdb"
    assert run_cli("apply", "--repo", repo.path, "--state", state, "--auto-approve").code == 1
    assert not state.exists()


@pytest.mark.slow
def test_apply_without_approval_refuses_when_not_interactive(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    state = tmp_path / "state.duckdb"
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--repo", repo.path, "--state", state],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1
    assert "pass --auto-approve" in result.stderr
    assert not state.exists(), "a refused first apply leaves no state file behind"


@pytest.mark.slow
def test_concurrent_applies_never_corrupt_the_state(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    command = [
        sys.executable, "-m", "reconciler", "apply", "--repo", str(repo.path),
        "--state", str(state), "--auto-approve", "--lock-timeout", "60",
    ]  # fmt: skip
    processes = [
        children.popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    outcomes = [(p.wait(timeout=120), p.communicate()) for p in processes]

    for code, (_, stderr) in outcomes:
        assert code == 0 or b"is in use by" in stderr, stderr
    assert sum(code == 0 for code, _ in outcomes) >= 1
    assert serial(state) == 1, "the first apply writes, the others find nothing to do"
    assert len(query(state, "SELECT * FROM resources")) == 4


def test_locked_state_fails_with_a_clear_message(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    holder = children.popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "sys.stdin.read()",
            str(state),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"ready"
        result = run_cli(
            "apply", "--repo", repo.path, "--state", state, "--auto-approve", "--lock-timeout", "0"
        )
    finally:
        holder.communicate(b"", timeout=30)
    assert result.code == 1
    assert f"state file {state} is in use by process {holder.pid}" in result.err


def test_revisions_command_lists_applied_revisions(repo: ConfigRepo, tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    result = run_cli("revisions", "--state", state)
    assert result.code == 0
    sha = repo.git("rev-parse", "HEAD")[:12]
    assert result.out.split()[:2] == ["1", sha]
    assert "+4 ~0 -0  initial config" in result.out


def test_plan_json_is_what_apply_reads(repo: ConfigRepo, tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    run_cli("plan", "--repo", repo.path, "--state", tmp_path / "s.duckdb", "--out", saved)
    document = json.loads(saved.read_text())
    assert document["format_version"] == "1.0"
    assert set(document["changes"][0]) >= {"address", "kind", "actions", "before", "after"}


def test_a_modified_saved_plan_is_refused(repo: ConfigRepo, tmp_path: Path) -> None:
    state, saved = tmp_path / "state.duckdb", tmp_path / "plan.json"
    assert run_cli("plan", "--repo", repo.path, "--state", state, "--out", saved).code == 0
    document = json.loads(saved.read_text())
    document["changes"][0]["after"]["enabled"] = False
    saved.write_text(json.dumps(document))

    result = run_cli("apply", saved, "--state", state)

    assert result.code == 1
    assert "the plan was modified after it was made (checksum mismatch)" in result.err
    assert not state.exists()


def test_out_with_base_is_refused_before_planning(repo: ConfigRepo, tmp_path: Path) -> None:
    result = run_cli("plan", "--repo", repo.path, "--base", "HEAD", "--out", tmp_path / "p.json")
    assert result.code == 1
    assert result.out == ""
    assert "cannot be used with --base" in result.err


@pytest.mark.slow
def test_usage_errors_exit_1_not_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", "--no-such-flag"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1
    assert "unrecognized arguments: --no-such-flag" in result.stderr


def test_apply_says_when_it_starts_a_new_state_file(repo: ConfigRepo, tmp_path: Path) -> None:
    """A mistyped --state would otherwise start a new lineage without a word."""
    state = tmp_path / "new" / "dir" / "state.duckdb"
    first = run_cli("apply", "--repo", repo.path, "--state", state, "--auto-approve")
    assert first.code == 0 and f"started a new state file {state}" in first.err
    again = run_cli("apply", "--repo", repo.path, "--state", state, "--auto-approve")
    assert again.code == 0 and "started a new state file" not in again.err


def test_a_file_that_is_not_a_plan_is_refused_saying_so(repo: ConfigRepo, tmp_path: Path) -> None:
    state, garbage = tmp_path / "state.duckdb", tmp_path / "plan.json"
    apply(repo, state)
    garbage.write_bytes(bytes(range(256)))
    result = run_cli("apply", garbage, "--state", state)
    assert result.code == 1
    assert f"cannot read the plan {garbage}: it is not JSON, so not a plan saved by " in result.err
    missing = run_cli("apply", tmp_path / "none.json", "--state", state)
    assert missing.code == 1 and "No such file or directory" in missing.err


@pytest.mark.parametrize(
    ("files", "said"),
    [
        ({}, "no YAML files found"),
        (
            {"all.yaml": "# everything moved elsewhere\n---\n", "empty.yml": ""},
            "all.yaml:1:1: no document in 2 file(s) (only comments or empty): refusing to load "
            "an empty configuration (it would delete everything)",
        ),
    ],
    ids=["no file", "only comments"],
)
def test_a_config_of_nothing_is_refused_not_planned_as_delete_all(
    repo: ConfigRepo, tmp_path: Path, files: dict[str, str], said: str
) -> None:
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    for name, text in files.items():
        (nothing / name).write_text(text)
    for command in (["plan"], ["apply", "--auto-approve"]):
        result = run_cli(*command, "--repo", nothing, "--state", state)
        assert result.code == 1, result.out
        assert said in result.out + result.err
    assert len(query(state, "SELECT * FROM resources")) == 4


def test_end_of_input_at_the_question_applies_nothing(repo: ConfigRepo, tmp_path: Path) -> None:
    """Ctrl-D at "Do you want to apply these changes?" in a terminal: a no, not a traceback."""
    state = tmp_path / "state.duckdb"
    command = [sys.executable, "-m", "reconciler", "apply", "--repo", str(repo.path),
               "--state", str(state)]  # fmt: skip
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the CLI, in a terminal
        os.chdir(ROOT)
        os.execv(sys.executable, command)
    shown = _read_terminal(terminal, until=b"Only 'yes' will be accepted: ")
    os.write(terminal, b"\x04")  # Ctrl-D: end of input
    shown += _read_terminal(terminal, until=None)
    os.close(terminal)
    _, status = os.waitpid(pid, 0)
    text = shown.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 1, text
    assert "no answer (end of input): nothing was applied" in text
    assert "Traceback" not in text
    assert not state.exists()  # nothing applied, no state file made


def _read_terminal(terminal: int, until: bytes | None, timeout: float = 60.0) -> bytes:
    """What a program writes to its terminal, up to `until` (None: until it closes)."""
    seen, deadline = b"", time.monotonic() + timeout
    while until is None or until not in seen:
        ready, _, _ = select.select([terminal], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"the program wrote nothing more in {timeout}s: {seen[-300:]!r}"
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the program ended and closed the terminal
            chunk = b""
        if not chunk:
            assert until is None, f"the program ended before {until!r}: {seen[-300:]!r}"
            return seen
        seen += chunk
    return seen


def _files_of_at_most(size: int) -> Callable[[], None]:
    """A child's `preexec_fn`: no file may grow past `size` bytes (a full disk, in effect: a
    write past it fails with EFBIG rather than killing the process)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_a_state_file_that_cannot_be_written_is_an_error_not_a_traceback(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    # The failed COMMIT ended the transaction; the ROLLBACK after it raised "no transaction
    # is active", and that traceback hid the reason.
    state = tmp_path / "state.duckdb"
    apply(repo, state)
    repo.write("canaries/api.yaml", canary_doc("api"))
    repo.commit("add api")
    command = [sys.executable, "-m", "reconciler", "apply", "--repo", str(repo.path),
               "--state", str(state), "--auto-approve", "-q"]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120,
        preexec_fn=_files_of_at_most(512),
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: the state file could not be written: ")
    assert "Failed to commit" in done.stderr and "File too large" in done.stderr
    assert serial(state) == 1  # nothing of the second apply was kept
