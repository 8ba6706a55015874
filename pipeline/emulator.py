"""A local stand-in for Cloudflare RealtimeKit's recording API, served over real HTTP.

Why it exists: the demo and the tests must run with no account and no network, and a client's
hard paths (rate limits, 5xx, dropped or corrupted downloads, expired URLs, webhooks) must be
reproducible on demand. So the emulator is a real HTTP server on loopback that speaks the
documented endpoints (``realtimekit-api.md``), backed by a meeting folder (``manifest.json`` in
``trackscribe.manifest/1`` plus its track files), and moves each recording through its statuses
on the clock, as the service does::

    with Emulator(meeting_dir, EmulatorOptions(token="t")) as emulator:
        httpx.post(f"{emulator.base_url}/accounts/a/realtime/kit/b/recordings/track", ...)

Choices made where the API's documents say nothing (kept deliberate, so clients see one
behaviour):

- One meeting per emulator (the manifest's). ``session_id`` is one id for all its recordings.
- A recording's files are the tracks of the users asked for (all users without ``user_ids``),
  in manifest order; a user with two tracks (a rejoin) has two files. Only the first layer of
  ``layers`` is used: it names the layer and gives the file-name prefix. ``outputs`` and
  storage configs are accepted and ignored: files are always served from the emulator.
- ``max_seconds`` below ``record_seconds`` ends the recording like a stop call (stop reason
  ``API_CALL``); ``record_seconds`` running out is the session ending (``ALL_PEERS_LEFT``).
- ``stop`` before the recording started ends it ``ERRORED``: nothing was recorded.
- ``download_url`` in shape ``"string"`` carries only the first file (as the generated SDKs
  type it): a client that needs every file must use shape ``"layers"``.
- Download URLs are signed afresh on every read. ``X-Amz-Expires`` holds the expiry as Unix
  seconds (not S3's duration), which is what the signature covers. List filter ``expired``
  asks whether the URLs issued last for a recording are past their expiry.
- ``paging.end_offset`` is the offset of the last item returned (``start_offset - 1`` for an
  empty page); the list is sorted by ``invoked_time``, newest first unless ``sort_order=ASC``.

Faults (:data:`FAULTS`), armed by ``EmulatorOptions.faults`` or :meth:`Emulator.inject`; each
arming is a count that one occurrence uses up, and no fault ever changes a file on disk:

- ``rate_limit``: an authorised API request is answered 429 (gateway envelope, code 971,
  ``retry-after: 1``). ``server_error``: an authorised API request is answered 503
  (RealtimeKit envelope). Rate limits are checked first; a 401 uses up neither.
  ``lost_reply``: a start (POST) or an action (PUT) takes effect, and is answered 502 all the
  same, as when a gateway loses the service's answer. ``slow_reply``: one takes effect, and its
  answer is held back ``EmulatorOptions.slow_reply_seconds``: a client that waits less gives
  up on a call that took effect.
- ``cut``: a file download sends its headers (full Content-Length) and half its body, then
  the connection is closed. ``corrupt``: a download sends the right length and headers with
  one byte in every 64 KiB inverted. Both count only downloads actually served (not 403/416)
  and may hit the same download.
- ``expired_url``: a recording rendered with download URLs for a client (GET one, list
  entries) gets URLs that expired a minute ago. Webhooks never use it up.
"""

import base64
import hashlib
import hmac
import json
import logging
import math
import queue
import re
import secrets
import socket
import socketserver
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models import MANIFEST_FILE, Manifest, ManifestError, RecordingStatus, format_utc, redact_urls

from ._listen import listen, url_host

__all__ = ["FAULTS", "Emulator", "EmulatorOptions"]

_log = logging.getLogger(__name__)

FAULTS = (
    "rate_limit",
    "server_error",
    "lost_reply",
    "slow_reply",
    "cut",
    "expired_url",
    "corrupt",
)
"""Faults a client must survive; each fires a set number of times, then stops."""

