"""The command line as a whole: every option explained, shared options alike everywhere."""

from __future__ import annotations

import argparse
import http.server
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import orjson
import pytest

from reconciler.cli.main import build_parser
from reconciler.server.settings import ENVIRONMENT, ServeSettings, SettingsError, load_settings
from reconciler.store.db import StateError
from tests import httpd
from tests.agentproc import free_port
from tests.conftest import SAMPLE_REPO, run_cli
from tests.inprocess import running_in_process


def _parsers(
    parser: argparse.ArgumentParser, name: str = "reconcile"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, child in action.choices.items():
                yield from _parsers(child, f"{name} {command}")


PARSERS = dict(_parsers(build_parser()))


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_and_command_says_what_it_is_for(command: str) -> None:
    parser = PARSERS[command]
    assert parser.description, f"{command} has no description"
    for action in parser._actions:
        if action.help is None and not isinstance(action, argparse._SubParsersAction):
            pytest.fail(f"{command} {'/'.join(action.option_strings) or action.dest}: no help")


def test_shared_options_read_the_same_everywhere() -> None:
    helps: dict[str, set[str]] = {}
    for name, parser in PARSERS.items():
        if name == "reconcile serve":  # its defaults come from the settings, said there
            continue
        for action in parser._actions:
            if "--lock-timeout" in action.option_strings or "--server" in action.option_strings:
                helps.setdefault(action.option_strings[0], set()).add(str(action.help))
    assert set(helps) == {"--lock-timeout", "--server"}
    assert all(len(texts) == 1 for texts in helps.values()), helps


def test_every_serve_setting_is_a_flag() -> None:
    [serve] = [p for name, p in PARSERS.items() if name == "reconcile serve"]
    flags = {action.dest for action in serve._actions}
    assert set(ENVIRONMENT) <= flags, f"settings without a flag: {set(ENVIRONMENT) - flags}"


def test_serve_help_prints_the_default_of_every_setting() -> None:
    """The help reads them from the settings: `--max-connections` once said 1000 when the
    server took 10000."""
    defaults = ServeSettings()
    wrong = []
    for action in PARSERS["reconcile serve"]._actions:
        value = getattr(defaults, action.dest, None)
        if action.dest not in ENVIRONMENT or value is None:
            continue  # no default (--branch), or one worked out at start (<state>.cache)
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        # `default 60`, `(default: .)`, `(default: $RECONCILER_STATE or reconciler.duckdb)`
        if not re.search(rf"default:? (\$\w+ or )?{re.escape(text)}(?![\d.])", str(action.help)):
            wrong.append(f"{action.option_strings[0]} says {action.help!r}, the default is {text}")
    assert wrong == []


def test_every_serve_setting_variable_is_its_flag_in_capitals() -> None:
    """What `serve --help` says of every variable, and the rule holds for each."""
    assert "RECONCILER_MAX_CONNECTIONS" in str(PARSERS["reconcile serve"].epilog)
    for key, variable in ENVIRONMENT.items():
        assert variable == f"RECONCILER_{key.upper()}"


@pytest.mark.parametrize(
    ("option", "variable"),
    [
        ("--state", "RECONCILER_STATE"),
        ("--lock-timeout", "RECONCILER_LOCK_TIMEOUT"),
        ("--local-region", "RECONCILER_LOCAL_REGION"),
    ],
)
def test_an_option_whose_default_is_a_variable_names_it(option: str, variable: str) -> None:
    """`validate --help` named no variable for --local-region, though it reads one."""
    for name, parser in PARSERS.items():
        if name == "reconcile serve":  # its defaults come from the settings, said there
            continue
        for action in parser._actions:
            if option in action.option_strings:
                assert f"${variable}" in str(action.help), f"{name} {option}: {action.help!r}"


def _usage_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """argparse exits from inside `main`: the exit code and what it printed."""
    with pytest.raises(SystemExit) as exited:
        run_cli(*args)
    assert exited.value.code == 1, "usage errors exit 1 (2 means changes)"
    return capsys.readouterr().err


def test_lock_timeout_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECONCILER_LOCK_TIMEOUT", "soon")
    err = _usage_error(capsys, "revisions")
    assert "--lock-timeout: not a number of seconds: 'soon'" in err

    monkeypatch.setenv("RECONCILER_LOCK_TIMEOUT", "0.25")
    assert build_parser().parse_args(["revisions"]).lock_timeout == 0.25
    assert build_parser().parse_args(["revisions", "--lock-timeout", "3"]).lock_timeout == 3


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (("validate", "--bogus"), "reconcile validate"),
        (("plan", "--repo", ".", "--bogus"), "reconcile plan"),
        (("results", "archive", "--bogus"), "reconcile results archive"),
        (("results", "--bogus", "archive"), "reconcile results"),
        (("--bogus", "validate"), "reconcile"),
    ],
)
def test_an_unknown_option_is_the_usage_error_of_the_command_it_was_given_to(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], command: str
) -> None:
    """Its usage lists the options the command does take; `reconcile`'s lists none."""
    err = _usage_error(capsys, *args)
    assert err.startswith(f"usage: {command} [-h]"), err
    assert f"\n{command}: error: unrecognized arguments: --bogus\n" in err


