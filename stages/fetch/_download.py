"""Download one file of a recording whole and verified.

A file streams to its ``.part`` and is renamed into place only once its size (and, where the
storage sends one, its MD5 ``ETag``) check out. A download resumes with ``Range`` and
``If-Range``; an expired pre-signed URL is renewed from the API once for all workers; a
cancel wakes a worker blocked on a stalled socket. The recording as a whole (which files,
under which names, the manifest) is the package's ``__init__``'s.
"""

import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
from tqdm.auto import tqdm

from models import (
    UNSENDABLE,
    Recording,
    RecordingFile,
    atomic_write_text,
    describe_error,
    in_this_context,
    protect_http_logs,
    redact_urls,
    shown_retry_after,
)

from ._options import FetchError, FetchOptions

log = logging.getLogger("trackscribe.stages.fetch")
_T = TypeVar("_T")
protect_http_logs()

_GONE = frozenset({404, 410})
"""Statuses that say a file is not in storage: lost for good (S3 is strongly consistent)."""
_EXPIRED_CODES = frozenset({"ExpiredToken", "RequestExpired", "TokenRefreshRequired"})
"""S3 error codes of a 400 for a pre-signed URL whose credentials ran out: renewed like a 403."""
_CODE_SHOWN = 100
"""The most of a storage's error code said in an error."""


class Lasting(FetchError):
    """A file no fetch again will get: storage says it is not there (404 or 410), the
    recording no longer lists it or gives it no download URL,
    or its URL or name cannot be used. Raised where that is found, so that one place
    (:func:`_attempt`) tells it from a failure that may pass, which a re-run resumes."""


def failure_reason(file: RecordingFile, exc: Exception) -> str:
    """Why ``file`` could not be fetched or checked, naming it (a FetchError already does)."""
    return str(exc) if isinstance(exc, FetchError) else f"{file.name}: {describe_error(exc)}"


_STALE_RENEWALS = 3
"""Renewals in a row that give URLs expired already before the API is asked no more."""


class Urls:
    """The current pre-signed URL of each file, renewed once for all workers when they expire.

    A recording past RealtimeKit's retention (7 days) is given URLs that are expired already,
    again on every renewal: after :data:`_STALE_RENEWALS` such renewals in a row, no more are
    asked for (each try of each file asked again: a burst against the API's rate limit), and a
    file they are refused for is lost for good.
    """

    def __init__(
        self, recording: Recording, refresh: Callable[[], Recording], cancel: threading.Event
    ) -> None:
        self._refresh = refresh
        self._cancel = cancel
        self._lock = threading.Lock()
        self._generation = 0
        self._stale = 0  # renewals in a row that gave URLs expired already
        self._set(recording)

    def _set(self, recording: Recording) -> None:
        self._urls = {f.key: f.url for f in recording.files()}
        self._expiry = recording.download_url_expiry

    def _expired(self) -> bool:
        return self._expiry is not None and self._expiry <= datetime.now(UTC)

    def get(self, file: RecordingFile) -> tuple[str, int]:
        with self._lock:
            if self._expired() and self._stale < _STALE_RENEWALS:
                self._renew_locked()
            if file.key not in self._urls:
                raise Lasting(f"{file.name}: the recording no longer lists this file")
            url = self._urls[file.key]
            if url is None:
                raise Lasting(f"{file.name}: the recording lists it with no download URL")
            return url, self._generation

    def renew(self, seen_generation: int, name: str) -> None:
        """Get fresh URLs, unless another worker already did since ``seen_generation``;
        ``name``'s URL was refused. Refused when the API has nothing fresher to give, the file
        is lost for good."""
        with self._lock:
            if self._stale >= _STALE_RENEWALS:
                raise Lasting(
                    f"{name}: refused, and the API gives only download URLs that expired at "
                    f"{self._past_retention()}"
                )
            if self._generation == seen_generation:
                self._renew_locked()

    def _renew_locked(self) -> None:
        log.info("pre-signed URLs expired or refused; asking the API for fresh ones")
        self._set(_unless_cancelled(self._refresh, self._cancel))
        self._generation += 1
        self._stale = self._stale + 1 if self._expired() else 0
        if self._stale == _STALE_RENEWALS:
            log.warning(
                "the API gave download URLs that expired at %s, %d times; trying them as they are",
                self._past_retention(),
                _STALE_RENEWALS,
            )

    def _past_retention(self) -> str:
        """Why the API gives only expired URLs, for the error and the warning alike."""
        assert self._expiry is not None  # stale renewals gave one
        return (
            f"{self._expiry.isoformat()}: the recording is past RealtimeKit's retention of its "
            "files (7 days), or this machine's clock is wrong"
        )