_STATUSES = get_args(RecordingStatus)
_FINAL = frozenset({"UPLOADED", "ERRORED"})
_API = re.compile(r"^/client/v4/accounts/[^/]+/realtime/kit/[^/]+/recordings(?:/(?P<rest>.*))?$")
_FILES = re.compile(r"^/files/(?P<recording>[^/]+)/(?P<name>[^/]+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CALLER = {"name": "API", "type": "ORGANIZATION"}
_START_REASON = {"reason": "API_CALL", "caller": _CALLER}
_MAX_USER_IDS = 100
_MAX_BODY = 1 << 20
_CHUNK = 64 * 1024
_TICK = 0.02
_POLL = 0.02
_EXPIRED_BY = 60
_WEBHOOK_TRIES = 5
_WEBHOOK_BACKOFF = 0.2
_WEBHOOK_TIMEOUT = 5.0


class EmulatorOptions(BaseModel):
    """How the emulated service behaves: its timings, response shapes, faults and webhooks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str = Field(min_length=1, repr=False, description="the bearer token to require")
    start_delay: float = Field(default=0.5, ge=0, description="INVOKED -> RECORDING, seconds")
    record_seconds: float = Field(
        default=1.0, ge=0, description="RECORDING -> UPLOADING (the session ends), not paused"
    )
    upload_seconds: float = Field(default=0.5, ge=0, description="UPLOADING -> UPLOADED")
    url_ttl: float = Field(default=3600.0, gt=0, description="life of a pre-signed URL, seconds")
    shape: Literal["layers", "string"] = "layers"
    empty_start_body: bool = Field(
        default=False, description="older API form: POST /recordings/track answers no body"
    )
    faults: dict[str, int] = Field(default_factory=dict, description="fault name -> count")
    slow_reply_seconds: float = Field(
        default=2.0, ge=0, description="how long fault slow_reply holds an answer back"
    )
    webhook_url: str | None = None
    webhook_key: Path | None = Field(
        default=None, description="PEM RSA private key signing webhooks; generated when None"
    )

    @field_validator("faults")
    @classmethod
    def _known_faults(cls, value: dict[str, int]) -> dict[str, int]:
        for name, count in value.items():
            _check_fault(name, count)
        return value


class Emulator:
    """RealtimeKit's recording API for one meeting folder, on a local port.

    The socket is bound on construction (so :attr:`base_url` is known at once); requests are
    answered after :meth:`start` (background thread) or :meth:`serve_forever` (blocking, for
    the CLI; call :meth:`close` afterwards, from any other thread or once it has returned).
    """

    def __init__(
        self, meeting_dir: Path, options: EmulatorOptions, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        manifest_path = Path(meeting_dir) / MANIFEST_FILE
        manifest = Manifest.load(manifest_path)
        self._options = options
        self._meeting_id = manifest.meeting_id
        self._title = Path(meeting_dir).resolve().name
        self._tracks = _track_files(manifest, manifest_path)
        self._session_id = str(uuid.uuid4())
        self._webhook_id = str(uuid.uuid4())
        self._secret = secrets.token_bytes(32)
        self._key: rsa.RSAPrivateKey | None = (
            _load_key(options.webhook_key) if options.webhook_key else None
        )
        self._key_lock = threading.Lock()
        self._lock = threading.Lock()
        self._fault_lock = threading.Lock()
        self._faults = dict.fromkeys(FAULTS, 0) | dict(options.faults)
        self._recordings: dict[str, _Recording] = {}
        self._wall0, self._mono0 = time.time(), time.monotonic()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._serving = False
        self._closed = False
        self._webhooks = (
            _Webhooks(options.webhook_url, self._sign_body, self._webhook_id)
            if options.webhook_url
            else None
        )
        self._server = listen(host, port, lambda address: _Server(address, self))
        bound_host, bound_port = self._server.server_address[:2]
        self._origin = f"http://{url_host(str(bound_host))}:{bound_port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/client/v4``: what a client uses instead of Cloudflare's."""
        return f"{self._origin}/client/v4"

    @property
    def public_key_pem(self) -> str:
        """The PEM public key that verifies ``rtk-signature`` on this emulator's webhooks."""
        public = self._private_key().public_key()
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode("ascii")

    @property
    def meeting_id(self) -> str:
        return self._meeting_id

    def inject(self, name: str, count: int = 1) -> None:
        """Arm a fault for ``count`` more occurrences (see the module's notes on faults)."""
        _check_fault(name, count)
        with self._fault_lock:
            self._faults[name] += count

    def disarm(self, name: str) -> None:
        """Stop a fault, however many occurrences it had left."""
        _check_fault(name, 0)
        with self._fault_lock:
            self._faults[name] = 0

    def start(self) -> "Emulator":
        """Answer requests from a background thread; returns self."""
        self._start_helpers()
        thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL},
            name="rtk-emulator-http",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()
        return self

    def serve_forever(self) -> None:
        """Answer requests in this thread until :meth:`close` is called from another one."""
        self._start_helpers()
        self._server.serve_forever(poll_interval=_POLL)

    def close(self) -> None:
        """Stop serving, stop the clock, and give pending webhooks one last try."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._serving:
            self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._webhooks is not None:
            self._webhooks.close()
        _log.info("emulator for meeting %s closed", self._meeting_id)

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- serving -----------------------------------------------------------------------------

    def _start_helpers(self) -> None:
        if self._serving or self._closed:
            raise RuntimeError("the emulator can be started once")
        self._serving = True
        ticker = threading.Thread(target=self._tick, name="rtk-emulator-clock", daemon=True)
        self._threads.append(ticker)
        ticker.start()
        if self._webhooks is not None:
            self._webhooks.start()
        _log.info("emulating RealtimeKit for meeting %s at %s", self._meeting_id, self.base_url)

    def _tick(self) -> None:
        # Reads move recordings on too; the ticker is what makes webhooks arrive unasked.
        while not self._stopping.wait(_TICK):
            with self._lock:
                self._advance_all()

    def _advance_all(self) -> float:
        """Move every recording on to where the clock says it is (lock held); returns now."""
        now = time.monotonic()
        for recording in self._recordings.values():
            self._advance(recording, now)
        return now

    def _current(self) -> "_Recording | None":
        """The recording still in progress, after :meth:`_advance_all` (lock held)."""
        return next((r for r in self._recordings.values() if r.status not in _FINAL), None)

    def _handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        authorization: str | None,
        body: bytes,
    ) -> "_Reply":
        """Answer one API request (everything but file downloads)."""
        if path == "/.well-known/webhooks.json" and method == "GET":
            return _json_reply(200, {"data": {"publicKey": self.public_key_pem}})
        if path != "/client/v4" and not path.startswith("/client/v4/"):
            return _rtk_error(404, "not found")
        if not self._authorised(authorization):
            return _gateway_error(401, 10000, "Authentication error")
        if self._fire("rate_limit"):
            return _gateway_error(
                429,
                971,
                "Please wait and consider throttling your request speed",
                headers=(("retry-after", "1"),),
            )
        if self._fire("server_error"):
            return _rtk_error(503, "Service temporarily unavailable")
        match = _API.match(path)
        if match is None:
            return _rtk_error(404, f"no such endpoint: {method} {path}")
        try:
            reply = self._route(method, match["rest"] or "", query, body)
        except _ApiError as exc:
            return _rtk_error(exc.status, exc.message)
        if method in ("POST", "PUT") and reply.status < 300:
            if self._fire("lost_reply"):
                return _rtk_error(502, "Bad gateway")  # done, but the client cannot know it
            if self._fire("slow_reply"):  # done; a client that waits less gives up on it
                time.sleep(self._options.slow_reply_seconds)
        return reply

    def _authorised(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        expected = self._options.token.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)

    def _route(self, method: str, rest: str, query: dict[str, list[str]], body: bytes) -> "_Reply":
        """The endpoint for ``rest`` (the path after ``recordings``) and ``method``."""
        # Ids are percent-encoded path segments, as clients quote them.
        parts = [unquote(part) for part in rest.split("/")] if rest else []
        handlers: dict[str, Callable[[], _Reply]]
        match parts:
            case []:
                handlers = {"GET": lambda: self._list(query)}
            case ["track"]:
                handlers = {"POST": lambda: self._start_recording(body)}
            case ["active-recording", meeting_id] if meeting_id:
                handlers = {"GET": lambda: self._active(meeting_id)}
            case [recording_id] if recording_id:
                handlers = {
                    "GET": lambda: self._get(recording_id),
                    "PUT": lambda: self._act(recording_id, body),
                }
            case _:
                raise _ApiError(404, f"no such endpoint: recordings/{rest}")
        handler = handlers.get(method)
        if handler is None:
            allowed = ", ".join(handlers)
            raise _ApiError(405, f"{method} is not allowed here (allowed: {allowed})")
        return handler()

    # -- endpoints ---------------------------------------------------------------------------

    def _start_recording(self, body: bytes) -> "_Reply":
        payload = _json_object(body)
        meeting_id = payload.get("meeting_id")
        if not isinstance(meeting_id, str) or not meeting_id:
            raise _ApiError(400, "meeting_id is required and must be a string")
        users = _user_ids(payload.get("user_ids"))
        layer, prefix = _layer(payload.get("layers"))
        limit, limit_reason = self._limit(payload.get("max_seconds"))
        if meeting_id != self._meeting_id:
            raise _ApiError(404, f"meeting {meeting_id} not found")
        known = {track.user_id for track in self._tracks}
        unknown = [user for user in users or () if user not in known]
        if unknown:
            raise _ApiError(400, f"user_ids not in meeting: {', '.join(unknown)}")
        chosen = [t for t in self._tracks if users is None or t.user_id in users]
        files = {_file_name(prefix, track): track for track in chosen}
        with self._lock:
            now = self._advance_all()
            other = self._current()
            if other is not None:
                raise _ApiError(409, f"recording {other.id} is already active for {meeting_id}")
            recording = _Recording(
                id=str(uuid.uuid4()),
                layer=layer,
                files=files,
                limit=limit,
                limit_reason=limit_reason,
                invoked_at=now,
                since=now,
            )
            self._recordings[recording.id] = recording
            self._notify(recording)
            data = self._render(recording, issue=False)
        _log.info("recording %s invoked with %d file(s)", recording.id, len(files))
        if self._options.empty_start_body:
            return _Reply(201, b"")
        return _json_reply(201, {"success": True, "data": {"recording": data}})

    def _get(self, recording_id: str) -> "_Reply":
        with self._lock:
            recording = self._find(recording_id)
            self._advance(recording, time.monotonic())
            data = self._render(recording, issue=True, detail=True)
        return _json_reply(200, {"success": True, "data": data})

    def _act(self, recording_id: str, body: bytes) -> "_Reply":
        action = _json_object(body).get("action")
        if action not in ("stop", "pause", "resume"):
            raise _ApiError(400, "action must be one of stop, pause, resume")
        with self._lock:
            recording = self._find(recording_id)
            now = time.monotonic()
            self._advance(recording, now)
            status = recording.status
            if action == "stop":
                if status == "INVOKED":
                    self._stop(recording, now, "API_CALL", "ERRORED")
                elif status in ("RECORDING", "PAUSED"):
                    if status == "RECORDING":
                        recording.recorded += now - recording.since
                    self._stop(recording, now, "API_CALL", "UPLOADING")
                else:
                    raise _ApiError(409, f"recording {recording_id} is already stopped")
            elif action == "pause":
                if status != "RECORDING":
                    raise _ApiError(409, f"cannot pause a recording that is {status}")
                recording.recorded += now - recording.since
                self._enter(recording, "PAUSED", now)
            else:
                if status != "PAUSED":
                    raise _ApiError(409, f"cannot resume a recording that is {status}")
                self._enter(recording, "RECORDING", now)
            data = self._render(recording, issue=True, detail=True)
        _log.info("recording %s: %s -> %s", recording_id, action, data["status"])
        return _json_reply(200, {"success": True, "data": data})

    def _active(self, meeting_id: str) -> "_Reply":
        if meeting_id != self._meeting_id:
            raise _ApiError(404, f"meeting {meeting_id} not found")
        with self._lock:
            self._advance_all()
            recording = self._current()
            if recording is not None:
                data = self._render(recording, issue=True)
                return _json_reply(200, {"success": True, "data": data})
        raise _ApiError(404, f"no active recording for meeting {meeting_id}")

    def _list(self, query: dict[str, list[str]]) -> "_Reply":
        wanted = _ListQuery.parse(query)
        with self._lock:
            self._advance_all()
            wall_now = time.time()
            chosen = []
            for recording in self._recordings.values():
                invoked = self._wall(recording.invoked_at)
                if wanted.accepts(recording, self._meeting_id, invoked, wall_now):
                    chosen.append(recording)
            chosen.sort(key=lambda r: r.invoked_at, reverse=wanted.descending)
            first = (wanted.page_no - 1) * wanted.per_page
            page = chosen[first : first + wanted.per_page]
            data = [self._render(recording, issue=True) for recording in page]
        paging = {"start_offset": first, "end_offset": first + len(page) - 1}
        return _json_reply(
            200, {"success": True, "data": data, "paging": paging | {"total_count": len(chosen)}}
        )

    def _find(self, recording_id: str) -> "_Recording":
        recording = self._recordings.get(recording_id)
        if recording is None:
            raise _ApiError(404, f"recording {recording_id} not found")
        return recording

    def _limit(self, max_seconds: object) -> tuple[float, str]:
        if max_seconds is None:
            return self._options.record_seconds, "ALL_PEERS_LEFT"
        if (
            isinstance(max_seconds, bool)
            or not isinstance(max_seconds, int | float)
            or not max_seconds > 0
        ):
            raise _ApiError(400, "max_seconds must be a positive number")
        if max_seconds < self._options.record_seconds:
            return float(max_seconds), "API_CALL"
        return self._options.record_seconds, "ALL_PEERS_LEFT"

    # -- the clock ---------------------------------------------------------------------------

    def _advance(self, recording: "_Recording", now: float) -> None:
        """Apply every transition due by ``now``, each at the moment it fell due, in order.

        Called under the lock. Transitions are timed by their deadlines, not by when someone
        looked, so a recording read late has the same times as one watched closely.
        """
        options = self._options
        while True:
            status, since = recording.status, recording.since
            if status == "INVOKED" and now >= since + options.start_delay:
                recording.started_at = since + options.start_delay
                self._enter(recording, "RECORDING", recording.started_at)
            elif status == "RECORDING" and now >= since + recording.limit - recording.recorded:
                at = since + recording.limit - recording.recorded
                recording.recorded = recording.limit
                self._stop(recording, at, recording.limit_reason, "UPLOADING")
            elif status == "UPLOADING" and now >= since + options.upload_seconds:
                self._enter(recording, "UPLOADED", since + options.upload_seconds)
            else:
                return

    def _stop(self, recording: "_Recording", at: float, reason: str, status: str) -> None:
        recording.stopped_at = at
        recording.stop_reason = reason
        self._enter(recording, status, at)

    def _enter(self, recording: "_Recording", status: str, at: float) -> None:
        recording.status = status
        recording.since = at
        self._notify(recording)

    def _wall(self, mono: float) -> datetime:
        # Whole milliseconds, as clients are shown: a time filter given a time read from the
        # API must match the recording it was read from.
        millis = round((self._wall0 + (mono - self._mono0)) * 1000)
        return datetime.fromtimestamp(millis // 1000, UTC) + timedelta(milliseconds=millis % 1000)

    def _time(self, mono: float | None) -> str | None:
        return None if mono is None else format_utc(self._wall(mono))

    # -- rendering, signing ------------------------------------------------------------------

    def _render(
        self, recording: "_Recording", *, issue: bool, detail: bool = False
    ) -> dict[str, Any]:
        """The recording as the REST API shows it; ``issue`` marks URLs handed to a client."""
        uploaded = recording.status == "UPLOADED"
        download_url: object = None
        expiry_text = None
        if uploaded:
            expiry = self._expiry(issue)
            if issue:
                recording.last_expiry = expiry
            download_url = self._download_url(recording, expiry)
            expiry_text = format_utc(datetime.fromtimestamp(expiry, UTC))
        stopped = recording.stopped_at is not None
        data: dict[str, Any] = {
            "id": recording.id,
            "status": recording.status,
            "session_id": self._session_id,
            "invoked_time": self._time(recording.invoked_at),
            "started_time": self._time(recording.started_at),
            "stopped_time": self._time(recording.stopped_at),
            "recording_duration": round(recording.recorded) if stopped else None,
            "output_file_name": next(iter(recording.files), None),
            "file_size": sum(t.size for t in recording.files.values()) if uploaded else None,
            "download_url": download_url,
            "download_url_expiry": expiry_text,
            "audio_download_url": None,
        }
        if detail:
            reason = recording.stop_reason
            caller = _CALLER if reason == "API_CALL" else None
            data["start_reason"] = _START_REASON
            data["stop_reason"] = {"reason": reason, "caller": caller} if reason else None
            data["storage_config"] = None
        return data

    def _expiry(self, issue: bool) -> int:
        if issue and self._fire("expired_url"):
            return int(time.time()) - _EXPIRED_BY
        return math.ceil(time.time() + self._options.url_ttl)

    def _download_url(self, recording: "_Recording", expiry: int) -> object:
        urls = {name: self._signed_url(recording.id, name, expiry) for name in recording.files}
        if self._options.shape == "string":
            return next(iter(urls.values()), None)
        layer_urls = {name: {"download_url": url} for name, url in urls.items()}
        return [{"layer_name": recording.layer, "download_urls": layer_urls}]

    def _signed_url(self, recording_id: str, name: str, expiry: int) -> str:
        signature = self._signature(f"/files/{recording_id}/{name}", expiry)
        path = f"/files/{quote(recording_id, safe='')}/{quote(name, safe='')}"
        return f"{self._origin}{path}?X-Amz-Expires={expiry}&X-Amz-Signature={signature}"

    def _signature(self, path: str, expiry: int) -> str:
        message = f"{path}\n{expiry}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    # -- downloads ---------------------------------------------------------------------------

    def _download(
        self, path: str, query: dict[str, list[str]], range_header: str | None
    ) -> "_Download | _Reply":
        """Check a pre-signed download and decide what to send (faults included)."""
        match = _FILES.match(path)
        if match is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        recording_id, name = unquote(match["recording"]), unquote(match["name"])
        expires = (query.get("X-Amz-Expires") or [""])[-1]
        signature = (query.get("X-Amz-Signature") or [""])[-1]
        if not expires.isdigit() or not signature:
            return _s3_error(403, "AccessDenied", "Query-string authentication is required.")
        expected = self._signature(f"/files/{recording_id}/{name}", int(expires))
        if not hmac.compare_digest(expected, signature):
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature does not match.")
        if int(expires) <= time.time():
            return _s3_error(403, "AccessDenied", "Request has expired")
        with self._lock:
            recording = self._recordings.get(recording_id)
            track = recording.files.get(name) if recording is not None else None
        if track is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        try:
            span = _byte_range(range_header, track.size)
        except _RangeNotSatisfiable:
            return _s3_error(
                416,
                "InvalidRange",
                "The requested range is not satisfiable",
                headers=(("Content-Range", f"bytes */{track.size}"),),
            )
        start, end = span if span is not None else (0, track.size - 1)
        return _Download(
            track=track,
            start=start,
            end=end,
            partial=span is not None,
            cut=self._fire("cut"),
            corrupt=self._fire("corrupt"),
        )

    # -- faults, webhooks --------------------------------------------------------------------

    def _fire(self, name: str) -> bool:
        """Use up one occurrence of a fault if any is armed; True if it fires now."""
        with self._fault_lock:
            if self._faults[name] <= 0:
                return False
            self._faults[name] -= 1
            left = self._faults[name]
        _log.info("fault %s fired (%d left)", name, left)
        return True

    def _notify(self, recording: "_Recording") -> None:
        """Queue a ``recording.statusUpdate`` for the status just entered (under the lock)."""
        if self._webhooks is None:
            return
        data = self._render(recording, issue=False)
        event = {
            "event": "recording.statusUpdate",
            "recording": {
                "id": data["id"],
                "recordingId": data["id"],
                "status": data["status"],
                "downloadUrl": data["download_url"],
                "audioDownloadUrl": data["audio_download_url"],
                "downloadUrlExpiry": data["download_url_expiry"],
                "startedTime": data["started_time"],
                "stoppedTime": data["stopped_time"],
                "fileSize": data["file_size"],
                "outputFileName": data["output_file_name"],
                "meetingId": self._meeting_id,
                "recordingDuration": data["recording_duration"],
                "invokedTime": data["invoked_time"],
            },
            "meeting": {
                "id": self._meeting_id,
                "sessionId": self._session_id,
                "title": self._title,
            },
        }
        self._webhooks.put(json.dumps(event, separators=(",", ":")).encode())

    def _private_key(self) -> rsa.RSAPrivateKey:
        # Made on first use: a 2048-bit key costs a noticeable fraction of a second.
        with self._key_lock:
            if self._key is None:
                self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return self._key

    def _sign_body(self, body: bytes) -> str:
        signature = self._private_key().sign(body, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode("ascii")


# -- state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TrackFile:
    """A track of the meeting as a file the service would have recorded."""

    user_id: str
    peer_id: str
    path: Path
    started_ms: int
    size: int
    etag: str


@dataclass
class _Recording:
    """One recording's state; times are ``time.monotonic()`` values."""

    id: str
    layer: str
    files: dict[str, _TrackFile]
    limit: float
    limit_reason: str
    invoked_at: float
    since: float
    status: str = "INVOKED"
    started_at: float | None = None
    stopped_at: float | None = None
    recorded: float = 0.0
    stop_reason: str | None = None
    last_expiry: int | None = None


