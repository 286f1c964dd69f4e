"""How much the agent reads of the control plane's answers: bounded bodies, read as they come.

`--url` may name something other than the control plane: another server, a proxy's page, a
captive portal. Its answers are no more trusted than a check's target's
(`agent/checks/limits.py`): a body is streamed and counted while it arrives, and an answer
larger than its limit is refused at the first byte past it, so an endless body costs the
agent its limit in memory, not the whole body. A refused answer is a failed pull or ship
like any other: the last config keeps running, the rows stay spooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import httpx

from agent.checks.limits import ResponseLimits, ResponseTooLarge, read_body

# A pulled config (`200` to `GET /api/agent/targets`). A canary's config is about 1 KB (a
# few checks, headers and expressions); the server caps one config file at 4 MiB, so this
# fits 16 of those at their largest, or tens of thousands of canaries for one agent.
MAX_CONFIG_BYTES: Final = 64 * 1024 * 1024
# Every other answer: a receipt for shipped rows (`{"accepted": N, "duplicates": N,
# "dropped": {...}}`, under 200 bytes), a screenshot's receipt, an error (`{"error": ...}`,
# of which the agent logs 200 characters), a proxy's error page.
MAX_ANSWER_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """An answer of the control plane, its body read whole (within its limit)."""

    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")


class AnswerTooLarge(Exception):
    """An answer's body is larger than the agent reads of it; it was not read further."""

    def __init__(self, limit: int, url: httpx.URL) -> None:
        """Name the limit and where the answer came from (the URL without its query)."""
        super().__init__(f"response larger than {limit} bytes from {url}: refused")
        self.limit = limit


async def exchange(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    ok_limit: int = MAX_ANSWER_BYTES,
    **options: Any,
) -> Answer:
    """Send a request and read its answer within a limit; the connection is let go after.

    Args:
        client: The API client.
        method: The HTTP method.
        url: The path, under the client's base URL.
        ok_limit: The most bytes of a `200` answer's body; other answers get
            `MAX_ANSWER_BYTES`.
        **options: What `httpx.AsyncClient.build_request` takes (headers, params, content,
            timeout).

    Raises:
        AnswerTooLarge: the body (declared, on the wire or decoded) is larger than its limit.
        httpx.HTTPError: the request or the answer failed on the way.
    """
    request = client.build_request(method, url, **options)
    response = await client.send(request, stream=True)
    try:
        limit = ok_limit if response.status_code == 200 else MAX_ANSWER_BYTES
        body = await _read_within(response, limit)
    finally:
        await response.aclose()  # unread bytes close the connection rather than being read
    return Answer(response.status_code, response.headers, body)


async def _read_within(response: httpx.Response, limit: int) -> bytes:
    """The body, decoded, refused at once when its `Content-Length` says it is too large,
    else at the first byte past `limit` (checks' bounded reader: gzip bombs included)."""
    where = response.request.url.copy_with(query=None)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise AnswerTooLarge(limit, where)
    try:
        return await read_body(response, ResponseLimits(max_body_bytes=limit))
    except ResponseTooLarge:
        raise AnswerTooLarge(limit, where) from None
