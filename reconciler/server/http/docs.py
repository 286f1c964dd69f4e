"""What `/openapi.json` says of each operation: bodies, query parameters and error answers.

The routes read their bodies and query strings themselves (bounded, with errors that say
what was expected), so FastAPI sees neither; these helpers describe them beside each route,
so clients and API fuzzers see every body, parameter and refusal.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What went wrong."}},
    "additionalProperties": True,
}

_MEANINGS = {
    400: "The request is malformed (a query parameter, or a body that is not what is expected).",
    401: "The token is missing or wrong (`WWW-Authenticate: Bearer`).",
    403: "The agent or its region is disabled.",
    404: "Not found, or the API is off (no admin token configured).",
    408: "The body did not arrive within the body timeout (RECONCILER_BODY_TIMEOUT).",
    409: "Conflicts with the current state (see the error).",
    413: "The body is over this endpoint's size limit, or a batch has too many rows.",
    415: "The body is compressed (a Content-Encoding other than identity): send it as is.",
    422: "The body or a parameter is well formed but not acceptable (see the error).",
    503: "Not ready yet.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with its meaning and the one error shape.

    Args:
        *statuses: the statuses the route may refuse with.

    Returns:
        The OpenAPI responses object for those statuses.
    """
    return {
        status: {
            "description": _MEANINGS[status],
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for status in statuses
    }


def inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its `$defs` references replaced by the definitions themselves.

    Route documentation is merged into the operation, where `#/$defs/...` resolves nowhere.
    """
    definitions: dict[str, Any] = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic model's JSON schema, self-contained."""
    return inline(model.model_json_schema())


def json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    """`openapi_extra=` documenting a JSON request body of `schema`."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


def query(*parameters: tuple[str, dict[str, Any], str]) -> dict[str, Any]:
    """`openapi_extra=` documenting optional query parameters as (name, schema, description)."""
    return {
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
            for name, schema, text in parameters
        ]
    }


def header(name: str, description: str, required: bool = False) -> dict[str, Any]:
    """`openapi_extra=` documenting one request header."""
    return {
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": required,
                "schema": {"type": "string"},
                "description": description,
            }
        ]
    }


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    """Several `openapi_extra` pieces as one (parameters lists are joined)."""
    result: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key == "parameters":
                result.setdefault("parameters", []).extend(value)
            else:
                result[key] = value
    return result


# `GET /api/v1/notifications`: recent deliveries, newest first.
DELIVERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "receiver": {"type": "string", "description": "Receiver name (or `notify-url HOST`)."},
        "integration": {
            "type": "string",
            "enum": ["webhook", "slack", "pagerduty", "opsgenie", "email", "hook"],
        },
        "events": {"type": "array", "items": {"type": "string"}, "description": "Event types."},
        "status": {"type": "string", "enum": ["delivered", "failed", "skipped"]},
        "attempts": {"type": "integer", "minimum": 0},
        "error": {"type": ["string", "null"], "description": "Why the last attempt failed."},
        "at": {"type": "string", "format": "date-time"},
        "group": {"type": ["string", "null"], "description": "The routing group's key."},
        "reminder": {"type": "boolean", "description": "A repeat_interval reminder."},
    },
}
NOTIFICATIONS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Recent deliveries, newest first, and receivers that cannot be reached.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "routed": {"type": "boolean"},
                        "problems": {"type": "array", "items": {"type": "string"}},
                        "deliveries": {"type": "array", "items": DELIVERY_SCHEMA},
                    },
                }
            }
        },
    }
}
