"""Start and follow RealtimeKit track recordings: the REST client, on httpx.

One client per account and app. Every call goes through :meth:`RealtimeKitClient._call`,
which retries what the API documents as transient (408, 409, 429, 5xx, and connections that
never reached the server) and turns both of the API's error envelopes into one
:class:`RealtimeKitError`. The API token travels only in the ``Authorization`` header; no log
line or error message carries it.
"""

import functools
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, get_args
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from models import (
    MAX_USER_IDS,
    UNSENDABLE,
    Recording,
    RecordingStatus,
    RetryPolicy,
    describe_error,
    protect_http_logs,
    redact_urls,
    shown_retry_after,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_UPLOAD_WAIT",
    "DEFAULT_WAIT",
    "RealtimeKitClient",
    "RealtimeKitError",
    "RecordingFailedError",
    "RecordingNotFoundError",
    "UnexpectedAnswerError",
    "UploadTimeoutError",
]

log = logging.getLogger(f"trackscribe.{__name__}")
protect_http_logs()

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"

DEFAULT_UPLOAD_WAIT = 3_600.0
"""Seconds to wait for ``UPLOADED`` by default once the recording is over (a webhook said it
was uploaded, but the API does not show it so yet): the hour :data:`DEFAULT_WAIT` allows the
upload."""

DEFAULT_WAIT = 86_400.0 + DEFAULT_UPLOAD_WAIT
"""Seconds to wait for ``UPLOADED`` by default: the longest recording (``max_seconds``
defaults to 86,400) and an hour more for its upload."""


class RealtimeKitError(Exception):
    """The API refused a call, or could not be reached. ``status`` is 0 when no answer came;
    ``transient`` when that was the network's doing (not a request that cannot be sent), so
    that a long wait may outlast it."""

    def __init__(
        self,
        status: int,
        code: int | str | None,
        message: str,
        *,
        call: str,
        transient: bool = False,
    ) -> None:
        self.status = status
        self.transient = transient
        self.code = code
        self.message = redact_urls(message)
        self.call = call
        code_part = f", code {code}" if code is not None and code != status else ""
        http = f"HTTP {status}{code_part}: " if status else ""
        super().__init__(f"RealtimeKit {call}: {http}{self.message}")


class UnexpectedAnswerError(RealtimeKitError):
    """The API answered, but not with what was asked for (a proxy's page, a changed schema):
    asking again gets the same answer, so it is not waited out."""


class RecordingNotFoundError(RealtimeKitError):
    """The API has no such recording for this account and app (404, or a 403 in RealtimeKit's
    own envelope): one of another app's, or the account or app id is not the one meant.
    Asking again gets the same answer. A 403 from Cloudflare's gateway is not this: that says
    the token may not do it, for every recording alike."""


class RecordingFailedError(RealtimeKitError):
    """The recording ended ``ERRORED`` (or never reached ``UPLOADED`` in time)."""


class UploadTimeoutError(RecordingFailedError):
    """The wait for ``UPLOADED`` gave up; the recording itself may well be going on.
    ``last_status`` is what the API last said (None: it never answered); ``why``, when it
    could not be asked at the end, the error that said so (as `` (error)``)."""

    def __init__(
        self, recording_id: str, last_status: str | None, timeout: float, why: str = ""
    ) -> None:
        self.recording_id = recording_id
        self.last_status = last_status
        self.why = why
        state = f"still {last_status}" if last_status else "no status known"
        message = f"recording {recording_id} {state} after {timeout:g} s{why}"
        super().__init__(0, None, message, call="wait for upload")


_STARTED_LOOKS = (0.0, 0.5, 1.0, 2.0, 4.0)
"""Seconds before each look for the recording a start began, when its answer did not name
it: about 7.5 s in all, for an API that lists a new recording a moment after its start."""


