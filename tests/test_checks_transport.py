"""The probe transport against raw servers on 127.0.0.1: framing, early closes, garbage,
cancelled checks leaving nothing stuck, and the fallback to httpx's transport behind a proxy."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
import uvloop

from agent.checks import CheckOutcome, ClientPool, run_check

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Run = Callable[[Coroutine[Any, Any, Any]], Any]
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    """Run a coroutine on asyncio's loop and on uvloop (which the agent uses)."""

    def run_on_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(coroutine)

    return run_on_loop


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def answering(response: bytes, close: bool = True) -> Handler:
    """A server that reads one request head and writes `response` (then closes)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(response)
        await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()  # keep the connection open until the client closes it
            writer.close()

    return handle


def http(url: str, **fields: Any) -> dict[str, Any]:
    return {"name": "web", "type": "http", "timeout_ms": 3000, "url": url, **fields}


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=1024)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def run_one(run: Run, handler: Handler, path: str = "/", **fields: Any) -> CheckOutcome:
    async def main() -> CheckOutcome:
        server, url = await serve(handler)
        async with server, ClientPool(size=1, trust_env=False) as pool:
            return await run_check(http(url + path, **fields), pool, lambda: NOW)

    outcome: CheckOutcome = run(main())
    return outcome


def test_a_chunked_body_is_reassembled_for_the_test(run: Run) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = head + b"5\r\nhello\r\n7\r\n canary\r\n0\r\n\r\n"
    outcome = run_one(run, answering(body, close=False), test={"expr": "content == 'hello canary'"})
    assert (outcome.status, outcome.code) == ("pass", 200), outcome.message


def test_a_body_without_length_ends_when_the_server_closes(run: Run) -> None:
    outcome = run_one(
        run, answering(b"HTTP/1.1 200 OK\r\n\r\nuntil close"), test="content == 'until close'"
    )
    assert outcome.status == "pass", outcome.message


def test_head_and_204_do_not_wait_for_a_body(run: Run) -> None:
    # Content-Length on a HEAD answer describes the GET body: nothing follows, and the server
    # keeps the connection open, so waiting for 50 bytes would time out.
    head = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", close=False)
    assert run_one(run, head, method="HEAD").status == "pass"
    empty = answering(b"HTTP/1.1 204 No Content\r\n\r\n", close=False)
    assert (run_one(run, empty).status, run_one(run, empty).code) == ("pass", 204)


def test_an_interim_100_answer_is_skipped(run: Run) -> None:
    body = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    outcome = run_one(run, answering(body), responseCodes=[201])
    assert (outcome.status, outcome.code) == ("pass", 201), outcome.message


def test_a_server_closing_mid_body_is_an_error(run: Run) -> None:
    outcome = run_one(run, answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten.."))
    assert outcome.status == "error"
    assert outcome.message is not None
    assert outcome.message.startswith("RemoteProtocolError: the server closed the connection")
    assert "body" in outcome.message


def test_a_server_closing_before_answering_is_an_error(run: Run) -> None:
    outcome = run_one(run, answering(b""))
    assert outcome.status == "error"
    assert outcome.message is not None
    assert "before the response headers" in outcome.message


def test_garbage_instead_of_http_is_an_error(run: Run) -> None:
    outcome = run_one(run, answering(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    assert outcome.status == "error"
    assert outcome.message is not None
    assert outcome.message.startswith("RemoteProtocolError: malformed HTTP response")


@pytest.mark.parametrize("size", [4 * 1024 * 1024, 4 * 1024 * 1024 + 1])
def test_a_large_body_is_read_up_to_the_limit_without_stalling(run: Run, size: int) -> None:
    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for start in range(0, size, 65536):
            writer.write(b"x" * min(65536, size - start))
            await writer.drain()
        writer.close()

    outcome = run_one(run, big, test="size(content) == 4194304")
    if size == 4 * 1024 * 1024:
        assert outcome.status == "pass", outcome.message
    else:
        assert (outcome.status, outcome.message) == (
            "error",
            "ResponseTooLarge: the response body is larger than 4194304 bytes "
            "(limit: --max-response-body-bytes)",
        )


def test_the_request_line_headers_and_body_reach_the_server(run: Run) -> None:
    seen: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        length = int(
            next(
                line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            ).split(b":")[1]
        )
        seen.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        writer.close()

    headers = [{"name": "X-Probe", "value": "1"}]
    outcome = run_one(run, echo, "/path?q=a%20b", method="POST", headers=headers, body="payload")
    assert outcome.status == "pass", outcome.message
    request = seen[0]
    assert request.startswith(b"POST /path?q=a%20b HTTP/1.1\r\n")
    assert b"\r\nX-Probe: 1\r\n" in request
    assert request.endswith(b"\r\n\r\npayload")


def test_cookies_set_by_a_target_are_never_sent_back(run: Run) -> None:
    heads: list[bytes] = []

    async def sets_cookies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_head(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\n")
        writer.write(b"Content-Length: 0\r\n\r\n")
        writer.close()

    async def main() -> list[CheckOutcome]:
        server, url = await serve(sets_cookies)
        async with server, ClientPool(size=1, trust_env=False) as pool:
            return [await run_check(http(url), pool, lambda: NOW) for _ in range(3)]

    assert {o.status for o in run(main())} == {"pass"}
    assert len(heads) == 3
    assert not any(b"\r\ncookie:" in head.lower() for head in heads)


def test_checks_cancelled_by_their_timeout_close_their_connections(run: Run) -> None:
    """A burst of checks that time out closes every connection it opened and does not get
    in the way of the checks that follow (pooled clients can keep such connections forever:
    encode/httpcore#1093)."""
    closed = 0
    all_closed = asyncio.Event()

    async def slow_then_fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal closed
        try:
            head = await read_head(reader)
        except asyncio.IncompleteReadError:
            head = b""  # the check gave up before its request was sent
        if b" /fast " not in head:
            await reader.read()  # never answers; returns when the client closes
            closed += 1
            if closed == 200:
                all_closed.set()
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> tuple[list[CheckOutcome], list[CheckOutcome]]:
        server, url = await serve(slow_then_fast)
        async with server, ClientPool(size=1, trust_env=False) as pool:
            slow = [{**http(f"{url}/slow"), "timeout_ms": 50} for _ in range(200)]
            timed_out = await asyncio.gather(*(run_check(c, pool, lambda: NOW) for c in slow))
            async with asyncio.timeout(10):
                await all_closed.wait()
            fast = [http(f"{url}/fast") for _ in range(100)]
            after = await asyncio.gather(*(run_check(c, pool, lambda: NOW) for c in fast))
            return timed_out, after

    timed_out, after = run(main())
    assert {(o.status, o.message) for o in timed_out} == {("error", "timed out after 50ms")}
    assert {o.status for o in after} == {"pass"}


def test_a_proxy_in_the_environment_is_used(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines.append((await read_head(reader)).split(b"\r\n")[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nproxied")
        writer.close()

    async def main(check: Mapping[str, Any]) -> tuple[bool, CheckOutcome]:
        server, url = await serve(proxy)
        monkeypatch.setenv("HTTP_PROXY", url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with server, ClientPool(size=1) as pool:
            return pool.uses_proxy, await run_check(check, pool, lambda: NOW)

    check = http("http://canary.invalid/health", test="content == 'proxied'")
    uses_proxy, outcome = run(main(check))
    assert uses_proxy
    assert outcome.status == "pass", outcome.message
    assert lines == [b"GET http://canary.invalid/health HTTP/1.1"]


# A target that sends a little at a time, well within the timeout each: a timeout restarted
# by every chunk never fires, and only the dispatcher's backstop (a second later) ended the run.
PACE = 0.2  # seconds between two pieces: the target's pace, not a wait of the test's
TIMEOUT_MS = 1000
LATE_MS = 400  # how far past its timeout a run may end


def trickling(head: bytes, piece: bytes, then: bytes | None = None, pieces: int = 10**6) -> Handler:
    """A server that writes `head`, then `piece` every PACE seconds, `pieces` times, then
    `then` (if any)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_head(reader)
        if then is not None and request.startswith(b"GET /next "):
            await reader.read()  # never answers; returns when the client closes
            writer.close()
            return
        writer.write(head)
        try:
            for _ in range(pieces):
                await writer.drain()
                await asyncio.sleep(PACE)
                writer.write(piece)
            if then is not None:
                writer.write(then)
            await writer.drain()
            await reader.read()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return handle


@pytest.mark.parametrize(
    ("head", "piece"),
    [
        (b"HTTP/1.1 200 OK\r\n", b"X-Drip: 1\r\n"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x"),
    ],
    ids=["headers", "body"],
)
def test_a_trickling_target_times_out_at_the_timeout(run: Run, head: bytes, piece: bytes) -> None:
    outcome = run_one(run, trickling(head, piece), timeout_ms=TIMEOUT_MS)
    assert outcome.status == "error"
    assert outcome.message is not None
    assert outcome.message.startswith(f"timed out after {TIMEOUT_MS}ms"), outcome.message
    assert outcome.duration_ms < TIMEOUT_MS + LATE_MS


def test_redirects_share_one_deadline(run: Run) -> None:
    """A redirect that took most of the timeout leaves its target only the rest of it."""
    slow_redirect = trickling(
        b"HTTP/1.1 302 Found\r\n",
        b"X-Drip: 1\r\n",
        then=b"Location: /next\r\nContent-Length: 0\r\n\r\n",
        pieces=4,
    )
    outcome = run_one(run, slow_redirect, timeout_ms=TIMEOUT_MS)
    assert outcome.status == "error"
    assert outcome.message is not None
    assert outcome.message.startswith(f"timed out after {TIMEOUT_MS}ms"), outcome.message
    assert outcome.duration_ms < TIMEOUT_MS + LATE_MS


def test_a_final_status_000_is_a_response(run: Run) -> None:
    """Status 0 was taken for "no final response yet": the body was never complete."""
    outcome = run_one(run, answering(b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok"))
    assert (outcome.status, outcome.code) == ("fail", 0), outcome.message