def test_a_negative_lock_timeout_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "must be 0 or more, got -1" in _usage_error(capsys, "plan", "--lock-timeout", "-1")


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--workers", "0", "argument --workers: must be 1 or more, got 0"),
        ("--workers", "two", "argument --workers: not a whole number: 'two'"),
        ("--agent-silent-after", "-5", "argument --agent-silent-after: must be 0 or more, got -5"),
    ],
)
def test_site_build_options_out_of_range_are_usage_errors(
    capsys: pytest.CaptureFixture[str], option: str, value: str, said: str
) -> None:
    assert said in _usage_error(capsys, "site", "build", "--out", "site", option, value)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("demo", "--port", "-5"), "argument --port: not a TCP port (0-65535), got -5"),
        (("demo", "--gateway-port", "99999"), "argument --gateway-port: not a TCP port"),
        (("serve", "--port", "70000"), "argument --port: not a TCP port (0-65535), got 70000"),
        (("serve", "--port", "http"), "argument --port: not a port number: 'http'"),
    ],
)
def test_a_port_out_of_range_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], said: str
) -> None:
    """Not a traceback from `bind`, nor a server on another port than the one asked for."""
    assert said in _usage_error(capsys, *args)


@pytest.mark.parametrize("command", ["validate", "plan", "apply", "serve"])
def test_a_local_region_that_is_not_a_region_name_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Not derived canaries written with region '' or 'Bad Name!'. Parsed only: a `serve`
    that took the name would serve rather than end."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--local-region", "Bad Name!"])
    assert exited.value.code == 1
    said = capsys.readouterr().err
    assert "argument --local-region: 'Bad Name!' is not a valid name: use lowercase" in said


def test_serve_refuses_a_local_region_from_the_environment_that_is_not_a_name() -> None:
    environ = {"RECONCILER_LOCAL_REGION": "EU West"}
    with pytest.raises(SettingsError, match="RECONCILER_LOCAL_REGION: 'EU West' is not a valid"):
        load_settings({}, environ)


def test_every_command_that_reads_a_state_takes_quiet() -> None:
    """The README calls -q a common option: scripts pass it to each command alike."""
    for command in (["revisions"], ["plan"], ["apply"], ["state", "backup", "--out", "x"]):
        assert build_parser().parse_args([*command, "-q"]).quiet is True


