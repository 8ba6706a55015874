"""The emulated recording API: its options, endpoints and clock."""

import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models import MANIFEST_FILE, Manifest, format_utc

from .._listen import listen, local_host, url_host
from ._http import Download, RangeNotSatisfiable, Server, byte_range
from ._replies import Reply, gateway_error, json_reply, rtk_error, s3_error
from ._requests import (
    ApiError,
    ListQuery,
    read_json_object,
    read_layer,
    read_user_ids,
    whole_number,
)
from ._state import Recording, file_name, track_files
from ._webhooks import Signer, Webhooks

_log = logging.getLogger(f"trackscribe.{__name__}")

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

_FINAL = frozenset({"UPLOADED", "ERRORED"})
_API = re.compile(r"^/client/v4/accounts/[^/]+/realtime/kit/[^/]+/recordings(?:/(?P<rest>.*))?$")
_FILES = re.compile(r"^/files/(?P<recording>[^/]+)/(?P<name>[^/]+)$")
# A Host header fit to put in a URL: a name or IPv4 address, or an IPv6 one in brackets, and
# an optional port. Anything else (a path, a user, spaces) is not used.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_CALLER = {"name": "API", "type": "ORGANIZATION"}
_START_REASON = {"reason": "API_CALL", "caller": _CALLER}
_TICK = 0.02
_POLL = 0.02
_EXPIRED_BY = 60


