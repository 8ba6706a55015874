"""Receive RealtimeKit's ``recording.statusUpdate`` webhooks and act on finished uploads.

Every delivery is checked before anything is believed: ``rtk-signature`` must be a valid
RSA-SHA256 (PKCS#1 v1.5) signature of the raw body under RealtimeKit's public key. Deliveries
are retried by the sender, so each ``rtk-uuid`` is acted on once, and each recording is
handled once however many deliveries announce it. Work runs on one background thread: the
sender gets its 2xx at once and does not time out while a meeting is transcribed.
"""

import base64
import binascii
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import ValidationError

from models import Recording, WebhookEvent, describe_error, redact_urls, safe_file_name

from ._listen import LocalServer, listen

__all__ = ["WebhookReceiver", "load_public_key", "verify_signature"]

log = logging.getLogger(f"trackscribe.{__name__}")

_MAX_BODY = 1 << 20
_SEEN_LIMIT = 100_000


def verify_signature(public_key_pem: bytes, body: bytes, signature: str) -> bool:
    """True when ``signature`` (base64) is RealtimeKit's signature of exactly ``body``."""
    return _verify(load_public_key(public_key_pem), body, signature)


_ACTED_ON = ("id", "recordingId", "recording_id", "status", "meetingId", "meeting_id")
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
        event = WebhookEvent.model_validate(
            {
                "event": body.get("event"),
                "recording": {k: v for k, v in recording.items() if k in _ACTED_ON},
            }
        )
        log.warning(
            "webhook: recording %s: fields other than its id and status cannot be read; "
            "acting on those",
            event.recording.id if event.recording else "?",
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
    redeliver), and a later announcement of the recording is acted on again.
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
    ) -> None:
        self._key = load_public_key(public_key_pem)  # a bad key is refused now, not at a delivery
        self._on_uploaded = on_uploaded
        self._on_failed = on_failed
        self._tries = max(1, tries)
        self._retry_wait = max(0.0, retry_wait)
        self._lock = threading.Lock()
        self._seen_deliveries: set[str] = set()
        self._handled: set[str] = set()
        self._work: queue.Queue[Recording | None] = queue.Queue()
        handler = self._handler()
        self._server = listen(host, port, lambda address: LocalServer(address, handler))
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"{self._server.url}/"

    def start(self) -> "WebhookReceiver":
        for target in (self._server.serve_forever, self._worker):
            thread = threading.Thread(target=target, daemon=True, name="webhook")
            thread.start()
            self._threads.append(thread)
        return self

    def serve_forever(self) -> None:
        worker = threading.Thread(target=self._worker, daemon=True, name="webhook-worker")
        worker.start()
        self._threads.append(worker)
        try:
            self._server.serve_forever()
        finally:
            self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._work.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=60)

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_idle(self) -> None:
        """Block until every accepted recording has been handled (tests and scripts)."""
        self._work.join()

    # -- internals ---------------------------------------------------------------------------

    def _accept(self, body: bytes, signature: str | None, delivery: str | None) -> tuple[int, str]:
        """Judge one delivery: the HTTP status to answer and why."""
        if not signature or not _verify(self._key, body, signature):
            return 401, "bad or missing rtk-signature"
        try:
            event = _event(json.loads(body))
        except (ValueError, RecursionError, ValidationError):
            return 400, "body is not a webhook event"
        with self._lock:
            if delivery:
                if delivery in self._seen_deliveries:
                    return 200, "duplicate delivery, ignored"
                if len(self._seen_deliveries) > _SEEN_LIMIT:
                    self._seen_deliveries.clear()
                self._seen_deliveries.add(delivery)
            recording = event.recording
            if event.event != "recording.statusUpdate" or recording is None:
                return 200, f"event {event.event} ignored"
            if _unsafe_id(recording.id):
                return 400, "recording id is not usable as a folder name"
            log.info("webhook: recording %s is %s", recording.id, recording.status)
            if recording.status != "UPLOADED":
                return 200, "noted"
            if recording.id in self._handled:
                return 200, "recording already handled"
            self._handled.add(recording.id)
        self._work.put(recording)
        return 202, "accepted"

    def _worker(self) -> None:
        """Handles accepted recordings one by one; a failure is retried, then logged, and never
        stops the worker (the sender already has its 2xx and will not redeliver)."""
        while True:
            recording = self._work.get()
            try:
                if recording is None:
                    return
                self._handle(recording)
            finally:
                self._work.task_done()

    def _handle(self, recording: Recording) -> None:
        error: BaseException | None = None
        for attempt in range(1, self._tries + 1):
            try:
                self._on_uploaded(recording)
                return
            except BaseException as exc:  # nothing may kill the worker
                if isinstance(exc, KeyboardInterrupt):
                    raise
                error = exc
                log.error(
                    "webhook: handling recording %s failed (try %d of %d): %s",
                    recording.id,
                    attempt,
                    self._tries,
                    describe_error(exc),
                )
                log.debug("webhook: traceback", exc_info=exc)
                if attempt < self._tries:
                    time.sleep(self._retry_wait * attempt)
        with self._lock:
            self._handled.discard(recording.id)  # a later announcement is acted on again
        by_hand = (
            ""  # on_failed says how (the command line writes the commands into failed.json)
            if self._on_failed is not None
            else f"; by hand: `trackscribe fetch --recording-id {recording.id} -o DIR`, then "
            "`trackscribe transcribe DIR/manifest.json -o OUT`"
        )
        log.error(
            "webhook: gave up on recording %s after %d tries, the last failing with: %s; "
            "a later announcement of it is acted on%s",
            recording.id,
            self._tries,
            describe_error(error) if error is not None else "?",
            by_hand,
        )
        if self._on_failed is not None and error is not None:
            try:
                self._on_failed(recording, error)
            except Exception as exc:
                log.error("webhook: recording the failure of %s failed: %s", recording.id, exc)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 30  # a sender that stalls mid-body must not hold a thread forever

            def do_POST(self) -> None:
                raw = self.headers.get("content-length") or ""
                if not (raw.isascii() and raw.isdigit()):
                    self._answer(411, "a Content-Length is required")
                    return
                length = int(raw) if len(raw) <= 18 else _MAX_BODY + 1  # int() stops at 4300 digits
                if length > _MAX_BODY:
                    self._answer(413, "body too large")
                    return
                body = self.rfile.read(length)
                status, reason = receiver._accept(
                    body, self.headers.get("rtk-signature"), self.headers.get("rtk-uuid")
                )
                self._answer(status, reason)

            def _answer(self, status: int, reason: str) -> None:
                payload = json.dumps({"status": reason}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                # The request line's query may hold a secret of the webhook's URL.
                log.debug("webhook: %s", redact_urls(format % args))

        return Handler


def _unsafe_id(recording_id: str) -> bool:
    """Recording ids become folder names; one that sanitising would change is refused."""
    try:
        return safe_file_name(recording_id) != recording_id
    except ValueError:
        return True
