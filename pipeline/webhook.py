"""Receive RealtimeKit's ``recording.statusUpdate`` webhooks and act on finished uploads.

Every delivery is checked before anything is believed: ``rtk-signature`` must be a valid
RSA-SHA256 (PKCS#1 v1.5) signature of the raw body under RealtimeKit's public key. Deliveries
are retried by the sender, so each ``rtk-uuid`` is acted on once, and each recording is
handled once however many deliveries announce it. Work runs on one background thread: the
sender gets its 2xx at once and does not time out while a meeting is transcribed. A recording
announced ``UPLOADED`` that the API does not show so yet (the webhook can come first) is put
aside and looked at again, without holding up the recordings behind it. The sender
redelivers only after a 5xx, so nothing answered 2xx may be lost without a word: a recording
given up on (it failed every try, it was not shown ``UPLOADED`` in time, the receiver stopped
before it was done, or RealtimeKit says its recording failed) goes to ``on_failed``, and each
refused delivery is logged.
"""

import base64
import binascii
import collections
import contextlib
import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import ValidationError

from models import (
    Recording,
    TrackFailure,
    WebhookEvent,
    describe,
    describe_error,
    redact_urls,
    safe_file_name,
)
from stages.record import DEFAULT_UPLOAD_WAIT, RecordingNotFoundError, UploadTimeoutError

from ._listen import MAX_BODY, LocalServer, declared_length, listen

__all__ = [
    "NotRetried",
    "PartialTranscript",
    "ReceiverStopped",
    "RecordingErrored",
    "WebhookReceiver",
    "load_public_key",
    "verify_signature",
]

log = logging.getLogger(f"trackscribe.{__name__}")

_T = TypeVar("_T")

_SEEN_LIMIT = 100_000
_REQUEST_SECONDS = 60.0
"""The most a sender may take over one request, headers and body: one that trickles a byte
at a time must not hold a thread for as long as each read may take (30 s) times its bytes."""
_MAX_CONNECTIONS = 64
"""Requests handled at once; more are answered 503 (the sender redelivers after a 5xx)."""
_REFUSALS_LOGGED_EVERY = 60.0
_THROTTLED = frozenset({401, 411, 413})
"""Refusals logged at most once a minute: unsigned, length-less or oversized requests, which
scanners send by the thousand. A signed delivery refused is RealtimeKit's, and each is said."""
_ID_SHOWN = 100
"""The most of an announced recording id a log line shows: a body may hold a long one."""
_TEXT_SHOWN = 300
"""The most of a longer text from a request (a body's first problem, a request line) shown."""
_REPORT_SECONDS = 15.0
"""How long :meth:`WebhookReceiver.close` waits, once its grace is over, for a failure the
worker is reporting already to be reported: the command line's ``on_failed`` looks an ERRORED
recording up (up to 5 s) before it writes failed.json, and the worker is a daemon thread, so a
stop that did not wait would end the process half-way through, leaving neither failed.json nor
the error line. Bounded, so that a report that hangs cannot hold a stop for ever."""
_UPLOAD_POLL = 1.0
_UPLOAD_MAX_POLL = 30.0
"""Seconds between looks at a recording the API does not show ``UPLOADED`` yet: the first
after one, each half as long again as the last, up to 30 (``wait_until_uploaded``'s own
defaults): the API usually catches up within seconds, and a recording waited for an hour
must not spend the account's rate limit."""


class ReceiverStopped(Exception):
    """The receiver stopped with a recording it had accepted not handled. Stopped between two
    tries of it, its ``__cause__`` is how the last try failed."""


class RecordingErrored(Exception):
    """RealtimeKit announced the recording as failed on its side: no files will come."""


class NotRetried(Exception):
    """Raised by ``on_uploaded`` (its cause the failure) for a failure no try again can mend:
    every file of the recording lost for good (storage has none of them, say). The recording
    goes to ``on_failed`` at once instead of after every try."""


class PartialTranscript(Exception):
    """The transcript was written, but lacks files that could not be fetched *for now* (a
    download failed); raised by ``on_uploaded`` so that the receiver tries the recording
    again, as for any failure, and, after its last try, gives it to ``on_failed``."""

    def __init__(self, recording_id: str, missing: Sequence[TrackFailure]) -> None:
        self.recording_id = recording_id
        self.missing = list(missing)
        """The files that could not be fetched, each with why."""
        reasons = "; ".join(failure.describe() for failure in self.missing)
        super().__init__(
            f"recording {recording_id}: the transcript lacks {len(self.missing)} file(s) that "
            f"could not be fetched: {reasons}"
        )


