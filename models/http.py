"""What the API client and the downloader agree on: when to retry, and what never to show.

Both talk HTTP to Cloudflare (the API, then pre-signed storage URLs) and must behave the same
way under rate limits and outages, so the policy is one object both take.
"""

import logging
import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["UNSENDABLE", "RetryPolicy", "describe_error", "protect_http_logs", "redact_urls"]

UNSENDABLE = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
"""Transport errors raised before anything is sent (a URL that is not http(s), a header that
is not HTTP's): no retry can succeed."""

_QUERY = re.compile(r"(?i)(https?:/{1,2}[^\s?#\"'<>]*)\?[^\s#\"'<>]*?(?=:?(?:[\s#\"'<>]|$))")
"""A URL with a query, up to a colon that ends it in a message (``URL: no such file``); one
slash after the scheme too, as a URL taken for a path prints (``Path("https://h/f?sig")`` is
``https:/h/f?sig``)."""
_PATH_QUERY = re.compile(r"(?<![^\s\"'(<])(/[^\s?#\"'<>]*)\?[^\s#\"'<>]*")
"""A path with a query and no scheme or host, as an HTTP request line holds it."""
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"<>,;]+")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*:/{1,2})[^\s/?#\"'<>]*@")
"""A URL's ``user:password@`` (a webhook's, a proxy's)."""


def redact_urls(text: str) -> str:
    """``text`` with every URL's query string, any user and password in a URL, and any bearer
    token replaced by ``REDACTED``.

    A pre-signed URL's query string is a credential (anyone holding it can download the
    file until it expires), and a webhook's may hold a shared secret, so neither must reach a
    log line or an error message. Paths with a query (``POST /hook?token=… HTTP/1.1``, as
    servers log requests) are redacted too.
    """
    text = _PATH_QUERY.sub(r"\1?REDACTED", _QUERY.sub(r"\1?REDACTED", text))
    return _BEARER.sub(r"\1REDACTED", _USERINFO.sub(r"\1REDACTED@", text))


def describe_error(exc: BaseException) -> str:
    """An exception as a reason in a message: its type (a bare ``ReadTimeout`` says nothing
    otherwise) and its text, with no secret in it (httpx puts the URL in some of its errors)."""
    text = str(exc)
    return redact_urls(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class _RedactSecrets(logging.Filter):
    """Rewrites a log record so it carries no URL query string or bearer token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTER = _RedactSecrets()


def protect_http_logs() -> None:
    """Keep pre-signed URLs out of httpx's own request log (it logs every URL in full at INFO).

    Idempotent; called by every module of ours that makes HTTP requests. A logger's filter
    does not see what its children log, so each of httpcore's own loggers (its debug log
    shows request headers, the token among them) gets it too.
    """
    known = [name for name in logging.root.manager.loggerDict if name.split(".")[0] in _HTTP]
    for name in {*_HTTP, *_HTTPCORE_LOGGERS, *known}:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


_HTTP = ("httpx", "httpcore")
_HTTPCORE_LOGGERS = (
    "httpcore.connection",
    "httpcore.connection_pool",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)
"""Created when their modules are imported, which may be after this runs."""


_MOST_JITTER = 1.0
"""Seconds a wait a server asked for is lengthened by, at most (a tenth of it below 10 s)."""


class RetryPolicy(BaseModel):
    """Which answers are worth another try, and how long to wait before it.

    The API documents 408, 409, 429 and 5xx as transient; any other 4xx is the request's own
    fault and repeating it only burns the rate limit. Waits grow exponentially with jitter (so
    many batch workers do not retry in step), and a server's ``retry-after`` is honoured, up
    to ``max_retry_after``, with a little jitter on top (workers told the same time must not
    all come back at its first instant, into the next window's limit). A server that asks for
    longer is not waited for at all: a try before the time it named would be refused again,
    and a batch must not stall for an hour on one call; the caller gives up at once and says
    what was asked.
    """

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(default=6, ge=1, description="tries in all, the first included")
    backoff: float = Field(default=0.5, ge=0, description="first wait, seconds; doubles")
    max_delay: float = Field(default=30.0, ge=0, description="longest own backoff, seconds")
    max_retry_after: float = Field(
        default=900.0, ge=0, description="longest wait a server's retry-after may ask for"
    )
    retry_statuses: frozenset[int] = frozenset({408, 409, 429})

    def should_retry(self, status: int) -> bool:
        return status in self.retry_statuses or 500 <= status <= 599

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based): what the server's
        ``retry-after`` asks, up to ``max_retry_after``, else the own backoff."""
        asked = _parse_retry_after(retry_after)
        if asked is not None:
            spread = random.uniform(0.0, min(_MOST_JITTER, 0.1 * asked))  # never less than asked
            return min(asked + spread, self.max_retry_after)
        base = min(self.backoff * 2 ** (attempt - 1), self.max_delay)
        return base * random.uniform(0.75, 1.0)

    def refused_wait(self, retry_after: str | None) -> str | None:
        """Why not to try again at all, when the server's ``retry-after`` asks for more than
        ``max_retry_after`` (for the caller's error); None otherwise."""
        asked = _parse_retry_after(retry_after)
        if asked is None or asked <= self.max_retry_after:
            return None
        return f"a longer wait than the {self.max_retry_after:g} s a retry may wait, so not retried"


def shown_retry_after(value: str | None) -> str:
    """`` (Retry-After: '3600')`` for a failure's message: what the server asked, in its own
    words, cut short; nothing when it asked nothing."""
    return f" (Retry-After: {value.strip()[:40]!r})" if value else ""


def _parse_retry_after(value: str | None) -> float | None:
    """``retry-after`` is either whole seconds or an HTTP date (RFC 9110); anything else
    (``nan``, ``-1``) is no answer, and the own backoff is waited instead of nothing."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
