"""The variables a check's CEL `test` and `display` expressions see, as canary-checker gives
them: the http check's response (`code`, `headers` under Go's canonical names, `content`,
`json`, `elapsed`, `sslAge`), and every check's `check` and `canary`. Each is built only when
the expression reads it (`cel.free_variables`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import timedelta
from typing import Any

from celpy import celtypes
from celpy.adapter import json_to_cel

from agent.expressions.cel import CelError

HTTP_VARIABLES = frozenset(
    {"code", "headers", "content", "json", "elapsed", "sslAge", "check", "canary"}
)
TCP_VARIABLES = frozenset({"elapsed", "check", "canary"})
ICMP_VARIABLES = frozenset(
    {"elapsed", "packetsSent", "packetsReceived", "packetLoss", "rtt", "check", "canary"}
)
GRPC_VARIABLES = frozenset({"status", "code", "elapsed", "check", "canary"})


class HeaderMap(celtypes.MapType):
    """Response headers under Go's canonical names (`Location`, `Content-Type`), as
    canary-checker's Go client holds them; lookups ignore case."""

    def __init__(self, headers: Iterable[tuple[str, str]]) -> None:
        joined: dict[str, str] = {}
        for name, value in headers:
            key = canonical_header(name)
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        super().__init__(
            {celtypes.StringType(k): celtypes.StringType(v) for k, v in joined.items()}
        )

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            key = celtypes.StringType(canonical_header(key))
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            key = celtypes.StringType(canonical_header(key))
        return super().__contains__(key)


def canonical_header(name: str) -> str:
    """Go's canonical form of a header name: `content-type` -> `Content-Type`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _without_credentials(url: str) -> str:
    """A URL without `user:password@`, as canary-checker reports endpoints."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def check_context(
    check: Mapping[str, Any], wanted: Collection[str] | None = None
) -> dict[str, Any]:
    """The `check` and `canary` variables of a served check (only those in `wanted`, when
    given)."""
    context: dict[str, Any] = {}
    if wanted is None or "check" in wanted:
        endpoint = check.get("url") or check.get("endpoint") or ""
        context["check"] = json_to_cel(
            {
                "name": check.get("name", ""),
                "description": check.get("description", ""),
                "labels": check.get("labels") or {},
                "endpoint": _without_credentials(endpoint),
            }
        )
    if wanted is None or "canary" in wanted:
        canary = check.get("canary") if isinstance(check.get("canary"), Mapping) else {}
        context["canary"] = json_to_cel(
            {"name": "", "namespace": "", "labels": {}, **(canary or {})}
        )
    return context


_INT64 = range(-(2**63), 2**63)


def _json_cel(document: Any) -> Any:
    if isinstance(document, bool):
        return celtypes.BoolType(document)
    if isinstance(document, int):
        if document in _INT64:
            return celtypes.IntType(document)
        return celtypes.DoubleType(float(document))
    if isinstance(document, float):
        return celtypes.DoubleType(document)
    if isinstance(document, str):
        return celtypes.StringType(document)
    if document is None:
        return None
    if isinstance(document, list):
        return celtypes.ListType([_json_cel(item) for item in document])
    if isinstance(document, dict):
        return celtypes.MapType({celtypes.StringType(k): _json_cel(v) for k, v in document.items()})
    raise TypeError(f"{type(document).__name__} is not a JSON value")


def json_value(document: Any) -> Any:
    """A parsed JSON body as CEL values.

    canary-checker reads a body with Go's encoding/json, where every number is a float64:
    an integer beyond CEL's 64 bits becomes a double here rather than failing the run.

    Raises:
        CelError: the body cannot be given to CEL (nested too deeply, a number too large
            even for a double).
    """
    try:
        return _json_cel(document)
    except RecursionError:
        raise CelError("CEL cannot read the JSON body: it is nested too deeply") from None
    except OverflowError:
        raise CelError(
            "CEL cannot read the JSON body: it holds an integer too large for a double"
        ) from None
    except (TypeError, ValueError) as error:
        raise CelError(f"CEL cannot read the JSON body: {error}") from error


def http_context(
    code: int,
    headers: Iterable[tuple[str, str]],
    content: str,
    body: Any,
    elapsed: timedelta,
    ssl_age: timedelta | None = None,
    wanted: Collection[str] | None = None,
) -> dict[str, Any]:
    """The variables a test or display expression of an HTTP check sees.

    Args:
        code: The HTTP status code.
        headers: Header names as sent and their values; repeated names are joined.
        content: The body as text.
        body: The parsed JSON body, or None when the body is not JSON (then `json` is {}).
            It is converted only when `json` is wanted.
        elapsed: How long the request took.
        ssl_age: Time left until the certificate expires (zero without TLS).
        wanted: Build only these variables (`free_variables` of the expression); all when
            None.

    Returns:
        The CEL activation: `code`, `headers`, `content`, `json`, `elapsed`, `sslAge`.

    Raises:
        CelError: `json` is wanted and the body cannot be given to CEL (`json_value`).
    """
    builders: dict[str, Callable[[], Any]] = {
        "code": lambda: celtypes.IntType(code),
        "headers": lambda: HeaderMap(headers),
        "content": lambda: celtypes.StringType(content),
        "json": lambda: json_value({} if body is None else body),
        "elapsed": lambda: celtypes.DurationType(elapsed),
        "sslAge": lambda: celtypes.DurationType(ssl_age or timedelta(0)),
    }
    return {name: build() for name, build in builders.items() if wanted is None or name in wanted}


def tcp_context(elapsed: timedelta) -> dict[str, Any]:
    """The variables of a tcp check's expressions: how long the connect took."""
    return {"elapsed": celtypes.DurationType(elapsed)}


# The round-trip figures an icmp check gives (`rtt.min`, ...), each a duration.
RTT_KEYS = ("min", "avg", "max")


def icmp_context(phases: Mapping[str, Any], elapsed_ms: float) -> dict[str, Any]:
    """The variables of an icmp check's expressions, from its phases: round trips as
    durations, loss in percent."""
    rtt = {
        key: celtypes.DurationType(timedelta(milliseconds=phases.get(f"rtt_{key}_ms", 0.0)))
        for key in RTT_KEYS
    }
    return {
        "elapsed": celtypes.DurationType(timedelta(milliseconds=elapsed_ms)),
        "packetsSent": celtypes.IntType(phases["packets_sent"]),
        "packetsReceived": celtypes.IntType(phases["packets_received"]),
        "packetLoss": celtypes.DoubleType(phases["packet_loss_percent"]),
        "rtt": celtypes.MapType({celtypes.StringType(k): v for k, v in rtt.items()}),
    }


def grpc_context(serving: str, elapsed_ms: float) -> dict[str, Any]:
    """The variables of a grpc check's expressions: the serving status's name, the gRPC
    code of the health call (0: it answered) and how long it took."""
    return {
        "status": celtypes.StringType(serving),
        "code": celtypes.IntType(0),
        "elapsed": celtypes.DurationType(timedelta(milliseconds=elapsed_ms)),
    }