@dataclass
class _Job:
    """A recording accepted and not done, with how far it has come: it is taken up again
    where it was when it was put aside to wait for its upload."""

    recording: Recording
    attempt: int = 1
    """The try it is at: a look that finds it not uploaded yet counts for none."""
    awaited_since: float | None = None
    """``time.monotonic()`` of the first look that found it not ``UPLOADED``; None: none did,
    or a try got past the look since (the wait is over: see :func:`_waited`)."""
    status: str | None = None
    """What the API showed at the last look (None: it could not be asked; see ``why``)."""
    why: str = ""
    interval: float = _UPLOAD_POLL
    """Seconds to the look after next."""
    due: float = 0.0
    """``time.monotonic()`` at which it is looked at again, once put aside."""


def verify_signature(public_key_pem: bytes, body: bytes, signature: str) -> bool:
    """True when ``signature`` (base64) is RealtimeKit's signature of exactly ``body``."""
    return _verify(load_public_key(public_key_pem), body, signature)


_ID_FIELDS = ("id", "recordingId", "recording_id")
"""Where a recording's id may be, by the shapes the API has been seen to send."""
_ACTED_ON = (*_ID_FIELDS, "status", "meetingId", "meeting_id")
"""The recording's fields an announcement is acted on by: the rest is read from the API."""


def _event(body: object) -> WebhookEvent:
    """The delivery's event. A recording whose other fields cannot be read (a listing of a
    shape not seen before, a size that is not a number) is still announced by its id and
    status: a 400 would lose the announcement for good, as the sender redelivers only after
    a 5xx."""
    try:
        return WebhookEvent.model_validate(body)
    except ValidationError:
        if not isinstance(body, dict) or not isinstance(recording := body.get("recording"), dict):
            raise
        meeting = body.get("meeting")
        event = WebhookEvent.model_validate(
            {
                "event": body.get("event"),
                "recording": {k: v for k, v in recording.items() if k in _ACTED_ON},
                "meeting": meeting if isinstance(meeting, dict) else None,
            }
        )
        log.warning(
            "webhook: recording %s: fields other than its id and status (or the meeting's) "
            "cannot be read; acting on those",
            _shown(event.recording.id) if event.recording else "?",
        )
        return event


def load_public_key(public_key_pem: bytes) -> rsa.RSAPublicKey:
    """The RSA public key in ``public_key_pem``; else a ValueError saying in a few words why
    not (cryptography's own text points at its FAQ, which tells a user less)."""
    try:
        key = load_pem_public_key(public_key_pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"not an RSA public key ({type(key).__name__.lstrip('_')})")
    return key