class EmulatorOptions(BaseModel):
    """How the emulated service behaves: its timings, response shapes, faults and webhooks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str = Field(min_length=1, repr=False, description="the bearer token to require")
    start_delay: float = Field(default=0.5, ge=0, description="INVOKED -> RECORDING, seconds")
    record_seconds: float = Field(
        default=1.0,
        ge=0,
        description="the session ends (RECORDING or PAUSED -> UPLOADING) this long after the "
        "recording started, paused or not",
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
        self._tracks = track_files(manifest, manifest_path)
        self._session_id = str(uuid.uuid4())
        self._webhook_id = str(uuid.uuid4())
        self._secret = secrets.token_bytes(32)
        self._signer = Signer(options.webhook_key)
        self._lock = threading.Lock()
        self._fault_lock = threading.Lock()
        self._faults = dict.fromkeys(FAULTS, 0) | dict(options.faults)
        self._recordings: dict[str, Recording] = {}
        self._wall0, self._mono0 = time.time(), time.monotonic()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._serving = False
        self._closed = False
        self._webhooks = (
            Webhooks(options.webhook_url, self._signer.sign, self._webhook_id)
            if options.webhook_url
            else None
        )
        self._server = listen(
            host,
            port,
            lambda address: Server(address, answer=self._handle, download=self._download),
        )
        bound, port = self._server.server_address[:2]
        self._origin = f"http://{url_host(local_host(str(bound)))}:{port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/client/v4``: what a client uses instead of Cloudflare's.

        Bound to every interface (``0.0.0.0``, ``::``), it names the loopback address: a
        client elsewhere uses this machine's own name or address instead, and the download
        URLs it is given name whatever it used (its ``Host`` header).
        """
        return f"{self._origin}/client/v4"

    @property
    def public_key_pem(self) -> str:
        """The PEM public key that verifies ``rtk-signature`` on this emulator's webhooks."""
        return self._signer.public_key_pem

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

    def _current(self) -> Recording | None:
        """The recording still in progress, after :meth:`_advance_all` (lock held)."""
        return next((r for r in self._recordings.values() if r.status not in _FINAL), None)

    def _handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        authorization: str | None,
        body: bytes,
        host: str | None,
    ) -> Reply:
        """Answer one API request (everything but file downloads); ``host`` is the request's
        ``Host`` header, which the download URLs it hands out are to name."""
        if path == "/.well-known/webhooks.json":
            if method != "GET":
                return rtk_error(405, f"{method} is not allowed here", (("Allow", "GET"),))
            return json_reply(200, {"data": {"publicKey": self.public_key_pem}})
        if path != "/client/v4" and not path.startswith("/client/v4/"):
            return rtk_error(404, "not found")
        if not self._authorised(authorization):
            return gateway_error(401, 10000, "Authentication error")
        if self._fire("rate_limit"):
            return gateway_error(
                429,
                971,
                "Please wait and consider throttling your request speed",
                headers=(("retry-after", "1"),),
            )
        if self._fire("server_error"):
            return rtk_error(503, "Service temporarily unavailable")
        match = _API.match(path)
        if match is None:
            return rtk_error(404, f"no such endpoint: {method} {path}")
        try:
            reply = self._route(method, match["rest"] or "", query, body, self._origin_for(host))
        except ApiError as exc:
            return rtk_error(exc.status, exc.message, exc.headers)
        if method in ("POST", "PUT") and reply.status < 300:
            if self._fire("lost_reply"):
                return rtk_error(502, "Bad gateway")  # done, but the client cannot know it
            if self._fire("slow_reply"):  # done; a client that waits less gives up on it
                time.sleep(self._options.slow_reply_seconds)
        return reply

    def _authorised(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        expected = self._options.token.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)

    def _origin_for(self, host: str | None) -> str:
        """Where the client that sent ``Host: host`` reached this server: download URLs must
        name that, not the address bound (``0.0.0.0`` names no machine to a client elsewhere).
        A Host that is missing or not a plain ``host[:port]`` gives the bound origin."""
        if host is None or _HOST.fullmatch(host) is None:
            return self._origin
        return f"http://{host}"

    def _route(
        self, method: str, rest: str, query: dict[str, list[str]], body: bytes, origin: str
    ) -> Reply:
        """The endpoint for ``rest`` (the path after ``recordings``) and ``method``; download
        URLs name ``origin``."""
        # Ids are percent-encoded path segments, as clients quote them.
        parts = [unquote(part) for part in rest.split("/")] if rest else []
        handlers: dict[str, Callable[[], Reply]]
        match parts:
            case []:
                handlers = {"GET": lambda: self._list(query, origin), "POST": _composite}
            case ["track"]:
                handlers = {"POST": lambda: self._start_recording(body)}
            case ["active-recording", meeting_id] if meeting_id:
                handlers = {"GET": lambda: self._active(meeting_id, origin)}
            case [recording_id] if recording_id:
                handlers = {
                    "GET": lambda: self._get(recording_id, origin),
                    "PUT": lambda: self._act(recording_id, body, origin),
                }
            case _:
                raise ApiError(404, f"no such endpoint: recordings/{rest}")
        handler = handlers.get(method)
        if handler is None:
            allowed = ", ".join(handlers)
            raise ApiError(
                405, f"{method} is not allowed here (allowed: {allowed})", (("Allow", allowed),)
            )
        return handler()

    # -- endpoints ---------------------------------------------------------------------------

    def _start_recording(self, body: bytes) -> Reply:
        payload = read_json_object(body)
        meeting_id = payload.get("meeting_id")
        if not isinstance(meeting_id, str) or not meeting_id:
            raise ApiError(400, "meeting_id is required and must be a string")
        users = read_user_ids(payload.get("user_ids"))
        layer, prefix = read_layer(payload.get("layers"))
        limit = _max_seconds(payload.get("max_seconds"))
        if meeting_id != self._meeting_id:
            raise ApiError(404, f"meeting {meeting_id} not found")
        chosen = [t for t in self._tracks if users is None or t.user_id in users]
        files = {file_name(prefix, track): track for track in chosen}
        with self._lock:
            now = self._advance_all()
            other = self._current()
            if other is not None:
                raise ApiError(409, f"recording {other.id} is already active for {meeting_id}")
            recording = Recording(
                id=str(uuid.uuid4()),
                layer=layer,
                files=files,
                limit=limit,
                invoked_at=now,
                since=now,
            )
            self._recordings[recording.id] = recording
            self._notify(recording)
            data = self._render(recording, issue=False)
        _log.info("recording %s invoked with %d file(s)", recording.id, len(files))
        if self._options.empty_start_body:
            return Reply(201, b"")
        return json_reply(201, {"success": True, "data": {"recording": data}})

    def _get(self, recording_id: str, origin: str) -> Reply:
        with self._lock:
            recording = self._find(recording_id)
            self._advance(recording, time.monotonic())
            data = self._render(recording, issue=True, origin=origin, detail=True)
        return json_reply(200, {"success": True, "data": data})

    def _act(self, recording_id: str, body: bytes, origin: str) -> Reply:
        action = read_json_object(body).get("action")
        if action not in ("stop", "pause", "resume"):
            raise ApiError(400, "action must be one of stop, pause, resume")
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
                    raise ApiError(409, f"recording {recording_id} is already stopped")
            elif action == "pause":
                if status != "RECORDING":
                    raise ApiError(409, f"cannot pause a recording that is {status}")
                recording.recorded += now - recording.since
                self._enter(recording, "PAUSED", now)
            else:
                if status != "PAUSED":
                    raise ApiError(409, f"cannot resume a recording that is {status}")
                self._enter(recording, "RECORDING", now)
            data = self._render(recording, issue=True, origin=origin, detail=True)
        _log.info("recording %s: %s -> %s", recording_id, action, data["status"])
        return json_reply(200, {"success": True, "data": data})

    def _active(self, meeting_id: str, origin: str) -> Reply:
        if meeting_id != self._meeting_id:
            raise ApiError(404, f"meeting {meeting_id} not found")
        with self._lock:
            self._advance_all()
            recording = self._current()
            if recording is not None:
                data = self._render(recording, issue=True, origin=origin)
                return json_reply(200, {"success": True, "data": data})
        raise ApiError(404, f"no active recording for meeting {meeting_id}")

    def _list(self, query: dict[str, list[str]], origin: str) -> Reply:
        wanted = ListQuery.parse(query)
        with self._lock:
            self._advance_all()
            wall_now = time.time()
            chosen = []
            for recording in self._recordings.values():
                invoked = self._wall(recording.invoked_at)
                if wanted.accepts(recording, self._meeting_id, self._title, invoked, wall_now):
                    chosen.append(recording)
            chosen.sort(key=lambda r: r.invoked_at, reverse=wanted.descending)
            first = (wanted.page_no - 1) * wanted.per_page
            page = chosen[first : first + wanted.per_page]
            data = [self._render(recording, issue=True, origin=origin) for recording in page]
        paging = {"start_offset": first, "end_offset": first + len(page) - 1}
        return json_reply(
            200, {"success": True, "data": data, "paging": paging | {"total_count": len(chosen)}}
        )

    def _find(self, recording_id: str) -> Recording:
        recording = self._recordings.get(recording_id)
        if recording is None:
            raise ApiError(404, f"recording {recording_id} not found")
        return recording

    # -- the clock ---------------------------------------------------------------------------

    def _advance(self, recording: Recording, now: float) -> None:
        """Apply every transition due by ``now``, each at the moment it fell due, in order.

        Called under the lock. Transitions are timed by their deadlines, not by when someone
        looked, so a recording read late has the same times as one watched closely.
        """
        options = self._options
        while True:
            status, since = recording.status, recording.since
            # The session ends record_seconds after the recording started, paused or not.
            session_end = (recording.started_at or math.inf) + options.record_seconds
            if status == "INVOKED" and now >= since + options.start_delay:
                recording.started_at = since + options.start_delay
                self._enter(recording, "RECORDING", recording.started_at)
            elif status == "RECORDING" and now >= min(full := _full(recording), session_end):
                at = min(full, session_end)
                reason = "API_CALL" if full < session_end else "ALL_PEERS_LEFT"
                recording.recorded += at - since
                self._stop(recording, at, reason, "UPLOADING")
            elif status == "PAUSED" and now >= session_end:
                self._stop(recording, session_end, "ALL_PEERS_LEFT", "UPLOADING")
            elif status == "UPLOADING" and now >= since + options.upload_seconds:
                self._enter(recording, "UPLOADED", since + options.upload_seconds)
            else:
                return

    def _stop(self, recording: Recording, at: float, reason: str, status: str) -> None:
        recording.stopped_at = at
        recording.stop_reason = reason
        self._enter(recording, status, at)

    def _enter(self, recording: Recording, status: str, at: float) -> None:
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
        self,
        recording: Recording,
        *,
        issue: bool,
        origin: str | None = None,
        detail: bool = False,
    ) -> dict[str, Any]:
        """The recording as the REST API shows it; ``issue`` marks URLs handed to a client,
        ``origin`` is where they point (default: the bound origin, as webhooks have no
        request to follow)."""
        uploaded = recording.status == "UPLOADED"
        download_url: object = None
        expiry_text = None
        if uploaded:
            expiry = self._expiry(issue)
            if issue:
                recording.last_expiry = expiry
            download_url = self._download_url(recording, expiry, origin or self._origin)
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

    def _download_url(self, recording: Recording, expiry: int, origin: str) -> object:
        urls = {
            name: self._signed_url(origin, recording.id, name, expiry) for name in recording.files
        }
        if self._options.shape == "string":
            return next(iter(urls.values()), None)
        layer_urls = {name: {"download_url": url} for name, url in urls.items()}
        return [{"layer_name": recording.layer, "download_urls": layer_urls}]

    def _signed_url(self, origin: str, recording_id: str, name: str, expiry: int) -> str:
        signature = self._signature(f"/files/{recording_id}/{name}", expiry)
        path = f"/files/{quote(recording_id, safe='')}/{quote(name, safe='')}"
        return f"{origin}{path}?X-Amz-Expires={expiry}&X-Amz-Signature={signature}"

    def _signature(self, path: str, expiry: int) -> str:
        message = f"{path}\n{expiry}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    # -- downloads ---------------------------------------------------------------------------

    def _download(
        self, method: str, path: str, query: dict[str, list[str]], range_header: str | None
    ) -> Download | Reply:
        """Check a pre-signed download and decide what to send (faults included).

        ``HEAD`` is answered as ``GET`` would be, without the body; it uses up no fault,
        since no file is sent.
        """
        if method not in ("GET", "HEAD"):
            return s3_error(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                headers=(("Allow", "GET, HEAD"),),
            )
        match = _FILES.match(path)
        if match is None:
            return s3_error(404, "NoSuchKey", "The specified key does not exist.")
        recording_id, name = unquote(match["recording"]), unquote(match["name"])
        expires = whole_number((query.get("X-Amz-Expires") or [""])[-1])
        signature = (query.get("X-Amz-Signature") or [""])[-1]
        if expires is None or not signature:
            return s3_error(403, "AccessDenied", "Query-string authentication is required.")
        expected = self._signature(f"/files/{recording_id}/{name}", expires)
        if not hmac.compare_digest(expected, signature):
            return s3_error(403, "SignatureDoesNotMatch", "The request signature does not match.")
        if expires <= time.time():
            return s3_error(403, "AccessDenied", "Request has expired")
        with self._lock:
            recording = self._recordings.get(recording_id)
            track = recording.files.get(name) if recording is not None else None
        if track is None:
            return s3_error(404, "NoSuchKey", "The specified key does not exist.")
        try:
            span = byte_range(range_header, track.size)
        except RangeNotSatisfiable:
            return s3_error(
                416,
                "InvalidRange",
                "The requested range is not satisfiable",
                headers=(("Content-Range", f"bytes */{track.size}"),),
            )
        start, end = span if span is not None else (0, track.size - 1)
        sent = method == "GET"
        return Download(
            track=track,
            start=start,
            end=end,
            partial=span is not None,
            cut=sent and self._fire("cut"),
            corrupt=sent and self._fire("corrupt"),
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

    def _notify(self, recording: Recording) -> None:
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


def _composite() -> Reply:
    """``POST /recordings`` starts a composite recording: a real endpoint (so it is named in
    ``Allow``), but one file of the whole meeting is not what this emulator is for."""
    raise ApiError(
        501,
        "this emulator does not emulate composite recordings (POST /recordings); "
        "start a track recording with POST /recordings/track",
    )


def _check_fault(name: str, count: int) -> None:
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    if count < 0:
        raise ValueError(f"fault {name}: count must be 0 or more")


_DEFAULT_MAX_SECONDS = 86_400.0
"""The API's own default: a recording left running stops after a day of recorded time."""


def _max_seconds(value: object) -> float:
    """The recorded time a recording stops at (``max_seconds``, else the API's default)."""
    if value is None:
        return _DEFAULT_MAX_SECONDS
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ApiError(400, "max_seconds must be a positive number")
    try:
        return float(value)
    except OverflowError:  # an integer past any float: as good as no limit, but surely a slip
        raise ApiError(400, "max_seconds is too large") from None


def _full(recording: Recording) -> float:
    """When a recording going on now will have recorded its ``max_seconds``."""
    return recording.since + recording.limit - recording.recorded
