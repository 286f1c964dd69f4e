"""The operator's ad-hoc maintenance windows: open one now, close one now (pure edit rules).

Like the Region and Agent edits (`core/config_edits.py`), each is a rule over a tree of config
files; `server/operator_edits.py` validates the result, writes it and commits it. An opened
window is a one-off `kind: Maintenance` document in `maintenance/<name>.yaml`; closing one
sets its `end` to now, so the history of the window stays in git.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from reconciler.core.config_edits import ConfigTree, Edited, SchemaFor
from reconciler.core.refusal import RequestRefused
from reconciler.core.yaml_edit import apply_fields, edit_document, new_document, safe_scalar

KIND = "Maintenance"
DIRECTORY = "maintenance"


def instant(moment: datetime) -> str:
    """A time as the documents hold it: RFC 3339 in UTC, to the second."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _flow_list(values: list[str]) -> CommentedSeq:
    seq = CommentedSeq(safe_scalar(v) for v in values)
    seq.fa.set_flow_style()
    return seq


def _selector(canaries: Mapping[str, Any]) -> CommentedMap:
    """The `canaries:` mapping as written: lists and labels in flow style, one line each."""
    mapping = CommentedMap()
    for key in ("names", "namespaces"):
        if canaries.get(key):
            mapping[key] = _flow_list([str(v) for v in canaries[key]])
    if canaries.get("labels"):
        labels = CommentedMap(
            (safe_scalar(str(k)), safe_scalar(str(v))) for k, v in canaries["labels"].items()
        )
        labels.fa.set_flow_style()
        mapping["labels"] = labels
    return mapping


def open_window(
    tree: ConfigTree,
    name: str,
    fields: Mapping[str, Any],
    now: datetime,
    schema_for: SchemaFor,
) -> Edited:
    """Add a one-off window starting now (or at `start`) in `maintenance/<name>.yaml`.

    Args:
        tree: the config being edited.
        name: the window's name.
        fields: `canaries` (a selector), and optionally `regions`, `description`, `start`
            (a datetime), and `end` (a datetime) or `duration` (seconds).
        now: the server's clock.
        schema_for: the `$schema` reference of a new file.

    Raises:
        RequestRefused: 409 when a window of that name exists, 422 without an end.
    """
    found = tree.find(KIND, name)
    if found is not None:
        raise RequestRefused(409, f"maintenance window {name} already exists (in {found.path})")
    path = f"{DIRECTORY}/{name}.yaml"
    if tree.text(path) is not None:
        raise RequestRefused(409, f"{path} already exists and holds another document")
    start: datetime = fields.get("start") or now
    end: datetime | None = fields.get("end")
    if end is None and fields.get("duration") is not None:
        end = start + timedelta(seconds=float(fields["duration"]))
    if end is None:
        raise RequestRefused(
            422, "a window needs an end", errors=["end or duration: give one of them"]
        )
    spec: dict[str, Any] = {}
    if fields.get("description"):
        spec["description"] = str(fields["description"])
    text = new_document(KIND, name, spec, schema_for(path, KIND))

    def fill(document: CommentedMap) -> None:
        apply_fields(document, {"start": instant(start), "end": instant(end)})
        body = document["spec"]
        body.insert(len(body) - 2, "canaries", _selector(fields["canaries"]))
        if fields.get("regions"):
            body.insert(len(body) - 2, "regions", _flow_list([str(r) for r in fields["regions"]]))

    tree.texts[path] = edit_document(text, fill)
    regions = f" in {', '.join(fields['regions'])}" if fields.get("regions") else ""
    message = f"operator: open maintenance window {name} until {instant(end)}{regions}"
    return Edited(message, KIND, name)


def close_window(tree: ConfigTree, name: str, now: datetime) -> Edited:
    """End a one-off window now: its `end` becomes the current time.

    Raises:
        RequestRefused: 404 for an unknown window; 409 for a recurring window, one that has
            not started yet, or one already over.
    """
    ref = tree.find(KIND, name)
    if ref is None:
        raise RequestRefused(404, f"maintenance window {name} is not in the configuration")
    spec = ref.spec
    if spec.get("schedule") is not None:
        raise RequestRefused(
            409,
            f"maintenance window {name} is recurring ({spec['schedule']}): change or delete "
            f"its document in {ref.path} instead",
        )
    start, end = _read_instant(spec.get("start")), _read_instant(spec.get("end"))
    if start is not None and start > now:
        raise RequestRefused(
            409, f"maintenance window {name} has not started (it starts {instant(start)})"
        )
    if end is not None and end <= now:
        raise RequestRefused(409, f"maintenance window {name} is already over ({instant(end)})")
    # Documents hold whole seconds: the end is rounded up, so a run started this second is
    # still inside and the end stays after a start made this same second.
    closing = now.replace(microsecond=0) + timedelta(seconds=1 if now.microsecond else 0)
    if start is not None and closing <= start:
        tree.remove(ref)  # opened at this very instant: it covered nothing
        message = f"operator: close maintenance window {name} (removed: never open)"
        return Edited(message, KIND, name)
    tree.update(ref, lambda document: apply_fields(document, {"end": instant(closing)}))
    return Edited(f"operator: close maintenance window {name} at {instant(closing)}", KIND, name)


def _read_instant(value: Any) -> datetime | None:
    """A document's start or end: YAML reads it as a datetime, or as text when quoted."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
