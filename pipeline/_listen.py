"""Opening the local HTTP servers trackscribe runs (the emulator, the webhook receiver)."""

import ipaddress
import logging
import socket
import socketserver
import sys
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import TypeVar

__all__ = ["MAX_BODY", "LocalServer", "declared_length", "listen"]

_Server = TypeVar("_Server")

log = logging.getLogger(f"trackscribe.{__name__}")

MAX_BODY = 1 << 20
"""The longest request body either server reads (a webhook delivery, an API call): far more
than any real one, and a bound on what a sender can make it hold."""


def url_host(host: str) -> str:
    """``host`` as it goes before ``:port`` in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def declared_length(value: str | None, most: int) -> int | None:
    """A ``Content-Length`` as a number of bytes, ``most + 1`` for any more than ``most``
    (``int`` refuses more than 4300 digits, so they are counted first); None for one that is
    not ASCII digits alone (RFC 9110: ``int`` would also take "+5", "1_0" and "²")."""
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= len(str(most)) else most + 1


def local_host(host: str) -> str:
    """The address a client on this machine reaches a server bound to ``host`` at. A wildcard
    (``0.0.0.0``, ``::``: every interface) is where a server listens, not an address to
    connect to (and from another machine it names nothing): its loopback address stands in."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name, not an address
        return host
    if not address.is_unspecified:
        return host
    return "::1" if address.version == 6 else "127.0.0.1"


def listen(host: str, port: int, serve: Callable[[tuple[str, int]], _Server]) -> _Server:
    """``serve((host, port))``; an address that cannot be listened on (in use, not ours to
    use, no such address) raises an OSError that says which, not only why."""
    try:
        return serve((host, port))
    except OSError as exc:
        where = f"{url_host(host)}:{port}"
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from None


class LocalServer(ThreadingHTTPServer):
    """An HTTP server on an IPv4 or an IPv6 address (the standard one takes IPv4 only), which
    starts at once offline."""

    daemon_threads = True
    request_queue_size = 128
    """Connections the system holds for the server before it takes them (socketserver's 5
    would reset or stall a burst: RealtimeKit delivering a few meetings' webhooks at once,
    or a client's concurrent downloads)."""

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """A request that failed, logged rather than printed to stderr with a traceback (as
        socketserver does): a client that hangs up mid-request is routine for a server on a
        network, and a library does not print."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            log.debug("%s hung up: %s", client_address[0], error)
        else:
            log.error("a request from %s failed: %r", client_address[0], error, exc_info=True)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up in DNS (getfqdn), which can stall offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{url_host(str(host))}:{port}"
