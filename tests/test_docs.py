"""The docs cover every command, flag and YAML field; tests keep them true."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from reconciler.cli.main import build_parser
from reconciler.core.validation import _models_in
from reconciler.server.settings import ENVIRONMENT, ServeSettings
from schemas.kinds import API_VERSIONS, JSON_SCHEMA_MODELS, KINDS
from tests.conftest import ROOT, run_cli

CLI_DOC = (ROOT / "docs" / "cli.md").read_text()
YAML_DOC = (ROOT / "docs" / "yaml-reference.md").read_text()
SERVE_DOC = (ROOT / "docs" / "serve.md").read_text()
README = (ROOT / "README.md").read_text()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _commands(
    parser: argparse.ArgumentParser, name: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command and action with its parser: `plan`, `results archive`, …"""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, child in action.choices.items():
                full = f"{name} {command}".strip()
                yield full, child
                yield from _commands(child, full)


def _section(doc: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    after = doc.split(f"\n{heading}\n", 1)[1]
    return re.split(rf"\n#{{1,{len(level)}}} ", after, maxsplit=1)[0]


def _rows(doc: str) -> Iterator[list[str]]:
    """The cells of every table row in `doc`."""
    for line in doc.splitlines():
        if line.startswith("| ") and line.endswith(" |"):
            yield [cell.strip() for cell in line[2:-2].split(" | ")]


def _row(doc: str, first: str) -> list[str]:
    [row] = [cells for cells in _rows(doc) if cells[0] == first]
    return row


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_and_flag_is_documented(command: str) -> None:
    assert f"reconcile {command}" in CLI_DOC
    assert f"reconcile {command}" in README
    for action in _subcommands()[command]._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help"):
                assert flag in CLI_DOC, f"{command} {flag} is not in docs/cli.md"


def _fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(name)
        for nested in _models_in(info.annotation):
            names |= _fields(nested, seen)
    return names


@pytest.mark.parametrize("kind", sorted(JSON_SCHEMA_MODELS))
def test_every_yaml_field_is_documented(kind: str) -> None:
    for field in sorted(_fields(JSON_SCHEMA_MODELS[kind], set())):
        assert re.search(rf"`{re.escape(field)}`", YAML_DOC), f"{kind}: `{field}` undocumented"


def test_the_command_list_is_what_reconcile_help_lists() -> None:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {choice.dest: str(choice.help) for choice in action._choices_actions}
    block = CLI_DOC.split("reconcile [-h] [--version] COMMAND ...\n", 1)[1].split("```", 1)[0]
    listed = [line.split(None, 1) for line in block.splitlines() if line.strip()]
    assert [name for name, _ in listed] == list(helps), "docs/cli.md's list is not --help's"
    for name, text in listed:
        assert text.startswith(helps[name]), f"{name}: {text!r} does not say {helps[name]!r}"


# The options whose default is read from the environment, and the variable.
ENVIRONMENT_OPTIONS = {
    "--state": "RECONCILER_STATE",
    "--lock-timeout": "RECONCILER_LOCK_TIMEOUT",
    "--local-region": "RECONCILER_LOCAL_REGION",
}


@pytest.mark.parametrize("option", sorted(ENVIRONMENT_OPTIONS))
def test_the_environment_table_names_every_command_that_reads_the_variable(option: str) -> None:
    variable = ENVIRONMENT_OPTIONS[option]
    used_by = set(re.findall(r"`([^`]+)`", _row(CLI_DOC, f"`{variable}`")[1]))
    for name, parser in _commands(build_parser()):
        if any(option in action.option_strings for action in parser._actions):
            # `results` stands for its actions, `state backup` for itself.
            assert name in used_by or name.split()[0] in used_by, (
                f"{variable}: `reconcile {name}` reads it ({option}), docs/cli.md does not say so"
            )


def test_every_json_schema_and_kind_is_documented(tmp_path: Path) -> None:
    done = run_cli("schema", "--out", tmp_path)
    assert done.code == 0, done.err
    written = sorted(Path(line).name for line in done.out.splitlines())
    assert written == sorted(f"{stem}.json" for stem in JSON_SCHEMA_MODELS)
    command = _section(CLI_DOC, "## `reconcile schema`")
    editor = {cells[0] for cells in _rows(_section(YAML_DOC, "## Editor support (JSON Schema)"))}
    for name in written:
        assert f"`{name}`" in command, f"docs/cli.md: `reconcile schema` does not name {name}"
        assert f"`{name}`" in editor, f"docs/yaml-reference.md: Editor support lacks {name}"
    kinds = set(re.findall(r"`(\w+)`", _row(YAML_DOC, "`kind`")[3]))
    assert kinds == set(KINDS), "docs/yaml-reference.md: the envelope's `kind` row"
    for api_version, accepted in API_VERSIONS.items():
        listed = set(re.findall(r"`(\w+)`", _row(YAML_DOC, f"`{api_version}`")[1]))
        assert listed == set(accepted), f"docs/yaml-reference.md: kinds of {api_version}"


def _default_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.mark.parametrize("setting", sorted(ENVIRONMENT))
def test_every_serve_setting_is_documented_with_its_default(setting: str) -> None:
    """Both tables of settings (cli.md: flag, variable, default; serve.md: flag, variable,
    TOML key, default) carry every setting, with the default the server uses."""
    variable = ENVIRONMENT[setting]
    value = getattr(ServeSettings(), setting)
    for doc, where, default_cell in ((CLI_DOC, "cli.md", 2), (SERVE_DOC, "serve.md", 3)):
        rows = [cells for cells in _rows(doc) if cells[1:2] == [f"`{variable}`"]]
        assert len(rows) == 1, f"docs/{where}: {len(rows)} rows for {variable}"
        [cells] = rows
        assert cells[0].startswith(f"`--{setting.replace('_', '-')}"), cells
        if where == "serve.md":
            assert cells[2] == f"`{setting}`", cells
        if value is not None:
            text = _default_text(value)
            assert cells[default_cell] in (f"`{text}`", f"`{text}d`"), (
                f"docs/{where}: {variable} default {cells[default_cell]}, the server's is {text}"
            )