def _unless_cancelled(call: Callable[[], _T], cancel: threading.Event) -> _T:
    """``call()``, given up on (and left to finish alone) once ``cancel`` is set.

    Renewing URLs goes through the API client, whose own retries may wait as long as a
    server's retry-after asks (minutes): a Ctrl-C must not wait for that, and a worker thread
    cannot be interrupted, so the call runs in a daemon thread of its own.
    """
    outcome: list[tuple[bool, Any]] = []
    finished = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the waiting worker, which raises it
            outcome.append((False, exc))
        finally:
            finished.set()

    threading.Thread(target=in_this_context(run), name="fetch-renew", daemon=True).start()
    while not finished.wait(0.1):
        if cancel.is_set():
            raise Cancelled
    succeeded, value = outcome[0]
    if succeeded:
        return value
    raise value


class Downloader:
    """Fetches one file at a time (several run in parallel), resuming and verifying."""

    def __init__(
        self,
        http: httpx.Client,
        urls: Urls,
        options: FetchOptions,
        bar: tqdm,
        cancel: threading.Event,
    ) -> None:
        self._http = http
        self._urls = urls
        self._retry = options.retry
        self._progress = _Progress(bar)
        self._cancel = cancel
        self._sockets_lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._aborted = False

    def abort(self) -> None:
        """Shut the sockets of the downloads in flight, so that a worker blocked reading one
        (a stalled storage) wakes now, not at the read timeout; set the cancel first, so that
        it takes the broken connection for the cancel it is. Sockets of idle connections go
        too (nothing is fetched after a cancel), and so does any opened after this."""
        with self._sockets_lock:
            self._aborted = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's ``trace`` extension, on every request: keeps the socket of each
        connection the client opens (a connection is traced only when opened, and may then
        serve several requests), for :meth:`abort`. The socket is taken once TLS is set up
        too: wrapping a socket in TLS leaves the plain one without a file descriptor."""
        if not event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            return
        sock = info["return_value"].get_extra_info("socket")
        if not isinstance(sock, socket.socket):
            return
        with self._sockets_lock:
            self._sockets = [s for s in self._sockets if s.fileno() != -1]  # closed: gone
            self._sockets.append(sock)
            aborted = self._aborted
        if aborted:
            _shut(sock)

    def _get(
        self, url: str, headers: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[httpx.Response]:
        """A streamed GET whose connection :meth:`abort` can break."""
        return self._http.stream("GET", url, headers=headers, extensions={"trace": self._trace})

    def fetch(
        self, file: RecordingFile, path: Path, verified_sha256: str | None = None
    ) -> tuple[int, str, bool]:
        """Fetch ``file`` to ``path``; a complete copy already there is kept when storage
        confirms it, or, if storage cannot be asked, when it is the copy an earlier run
        verified (``verified_sha256``): a re-run must not lose a track it already has."""
        part = _part_of(path)
        if path.exists():
            try:
                total, version = self._probe(file)
            except Cancelled:
                raise
            except Exception as exc:  # storage, or the API renewing expired URLs, cannot answer
                if verified_sha256 is None or _digests(path)[1] != verified_sha256:
                    raise
                log.warning(
                    "%s; kept the local copy, which an earlier run verified",
                    redact_urls(failure_reason(file, exc)),
                )
                size = path.stat().st_size
                self._progress.set(file.key, size, size)
                return size, verified_sha256, True
            if (sha256 := _matching_copy(path, total, version.md5)) is not None:
                log.info("%s: already complete, skipped", file.name)
                self._progress.set(file.key, total, total)
                return total, sha256, True
            log.warning("%s: the local copy differs from the recording; fetching again", file.name)
            path.unlink()
        return self._retrying(
            file, lambda: self._fetch_whole(file, part, path), lambda: _size_of(part)
        )

    def _retrying(
        self, file: RecordingFile, attempt: Callable[[], _T], done: Callable[[], int] = lambda: 0
    ) -> _T:
        """``attempt()`` until it succeeds or the retry policy says stop.

        A status worth retrying, a broken connection or a corrupt copy are tried again after
        a wait. A refused URL (403, or 400 for expired credentials) is renewed from the API
        first; the first refusal of a run of failures is tried again at once, since a URL
        past its time is expected, but each counts as a failure like any other, so that a
        storage which refuses every fresh URL is given up on, and the error says the fresh
        URLs did not help. A try that took ``done`` (bytes kept) further than any try before it is
        progress, not a failure: a flaky connection must not stop a long download that keeps
        advancing. Bytes got again after a corrupt copy was dropped are not: a copy that
        never checks out would otherwise be fetched for ever.
        """
        failed, fresh, furthest = 0, 0, done()
        renewed = False  # a URL refused in this run of failures was renewed: tries are fresh
        while True:
            retry_after, refused = None, None
            try:
                return attempt()
            except _UrlRefusedError as exc:
                reason, refused = str(exc), exc.generation
            except _RetryableStatusError as exc:
                reason, retry_after = str(exc), exc.retry_after
            except _CorruptError as exc:
                reason = str(exc)
            except UNSENDABLE as exc:  # a file:// URL, say: no try can do better
                raise Lasting(
                    redact_urls(f"{file.name}: its URL cannot be fetched: {describe_error(exc)}")
                ) from None
            except httpx.TransportError as exc:
                if self._cancel.is_set():  # a socket shut by abort(): no failure of the file's
                    raise Cancelled from None
                reason = describe_error(exc)
            reached = done()
            if reached > furthest:
                failed, fresh, renewed = 0, 0, False
            else:
                failed, fresh = failed + 1, fresh + renewed
            furthest = max(furthest, reached)
            # An expired URL is renewed and tried once more even under a policy of one try:
            # the URL's time running out is no failure of the storage's.
            first_refusal = refused is not None and not renewed
            if failed >= self._retry.attempts and not first_refusal:
                raise FetchError(redact_urls(f"{file.name}: {reason} ({_gave_up(failed, fresh)})"))
            if (too_long := self._retry.refused_wait(retry_after)) is not None:
                raise FetchError(redact_urls(f"{file.name}: {reason}: {too_long}"))
            if refused is not None:
                self._urls.renew(refused, file.name)  # the API failing to: this file's failure
                if not renewed:
                    renewed = True
                    continue
            wait = self._retry.delay(max(failed, 1), retry_after)
            log.warning("%s: %s; retrying in %.1f s", file.name, redact_urls(reason), wait)
            if self._cancel.wait(wait):
                raise Cancelled

    def _fetch_whole(self, file: RecordingFile, part: Path, path: Path) -> tuple[int, str, bool]:
        """One try: the rest of the file into ``part``, checked, then renamed to ``path``."""
        try:
            total, version = self._download(file, part)
            if part.stat().st_size != total:
                raise _CorruptError(f"got {part.stat().st_size} bytes of {total}")
            md5, sha256 = _digests(part)
            if not _matches(md5, version.md5):
                raise _CorruptError("content does not match the storage's checksum (ETag)")
        except _CorruptError:
            _drop_part(part)
            raise
        os.replace(part, path)
        _validator(part).unlink(missing_ok=True)
        return total, sha256, False

    def _download(self, file: RecordingFile, part: Path) -> tuple[int, "_Version"]:
        """Append the rest of the file to ``part``; return the full size and its version."""
        url, generation = self._urls.get(file)
        have = _size_of(part)
        began_as = _read_validator(part) if have else None
        if have and began_as is None:
            # Bytes of no known version of the file (the storage sent no ETag, or they are
            # from an older trackscribe): completing them could make a file never uploaded.
            _drop_part(part)
            have = 0
        headers = {"Range": f"bytes={have}-", "If-Range": began_as} if began_as else {}
        with self._get(url, headers) as response:
            status = response.status_code
            whole = status == 416 and have > 0
            if whole:
                # Nothing after what we have: the .part is already whole (its size is checked
                # against the total the answer gives), or longer than the file (start over).
                total = _total_from_range(response.headers.get("content-range"))
                if total != have:
                    _drop_part(part)
                    raise _CorruptError(f"partial download of {have} bytes, file has {total}")
                self._progress.set(file.key, total, have)
            else:
                total = self._receive(response, generation, file, part, have, began_as)
                version = _Version.of(response.headers)
        if whole:
            # A run killed after the last byte left it: it is checked like any download, so
            # the ETag that the refusal did not carry is asked for.
            version = self._probe_once(file)[1]
            if version.etag != began_as:
                raise _CorruptError("the file changed since its partial download began")
            return total, version
        if total < 0:
            # No length came (a server that closes the connection to end the body): a body
            # cut short would look whole, so the length is asked for on its own.
            total = self._probe_once(file)[0]
        if total >= 0:
            return total, version
        if version.md5 is None:
            raise FetchError(
                f"{file.name}: storage sent neither the file's length nor an MD5 ETag, "
                "so a download cut short could not be told from a whole one"
            )
        return part.stat().st_size, version  # the ETag checks it

    def _receive(
        self,
        response: httpx.Response,
        generation: int,
        file: RecordingFile,
        part: Path,
        have: int,
        began_as: str | None,
    ) -> int:
        """Write the answer's body to ``part`` (appended to the ``have`` bytes there, of the
        version ``began_as`` names, for a 206); return the file's full size as the answer gives
        it, or -1 when it does not."""
        self._check(response, generation, file)
        etag = response.headers.get("etag")
        if response.status_code == 206:
            if etag != began_as:  # a storage that does not honour If-Range
                raise _CorruptError("the file changed since its partial download began")
            content_range = response.headers.get("content-range")
            if _start_from_range(content_range) != have:  # other bytes than those asked for
                raise _CorruptError(
                    f"asked for the bytes from {have} on, the storage sent {content_range!r}"
                )
            total = _total_from_range(content_range)
            mode = "ab"
        else:  # 200: the whole file, whatever was asked (a changed file, under If-Range)
            total = _content_length(response)
            have, mode = 0, "wb"
            _drop_part(part)
            if etag and not etag.startswith("W/"):  # only a strong ETag can resume it
                atomic_write_text(_validator(part), etag)
        self._progress.set(file.key, total, have)
        with part.open(mode) as out:
            for chunk in response.iter_raw():  # as received: a cut keeps what came
                if self._cancel.is_set():
                    raise Cancelled
                out.write(chunk)
                have += len(chunk)
                self._progress.set(file.key, total, have)
            out.flush()
            os.fsync(out.fileno())
        if self._cancel.is_set():  # a body without a length, ended by abort(): no whole file
            raise Cancelled
        return total

    def _probe(self, file: RecordingFile) -> tuple[int, "_Version"]:
        """Size and ETag of the remote file, from a one-byte ranged GET (pre-signed URLs are
        signed for GET only, so HEAD would be refused)."""
        return self._retrying(file, lambda: self._probe_once(file))

    def _probe_once(self, file: RecordingFile) -> tuple[int, "_Version"]:
        url, generation = self._urls.get(file)
        with self._get(url, {"Range": "bytes=0-0"}) as response:
            self._check(response, generation, file)
            if response.status_code == 206:
                total = _total_from_range(response.headers.get("content-range"))
            else:
                total = _content_length(response)  # body left unread
            return total, _Version.of(response.headers)

    def _check(self, response: httpx.Response, generation: int, file: RecordingFile) -> None:
        status = response.status_code
        if status in (200, 206):
            return
        code = _error_code(response)
        said = f", {code}" if code else ""
        if status == 403 or (status == 400 and code in _EXPIRED_CODES):
            raise _UrlRefusedError(
                f"storage refused the pre-signed URL (HTTP {status}{said})", generation
            )
        if self._retry.should_retry(status):
            raise _RetryableStatusError(status, response.headers.get("retry-after"))
        # Only 404 and 410 say the object is not there, and S3 is strongly consistent: the
        # same answer comes again. Any other status given up on is not known to last: a 401
        # or 407 (a proxy) may pass, a 400 may be of credentials renewed since, a 3xx not
        # followed or a 5xx taken off the list may be answered otherwise later.
        error = Lasting if status in _GONE else FetchError
        raise error(f"{file.name}: storage answered HTTP {status}{said}")


def _shut(sock: socket.socket) -> None:
    """Shut ``sock`` down both ways, waking a thread blocked on it; one already closed is
    left be. The plain socket's own shutdown: a TLS socket's would also drop its TLS state
    under the thread reading it."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _part_of(path: Path) -> Path:
    """Where a download of ``path`` streams to until it is whole."""
    return path.with_name(f".{path.name}.part")


