"""The committed JSON Schemas match the models; `reconcile schema` writes the same files."""

from __future__ import annotations

from pathlib import Path

from reconciler.cli.schema import json_schemas, render_schema
from tests.conftest import ROOT, run_cli

COMMITTED = ROOT / "schemas" / "jsonschema"


def test_committed_schemas_match_the_models() -> None:
    generated = json_schemas()
    assert sorted(p.stem for p in COMMITTED.glob("*.json")) == sorted(generated)
    for stem, schema in generated.items():
        committed = (COMMITTED / f"{stem}.json").read_bytes()
        assert committed == render_schema(schema), (
            f"schemas/jsonschema/{stem}.json is out of date: "
            "run `reconcile schema --out schemas/jsonschema`"
        )


def test_schema_command_writes_one_file_per_kind(tmp_path: Path) -> None:
    result = run_cli("schema", "--out", tmp_path)
    assert result.code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in COMMITTED.glob("*.json")
    )


def test_schema_command_names_a_directory_it_cannot_write(tmp_path: Path) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    result = run_cli("schema", "--out", taken)
    assert result.code == 1 and "Traceback" not in result.err
    assert f"cannot write the schemas to {taken}: File exists ({taken})" in result.err
    assert taken.read_text() == "mine"


def test_schemas_are_strict_and_keep_aliases() -> None:
    canary = json_schemas()["canary"]
    http = canary["$defs"]["HttpCheck"]
    assert http["additionalProperties"] is False
    assert {"thresholdMillis", "maxResponseTime"} <= set(http["properties"])