def _verify(key: rsa.RSAPublicKey, body: bytes, signature: str) -> bool:
    try:
        key.verify(
            base64.b64decode(signature, validate=True), body, padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


class WebhookReceiver:
    """An HTTP endpoint for webhooks; ``on_uploaded`` runs once per recording that is uploaded.

    ``on_uploaded`` runs on the receiver's worker thread. When it raises, it is tried again
    (``tries`` in all, ``retry_wait`` seconds times the try number apart); when every try
    failed, ``on_failed`` gets the recording and the last error, so the failure can be kept
    somewhere more lasting than a log (the sender already has its 2xx and will not
    redeliver), and a later announcement of the recording is acted on again. When it raises
    :class:`~stages.record.RecordingNotFoundError` (the API has no such recording: another
    app's, as RealtimeKit's key signs every app's deliveries), the recording is left at once
    with a warning: not tried again, not given to ``on_failed``, and any announcement of it
    again ignored. ``on_uploaded`` that wrote a transcript lacking files a later try may get
    raises :class:`PartialTranscript`: tried again like any failure. One that raises
    :class:`NotRetried` goes to ``on_failed`` at once: no try again can mend it.

    RealtimeKit's webhook may come before the API shows the recording ``UPLOADED``:
    ``on_uploaded`` that finds it so raises :class:`~stages.record.UploadTimeoutError` (as
    ``client.wait_until_uploaded(id, timeout=0)``, one look, does), which is not a try. The
    recording is put aside and looked at again (``on_uploaded`` runs again) after 1 s, then
    less and less often (up to every 30 s), until ``upload_timeout`` seconds after the first
    such look; then it goes to ``on_failed`` with an ``UploadTimeoutError`` that says what the
    API last showed ("still UPLOADING after 3600 s"). A try that gets past the look ends the
    wait: a later try's look that raises it again begins a wait of its own. Meanwhile the
    worker handles the recordings behind it, and :meth:`close` gives it up at once, as one
    not begun. When ``on_uploaded`` finds it ended ``ERRORED``, it raises
    :class:`RecordingErrored`: the recording goes to ``on_failed`` at once, as one announced
    so.

    A recording announced ``ERRORED`` goes to ``on_failed`` with :class:`RecordingErrored`,
    which may look it up first: when that raises ``RecordingNotFoundError``, the recording is
    left as another app's, as above, and nothing is said of its failure. A recording goes to
    ``on_failed`` as ERRORED once, however it is found so: announced ``UPLOADED`` before and
    not begun, or put aside, it is given up on in its turn as announced; in hand, its look
    decides (one that finds it not ``UPLOADED`` gives it up as announced, not put aside).
    Once known ERRORED, announcements of it again, ``UPLOADED`` as well, are not acted on.
    """

    def __init__(
        self,
        public_key_pem: bytes,
        on_uploaded: Callable[[Recording], None],
        *,
        on_failed: Callable[[Recording, BaseException], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tries: int = 3,
        retry_wait: float = 2.0,
        upload_timeout: float = DEFAULT_UPLOAD_WAIT,
    ) -> None:
        self._key = load_public_key(public_key_pem)  # a bad key is refused now, not at a delivery
        self._on_uploaded = on_uploaded
        self._on_failed = on_failed
        self._tries = max(1, tries)
        self._retry_wait = max(0.0, retry_wait)
        self._upload_timeout = max(0.0, upload_timeout)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        """Notified when a recording is queued or done, and at :meth:`close`."""
        self._seen_deliveries: set[bytes] = set()
        self._handled: set[str] = set()
        self._errored: set[str] = set()
        """Recordings announced as ERRORED: each goes to ``on_failed`` once, however many
        deliveries announce it (nothing about it can change, so nothing is retried)."""
        self._not_ours: set[str] = set()
        """Recordings the API says are not this app's: a replay of one is not looked up again."""
        self._waiting: collections.deque[_Job] = collections.deque()
        """Recordings to take up now, in turn."""
        self._later: list[_Job] = []
        """Recordings put aside until the API shows them ``UPLOADED``, each to be taken up
        again (moved to ``_waiting``) when it is due."""
        self._current: Recording | None = None
        """The recording the worker has in hand. It is taken from ``_waiting``, and let go of
        (or put in ``_later``) under the lock, so each recording accepted and not done is in
        one of the three whatever the worker's thread is doing: :meth:`close` cannot ask the
        thread (after a join that a signal interrupted, Python 3.11 takes a thread for ended
        that still runs)."""
        self._abandoned: str | None = None
        """The recording :meth:`close` gave up on while the worker still had it in hand."""
        self._reporting: str | None = None
        """The recording in hand whose failure the worker is reporting: :meth:`close` leaves
        that report to it rather than make a second (see :meth:`_may_report`)."""
        self._refusals = 0
        self._refusals_logged_at = -_REFUSALS_LOGGED_EVERY
        self._connections = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        handler = self._handler()
        self._server = listen(host, port, lambda address: LocalServer(address, handler))
        self._worker_thread: threading.Thread | None = None
        self._serving = False
        self._closed = False

    @property
    def url(self) -> str:
        return f"{self._server.url}/"

    def start(self) -> "WebhookReceiver":
        """Serve on a thread of its own; see :meth:`serve_forever`."""
        self._start_worker()
        thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="webhook")
        thread.start()
        return self

    def serve_forever(self, *, grace: float = 60.0) -> None:
        """Serve until interrupted (Ctrl-C, or an exception a signal handler raises), then
        :meth:`close` with ``grace``. A receiver is started once, by this or :meth:`start`."""
        self._start_worker()
        try:
            self._server.serve_forever()
        finally:
            self.close(grace=grace)

    def _start_worker(self) -> None:
        """Start the worker, refusing a second start: a second worker would handle two
        recordings at once, which the one-at-a-time design does not allow for."""
        if self._serving or self._closed:
            raise RuntimeError("the webhook receiver can be started once")
        self._serving = True
        self._worker_thread = threading.Thread(
            target=self._worker, daemon=True, name="webhook-worker"
        )
        self._worker_thread.start()

    def close(self, *, grace: float = 60.0) -> None:
        """Stop taking deliveries. A recording accepted but not yet begun, or put aside until
        the API shows it ``UPLOADED``, is given up on at once; the one being handled has until
        ``grace`` seconds after this call began to be done (a second Ctrl-C ends the wait),
        and is given up on if it is not. The grace is one deadline, which reporting the
        waiting ones spends too: ``on_failed`` may take seconds for each (it looks an ERRORED
        one up), and a stop must not last that long on top of the grace. Each given up on
        goes to ``on_failed`` and the log: its sender has had its 2xx and will not redeliver.
        One whose failure the worker is reporting already when the wait ends is left to that
        report, not made a second, and waited for (up to ``_REPORT_SECONDS`` more; a second
        Ctrl-C ends that wait too)."""
        if self._closed:
            return
        deadline = time.monotonic() + grace
        self._closed = True
        if self._serving:  # shutdown() waits for a serve_forever that never ran
            self._server.shutdown()
        self._server.server_close()
        with self._changed:
            waiting = collections.deque(self._waiting)
            waiting.extend(sorted(self._later, key=lambda job: job.due))
            self._waiting.clear()
            self._later.clear()
            current = self._current
            self._changed.notify_all()  # the worker ends after the recording in hand
        self._say_unlogged_refusals()
        worker = self._worker_thread
        if worker is threading.current_thread():  # closed by on_uploaded: it is in hand
            current = None
        # Every id is said first, in a line or two: what follows (on_failed, the wait) may be
        # cut short by a second stop.
        if fresh := [job.recording.id for job in waiting if job.awaited_since is None]:
            log.warning(
                "webhook: stopping; %d recording(s) accepted and not begun are given up on: %s",
                len(fresh),
                ", ".join(fresh),
            )
        if awaited := [job for job in waiting if job.awaited_since is not None]:
            log.warning(
                "webhook: stopping; %d recording(s) the API does not show UPLOADED yet are "
                "given up on: %s",
                len(awaited),
                ", ".join(f"{job.recording.id} ({_last_seen(job)})" for job in awaited),
            )
        if current is not None:
            log.warning(
                "webhook: stopping; waiting up to %g s for recording %s to be done "
                "(a second Ctrl-C leaves it)",
                grace,
                current.id,
            )
        try:
            while waiting:
                self._give_up(waiting[0].recording, _stopped(waiting[0]))
                waiting.popleft()
            if current is not None and worker is not None:
                worker.join(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            if waiting:
                log.error(
                    "webhook: stopped before recording(s) %s could be reported as not handled; "
                    "by hand: %s",
                    ", ".join(job.recording.id for job in waiting),
                    _by_hand("ID"),
                )
            if current is not None:
                left, reporting = self._leave_current()
                if left is not None and reporting:
                    self._await_report(left)
                elif left is not None:
                    self._give_up(left, _not_handled(left, "while handling it"))

    def _leave_current(self) -> tuple[Recording | None, bool]:
        """The recording still in hand when :meth:`close` stops waiting (not
        ``worker.is_alive()``: see ``_current``), now marked as given up on; and whether the
        worker is reporting its failure already, in which case it is left to that."""
        with self._lock:
            left = self._current
            if left is not None and self._reporting == left.id:
                return left, True
            self._abandoned = left.id if left is not None else None
            return left, False

    def _await_report(self, recording: Recording) -> None:
        """Wait, up to ``_REPORT_SECONDS``, for the worker to finish reporting the failure of
        ``recording``: the process may end as soon as :meth:`close` returns, and with it the
        worker's daemon thread, half-way through the report. The worker lets go of the
        recording when the report is done (not ``worker.join``: see ``_current``)."""
        log.warning(
            "webhook: stopping; waiting up to %g s for the failure of recording %s to be "
            "reported (a second Ctrl-C leaves it)",
            _REPORT_SECONDS,
            recording.id,
        )
        reported = False
        try:
            with self._changed:
                reported = self._changed.wait_for(
                    lambda: self._current is not recording, timeout=_REPORT_SECONDS
                )
        finally:
            if not reported:
                log.warning(
                    "webhook: stopped while the failure of recording %s was being reported; "
                    "it is not reported again (the stop may cut that report short)",
                    recording.id,
                )

    def _say_unlogged_refusals(self) -> None:
        """Say how many refusals the once-a-minute limit kept out of the log: a stop must not
        leave them unsaid."""
        with self._lock:
            count, self._refusals = self._refusals, 0
        if count:
            log.warning(
                "webhook: %d more request(s) refused (401, 411 or 413) since the last one logged",
                count,
            )

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_idle(self) -> None:
        """Block until every accepted recording has been handled (tests and scripts), those
        waiting for the API to show them ``UPLOADED`` included."""
        with self._changed:
            self._changed.wait_for(
                lambda: not self._waiting and not self._later and self._current is None
            )

    # -- internals ---------------------------------------------------------------------------

    def _accept(self, body: bytes, signature: str | None, delivery: str | None) -> tuple[int, str]:
        """Judge one delivery: the HTTP status to answer and why. A refusal is logged: the
        sender does not redeliver after a 4xx, so a wrong public key would otherwise lose
        every recording without a word."""
        # A header's surrounding spaces are the sender's layout, not part of its value.
        signature = signature.strip() if signature is not None else None
        delivery = delivery.strip() if delivery is not None else None
        status, reason = self._judge(body, signature, delivery)
        if status in _THROTTLED:
            self._refused(status, reason)
        elif 400 <= status < 500:
            # Signed, so RealtimeKit's, and lost for good: each one is said, with what it was of.
            announced = _announced_id(body)
            log.warning(
                "webhook: refused a signed delivery%s (%d %s); the sender does not deliver it "
                "again",
                f" announcing recording {announced}" if announced else "",
                status,
                reason,
            )
        return status, reason

    def _judge(self, body: bytes, signature: str | None, delivery: str | None) -> tuple[int, str]:
        if not signature or not _verify(self._key, body, signature):
            return 401, "bad or missing rtk-signature"
        try:
            event = _event(json.loads(body))
        except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError, are ValueErrors
            problem = _first_problem(exc) if isinstance(exc, ValidationError) else "not JSON"
            return 400, f"body is not a webhook event: {problem}"
        except RecursionError:
            return 400, "body is not a webhook event: nested too deep"
        with self._lock:
            if self._closed:
                return 503, "stopping; deliver again later"
            if delivery:
                # Kept as a digest: the header is the sender's to make as long as it likes.
                seen = hashlib.sha256(delivery.encode(errors="surrogateescape")).digest()
                if seen in self._seen_deliveries:
                    return 200, "duplicate delivery, ignored"
                _remember(self._seen_deliveries, seen)
            recording = event.recording
            if event.event != "recording.statusUpdate" or recording is None:
                return 200, f"event {event.event} ignored"
            if _unsafe_id(recording.id):
                return 400, "recording.id: not usable as a folder name"
            if recording.id in self._not_ours:
                return 200, "not a recording of this app; ignored"
            recording = _with_meeting(recording, event.meeting)
            log.info("webhook: recording %s is %s", recording.id, _shown(recording.status))
            if recording.id in self._errored:  # ERRORED is final: an UPLOADED is a replay
                return 200, "the recording's failure was noted already"
            if recording.status == "ERRORED":
                self._note_errored(recording)
                return 200, "noted: the recording failed"
            if recording.status != "UPLOADED":
                return 200, "noted"
            if recording.id in self._handled:
                return 200, "recording already handled"
            self._handled.add(recording.id)
            self._queue(recording)
        return 202, "accepted"

    def _queue(self, recording: Recording) -> None:
        """Hand ``recording`` to the worker (lock held)."""
        self._waiting.append(_Job(recording))
        self._changed.notify_all()

    def _note_errored(self, recording: Recording) -> None:
        """Queue ``recording``, announced ERRORED, to go to ``on_failed`` in turn with the rest
        (lock held). It may have a job already, announced UPLOADED: one recording is never
        two jobs, nor reported twice. One waiting, or put aside, is replaced by this; the
        one in hand is left to its own look, which finds the recording ERRORED, or, if the
        API does not show it so yet, gives it up as announced so rather than put it aside."""
        _remember(self._errored, recording.id)
        if self._current is not None and self._current.id == recording.id:
            return
        earlier = self._take_out(recording.id)
        if earlier is not None and recording.meeting_id is None:  # failed.json names it
            recording = recording.model_copy(update={"meeting_id": earlier.meeting_id})
        self._queue(recording)

    def _take_out(self, recording_id: str) -> Recording | None:
        """Take the job of ``recording_id`` out of ``_waiting`` or ``_later`` (lock held): its
        recording, as announced; None if it has none there."""
        found: Recording | None = None
        for jobs in (self._waiting, self._later):
            for job in [job for job in jobs if job.recording.id == recording_id]:
                jobs.remove(job)
                found = job.recording
        return found

    def _refused(self, status: int, reason: str) -> None:
        """A refused request that is not surely RealtimeKit's (unsigned, no length, too long),
        logged; at most once a minute, with how many since: a sender that is refused once is
        refused again at every delivery, and scanners send such requests by the thousand."""
        now = time.monotonic()
        with self._lock:
            self._refusals += 1
            if now - self._refusals_logged_at < _REFUSALS_LOGGED_EVERY:
                return
            count, self._refusals, self._refusals_logged_at = self._refusals, 0, now
        log.warning(
            "webhook: refused %s (%d %s); the sender does not deliver these again%s",
            "a delivery" if count == 1 else f"{count} deliveries in the last minute, the last",
            status,
            reason,
            ": is the public key RealtimeKit's for this app?" if status == 401 else "",
        )

    def _worker(self) -> None:
        """Handles accepted recordings one by one; a failure is retried, then logged, and never
        stops the worker (the sender already has its 2xx and will not redeliver)."""
        while (job := self._take()) is not None:
            recording = job.recording
            try:
                if recording.status != "ERRORED":
                    self._handle(job)
                elif self._may_report(recording):
                    self._give_up(recording, RecordingErrored(_ERRORED))
            finally:
                with self._changed:
                    self._current = self._reporting = None
                    self._changed.notify_all()

    def _take(self) -> _Job | None:
        """The next recording, now in hand: the first waiting, those put aside joining the
        queue as each comes due; None once the receiver is closing (what is still waiting
        then is :meth:`close`'s to report). The wait until the next comes due is on the
        condition :meth:`close` notifies, so a stop does not wait for it."""
        with self._changed:
            while not self._closed:
                now = time.monotonic()
                due = [job for job in self._later if job.due <= now]
                if due:
                    self._later = [job for job in self._later if job.due > now]
                    self._waiting.extend(sorted(due, key=lambda job: job.due))
                if self._waiting:
                    job = self._waiting.popleft()
                    self._current = job.recording
                    return job
                next_due = min((job.due for job in self._later), default=None)
                self._changed.wait(None if next_due is None else next_due - now)
            return None

    def _handle(self, job: _Job) -> None:
        recording = job.recording
        error: BaseException | None = None
        for attempt in range(job.attempt, self._tries + 1):
            try:
                self._on_uploaded(recording)
                if self._was_abandoned(recording):
                    log.warning(
                        "webhook: recording %s was done after all, after it was reported as "
                        "not handled",
                        recording.id,
                    )
                return
            except BaseException as exc:  # nothing may kill the worker
                if isinstance(exc, KeyboardInterrupt):
                    raise
                if isinstance(exc, RecordingNotFoundError):
                    self._not_this_apps(recording, exc)
                    return
                if isinstance(exc, UploadTimeoutError):  # not uploaded yet: no try spent
                    job.attempt = attempt
                    if (error := self._put_aside(job, exc)) is None:
                        return
                    break
                _waited(job)
                error = exc
                if isinstance(exc, RecordingErrored):  # said once, by _give_up
                    with self._lock:  # an announcement of it again is not acted on
                        _remember(self._errored, recording.id)
                    break
                final = isinstance(exc, NotRetried)
                log.error(
                    "webhook: handling recording %s failed (try %d of %d%s): %s",
                    recording.id,
                    attempt,
                    self._tries,
                    "; no try again can mend it" if final else "",
                    describe_error(exc.__cause__ or exc if final else exc),
                )
                log.debug("webhook: traceback", exc_info=exc)
                if final:
                    break
                if attempt < self._tries and self._stopped_in(attempt):
                    error = _stopped_after(attempt, self._tries, exc)
                    break
        if error is not None and self._may_report(recording):
            self._give_up(recording, error)

    def _stopped_in(self, attempt: int) -> bool:
        """Wait before the try after ``attempt``; True if the receiver was stopped meanwhile.
        A stop must not wait out the pause, nor begin a try it would then wait for too: the
        stop is what is reported, with the last failure (see :func:`_stopped_after`)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._closed, self._retry_wait * attempt)

    def _put_aside(self, job: _Job, seen: UploadTimeoutError) -> BaseException | None:
        """Put ``job`` aside, to be looked at again, as the API does not show it ``UPLOADED``
        yet (``seen`` says what it showed): None. Moved from in hand to ``_later`` under the
        lock in one step, so that :meth:`close` finds it in one or the other. Else why it is
        given up on: it was announced ERRORED meanwhile (that announcement left it to this
        look), ``upload_timeout`` has passed since the first such look, or the receiver is
        stopping (it is still in hand then, and reported as such)."""
        now = time.monotonic()
        first = job.awaited_since is None
        since = job.awaited_since = now if job.awaited_since is None else job.awaited_since
        job.status, job.why = seen.last_status, seen.why
        deadline = since + self._upload_timeout
        with self._changed:
            if job.recording.id in self._errored:  # announced so since it was taken up
                return RecordingErrored(_ERRORED)
            if now >= deadline:
                return UploadTimeoutError(
                    job.recording.id, job.status, self._upload_timeout, job.why
                )
            if self._closed:
                return _stopped(job)
            job.due = min(now + job.interval, deadline)
            job.interval = min(job.interval * 1.5, _UPLOAD_MAX_POLL)
            self._later.append(job)
            self._current = None
            self._changed.notify_all()
        if first:
            log.warning(
                "webhook: recording %s was announced UPLOADED, but %s; looking again for up "
                "to %g s",
                job.recording.id,
                f"the API shows it {job.status}"
                if job.status
                else f"the API could not be asked{job.why}",
                self._upload_timeout,
            )
        return None

    def _not_this_apps(self, recording: Recording, error: RecordingNotFoundError) -> None:
        """Leave a recording the API does not know: a delivery signed by RealtimeKit may be
        of another app's recording (its key signs every app's). Asking again gets the same
        answer, and failed.json would ask a hand to fetch someone else's meeting; a replay
        of it is ignored."""
        with self._lock:
            self._handled.discard(recording.id)
            _remember(self._not_ours, recording.id)
        log.warning(
            "webhook: recording %s is not one of this app's (%s); ignored, as is any "
            "announcement of it again. If it should be, are the account and app ids those "
            "of the app whose webhook this is?",
            recording.id,
            describe_error(error),
        )

    def _was_abandoned(self, recording: Recording) -> bool:
        """Whether :meth:`close` has reported ``recording`` as not handled already."""
        with self._lock:
            return self._abandoned == recording.id

    def _may_report(self, recording: Recording) -> bool:
        """Whether the worker is to report ``recording``, in hand, as not handled: not when
        :meth:`close` has already; and once it is, close does not. Decided under the lock, as
        a report may take seconds (``on_failed`` looks an ERRORED recording up): a stop whose
        grace ran out meanwhile would write failed.json, and log the error, a second time."""
        with self._lock:
            if self._abandoned == recording.id:
                return False
            self._reporting = recording.id
            return True

    def _give_up(self, recording: Recording, error: BaseException) -> None:
        """Say that ``recording`` was not handled, and why, in the log and to ``on_failed``;
        a later announcement of it is acted on again. For one announced ERRORED, ``on_failed``
        is asked first: it may find the recording is another app's, of which nothing is said
        but that."""
        with self._lock:
            self._handled.discard(recording.id)
        errored = isinstance(error, RecordingErrored)
        if errored and not self._tell_failed(recording, error):
            return
        by_hand = (
            ""  # on_failed says how (the command line writes the commands into failed.json)
            if self._on_failed is not None
            else f"; by hand: {_by_hand(recording.id)}"
        )
        if isinstance(error, ReceiverStopped | RecordingErrored):
            said = f"recording {recording.id} was not handled: {error}"
        elif isinstance(error, UploadTimeoutError):
            said = (
                f"gave up waiting for the API to show recording {recording.id} UPLOADED: "
                f"{describe_error(error)}; a later announcement of it is acted on"
            )
        elif isinstance(error, NotRetried):
            said = (
                f"gave up on recording {recording.id}: {describe_error(error.__cause__ or error)}"
                "; no try again can mend it"
            )
        else:
            said = (
                f"gave up on recording {recording.id} after {self._tries} tries, the last "
                f"failing with: {describe_error(error)}; a later announcement of it is acted on"
            )
        log.error("webhook: %s%s", said, by_hand)
        if not errored:
            self._tell_failed(recording, error)

    def _tell_failed(self, recording: Recording, error: BaseException) -> bool:
        """Give the failure to ``on_failed``; False when it found the recording is not this
        app's (it is then left as such)."""
        if self._on_failed is None:
            return True
        try:
            self._on_failed(recording, error)
        except RecordingNotFoundError as exc:
            self._not_this_apps(recording, exc)
            return False
        except Exception as exc:
            log.error("webhook: recording the failure of %s failed: %s", recording.id, exc)
        return True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 30  # a sender that stalls mid-body must not hold a thread forever

            def handle(self) -> None:
                if not receiver._connections.acquire(blocking=False):
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.sendall(_BUSY)
                    return
                try:
                    # The whole request in _REQUEST_SECONDS, however slowly it trickles in.
                    cut = threading.Timer(_REQUEST_SECONDS, self._cut)
                    cut.daemon = True
                    cut.start()
                    try:
                        super().handle()
                    finally:
                        cut.cancel()
                finally:
                    receiver._connections.release()

            def _cut(self) -> None:
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def do_POST(self) -> None:
                length = declared_length(self.headers.get("content-length"), MAX_BODY)
                if length is None:
                    self._refuse(411, "a Content-Length is required")
                    return
                if length > MAX_BODY:
                    self._refuse(413, "body too large")
                    return
                body = self.rfile.read(length)
                if len(body) < length:  # the sender hung up, or was cut off: nothing to judge
                    log.debug("webhook: a request ended %d bytes short", length - len(body))
                    self.close_connection = True
                    return
                status, reason = receiver._accept(
                    body, self.headers.get("rtk-signature"), self.headers.get("rtk-uuid")
                )
                self._answer(status, reason)

            def _refuse(self, status: int, reason: str) -> None:
                receiver._refused(status, reason)
                self._answer(status, reason)

            def _answer(self, status: int, reason: str) -> None:
                payload = json.dumps({"status": reason}).encode()
                with contextlib.suppress(OSError):  # the sender has gone: nothing to tell
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                # The request line's query may hold a secret of the webhook's URL.
                log.debug("webhook: %s", _shown(redact_urls(format % args), _TEXT_SHOWN))

        return Handler


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b'Content-Length: 31\r\nConnection: close\r\n\r\n{"status": "busy; retry later"}'
)