@dataclass(frozen=True)
class _Download:
    track: _TrackFile
    start: int
    end: int
    partial: bool
    cut: bool
    corrupt: bool


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class _ApiError(Exception):
    """A request the API refuses: its HTTP status and the message the client sees."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _RangeNotSatisfiable(Exception):
    pass


@dataclass(frozen=True)
class _ListQuery:
    """The filters and paging of ``GET /recordings``, checked before any work is done."""

    meeting_id: str | None = None
    statuses: frozenset[str] = frozenset()
    page_no: int = 1
    per_page: int = 20
    descending: bool = True
    start_time: datetime | None = None
    end_time: datetime | None = None
    expired: bool | None = None
    search: str | None = None

    @classmethod
    def parse(cls, query: dict[str, list[str]]) -> "_ListQuery":
        statuses = {s.strip() for v in query.get("status", []) for s in v.split(",") if s.strip()}
        unknown = sorted(statuses - set(_STATUSES))
        if unknown:
            raise _ApiError(400, f"status: unknown value(s) {', '.join(unknown)}")
        sort_by = _last(query, "sort_by")
        if sort_by not in (None, "invokedTime", "invoked_time"):
            raise _ApiError(400, "sort_by: only invokedTime is supported")
        order = (_last(query, "sort_order") or "DESC").upper()
        if order not in ("ASC", "DESC"):
            raise _ApiError(400, "sort_order must be ASC or DESC")
        expired = _last(query, "expired")
        if expired is not None and expired.lower() not in ("true", "false"):
            raise _ApiError(400, "expired must be true or false")
        return cls(
            meeting_id=_last(query, "meeting_id"),
            statuses=frozenset(statuses),
            page_no=_positive(query, "page_no", 1),
            per_page=_positive(query, "per_page", 20),
            descending=order == "DESC",
            start_time=_when(query, "start_time"),
            end_time=_when(query, "end_time"),
            expired=None if expired is None else expired.lower() == "true",
            search=_last(query, "search"),
        )

    def accepts(
        self, recording: _Recording, meeting_id: str, invoked: datetime, now: float
    ) -> bool:
        """Whether a recording passes every filter; ``now`` (Unix seconds) judges ``expired``."""
        if self.expired is not None:
            last = recording.last_expiry
            if self.expired != (last is not None and last <= now):
                return False
        if self.meeting_id is not None and self.meeting_id != meeting_id:
            return False
        if self.statuses and recording.status not in self.statuses:
            return False
        if self.start_time is not None and invoked < self.start_time:
            return False
        if self.end_time is not None and invoked > self.end_time:
            return False
        if self.search:
            needle = self.search.lower()
            return needle in meeting_id.lower() or needle in recording.id.lower()
        return True


def _last(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _positive(query: dict[str, list[str]], name: str, default: int) -> int:
    value = _last(query, name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise _ApiError(400, f"{name} must be a positive integer")
    return int(value)


def _when(query: dict[str, list[str]], name: str) -> datetime | None:
    value = _last(query, name)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _ApiError(400, f"{name} must be an ISO 8601 time") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


# -- request bodies --------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _ApiError(400, "request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _ApiError(400, "request body must be a JSON object")
    return payload


def _user_ids(raw: object) -> frozenset[str] | None:
    """The users whose tracks to record; None means everyone."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(u, str) and u for u in raw):
        raise _ApiError(400, "user_ids must be a list of user id strings")
    if not raw:
        raise _ApiError(400, "user_ids must name at least one user (omit it for everyone)")
    if len(raw) > _MAX_USER_IDS:
        raise _ApiError(400, f"user_ids may name at most {_MAX_USER_IDS} users")
    return frozenset(raw)


