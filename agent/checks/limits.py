"""How much of a target's response a check reads: header count and sizes, body size.

A target is not trusted: one that sends header lines without end, or an endless body, must
cost the agent a bounded amount of memory and fail its own check, not grow the process.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass

import httpx

DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADER_LINE = 16 * 1024
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class ResponseTooLarge(httpx.RemoteProtocolError):
    """The response went past one of the agent's limits; reading stopped there."""


@dataclass(frozen=True)
class ResponseLimits:
    """The most of one response a check reads; each is set by an `agent run` flag.

    Attributes:
        max_headers: Header fields (`--max-response-headers`).
        max_header_bytes: Bytes of the status line and all header lines, interim (1xx)
            responses included (`--max-response-header-bytes`).
        max_header_line: Bytes of one header line (`--max-response-header-line`).
        max_body_bytes: Bytes of the body, after content decoding
            (`--max-response-body-bytes`).
    """

    max_headers: int = DEFAULT_MAX_HEADERS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_header_line: int = DEFAULT_MAX_HEADER_LINE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def too_many_headers(self) -> ResponseTooLarge:
        """The error for a response with more than `max_headers` header fields."""
        return ResponseTooLarge(
            f"the response has more than {self.max_headers} header fields "
            "(limit: --max-response-headers)"
        )

    def headers_too_large(self) -> ResponseTooLarge:
        """The error for a response head longer than `max_header_bytes`."""
        return ResponseTooLarge(
            f"the response headers are larger than {self.max_header_bytes} bytes "
            "(limit: --max-response-header-bytes)"
        )

    def header_line_too_long(self) -> ResponseTooLarge:
        """The error for a header line longer than `max_header_line`."""
        return ResponseTooLarge(
            f"a response header line is longer than {self.max_header_line} bytes "
            "(limit: --max-response-header-line)"
        )

    def body_too_large(self) -> ResponseTooLarge:
        """The error for a body longer than `max_body_bytes`."""
        return ResponseTooLarge(
            f"the response body is larger than {self.max_body_bytes} bytes "
            "(limit: --max-response-body-bytes)"
        )


async def read_body(response: httpx.Response, limits: ResponseLimits) -> bytes:
    """The whole body of a streamed response, decoded, refusing to go past `max_body_bytes`.

    The body is decoded here rather than by httpx, whose decoders inflate a whole network
    read at once (64 KiB of gzip can become 64 MiB): gzip and deflate are inflated at most
    up to the limit. Other encodings are left as they came, as httpx does with encodings it
    has no decoder for. Both the bytes on the wire and the decoded bytes count.

    Raises:
        ResponseTooLarge: the body is longer than the limit (what was read is let go).
        httpx.DecodingError: a gzip or deflate body is not valid compressed data, or ends
            before its compressed stream does (a truncated body).
    """
    budget = limits.max_body_bytes
    decoders = _decoders(response.headers.get("content-encoding", ""))
    chunks: list[bytes] = []
    wire = size = 0
    async for raw in response.aiter_raw():
        wire += len(raw)
        if wire > budget:
            raise limits.body_too_large()
        chunk = raw
        for decoder in decoders:
            chunk = decoder.feed(chunk, budget - size)
        size += len(chunk)
        if size > budget:
            raise limits.body_too_large()
        chunks.append(chunk)
    for index, decoder in enumerate(decoders):  # what the decoders still hold
        chunk = decoder.finish()
        for later in decoders[index + 1 :]:
            chunk = later.feed(chunk, budget - size)
        size += len(chunk)
        if size > budget:
            raise limits.body_too_large()
        chunks.append(chunk)
    return b"".join(chunks)


class _Inflater:
    """gzip or deflate, inflated at most `room + 1` bytes per call (one past: over the limit)."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._started = False
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)

    def feed(self, data: bytes, room: int) -> bytes:
        if not data:  # nothing yet from an outer coding: the stream has not started
            return b""
        started, self._started = self._started, True
        try:
            return self._inflate.decompress(data, max(room, 0) + 1)
        except zlib.error as error:
            if self._gzip or started:
                message = f"the body is not valid compressed data: {error}"
                raise httpx.DecodingError(message) from None
            # "deflate" is sometimes sent raw, without the zlib wrapper (httpx accepts both);
            # tried once: started now, a second failure is the answer.
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.feed(data, room)

    def finish(self) -> bytes:
        """What the inflater still holds, once the body has ended.

        Raises:
            httpx.DecodingError: the body ended before the compressed stream did: a
                `Content-Length` or a closed connection that cut it short.
        """
        rest = self._inflate.flush()
        if self._started and not self._inflate.eof:
            raise httpx.DecodingError(
                "truncated compressed body: it ended before its gzip or deflate stream did"
            )
        return rest


def _decoders(encoding: str) -> list[_Inflater]:
    """Decoders for `Content-Encoding`, in the order to apply them (the last coding first)."""
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    decoders = []
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip", "deflate"):
            decoders.append(_Inflater(gzip=coding != "deflate"))
        elif coding != "identity":
            return []  # an unknown coding: the body is kept as it came
    return decoders


class _CappedStream(httpx.AsyncByteStream):
    """A response stream that refuses to yield more than `limit` bytes."""

    def __init__(self, inner: httpx.AsyncByteStream, limits: ResponseLimits) -> None:
        self._inner = inner
        self._limits = limits

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limits.max_body_bytes:
                raise self._limits.body_too_large()
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class BoundedDigestAuth(httpx.DigestAuth):
    """Digest auth whose challenge (the first 401) is read within the body limit.

    httpx reads the whole body of the 401 before it retries with credentials; a target can
    make that body endless, or a small compressed bomb. The 401 is thrown away, so its body
    is read as it came (not decoded) and only up to the limit.
    """

    def __init__(self, username: str, password: str, limits: ResponseLimits) -> None:
        super().__init__(username, password)
        self._limits = limits

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        flow = super().auth_flow(request)
        request = next(flow)
        while True:
            response = yield request
            try:
                request = flow.send(response)
            except StopIteration:
                return
            # httpx reads `response` whole before it sends `request`: bound that read.
            if isinstance(response.stream, httpx.AsyncByteStream):
                response.stream = _CappedStream(response.stream, self._limits)
            response.headers.pop("content-encoding", None)