_ERRORED = "RealtimeKit announced the recording as ERRORED: it has no files to transcribe"


def _not_handled(recording: Recording, when: str) -> Exception:
    """Why a recording the receiver stopped with was not handled: RealtimeKit's failure, for
    one it announced as ERRORED (no command by hand would help), else the stop."""
    if recording.status == "ERRORED":
        return RecordingErrored(_ERRORED)
    return ReceiverStopped(f"the receiver stopped {when}")


def _stopped(job: _Job) -> Exception:
    """Why a recording the receiver stopped with before it was taken up (again) was not
    handled."""
    if job.awaited_since is None:
        return _not_handled(job.recording, "before handling it")
    return ReceiverStopped(
        f"the receiver stopped while waiting for the API to show it UPLOADED ({_last_seen(job)})"
    )


def _stopped_after(attempt: int, tries: int, failure: BaseException) -> ReceiverStopped:
    """Why a recording the receiver stopped with between two tries was not handled: the
    stop, after which try, and how that try failed (its cause, for ``on_failed``). Said as
    the failure alone, it read as every try spent, and a later announcement as its only
    hope; it is the stop that left it."""
    stopped = ReceiverStopped(
        f"the receiver stopped after try {attempt} of {tries}, which failed: "
        f"{describe_error(failure)}"
    )
    stopped.__cause__ = failure
    return stopped