def _layer(raw: object) -> tuple[str, str]:
    """The layer name and file-name prefix: the first layer's, or ``default`` for both.

    Accepts the new form (``media_kind``) and the older one (``outputs``); checks each layer.
    """
    if raw is None:
        return "default", "default"
    if not isinstance(raw, dict):
        raise _ApiError(400, "layers must be an object of layer name to layer options")
    for name, options in raw.items():
        where = f"layers.{name}"
        if options is None:
            continue
        if not isinstance(options, dict):
            raise _ApiError(400, f"{where} must be an object")
        prefix = options.get("file_name_prefix")
        if prefix is not None and (not isinstance(prefix, str) or "/" in prefix):
            raise _ApiError(400, f"{where}.file_name_prefix must be a string without '/'")
        if options.get("media_kind") not in (None, "audio"):
            raise _ApiError(400, f"{where}.media_kind: only 'audio' is recorded")
        outputs = options.get("outputs")
        if outputs is not None and (
            not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs)
        ):
            raise _ApiError(400, f"{where}.outputs must be a list of objects")
    if not raw:
        return "default", "default"
    name, options = next(iter(raw.items()))
    return name, (options or {}).get("file_name_prefix") or "default"


# -- files -----------------------------------------------------------------------------------


def _track_files(manifest: Manifest, manifest_path: Path) -> list[_TrackFile]:
    """Every track as a servable file; a track file that is missing is a manifest error."""
    files = []
    for index, track in enumerate(manifest.tracks):
        path = manifest.track_path(track)
        try:
            with path.open("rb") as f:
                etag = hashlib.file_digest(f, "md5").hexdigest()
            size = path.stat().st_size
        except OSError as exc:
            raise ManifestError(
                f"{manifest_path}: tracks[{index}].path: cannot read {track.path}: {exc.strerror}"
            ) from None
        since_epoch = track.started_time - datetime(1970, 1, 1, tzinfo=UTC)
        files.append(
            _TrackFile(
                user_id=track.user_id,
                peer_id=track.peer_id or str(uuid.uuid5(uuid.NAMESPACE_URL, track.path)),
                path=path,
                started_ms=since_epoch // timedelta(milliseconds=1),
                size=size,
                etag=etag,
            )
        )
    return files