def test_a_revisions_limit_below_1_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a traceback from the database refusing a negative LIMIT."""
    err = _usage_error(capsys, "revisions", "--limit", "-1")
    assert "argument --limit: must be 1 or more, got -1" in err and "Traceback" not in err


def test_commands_that_ask_the_server_say_when_it_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.duckdb"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the server file is stale
    info = tmp_path / "state.duckdb.serve.json"
    info.write_bytes(orjson.dumps({"url": dead}))
    monkeypatch.setenv("RECONCILER_ADMIN_TOKEN", "admin")
    # A server file left by a server that died (kill -9) is ignored, with a note: the
    # commands act as when no server runs.
    status = run_cli("canary", "status", "--state", state)
    assert status.code == 1 and "no state file" in status.err
    pause = run_cli("canary", "pause", "checkout", "--state", state)
    assert pause.code == 1 and "go through the running `reconcile serve`" in pause.err
    noted = capsys.readouterr().err
    assert noted.count(f"note: ignoring {info}: the server it names is not running") == 2
    # A server named explicitly is asked, and its silence reported.
    for args in (["canary", "status"], ["canary", "pause", "checkout"]):
        result = run_cli(*args, "--state", state, "--server", dead)
        assert result.code == 1
        assert f"Error: cannot reach the server at {dead}" in result.err, args
    token = run_cli("agents", "token", "eu-1", "--state", state, "--server", dead)
    assert token.code == 1 and f"cannot reach the server at {dead}" in token.err
    assert token.out == ""


class _NotTheServer(http.server.BaseHTTPRequestHandler):
    """Another service on the port: an HTML error page for everything."""

    def _page(self) -> None:
        page = b"<!DOCTYPE html><html><body><h1>404</h1><p>No such page</p></body></html>"
        httpd.reply(self, 404, page, "text/html")

    do_GET = do_POST = _page  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_url_that_is_not_the_servers_is_said_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The whole HTML page was printed, a dozen lines of markup.
    monkeypatch.setenv("RECONCILER_ADMIN_TOKEN", "admin")
    with httpd.serving(_NotTheServer) as other:
        url = httpd.url(other)
        for args in (["canary", "status"], ["agents", "token", "eu-1"]):
            result = run_cli(*args, "--state", tmp_path / "s.duckdb", "--server", url)
            assert result.code == 1
            assert result.err.strip().splitlines() == [
                f"Error: the server refused (404): 404 No such page (is {url}/ the reconcile "
                "server?)"
            ], args


def test_canary_actions_need_the_admin_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECONCILER_ADMIN_TOKEN", raising=False)
    result = run_cli("canary", "promote", "checkout", "--state", tmp_path / "s.duckdb")
    assert result.code == 1
    assert "go through the running `reconcile serve`" in result.err
    assert "pass --server URL" in result.err
    assert not (tmp_path / "s.duckdb").exists()


def test_the_demo_finds_the_sample_repo_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert build_parser().parse_args(["demo"]).repo == SAMPLE_REPO


def test_a_plan_that_cannot_be_saved_is_an_error_naming_the_file(tmp_path: Path) -> None:
    """Not a FileNotFoundError traceback after the plan was printed."""
    out = tmp_path / "missing" / "plan.json"
    state = tmp_path / "state.duckdb"
    result = run_cli("plan", "--repo", SAMPLE_REPO, "--state", state, "--out", out)
    assert result.code == 1
    assert result.err.strip().endswith(
        f"Error: cannot save the plan to {out}: No such file or directory ({out})"
    )
    assert "Traceback" not in result.err and not out.exists()


def test_a_damaged_state_file_is_said_so_with_what_to_do_and_left_as_it_is(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.duckdb"
    data = _damaged_state(state)
    for command in (("plan",), ("apply", "--auto-approve")):
        result = run_cli(*command, "--repo", SAMPLE_REPO, "--state", state)
        assert result.code == 1, result.err
        assert f"state file {state} is damaged: Corrupt database file" in result.err
        assert "move it aside and run `reconcile apply` to start a new one" in result.err
        assert "Traceback" not in result.err
        assert state.read_bytes() == data


def test_serve_does_not_start_on_a_damaged_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    data = _damaged_state(state)
    damaged = f"state file {state} is damaged: Corrupt database file"
    with pytest.raises(StateError, match=damaged), running_in_process(SAMPLE_REPO, state):
        pass
    assert state.read_bytes() == data


def _damaged_state(state: Path) -> bytes:
    """An applied state file with a block DuckDB finds damaged; its bytes."""
    assert run_cli("apply", "--repo", SAMPLE_REPO, "--state", state, "--auto-approve").code == 0
    data = bytearray(state.read_bytes())
    first_block = 3 * 4096  # after DuckDB's three headers
    damaged = slice(first_block + 200, first_block + 208)
    data[damaged] = bytes(byte ^ 0xFF for byte in data[damaged])
    state.write_bytes(data)
    return bytes(data)


def test_a_state_file_cut_short_is_an_error_and_left_as_it_is(tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    assert run_cli("apply", "--repo", SAMPLE_REPO, "--state", state, "--auto-approve").code == 0
    data = state.read_bytes()[:300_000]  # a copy interrupted halfway
    state.write_bytes(data)
    for command in (
        ("plan", "--repo", SAMPLE_REPO),
        ("apply", "--repo", SAMPLE_REPO, "--auto-approve"),
        ("revisions",),
    ):
        result = run_cli(*command, "--state", state)
        assert result.code == 1, result.err
        assert "Error: " in result.err and "Could not read enough bytes" in result.err
        assert str(state) in result.err and "Traceback" not in result.err
        assert state.read_bytes() == data


def test_apply_never_writes_into_another_programs_duckdb_file(tmp_path: Path) -> None:
    theirs = tmp_path / "analytics.duckdb"
    with duckdb.connect(str(theirs)) as connection:
        connection.execute("CREATE TABLE visits (day DATE, n INTEGER)")
    for command in (("plan",), ("apply", "--auto-approve")):
        result = run_cli(*command, "--repo", SAMPLE_REPO, "--state", theirs)
        assert result.code == 1, result.out
        assert (
            f"{theirs} is not a canary-reconciler state file (it holds other tables: visits)"
        ) in result.err
    with duckdb.connect(str(theirs), read_only=True) as connection:
        assert connection.execute("SHOW TABLES").fetchall() == [("visits",)]


def test_a_state_path_that_is_not_a_file_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "state.duckdb"
    os.mkfifo(fifo)  # opened, it would block until something wrote into it
    for command in (("plan",), ("apply", "--auto-approve")):
        result = run_cli(*command, "--repo", SAMPLE_REPO, "--state", fifo, "--lock-timeout", "1")
        assert result.code == 1
        assert f"Error: {fifo} is not a regular file: a state file is a DuckDB file" in result.err


def test_plan_refuses_a_state_file_of_a_newer_schema_as_apply_does(tmp_path: Path) -> None:
    state = tmp_path / "state.duckdb"
    assert run_cli("apply", "--repo", SAMPLE_REPO, "--state", state, "--auto-approve").code == 0
    with duckdb.connect(str(state)) as connection:
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    for command in (("plan",), ("apply", "--auto-approve")):
        result = run_cli(*command, "--repo", SAMPLE_REPO, "--state", state)
        assert result.code == 1
        assert "the state file has schema version 99, newer than this reconciler" in result.err


def test_a_state_path_whose_directory_cannot_be_made_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a directory")
    state = tmp_path / "taken" / "state.duckdb"
    result = run_cli("apply", "--repo", SAMPLE_REPO, "--state", state, "--auto-approve")
    assert result.code == 1 and "Traceback" not in result.err
    assert (
        f"Error: cannot create state file {state}: its directory {state.parent} cannot be made "
        "(a file is in the way)"
    ) in result.err


def test_validate_counts_the_documents_it_loaded() -> None:
    """The progress line left out Maintenance, Receiver and AlertRouting documents: it said
    "loaded 25 documents", and the summary under it "valid (32 documents"."""
    result = run_cli("validate", "--repo", SAMPLE_REPO)
    assert result.code == 0, result.err
    loaded = re.search(r"loaded (\d+) documents", result.err)
    valid = re.search(r"valid \((\d+) documents", result.out)
    assert loaded and valid and loaded.group(1) == valid.group(1) == "32"


def test_offline_canary_status_lists_the_runs_still_driven_with_their_weights(
    tmp_path: Path,
) -> None:
    """Read from the state file alone: a pending run shows the route's configured weights
    (it has not moved them); a run left behind by a deleted route or a removed canary block
    is no longer driven, and is not listed, as a running server does not list it."""
    repo = tmp_path / "config"
    shutil.copytree(SAMPLE_REPO, repo)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]

    def commit(message: str) -> None:
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", message], check=True)

    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    commit("sample")
    state = tmp_path / "state.duckdb"

    def apply_and_status() -> str:
        applied = run_cli("apply", "--repo", repo, "--state", state, "--auto-approve", "-q")
        assert applied.code == 0, applied.err
        status = run_cli("canary", "status", "--state", state)
        assert status.code == 0, status.err
        return status.out

    shown = apply_and_status()
    assert "api: pending (run api#1), not started (4 steps), weights stable 95%, canary 5%" in shown
    assert "checkout: pending (run checkout#1), not started (4 steps), weights stable 60%, " in (
        shown
    )

    checkout = repo / "routes" / "checkout.yaml"
    text = checkout.read_text()
    checkout.write_text(text[: text.index("  canary:\n")])
    commit("checkout without a canary")
    shown = apply_and_status()
    assert "api: pending" in shown and "checkout" not in shown

    (repo / "gateway" / "routes.yaml").unlink()
    commit("api deleted")
    assert apply_and_status().strip() == "no canary runs"