def download_of(name: str) -> str:
    """The name of the track file a file in the tracks folder is of: its own, or, for a
    resumable download (its ``.part``, and that part's ETag), the file being downloaded."""
    if name.startswith(".") and name.endswith((".part", ".part.etag")):
        return name[1:].removesuffix(".etag").removesuffix(".part")
    return name


def _validator(part: Path) -> Path:
    """Where the ETag of the version a ``.part``'s bytes are of is kept."""
    return part.with_name(f"{part.name}.etag")


def _read_validator(part: Path) -> str | None:
    try:
        return _validator(part).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _drop_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    _validator(part).unlink(missing_ok=True)


class _Progress:
    """One byte counter over all files; a file's bytes count once however often it restarts."""

    def __init__(self, bar: tqdm) -> None:
        self._bar = bar
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], int] = {}
        self._done: dict[tuple[str, str], int] = {}

    def set(self, key: tuple[str, str], total: int, done: int) -> None:
        with self._lock:
            if total > 0 and self._totals.get(key) != total:
                self._totals[key] = total
                self._bar.total = sum(self._totals.values())
            self._done[key] = done
            self._bar.update(sum(self._done.values()) - self._bar.n)


def _size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


class _UrlRefusedError(Exception):
    """Storage refused a pre-signed URL; ``generation`` is that of the URLs it was one of, so
    that the URLs are renewed once however many workers saw them refused."""

    def __init__(self, message: str, generation: int) -> None:
        super().__init__(message)
        self.generation = generation


