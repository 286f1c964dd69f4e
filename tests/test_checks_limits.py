"""Hostile targets on 127.0.0.1: endless headers, huge header lines, endless bodies, a
compressed bomb, endless redirect and token bodies. Each check must fail promptly with a
message naming the limit, and the agent's memory must stay bounded."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvloop

from agent.checks import CheckOutcome, ClientPool, run_check
from agent.checks.limits import ResponseLimits
from agent.settings import SettingsError, load_settings

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Run = Callable[[Coroutine[Any, Any, Any]], Any]
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
TIMEOUT_MS = 10_000
# A check that stops at its limit is over in milliseconds; one that reads on until its
# timeout (today's endless-headers bug) takes the whole 10 s.
PROMPT_MS = 5_000
MEMORY_BOUND = 64 * 1024 * 1024  # growth of the peak RSS allowed while a hostile check runs
LINE = b"X-Filler: " + b"a" * 60 + b"\r\n"


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Run:
    """Run a coroutine on asyncio's loop and on uvloop (which the agent uses)."""

    def run_on_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(coroutine)

    return run_on_loop


def http(url: str, **fields: Any) -> dict[str, Any]:
    return {"name": "web", "type": "http", "timeout_ms": TIMEOUT_MS, "url": url, **fields}


async def request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def endless(writer: asyncio.StreamWriter, piece: bytes) -> None:
    """Write `piece` until the client goes away."""
    block = piece * max(1, 65536 // len(piece))
    try:
        while True:
            writer.write(block)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def run_one(
    run: Run, handler: Handler, limits: ResponseLimits | None = None, **fields: Any
) -> CheckOutcome:
    async def main() -> CheckOutcome:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server, ClientPool(size=1, trust_env=False, limits=limits) as pool:
            check = json.loads(json.dumps({**http("BASE/"), **fields}).replace("BASE", url))
            return await run_check(check, pool, now)

    outcome: CheckOutcome = run(main())
    return outcome


def now() -> datetime:
    return NOW


def peak_rss_growth(work: Callable[[], CheckOutcome]) -> tuple[CheckOutcome, int]:
    """Run `work` and return its outcome and how far it raised this process's peak RSS.

    Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS (Linux).
    """
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmHWM")
    outcome = work()
    return outcome, (_status_kib("VmHWM") - before) * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def assert_refused(outcome: CheckOutcome, message: str) -> None:
    assert outcome.status == "error", outcome
    assert outcome.message == f"ResponseTooLarge: {message}"
    assert outcome.duration_ms < PROMPT_MS, outcome.duration_ms


def test_endless_header_lines_stop_at_the_header_bytes_limit(run: Run) -> None:
    async def spam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        await endless(writer, LINE)

    outcome, growth = peak_rss_growth(lambda: run_one(run, spam))
    assert_refused(
        outcome,
        "the response headers are larger than 65536 bytes (limit: --max-response-header-bytes)",
    )
    assert growth < MEMORY_BOUND, f"the peak RSS grew by {growth / 2**20:.0f} MiB"


def test_one_endless_header_line_stops_at_the_line_limit(run: Run) -> None:
    async def one_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
        await endless(writer, b"b")

    outcome, growth = peak_rss_growth(lambda: run_one(run, one_line))
    assert_refused(
        outcome,
        "a response header line is longer than 16384 bytes (limit: --max-response-header-line)",
    )
    assert growth < MEMORY_BOUND, f"the peak RSS grew by {growth / 2**20:.0f} MiB"


def test_more_header_fields_than_the_limit_fail(run: Run) -> None:
    async def many(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-N: 1\r\n" * 101 + b"Content-Length: 0\r\n\r\n")
        writer.close()

    assert_refused(
        run_one(run, many),
        "the response has more than 100 header fields (limit: --max-response-headers)",
    )


def test_the_limits_are_the_pools_to_set(run: Run) -> None:
    async def four(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-N: 1\r\n" * 3 + b"Content-Length: 2\r\n\r\nok")
        writer.close()

    limits = ResponseLimits(max_headers=3, max_body_bytes=1)
    outcome = run_one(run, four, limits)
    assert outcome.message == (
        "ResponseTooLarge: the response has more than 3 header fields "
        "(limit: --max-response-headers)"
    )
    outcome = run_one(run, four, ResponseLimits(max_body_bytes=1))
    assert outcome.message == (
        "ResponseTooLarge: the response body is larger than 1 bytes "
        "(limit: --max-response-body-bytes)"
    )


def test_a_full_head_and_body_in_one_write_pass(run: Run) -> None:
    """Counting the head stops at its blank line: body bytes in the same read are not head."""
    body = (b"line of body text " * 80 + b"\n") * 700  # ~1 MiB, lines longer than headers'

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        head = b"HTTP/1.1 200 OK\r\n" + LINE * 90 + b"Content-Length: %d\r\n\r\n" % len(body)
        writer.write(head + body)
        await writer.drain()
        writer.close()

    outcome = run_one(run, big, test=f"size(content) == {len(body)}")
    assert outcome.status == "pass", outcome.message


def test_an_endless_body_stops_at_the_body_limit(run: Run) -> None:
    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        await endless(writer, b"x")

    outcome, growth = peak_rss_growth(lambda: run_one(run, stream))
    assert_refused(
        outcome,
        "the response body is larger than 4194304 bytes (limit: --max-response-body-bytes)",
    )
    assert growth < MEMORY_BOUND, f"the peak RSS grew by {growth / 2**20:.0f} MiB"


def test_a_compressed_bomb_counts_its_decoded_bytes(run: Run) -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 KiB on the wire

    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
            + bomb
        )
        await writer.drain()
        writer.close()

    outcome, growth = peak_rss_growth(lambda: run_one(run, gzipped))
    assert_refused(
        outcome,
        "the response body is larger than 4194304 bytes (limit: --max-response-body-bytes)",
    )
    assert growth < MEMORY_BOUND, f"the peak RSS grew by {growth / 2**20:.0f} MiB"


def test_a_redirects_endless_body_is_not_read(run: Run) -> None:
    async def redirect_then_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await request_head(reader)
        if head.startswith(b"GET /final "):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
            writer.close()
            return
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: /final\r\n\r\n")
        await endless(writer, b"r")

    outcome = run_one(run, redirect_then_ok, test="content == 'done'", maxRedirects=3)
    assert outcome.status == "pass", outcome.message
    assert outcome.duration_ms < PROMPT_MS


def test_an_endless_digest_challenge_body_stops_at_the_body_limit(run: Run) -> None:
    async def challenge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        writer.write(
            b"HTTP/1.1 401 Unauthorized\r\n"
            b'WWW-Authenticate: Digest realm="r", nonce="n", qop="auth"\r\n\r\n'
        )
        await endless(writer, b"c")

    outcome, growth = peak_rss_growth(
        lambda: run_one(run, challenge, username="u", password="p", digest=True)
    )
    assert_refused(
        outcome,
        "the response body is larger than 4194304 bytes (limit: --max-response-body-bytes)",
    )
    assert growth < MEMORY_BOUND, f"the peak RSS grew by {growth / 2**20:.0f} MiB"


def test_an_endless_oauth_token_answer_stops_at_the_body_limit(run: Run) -> None:
    async def token_endpoint(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await request_head(reader)
        if head.startswith(b"POST /token "):
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a": "')
            await endless(writer, b"t")
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        writer.close()

    outcome = run_one(
        run,
        token_endpoint,
        url="BASE/api",
        username="id",
        password="secret",
        oauth2={"tokenURL": "BASE/token"},
    )
    assert_refused(
        outcome,
        "the response body is larger than 4194304 bytes (limit: --max-response-body-bytes)",
    )


def test_a_token_answer_within_the_limits_still_works(run: Run) -> None:
    async def token_endpoint(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await request_head(reader)
        if head.startswith(b"POST /token "):
            body = json.dumps({"access_token": "t-1"}).encode()
        else:
            body = b"bearer t-1" if b"Authorization: Bearer t-1" in head else b"no token"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        writer.close()

    outcome = run_one(
        run,
        token_endpoint,
        url="BASE/api",
        username="id",
        password="secret",
        oauth2={"tokenURL": "BASE/token"},
        test="content == 'bearer t-1'",
    )
    assert outcome.status == "pass", outcome.message


def test_the_limits_come_from_flags_and_environment() -> None:
    environ = {"AGENT_TOKEN": "t", "AGENT_MAX_RESPONSE_HEADERS": "7"}
    settings = load_settings({"url": "http://x", "max_response_body_bytes": 1000}, environ)
    assert settings.response_limits == ResponseLimits(max_headers=7, max_body_bytes=1000)
    with pytest.raises(SettingsError, match="--max-response-header-line: must be greater than 0"):
        load_settings({"url": "http://x", "max_response_header_line": 0}, environ)
    # A bad value names where it was read (it said "max_response_headers: ... valid int").
    environ["AGENT_MAX_RESPONSE_HEADERS"] = "many"
    with pytest.raises(SettingsError) as refused:
        load_settings({"url": "http://x"}, environ)
    assert str(refused.value) == "AGENT_MAX_RESPONSE_HEADERS: 'many' is not a whole number"


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        # Port 70000 would have been taken modulo 65536.
        ({"listen": "127.0.0.1:70000"}, "--listen '127.0.0.1:70000': expected HOST:PORT with a"),
        ({"url": "ftp://x"}, "control plane URL 'ftp://x': expected http:// or https://"),
        ({"url": "reconciler.internal:8080"}, "expected http:// or https://"),
    ],
)
def test_a_listen_port_or_url_the_agent_cannot_use_stops_it_at_start(
    flags: dict[str, str], said: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({"url": "http://x", **flags}, {"AGENT_TOKEN": "t"})
    assert said in str(refused.value)
    edges = load_settings({"url": "HTTPS://x", "listen": "[::1]:65535"}, {"AGENT_TOKEN": "t"})
    assert edges.listen == ("::1", 65_535)


def _deflated(data: bytes, wbits: int) -> bytes:
    deflater = zlib.compressobj(wbits=wbits)
    return deflater.compress(data) + deflater.flush()


TEXT = bytes(range(256)) * 64  # 16 KiB that does not compress to a few bytes
CODINGS = {
    "gzip": gzip.compress(TEXT),
    "deflate": _deflated(TEXT, zlib.MAX_WBITS),
    "raw deflate": _deflated(TEXT, -zlib.MAX_WBITS),
}


def encoded(coding: str, body: bytes, method_head: bool = False) -> Handler:
    """A server answering `body` with `Content-Encoding`, its Content-Length the body's."""
    name = b"gzip" if coding == "gzip" else b"deflate"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_head(reader)
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
        writer.write(head % (name, len(body)) + (b"" if method_head else body))
        await writer.drain()
        writer.close()

    return handle


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_a_compressed_body_cut_short_is_an_error(run: Run, coding: str) -> None:
    """A Content-Length covering part of the compressed stream: what came inflated fine."""
    outcome = run_one(run, encoded(coding, CODINGS[coding][: len(CODINGS[coding]) // 2]))
    assert (outcome.status, outcome.message) == (
        "error",
        "DecodingError: truncated compressed body: it ended before its gzip or deflate stream did",
    )


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_a_whole_compressed_body_is_inflated(run: Run, coding: str) -> None:
    outcome = run_one(run, encoded(coding, CODINGS[coding]), test="size(content) == 16384")
    assert outcome.status == "pass", outcome.message


def test_an_empty_compressed_answer_to_head_passes(run: Run) -> None:
    outcome = run_one(run, encoded("gzip", CODINGS["gzip"], method_head=True), method="HEAD")
    assert outcome.status == "pass", outcome.message


def test_a_deflate_body_that_is_no_deflate_at_all_is_a_decoding_error(run: Run) -> None:
    """After the zlib wrapper failed, raw deflate was tried again and again (RecursionError)."""
    outcome = run_one(run, encoded("deflate", b"\xff\xff\xff\xff not deflate"))
    assert outcome.status == "error"
    assert outcome.message is not None
    assert outcome.message.startswith("DecodingError: the body is not valid compressed data: "), (
        outcome.message
    )