def _file_name(prefix: str, track: _TrackFile) -> str:
    """The name the API gives a track file: prefix, user, peer, stream and media kind, time."""
    return f"{prefix}_{track.user_id}_{track.peer_id}_peer_audio_{track.started_ms}.webm"


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span one ``Range`` header asks for; None to send the whole file.

    Malformed and multi-range headers are ignored (the whole file is sent), as RFC 9110
    allows; a well-formed range that misses the file raises :class:`_RangeNotSatisfiable`.
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
            raise _RangeNotSatisfiable
        return start, min(end, size - 1)
    suffix = int(match[2])
    if suffix == 0 or size == 0:
        raise _RangeNotSatisfiable
    return max(size - suffix, 0), size - 1


def _flip(chunk: bytes) -> bytes:
    """The chunk with its middle byte inverted: same length, wrong content."""
    data = bytearray(chunk)
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


def _load_key(path: Path) -> rsa.RSAPrivateKey:
    """The RSA private key in the PEM file ``path``. A file that is not one is the user's
    mistake: a :class:`ConfigError` (a ValueError) naming the file and why, which the command
    line answers as bad input, not as an error of its own."""
    # Imported here: only a given key file needs them.
    from cryptography.exceptions import UnsupportedAlgorithm

    from .config import ConfigError

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"webhook key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"webhook key {path}: not an unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"webhook key {path}: not an RSA private key")
    return key


