"""HTTP plumbing: the threaded server, request reading, replies and file downloads.

The server knows nothing of the API: it hands each request to two callables (``answer`` for
API calls, ``download`` for pre-signed file URLs) and sends what they decide, applying the
download faults (``cut``, ``corrupt``) as it streams.
"""

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from models import redact_urls

from .._listen import MAX_BODY, LocalServer, declared_length
from ._replies import Reply, rtk_error
from ._state import TrackFile

_log = logging.getLogger(f"trackscribe.{__name__}")

_RANGE = re.compile(r"^bytes=([0-9]{0,18})-([0-9]{0,18})$")  # longer: past any file
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Download:
    """A checked download: the bytes to send (inclusive) and the faults this one suffers."""

    track: TrackFile
    start: int
    end: int
    partial: bool
    cut: bool
    corrupt: bool


class RangeNotSatisfiable(Exception):
    """A well-formed ``Range`` that misses the file: answered 416."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span one ``Range`` header asks for; None to send the whole file.

    Malformed and multi-range headers are ignored (the whole file is sent), as RFC 9110
    allows; a well-formed range that misses the file raises :class:`RangeNotSatisfiable`.
    """
    match = _RANGE.match((header or "").strip())
    if match is None or not (match[1] or match[2]):
        return None
    if match[1]:
        start = int(match[1])
        if match[2] and int(match[2]) < start:
            return None
        end = int(match[2]) if match[2] else size - 1
        if start >= size:
            raise RangeNotSatisfiable
        return start, min(end, size - 1)
    suffix = int(match[2])
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable
    return max(size - suffix, 0), size - 1


def _flip(chunk: bytes) -> bytes:
    """The chunk with its middle byte inverted: same length, wrong content."""
    data = bytearray(chunk)
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


class Server(LocalServer):
    """Hands API calls to ``answer(method, path, query, authorization, body, host)`` and
    pre-signed file URLs to ``download(method, path, query, range)``; the header values are
    None when the request had none."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        answer: Callable[[str, str, dict[str, list[str]], str | None, bytes, str | None], Reply],
        download: Callable[[str, str, dict[str, list[str]], str | None], "Download | Reply"],
    ) -> None:
        self.answer = answer
        self.download = download
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "RealtimeKitEmulator/1"
    timeout = 30.0
    # Headers and body go out in separate writes; with Nagle's algorithm on, each small
    # response waits for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def __getattr__(self, name: str) -> Callable[[], None]:
        """``do_<METHOD>`` for every method, known or not: http.server answers a method it
        finds no ``do_`` for with its own 501 HTML page, where the API answers every method in
        its envelope (405 naming the methods allowed) and the store answers in S3's XML."""
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        server: Server = self.server  # type: ignore[assignment]
        split = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            return
        query = parse_qs(split.query, keep_blank_values=True)
        if split.path.startswith("/files/"):
            result = server.download(self.command, split.path, query, self.headers.get("Range"))
            if isinstance(result, Download):
                self._stream(result, split.path)
            else:
                self._reply(result)
            return
        authorization, host = self.headers.get("Authorization"), self.headers.get("Host")
        self._reply(server.answer(self.command, split.path, query, authorization, body, host))

    def _read_body(self) -> bytes | None:
        """The request body, read whole so a kept-alive connection stays in step."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._reply(rtk_error(411, "a Content-Length is required"))
            return None
        length = declared_length(self.headers.get("Content-Length") or "0", MAX_BODY)
        if length is None:
            self.close_connection = True  # where this body ends cannot be known
            self._reply(rtk_error(400, "Content-Length must be a whole number of bytes"))
            return None
        if length > MAX_BODY:
            self.close_connection = True
            self._reply(rtk_error(413, f"request body must be 0 to {MAX_BODY} bytes"))
            return None
        return self.rfile.read(length) if length else b""

    def _reply(self, reply: Reply) -> None:
        self.send_response(reply.status)
        if reply.body:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":  # a body after HEAD's headers would be the next answer's
            self.wfile.write(reply.body)

    def _stream(self, download: Download, path: str) -> None:
        """Send a file or a range of it in chunks, applying the faults chosen for this one."""
        track = download.track
        length = download.end - download.start + 1
        self.send_response(206 if download.partial else 200)
        self.send_header("Content-Type", "audio/webm")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{track.etag}"')
        if download.partial:
            self.send_header("Content-Range", f"bytes {download.start}-{download.end}/{track.size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        budget = length // 2 if download.cut else length
        sent = 0
        try:
            with track.path.open("rb") as f:
                f.seek(download.start)
                while sent < budget:
                    chunk = f.read(min(_CHUNK, budget - sent))
                    if not chunk:
                        break
                    self.wfile.write(_flip(chunk) if download.corrupt else chunk)
                    sent += len(chunk)
        except OSError as exc:
            _log.warning("download of %s stopped after %d bytes: %s", path, sent, exc)
        if sent < length:
            # Fewer bytes than promised: only closing the connection tells the client.
            self.close_connection = True
            _log.info("download of %s cut after %d of %d bytes", path, sent, length)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # A request line that did not parse leaves no command or path behind.
        command, path = getattr(self, "command", None), getattr(self, "path", "")
        _log.debug("%s %s -> %s", command or "-", urlsplit(path).path or "-", code)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("http: %s", redact_urls(format % args))