def _waited(job: _Job) -> None:
    """End the wait for ``job``'s upload: ``on_uploaded`` got past its look (it raised
    something else). A later try's look that finds the API unreachable for now (a 503, a
    429) begins a wait of its own, from its first look: measured from the first wait, long
    over, it would give the recording up at once, its tries unused."""
    job.awaited_since, job.status, job.why = None, None, ""
    job.interval = _UPLOAD_POLL


def _last_seen(job: _Job) -> str:
    """What the last look at a recording put aside found, as UploadTimeoutError says it."""
    return f"still {job.status}" if job.status else f"no status known{job.why}"


def _with_meeting(recording: Recording, meeting: dict[str, object] | None) -> Recording:
    """``recording``, with the meeting's id from the body's ``meeting`` when the recording
    does not name it: the transcript is of that meeting, not of the recording's id."""
    meeting_id = (meeting or {}).get("id")
    if recording.meeting_id is None and isinstance(meeting_id, str) and meeting_id:
        return recording.model_copy(update={"meeting_id": meeting_id})
    return recording


def _remember(seen: set[_T], item: _T) -> None:
    """Add ``item`` to ``seen``, which is emptied first when full: what a sender can make the
    receiver remember must not grow without end."""
    if len(seen) > _SEEN_LIMIT:
        seen.clear()
    seen.add(item)


