"""The docs cover every command, flag and YAML field; tests keep them true."""

from __future__ import annotations

import argparse
import re

import pytest
from pydantic import BaseModel

from reconciler.cli.main import build_parser
from reconciler.core.validation import _models_in
from schemas.kinds import JSON_SCHEMA_MODELS
from tests.conftest import ROOT

CLI_DOC = (ROOT / "docs" / "cli.md").read_text()
YAML_DOC = (ROOT / "docs" / "yaml-reference.md").read_text()
README = (ROOT / "README.md").read_text()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


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