class RealtimeKitClient:
    """The recording endpoints of one RealtimeKit app.

    ``retry`` sets how hard to try; ``sleep`` is how to wait (tests make it instant).
    """

    def __init__(
        self,
        *,
        account_id: str,
        app_id: str,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for name, value in (("account_id", account_id), ("app_id", app_id), ("token", token)):
            if not value:
                raise ValueError(f"RealtimeKit client needs a non-empty {name}")
        _check_base_url(base_url)
        # Ids are path segments: one with "?" or "/" in it, or "..", must not change the request.
        account = _segment(account_id, "account id", "RealtimeKit client")
        app = _segment(app_id, "app id", "RealtimeKit client")
        root = f"{base_url.rstrip('/')}/accounts/{account}/realtime/kit/{app}"
        self._http = httpx.Client(
            base_url=root,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
        )
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        url = self._http.base_url
        self._server = f"{url.scheme}://{url.netloc.decode('ascii')}"
        """Where calls go, to name in errors when it cannot be reached (no path: no ids)."""

    def __enter__(self) -> "RealtimeKitClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the endpoints ---------------------------------------------------------------------

    def start_track_recording(
        self,
        meeting_id: str,
        *,
        user_ids: Sequence[str] | None = None,
        layers: Mapping[str, Mapping[str, Any]] | None = None,
        max_seconds: float | None = None,
    ) -> Recording:
        """Start recording each chosen participant (all of them without ``user_ids``) to a file.

        ``layers`` defaults to one layer named ``default`` whose prefix is ``default``, said
        outright: the older API form requires a layer, and the documents fix the prefix only
        where no layers are given; file names are read with one. The older
        form answered with an empty body; then the recording is looked up as the meeting's
        active one, once that is not the one running before the start.

        Starting is not repeated blindly: an error answer (5xx, 408) does not prove that
        nothing started, and a second start would record the meeting twice. After such an
        answer the meeting's active recording is looked up (one more GET against the rate
        limit, like the one before the first try), and one that was not there before the
        first try is taken as this start's. A 409 is looked into only after such an answer:
        as the first answer it says someone else's recording is in the way, which is not ours
        to take.
        """
        _segment(meeting_id, "meeting id", "start track recording")  # before any call
        body: dict[str, Any] = {"meeting_id": meeting_id}
        if user_ids is not None:
            body["user_ids"] = list(user_ids)
            if len(body["user_ids"]) > MAX_USER_IDS:
                raise RealtimeKitError(
                    0,
                    None,
                    f"{len(body['user_ids'])} user ids; one track recording takes at most "
                    f"{MAX_USER_IDS}",
                    call="start track recording",
                )
        layers = layers if layers is not None else {"default": {"file_name_prefix": "default"}}
        body["layers"] = {name: dict(layer) for name, layer in layers.items()}
        if max_seconds is not None:
            body["max_seconds"] = max_seconds
        settled, before = None, None
        try:
            before = self.active_recording(meeting_id)
        except RealtimeKitError as exc:  # cannot tell what is new: retried as before
            log.warning("start track recording: no look at the active recording (%s)", exc)
        else:
            known = before.id if before is not None else None
            settled = functools.partial(self._started_since, meeting_id, known)
        try:
            # A 409 while another recording was already going is that recording in the way,
            # not a passing conflict: trying again only waits for the same answer.
            data = self._call(
                "POST",
                "/recordings/track",
                json=body,
                settled=settled,
                retry_conflict=before is None,
            )
        except RealtimeKitError as exc:
            if exc.status != 409 or before is None:
                raise
            raise RealtimeKitError(
                exc.status,
                exc.code,
                f"{exc.message}; meeting {meeting_id} already has recording {before.id} "
                f"({before.status}): stop it, or wait for it to end, before starting another",
                call=exc.call,
            ) from None
        if isinstance(data, Recording):
            return data
        answer = data.get("recording", data) if isinstance(data, Mapping) else None
        if isinstance(answer, Mapping) and "id" in answer:
            try:
                return self._recording(answer, "start track recording")
            except UnexpectedAnswerError as exc:
                # It started all the same: lost here, it would record on, unknown to anyone.
                log.warning("%s; looked up as the meeting's active recording instead", exc)
        return self._started_recording(meeting_id, before)

    def _started_recording(self, meeting_id: str, before: Recording | None) -> Recording:
        """The recording a start the API accepted without naming it (the older form's empty
        body) began: the meeting's active one, once it is not ``before`` (the one running
        before the start, a composite recording say, which must not be taken for this
        one). The API may show the new one a moment late, so it is looked for a few times.
        With no ``before`` (none was running, or none could be looked up), whatever is
        active is taken."""
        known = before.id if before is not None else None
        for wait in _STARTED_LOOKS:
            self._sleep(wait)
            if (started := _new(self.active_recording(meeting_id), known)) is not None:
                return started
        running = (
            f"; recording {before.id} ({before.status}) was already running and is not it"
            if before is not None
            else ""
        )
        raise RealtimeKitError(
            0,
            None,
            f"the API accepted the request but shows no recording it started{running}; a "
            f"recording may still have begun: list the meeting's recordings "
            f"(list_recordings(meeting_id={meeting_id!r}, status=['INVOKED', 'RECORDING']))",
            call="start track recording",
        )

    def _started_since(self, meeting_id: str, known: str | None) -> Recording | None:
        """The meeting's active recording if it is not ``known`` (the one active before a
        start); None when there is none, or none can be looked up (then nothing is known)."""
        try:
            active = self._active_recording(meeting_id, once=True)
        except RealtimeKitError:
            return None
        return _new(active, known)

    def get_recording(self, recording_id: str) -> Recording:
        return self._get_recording(recording_id)

    def _get_recording(
        self, recording_id: str, *, deadline: float | None = None, once: bool = False
    ) -> Recording:
        segment = _segment(recording_id, "recording id", "get recording")
        try:
            data = self._call("GET", f"/recordings/{segment}", deadline=deadline, once=once)
        except RealtimeKitError as exc:
            if not _no_such_recording(exc):
                raise
            raise RecordingNotFoundError(exc.status, exc.code, exc.message, call=exc.call) from None
        return self._recording(data, "get recording")

    def active_recording(self, meeting_id: str) -> Recording | None:
        """The meeting's recording in progress, or None (the API answers 404 for none)."""
        return self._active_recording(meeting_id)

    def _active_recording(self, meeting_id: str, *, once: bool = False) -> Recording | None:
        try:
            segment = _segment(meeting_id, "meeting id", "active recording")
            data = self._call("GET", f"/recordings/active-recording/{segment}", once=once)
        except RealtimeKitError as exc:
            if exc.status == 404:
                return None
            raise
        return self._recording(data, "active recording")

    def list_recordings(
        self,
        *,
        meeting_id: str | None = None,
        status: Sequence[str] | None = None,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        expired: bool | None = None,
        search: str | None = None,
        sort_order: str | None = None,
        per_page: int = 50,
    ) -> Iterator[Recording]:
        """Every recording that matches, walking all pages (fetched as they are consumed)."""
        params: list[tuple[str, str]] = [("sort_by", "invokedTime")]
        for key, value in (
            ("meeting_id", meeting_id),
            ("start_time", start_time),
            ("end_time", end_time),
            ("search", search),
            ("sort_order", sort_order),
        ):
            if value is not None:
                params.append((key, value.isoformat() if isinstance(value, datetime) else value))
        if expired is not None:
            params.append(("expired", "true" if expired else "false"))
        params += [("status", s) for s in status or ()]
        page, seen = 1, set[str]()
        while True:
            query = [*params, ("page_no", str(page)), ("per_page", str(per_page))]
            data, paging = self._call("GET", "/recordings", params=query, with_paging=True)
            if not isinstance(data, list):
                raise RealtimeKitError(
                    0, None, "the answer holds no list of recordings", call="list recordings"
                )
            items = [self._recording(i, "list recordings") for i in data]
            new = [r for r in items if r.id not in seen]
            yield from new
            seen.update(r.id for r in new)
            total = paging.get("total_count") if isinstance(paging, Mapping) else None
            if isinstance(total, int | float) and not isinstance(total, bool) and total >= 0:
                # A server may send fewer than asked on every page (its own cap): the count
                # says when the list is done, not a short page. (A number: the SDK's type for
                # it is a float, 45.0.)
                last = len(seen) >= total
            else:
                last = len(items) < per_page
            if not new or last:
                return  # the last page, or a server that ignores paging (no endless loop)
            page += 1

    def pause(self, recording_id: str) -> Recording:
        """Pause recording. One already paused is returned as it is."""
        return self._action(recording_id, "pause", done=lambda status: status == "PAUSED")

    def resume(self, recording_id: str) -> Recording:
        """Resume a paused recording. One already recording is returned as it is."""
        return self._action(recording_id, "resume", done=lambda status: status == "RECORDING")

    def stop(self, recording_id: str) -> Recording:
        """Stop recording. A recording that already stopped (the meeting ended) is returned as
        it is now."""
        return self._action(recording_id, "stop", done=lambda status: status not in _NOT_STOPPED)

    def wait_until_uploaded(
        self,
        recording_id: str,
        *,
        timeout: float = DEFAULT_WAIT,
        poll: float = 1.0,
        max_poll: float = 30.0,
        on_status: Callable[[Recording], None] | None = None,
    ) -> Recording:
        """Poll until the files are ``UPLOADED``; ``ERRORED`` or the deadline raise.

        Polling starts at ``poll`` seconds and backs off to ``max_poll``: a meeting can last
        hours, and polling it every second would spend the account's rate limit for nothing.
        ``on_status`` hears every change of status.
        """
        deadline = time.monotonic() + timeout
        interval, last = poll, None
        while True:
            try:
                # Retries inside the call (a server asking for 15 minutes) end at the deadline.
                recording = self._get_recording(recording_id, deadline=deadline)
            except RealtimeKitError as exc:
                # A wait can last hours: an outage longer than one call's retries is waited
                # out until the deadline; an answer that will not change (404, 401) is not.
                if not (exc.transient or self._retry.should_retry(exc.status)):
                    raise
                if time.monotonic() >= deadline:
                    raise UploadTimeoutError(recording_id, last, timeout, f" ({exc})") from None
                log.warning("%s; still waiting", exc)
                self._sleep(min(max_poll, max(0.0, deadline - time.monotonic())))
                continue
            if recording.status != last:
                last = recording.status
                log.info("recording %s is %s", recording_id, recording.status)
                if on_status is not None:
                    on_status(recording)
            if recording.status == "UPLOADED":
                return recording
            if recording.status == "ERRORED":
                reason = recording.stop_reason.reason if recording.stop_reason else None
                raise RecordingFailedError(
                    0,
                    None,
                    f"recording {recording_id} ended ERRORED ({reason or 'no reason given'})",
                    call="wait for upload",
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise UploadTimeoutError(recording_id, recording.status, timeout)
            self._sleep(min(interval, left))
            interval = min(interval * 1.5, max_poll)

    # -- plumbing ---------------------------------------------------------------------------

    def _action(self, recording_id: str, action: str, *, done: Callable[[str], bool]) -> Recording:
        """Ask for ``action``. After a 409 or an answer that may have come after the action
        took effect (5xx, 408), the recording is looked at, and taken as the answer when
        ``done`` says it is already where the action leads: an action whose answer was lost
        is refused with 409 when repeated, and one asked twice is no error. Other 409s (a
        recording still starting) are waited out as the API documents, but not one that has
        stopped for good: no wait changes that.
        """
        segment = _segment(recording_id, "recording id", f"{action} recording")

        def already() -> Recording | None:
            try:
                current = self._get_recording(recording_id, once=True)
            except RealtimeKitError:
                return None
            if done(current.status):
                return current
            if current.status in _STOPPED:
                raise RealtimeKitError(
                    409,
                    None,
                    f"recording {recording_id} is {current.status}: it has stopped, and cannot "
                    f"be {action}d",
                    call=f"{action} recording",
                )
            return None

        data = self._call(
            "PUT",
            f"/recordings/{segment}",
            json={"action": action},
            settled=already,
            conflict_settles=True,
        )
        return self._recording(data, f"{action} recording")

    def _recording(self, data: object, call: str) -> Recording:
        try:
            return Recording.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "recording"
            raise UnexpectedAnswerError(
                0, None, f"unexpected recording in the answer: {where}: {first['msg']}", call=call
            ) from None

    def _call(
        self,
        method: str,
        path: str,
        *,
        with_paging: bool = False,
        retry_conflict: bool = True,
        settled: Callable[[], object | None] | None = None,
        conflict_settles: bool = False,
        deadline: float | None = None,
        once: bool = False,
        **kwargs: Any,
    ) -> Any:
        """One API call with retries; returns the envelope's ``data`` (and ``paging``).

        With ``deadline`` (``time.monotonic()``), no wait before a retry goes past it, and
        none is begun after it: the last error is raised instead.

        ``settled``, for a call that must not take effect twice, is asked after an answer that
        may have come after it took effect (5xx, 408, a timeout; then also 409, which a second
        try gets when the first took effect), before the call is repeated or given up: what it
        returns other than None is taken as the call's outcome. With ``conflict_settles`` it
        is asked after any 409 (one that may say the effect is already there). Its own call
        is made ``once``: retried inside each retry, a long outage would cost the rate limit
        some seven times the requests, and the wait before giving up as much.
        """
        call = f"{method} {path}"
        unclear = False  # an answer so far may have come after the call took effect
        # A POST that may have reached the server, with nothing to tell whether it took
        # effect, is not repeated: whatever the sign of that (a broken connection, a 5xx).
        blind = method == "POST" and settled is None
        attempts = 1 if once else self._retry.attempts
        for attempt in range(1, attempts + 1):
            try:
                response = self._read(method, path, call, **kwargs)
            except UNSENDABLE as exc:
                # Repeating a request that cannot be sent only repeats the error (for seconds).
                raise RealtimeKitError(0, None, _unsendable(exc), call=call) from None
            except httpx.TransportError as exc:
                # A request that never connected is safe to repeat; one that may have reached
                # the server (the answer timed out, the connection broke) is repeated only
                # when repeating it changes nothing (not POST), or when ``settled`` finds
                # that it did not take effect.
                reached = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if reached and settled is not None:
                    unclear = True
                    outcome = settled()
                    if outcome is not None:
                        log.warning("%s: %s, but it took effect", call, describe_error(exc))
                        return outcome
                wait = _until(deadline, self._retry.delay(attempt))
                if (reached and blind) or attempt == attempts or wait is None:
                    tries = f", {attempt} attempts" if attempt > 1 else ""
                    reason = f"{describe_error(exc)} ({self._server}{tries})"
                    raise RealtimeKitError(0, None, reason, call=call, transient=True) from None
                log.warning("%s: %s; retrying in %.1f s", call, describe_error(exc), wait)
                self._sleep(wait)
                continue
            if response.is_success:
                payload = _json(response)
                data = payload.get("data", payload.get("result")) if payload else None
                if not with_paging:
                    return data
                return data, payload.get("paging") if payload else None
            status = response.status_code
            error = _error(response, call)
            unclear = unclear or status == 408 or status >= 500
            asked = unclear or (conflict_settles and status == 409)
            if settled is not None and (status in (408, 409) or status >= 500) and asked:
                outcome = settled()
                if outcome is not None:
                    log.warning("%s: HTTP %d, but it took effect; not repeated", call, status)
                    return outcome
            if unclear and blind:  # a second recording, or a 409 that hides the first
                raise RealtimeKitError(
                    status,
                    error.code,
                    f"{error.message}; it may have taken effect all the same, so it was not "
                    "repeated",
                    call=call,
                )
            retry = self._retry.should_retry(status) and (retry_conflict or status != 409)
            if not retry or attempt == attempts:
                raise error
            retry_after = response.headers.get("retry-after")
            # A caller with a deadline (a wait for an upload, which may be hours) has said
            # how long it will wait: a long ask is not refused, but waited in steps of at most
            # max_retry_after until the deadline.
            refused = self._retry.refused_wait(retry_after) if deadline is None else None
            if refused is not None:
                raise RealtimeKitError(
                    status,
                    error.code,
                    f"{error.message}{shown_retry_after(retry_after)}: {refused}",
                    call=call,
                )
            wait = _until(deadline, self._retry.delay(attempt, retry_after))
            if wait is None:
                raise error
            log.warning("%s: HTTP %d; retrying in %.1f s", call, status, wait)
            self._sleep(wait)
        raise AssertionError("unreachable")

    def _read(self, method: str, path: str, call: str, **kwargs: Any) -> httpx.Response:
        """The whole answer, read only up to :data:`_MAX_REPLY`: a proxy or a broken server
        answering with a file, or without end, must cost an error, not the memory of a
        batch worker."""
        with self._http.stream(method, path, **kwargs) as streamed:
            body = bytearray()
            for chunk in streamed.iter_bytes():
                body += chunk
                if len(body) > _MAX_REPLY:
                    raise RealtimeKitError(
                        streamed.status_code,
                        None,
                        f"the answer is longer than {_MAX_REPLY // 2**20} MiB, which no API "
                        "answer is; it was not read further",
                        call=call,
                    )
        # The body is decoded already: the headers that described its encoding go.
        headers = [
            (name, value)
            for name, value in streamed.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            streamed.status_code,
            headers=headers,
            content=bytes(body),
            request=streamed.request,
            extensions={k: v for k, v in streamed.extensions.items() if k == "reason_phrase"},
        )


_MAX_REPLY = 16 * 2**20
"""The longest API answer read, bytes: a page of recordings is tens of kilobytes."""


def _until(deadline: float | None, wait: float) -> float | None:
    """``wait``, cut to end at ``deadline``; None when the deadline has passed."""
    if deadline is None:
        return wait
    left = deadline - time.monotonic()
    return min(wait, left) if left > 0 else None


def _new(active: Recording | None, known: str | None) -> Recording | None:
    """``active``, the meeting's active recording, unless it is ``known`` (the one that was
    active before a start) or there is none."""
    return active if active is not None and active.id != known else None


def _segment(value: str, what: str, call: str) -> str:
    """An id as one path segment: ids come from users and must not add path components.

    One that cannot be a segment is the user's mistake, so it is a :class:`RealtimeKitError`
    naming the id (the command line answers it as bad input), raised before any request.
    """
    if value in ("", ".", ".."):
        raise RealtimeKitError(0, None, f"{value!r} is not a usable {what}", call=call)
    return quote(value, safe="")


_NOT_STOPPED = ("INVOKED", "RECORDING", "PAUSED")
_STOPPED = tuple(s for s in get_args(RecordingStatus) if s not in _NOT_STOPPED)
"""Known to have stopped for good (a status added later is neither, until it is known)."""


def _check_base_url(base_url: str) -> None:
    """A base URL is a scheme, a host and a path: a query or fragment would swallow the
    paths appended to it, and credentials in it would be repeated wherever it is named."""
    try:
        parts = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"the RealtimeKit base URL is not a URL ({exc})") from None
    if parts.query or parts.fragment or parts.userinfo:
        raise ValueError(
            "the RealtimeKit base URL must not hold a query, a fragment or a user name and "
            "password (check --base-url, $REALTIMEKIT_BASE_URL or the config file)"
        )
    if parts.scheme == "http" and not _on_this_machine(parts.host):
        log.warning(
            "the RealtimeKit base URL %s is http://, not https://: the API token is sent "
            "unencrypted to %s (check --base-url, $REALTIMEKIT_BASE_URL or the config file)",
            base_url,
            parts.host,
        )


def _on_this_machine(host: str) -> bool:
    """Whether ``host`` is this machine (an emulator, a proxy here): plain HTTP to it does
    not cross a network."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return False


def _unsendable(exc: Exception) -> str:
    """Why a request could not be sent, without the exception's text: for a header that is
    not valid HTTP, that text quotes the header, which may be the Authorization one."""
    if isinstance(exc, httpx.UnsupportedProtocol):
        return (
            f"{describe_error(exc)} (the base URL must be http:// or https://: check "
            "--base-url, $REALTIMEKIT_BASE_URL or the config file)"
        )
    return (
        "the request is not valid HTTP (LocalProtocolError): a setting sent in a header, such "
        "as the API token, holds a character a header cannot carry (a line break?)"
    )


def _json(response: httpx.Response) -> dict[str, Any] | None:
    if not response.content:
        return None
    try:
        payload = response.json()
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _no_such_recording(error: RealtimeKitError) -> bool:
    """Whether the API says that the recording asked for is not there: a 404, or a 403 in
    RealtimeKit's own envelope (whose code is the HTTP status; the gateway's are its own)."""
    return error.status == 404 or (error.status == 403 and str(error.code) == "403")


def _error(response: httpx.Response, call: str) -> RealtimeKitError:
    """Either envelope, or whatever else came back, as one error."""
    payload = _json(response) or {}
    code: int | str | None = None
    message = ""
    if isinstance(payload.get("error"), Mapping):  # RealtimeKit's own
        code = payload["error"].get("code")
        message = str(payload["error"].get("message") or "")
    elif isinstance(payload.get("errors"), list) and payload["errors"]:  # Cloudflare's gateway
        first = payload["errors"][0]
        if isinstance(first, Mapping):
            code = first.get("code")
            message = "; ".join(
                str(e.get("message", "")) for e in payload["errors"] if isinstance(e, Mapping)
            )
    if not message:
        message = response.reason_phrase or "no reason given"
    return RealtimeKitError(response.status_code, code, message, call=call)