def _check_fault(name: str, count: int) -> None:
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    if count < 0:
        raise ValueError(f"fault {name}: count must be 0 or more")


# -- replies ---------------------------------------------------------------------------------


def _json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(status, json.dumps(payload, separators=(",", ":")).encode(), headers=headers)


def _rtk_error(status: int, message: str) -> _Reply:
    """An error in RealtimeKit's own envelope."""
    return _json_reply(status, {"success": False, "error": {"code": status, "message": message}})


def _gateway_error(
    status: int, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> _Reply:
    """An error in Cloudflare's API gateway envelope (auth and rate limits come in this one)."""
    payload = {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }
    return _json_reply(status, payload, headers)


def _s3_error(
    status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> _Reply:
    """An error as the object store behind pre-signed URLs answers: S3-style XML."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return _Reply(status, body.encode(), "application/xml", headers)


# -- HTTP plumbing ---------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.emulator = emulator
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up in DNS (getfqdn), which can stall offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "RealtimeKitEmulator/1"
    timeout = 30.0
    # Headers and body go out in separate writes; with Nagle's algorithm on, each small
    # response waits for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        emulator: Emulator = self.server.emulator  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            return
        query = parse_qs(split.query, keep_blank_values=True)
        if split.path.startswith("/files/") and self.command == "GET":
            result = emulator._download(split.path, query, self.headers.get("Range"))
            if isinstance(result, _Download):
                self._stream(result, split.path)
            else:
                self._reply(result)
            return
        authorization = self.headers.get("Authorization")
        self._reply(emulator._handle(self.command, split.path, query, authorization, body))

    def _read_body(self) -> bytes | None:
        """The request body, read whole so a kept-alive connection stays in step."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._reply(_rtk_error(411, "a Content-Length is required"))
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self.close_connection = True
            self._reply(_rtk_error(413, f"request body must be 0 to {_MAX_BODY} bytes"))
            return None
        return self.rfile.read(length) if length else b""

    def _reply(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        if reply.body:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def _stream(self, download: _Download, path: str) -> None:
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


class _Webhooks:
    """Delivers status updates in order from one thread, retrying as the real sender does.

    5xx answers and connection errors are retried (same ``rtk-uuid``) with a doubling
    backoff; 2xx is delivered; any other answer (redirects included) is given up on. Sent with
    urllib, directly (no proxies): HTTP client libraries log whole URLs, and a webhook URL
    often carries a secret in its query.
    """

    def __init__(self, url: str, sign: Callable[[bytes], str], webhook_id: str) -> None:
        self._url = url
        self._where = urlsplit(url)._replace(query="", fragment="").geturl()
        self._sign = sign
        self._webhook_id = webhook_id
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtk-emulator-webhooks", daemon=True)

    def put(self, body: bytes) -> None:
        self._queue.put((str(uuid.uuid4()), body))

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Give what is queued one try each, then stop."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        for delivery_id, body in iter(self._queue.get, None):
            self._deliver(delivery_id, body)

    def _deliver(self, delivery_id: str, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "rtk-signature": self._sign(body),
            "rtk-uuid": delivery_id,
            "rtk-webhook-id": self._webhook_id,
        }
        delay = _WEBHOOK_BACKOFF
        for attempt in range(1, _WEBHOOK_TRIES + 1):
            try:
                status = _post(self._url, body, headers)
            except OSError as exc:  # refused, reset, timed out, unreachable
                outcome = type(exc).__name__
            else:
                if 200 <= status < 300:
                    _log.debug("webhook %s delivered to %s", delivery_id, self._where)
                    return
                if status < 500:
                    _log.warning("webhook %s refused by %s: %d", delivery_id, self._where, status)
                    return
                outcome = f"HTTP {status}"
            if attempt == _WEBHOOK_TRIES or self._stopping.wait(delay):
                _log.warning(
                    "webhook %s to %s failed after %d tries: %s",
                    delivery_id,
                    self._where,
                    attempt,
                    outcome,
                )
                return
            delay *= 2


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST and return the answer's status; raises OSError when no answer came."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=_WEBHOOK_TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
