"""An httpx transport for probes: one fresh HTTP/1.1 connection per request, nothing pooled.

httpx's default transport (httpcore) costs about 1.4 ms of CPU per request on this kind of
load and, when a request waiting for a pooled connection is cancelled, can leave that slot
taken for good (encode/httpcore#1093), after which every HTTP check of the agent times out.
A probe wants neither a pool nor keep-alive: each check measures its own TCP connect and TLS
handshake. So this transport opens a connection with the event loop's own sockets and TLS,
parses the response with httptools (C), and closes the connection when the response is
closed. Cancellation at any point just closes the socket. About 0.1 ms per request.

The request's read timeout is a deadline for the whole exchange, not for each read as in
httpcore: connecting, the response head and the body must all be done that long after the
request started, so a target that trickles its headers or body a byte at a time cannot keep
a check running past its timeout. The deadline is kept in the request's `deadline` extension
(the event loop's clock), which httpx copies into the requests of redirects and which the
second request of digest authentication shares: a chain of them ends at the same moment.

It emits the same trace events as httpcore (`connection.connect_tcp.*`,
`connection.start_tls.*`, `http11.receive_response_headers.complete`) to the `trace`
extension, and exposes the socket as the `network_stream` extension, so callers see no
difference. It speaks plain `http` and `https` without a proxy; `ClientPool` falls back to
httpx's own transport when proxy variables are set in the environment.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import httptools
import httpx

from agent.checks.limits import ResponseLimits

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PAUSE_AT = 256 * 1024  # buffered body bytes at which reading pauses until the reader catches up
_NO_BODY_CODES = frozenset({204, 304})
DEADLINE = "deadline"  # request extension: when the whole exchange must end (loop.time())


class _Exchange(asyncio.Protocol):
    """One connection carrying one request and its response, parsed as bytes arrive."""

    def __init__(self, head_only: bool, limits: ResponseLimits) -> None:
        self.transport: asyncio.Transport | None = None
        self.head_only = head_only
        self.limits = limits
        # Bytes of the response head so far (interim answers included) and of its current,
        # unfinished line: a target that never ends its headers must not grow the agent.
        self.head_bytes = 0
        self.line_bytes = 0
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.error: httpx.TransportError | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.ssl_object: ssl.SSLObject | None = None  # kept: a closed transport forgets it
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.complete:
            return  # bytes after the response (a server that ignores our close) are ignored
        if not self.headers_done and not self._head_fits(data):
            self._wake()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as error:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {error}"))
        self._wake()

    def eof_received(self) -> bool:
        if self.headers_done and not self.complete and not self._framed():
            self.complete = True  # a body without length or chunking ends when the server closes
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete and self.error is None:
            part = "body" if self.headers_done else "headers"
            reason = f" ({exc})" if exc else ""
            self.error = httpx.RemoteProtocolError(
                f"the server closed the connection before the response {part} were complete{reason}"
            )
        self._wake()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.headers = []

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.limits.max_headers:
            self._fail(self.limits.too_many_headers())
            return
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.error is not None:
            return  # a head over a limit: the response is refused, not handed on
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.reason = b""  # an interim response: the real one follows
            return
        self.status = status
        self.headers_done = True
        if self.head_only or status in _NO_BODY_CODES:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered >= _PAUSE_AT and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def on_message_complete(self) -> None:
        if self.headers_done:  # not after an interim 1xx head (a final `000` status counts)
            self.complete = True

    def _head_fits(self, data: bytes) -> bool:
        """Count `data` against the head limits before the parser buffers it; fail if over.

        Counting stops at the blank line that ends a head: what follows in the same chunk
        may be body. (After an interim 1xx head, the next chunk is counted again.)
        """
        limits = self.limits
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                self.line_bytes += len(data) - start
                self.head_bytes += len(data) - start
                break
            length = self.line_bytes + newline - start  # the line without its "\n"
            self.head_bytes += newline + 1 - start
            self.line_bytes = 0
            if length > limits.max_header_line:
                self.line_bytes = length
                break
            if length <= 1:  # "\r\n" or "\n" alone: the head ends here
                break
            start = newline + 1
        if self.line_bytes > limits.max_header_line:
            self._fail(limits.header_line_too_long())
        elif self.head_bytes > limits.max_header_bytes:
            self._fail(limits.headers_too_large())
        return self.error is None

    # the reader's side
    def _framed(self) -> bool:
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                return True
            if lowered == b"transfer-encoding" and b"chunked" in value.lower():
                return True
        return False

    def _fail(self, error: httpx.TransportError) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, deadline: float | None) -> None:
        """Wait until more of the response arrived (or the connection ended).

        Args:
            deadline: When the whole exchange must be over (the event loop's clock), or None.

        Raises:
            httpx.ReadTimeout: the deadline passed first.
        """
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout_at(deadline):
                await self._waiter
        except TimeoutError:
            raise httpx.ReadTimeout(
                "the response was not complete within the request's timeout"
            ) from None
        finally:
            self._waiter = None

    def take(self) -> bytes | None:
        """The next buffered body chunk, or None."""
        if not self.chunks:
            return None
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.paused and self.buffered < _PAUSE_AT // 2 and self.transport is not None:
            self.transport.resume_reading()
            self.paused = False
        return chunk

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _NetworkStream:
    """What httpcore's `network_stream` extension offers that callers use: extra info."""

    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange

    def get_extra_info(self, name: str) -> Any:
        exchange = self._exchange
        if name == "ssl_object":
            return exchange.ssl_object
        transport = exchange.transport
        if transport is None or transport.is_closing():
            return None
        return transport.get_extra_info(name)


class _Body(httpx.AsyncByteStream):
    """The response body as it arrives; closing it closes the connection."""

    def __init__(self, exchange: _Exchange, deadline: float | None) -> None:
        self._exchange = exchange
        self._deadline = deadline

    async def __aiter__(self) -> AsyncIterator[bytes]:
        exchange = self._exchange
        while True:
            chunk = exchange.take()
            if chunk is not None:
                yield chunk
                continue
            if exchange.complete:
                return
            if exchange.error is not None:
                raise exchange.error
            await exchange.wait(self._deadline)

    async def aclose(self) -> None:
        self._exchange.close()


def _request_head(request: httpx.Request) -> bytes:
    target = request.url.raw_path or b"/"
    lines = [request.method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    lines.extend(name + b": " + value for name, value in request.headers.raw)
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _send_body(request: httpx.Request, transport: asyncio.Transport, chunked: bool) -> None:
    stream = request.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise httpx.UnsupportedProtocol("a synchronous request body cannot be sent here")
    async for chunk in stream:
        if not chunk:
            continue
        if chunked:
            transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            transport.write(chunk)
    if chunked:
        transport.write(b"0\r\n\r\n")


class ProbeTransport(httpx.AsyncBaseTransport):
    """Send each request over a new connection and close it with the response.

    Args:
        ssl_context: The TLS context for `https` URLs (verification, trusted CAs).
        limits: How many header fields and header bytes a response may have.
    """

    def __init__(self, ssl_context: ssl.SSLContext, limits: ResponseLimits | None = None) -> None:
        self._ssl_context = ssl_context
        self._limits = limits or ResponseLimits()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Connect, send the request, and return once the response headers have arrived.

        Raises:
            httpx.UnsupportedProtocol: the URL is neither http nor https.
            httpx.ConnectError: the connection or the TLS handshake failed.
            httpx.ConnectTimeout: connecting took longer than the connect timeout, or
                went past the deadline.
            httpx.ReadTimeout: the response head was not in by the deadline (the read
                timeout after the request, or its first request, started).
            httpx.RemoteProtocolError: the server closed early or answered with garbage.
            agent.checks.limits.ResponseTooLarge: the response head went past a limit.
        """
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'."
            )
        timeouts = request.extensions.get("timeout", {})
        trace: Trace | None = request.extensions.get("trace")
        deadline = _deadline(request)
        exchange = _Exchange(request.method == "HEAD", self._limits)
        try:
            await self._connect(exchange, url, scheme, timeouts.get("connect"), deadline, trace)
            transport = exchange.transport
            assert transport is not None
            chunked = any(
                name.lower() == b"transfer-encoding" and value.lower() == b"chunked"
                for name, value in request.headers.raw
            )
            transport.write(_request_head(request))
            await _send_body(request, transport, chunked)
            while not exchange.headers_done:
                if exchange.error is not None:
                    raise exchange.error
                await exchange.wait(deadline)
            if trace is not None:
                await trace("http11.receive_response_headers.complete", {})
        except BaseException:
            exchange.close()
            raise
        return httpx.Response(
            exchange.status,
            headers=exchange.headers,
            stream=_Body(exchange, deadline),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": exchange.reason,
                "network_stream": _NetworkStream(exchange),
            },
        )

    async def _connect(
        self,
        exchange: _Exchange,
        url: httpx.URL,
        scheme: str,
        timeout: float | None,
        deadline: float | None,
        trace: Trace | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        host = url.host
        port = url.port or _DEFAULT_PORTS[scheme]
        begin = loop.time()
        ends = None if timeout is None else begin + timeout
        if deadline is not None:
            ends = deadline if ends is None else min(ends, deadline)
        try:
            async with asyncio.timeout_at(ends):
                if trace is not None:
                    await trace("connection.connect_tcp.started", {})
                await loop.create_connection(lambda: exchange, host, port)
                if trace is not None:
                    await trace("connection.connect_tcp.complete", {})
                if scheme == "https":
                    if trace is not None:
                        await trace("connection.start_tls.started", {})
                    plain = exchange.transport
                    assert plain is not None
                    secure = await loop.start_tls(
                        plain, exchange, self._ssl_context, server_hostname=host
                    )
                    if secure is None:
                        raise httpx.ConnectError("the connection closed during the TLS handshake")
                    exchange.transport = secure
                    exchange.ssl_object = secure.get_extra_info("ssl_object")
                    if trace is not None:
                        await trace("connection.start_tls.complete", {})
        except TimeoutError:
            seconds = round((ends or begin) - begin, 3)
            raise httpx.ConnectTimeout(f"could not connect within {seconds:g}s") from None
        except (OSError, ssl.SSLError, ssl.CertificateError) as error:
            raise httpx.ConnectError(str(error) or type(error).__name__) from error


def _deadline(request: httpx.Request) -> float | None:
    """When the exchange of `request` must be over: its `deadline` extension, set here from
    its read timeout the first time (None: no read timeout, no deadline)."""
    deadline: float | None = request.extensions.get(DEADLINE)
    if deadline is None:
        seconds = request.extensions.get("timeout", {}).get("read")
        if seconds is None:
            return None
        deadline = asyncio.get_running_loop().time() + seconds
        request.extensions[DEADLINE] = deadline
    return deadline
