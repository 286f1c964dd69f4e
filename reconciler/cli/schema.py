"""`reconcile schema`: the JSON Schema of each document kind, for editors and other tools."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from reconciler.cli import options
from reconciler.cli.console import Console
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, Subcommands

NAME = "schema"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def register(commands: Subcommands) -> None:
    """Add `schema` to the CLI."""
    parser = commands.add_parser(
        NAME,
        help="write the JSON Schema of every kind",
        description="Write one JSON Schema per document kind, for editors and other tools "
        "(yaml-language-server). They are the files committed under schemas/jsonschema/.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory to write <kind>.json into (created if needed)",
    )


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each kind, by file stem."""
    from schemas.kinds import JSON_SCHEMA_MODELS  # pydantic models: only when asked for

    schemas: dict[str, dict[str, Any]] = {}
    for stem, model in JSON_SCHEMA_MODELS.items():
        schema = model.model_json_schema(by_alias=True, mode="validation")
        properties = schema.get("properties", {})
        # The models default apiVersion and kind for building documents in code; in a file
        # they are required, and the loader requires them.
        envelope = [name for name in ("apiVersion", "kind") if name in properties]
        if envelope:
            schema["required"] = envelope + [
                r for r in schema.get("required", []) if r not in envelope
            ]
        schemas[stem] = {"$schema": DIALECT, **schema}
    return schemas


def render_schema(schema: dict[str, Any]) -> bytes:
    """A schema as the bytes committed under schemas/jsonschema/."""
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_json_schemas(directory: Path) -> list[Path]:
    """Write `<kind>.json` for every kind into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, schema in json_schemas().items():
        path = directory / f"{stem}.json"
        path.write_bytes(render_schema(schema))
        written.append(path)
    return written


def run(args: argparse.Namespace, console: Console) -> int:
    """Write the schemas and print their paths."""
    try:
        written = write_json_schemas(args.out)
    except OSError as error:
        console.error(f"cannot write the schemas to {args.out}: {options.os_problem(error)}")
        return EXIT_ERROR
    for path in written:
        console.say(str(path))
    return EXIT_OK