class _CorruptError(Exception):
    pass


class Cancelled(Exception):
    pass


def _tries(count: int) -> str:
    return "1 try" if count == 1 else f"{count} tries"


def _gave_up(failed: int, fresh: int) -> str:
    """How many tries failed in a row, and how many of those had a URL renewed for them: a
    storage that refuses fresh URLs too is no expired URL, and the reader should know."""
    with_fresh = f", {fresh} of them with a fresh URL from the API" if fresh else ""
    return f"gave up after {_tries(failed)} in a row{with_fresh}"


class _RetryableStatusError(Exception):
    def __init__(self, status: int, retry_after: str | None) -> None:
        # What the storage asked is said: a reader of the failure should know how long the
        # storage wanted, above all when that was too long to wait.
        super().__init__(f"storage answered HTTP {status}{shown_retry_after(retry_after)}")
        self.retry_after = retry_after


def _total_from_range(content_range: str | None) -> int:
    """``bytes 100-199/2000`` (or ``bytes */2000``) -> 2000."""
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        if total.isascii() and total.isdigit():
            return int(total)
    raise _CorruptError(f"ranged answer without a usable Content-Range ({content_range!r})")


def _start_from_range(content_range: str | None) -> int | None:
    """``bytes 100-199/2000`` -> 100; None when it says no start."""
    unit, _, rest = (content_range or "").strip().partition(" ")
    first = rest.split("-", 1)[0].strip()
    return int(first) if unit == "bytes" and first.isascii() and first.isdigit() else None


