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


def test_schemas_are_strict_and_keep_aliases() -> None:
    canary = json_schemas()["canary"]
    http = canary["$defs"]["HttpCheck"]
    assert http["additionalProperties"] is False
    assert {"thresholdMillis", "maxResponseTime"} <= set(http["properties"])
