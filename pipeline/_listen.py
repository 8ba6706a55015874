"""Opening the local HTTP servers trackscribe runs (the emulator, the webhook receiver)."""

from collections.abc import Callable
from typing import TypeVar

__all__ = ["listen", "url_host"]

_Server = TypeVar("_Server")


def url_host(host: str) -> str:
    """``host`` as it goes before ``:port`` in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def listen(host: str, port: int, serve: Callable[[tuple[str, int]], _Server]) -> _Server:
    """``serve((host, port))``; an address that cannot be listened on (in use, not ours to
    use, no such address) raises an OSError that says which, not only why."""
    try:
        return serve((host, port))
    except OSError as exc:
        where = f"{url_host(host)}:{port}"
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from None