def _content_length(response: httpx.Response) -> int:
    """The declared length, or -1 when there is none (then only the ETag can check the file)."""
    value = response.headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else -1


def _error_code(response: httpx.Response) -> str:
    """The S3-style error code of an answer, "" if it has none: said in the error, and
    telling an expired URL answered 400 from a bad request. The ``x-amz-error-code`` header
    if sent, else the XML body's ``<Code>``."""
    if code := response.headers.get("x-amz-error-code", "").strip():
        return code[:_CODE_SHOWN]
    if response.is_stream_consumed or not response.headers.get("content-type", "").endswith("xml"):
        return ""
    try:
        body = response.read()[:2048].decode("utf-8", "replace")
    except httpx.HTTPError:
        return ""
    start, end = body.find("<Code>"), body.find("</Code>")
    return body[start + 6 : end][:_CODE_SHOWN] if 0 <= start < end else ""


def _matches(md5: str, expected: str | None) -> bool:
    """True unless the storage vouches for an MD5 of the content (``expected``) that differs."""
    return expected is None or md5 == expected


class _Version(NamedTuple):
    """Which version of a file an answer was of (its ETag, to resume by), and the MD5 of the
    content that the storage vouches for, if any (to check the bytes by)."""

    etag: str | None
    md5: str | None

    @classmethod
    def of(cls, headers: httpx.Headers) -> "_Version":
        etag = headers.get("etag")
        return cls(etag, None if _encrypted_apart(headers) else _md5_in(etag))