def _unsafe_id(recording_id: str) -> bool:
    """Recording ids become folder names; one that sanitising would change is refused."""
    try:
        return safe_file_name(recording_id) != recording_id
    except ValueError:
        return True


def _by_hand(recording_id: str) -> str:
    """The commands that do by hand what the receiver did not, for the log (``on_failed``
    may say them better: the command line's repeat its account and model flags)."""
    return (
        f"`trackscribe fetch --recording-id {recording_id} -o DIR`, then "
        "`trackscribe transcribe DIR/manifest.json -o OUT`"
    )


def _first_problem(exc: ValidationError) -> str:
    """The first thing wrong with a body, led by its field: what a log line has room for."""
    return _shown(describe(exc, at_most=1), _TEXT_SHOWN)  # it may quote the body


def _announced_id(body: bytes) -> str | None:
    """The recording id a refused body names, if it names one, as a log line may show it
    (see :func:`_shown`: it is the sender's to make as it likes)."""
    try:
        recording = json.loads(body).get("recording")
        ids = [recording.get(key) for key in _ID_FIELDS]
    except (ValueError, RecursionError, AttributeError):  # not JSON, or not objects
        return None
    found = next((value for value in ids if isinstance(value, str) and value), None)
    return _shown(found) if found is not None else None


def _shown(text: str, limit: int = _ID_SHOWN) -> str:
    """``text`` from a request, fit for one log line: a line break in it would write a line
    of its own into the log, and a terminal's escape would recolour or erase what is shown.
    What is not printable is written escaped (``\\n``, ``\\x1b``), and a long text is cut
    (the sender's to make as long as it likes). Ids that passed :func:`_unsafe_id` need
    none of this: a folder name holds neither."""
    if len(text) > limit:
        text = f"{text[:limit]}…"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