def _md5_in(etag: str | None) -> str | None:
    """The content's MD5 when the ETag is one, else None.

    S3 and R2 send the MD5 as the ETag for files uploaded in one part; multipart ETags
    (``"…-3"``) are not content hashes and cannot check anything.
    """
    tag = (etag or "").strip().removeprefix("W/").strip('"').lower()
    if len(tag) != 32 or any(c not in "0123456789abcdef" for c in tag):
        return None
    return tag


def _encrypted_apart(headers: httpx.Headers) -> bool:
    """Whether S3 says the object is encrypted with a KMS key or a key of the customer's
    (SSE-KMS, DSSE-KMS, SSE-C). The ETag of such an object is 32 hex digits like an MD5 but
    is not one of the content: checked as one, every download of a bucket so configured was
    refused as corrupt. (With S3's own keys, SSE-S3, the ETag is still the MD5.)"""
    sse = headers.get("x-amz-server-side-encryption", "").strip().lower()
    return sse.startswith("aws:kms") or "x-amz-server-side-encryption-customer-algorithm" in headers


def _matching_copy(path: Path, total: int, md5: str | None) -> str | None:
    """The SHA-256 of a local file that matches the recording's size and, where the storage
    vouches for one, its MD5, else None. The size is compared first: a file of the wrong size
    is not worth reading through."""
    if path.stat().st_size != total:
        return None
    digest, sha256 = _digests(path)
    return sha256 if _matches(digest, md5) else None


def _digests(path: Path) -> tuple[str, str]:
    """MD5 (to check against the ETag) and SHA-256 (for the manifest), in one read."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()
