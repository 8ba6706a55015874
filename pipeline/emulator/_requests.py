"""Reading API requests: bodies, query filters and paging, checked before any work is done."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

from models import MAX_USER_IDS, RecordingStatus

from ._state import Recording

_STATUSES = get_args(RecordingStatus)


class ApiError(Exception):
    """A request the API refuses: its HTTP status, the message the client sees, and any
    header the status calls for (``Allow`` on a 405)."""

    def __init__(
        self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class ListQuery:
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
    def parse(cls, query: dict[str, list[str]]) -> "ListQuery":
        statuses = {s.strip() for v in query.get("status", []) for s in v.split(",") if s.strip()}
        unknown = sorted(statuses - set(_STATUSES))
        if unknown:
            raise ApiError(400, f"status: unknown value(s) {', '.join(unknown)}")
        sort_by = _last(query, "sort_by")
        if sort_by not in (None, "invokedTime", "invoked_time"):
            raise ApiError(400, "sort_by: only invokedTime is supported")
        order = (_last(query, "sort_order") or "DESC").upper()
        if order not in ("ASC", "DESC"):
            raise ApiError(400, "sort_order must be ASC or DESC")
        expired = _last(query, "expired")
        if expired is not None and expired.lower() not in ("true", "false"):
            raise ApiError(400, "expired must be true or false")
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
        self, recording: Recording, meeting_id: str, title: str, invoked: datetime, now: float
    ) -> bool:
        """Whether a recording passes every filter; ``now`` (Unix seconds) judges ``expired``.

        ``search`` matches, ignoring case, part of the meeting's id or ``title`` (what the API
        reference says it searches), or of the recording's id (the emulator's addition).
        """
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
            return any(needle in text.lower() for text in (meeting_id, title, recording.id))
        return True


def _last(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def whole_number(text: str) -> int | None:
    """``text`` as a whole number, if it is one of ASCII digits that fits in 64 bits: Python
    calls "²" a digit and ``int()`` refuses it, and over 4300 digits ``int()`` gives up."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def _positive(query: dict[str, list[str]], name: str, default: int) -> int:
    value = _last(query, name)
    if value is None:
        return default
    number = whole_number(value)
    if number is None or number < 1:
        raise ApiError(400, f"{name} must be a positive integer")
    return number


def _when(query: dict[str, list[str]], name: str) -> datetime | None:
    value = _last(query, name)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 time") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def read_json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body) if body else None
    except (ValueError, RecursionError):  # not UTF-8, not JSON, a number too long, too deep
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "request body must be a JSON object")
    return payload


def read_user_ids(raw: object) -> frozenset[str] | None:
    """The users whose tracks to record; None means everyone."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(u, str) and u for u in raw):
        raise ApiError(400, "user_ids must be a list of user id strings")
    if not raw:
        raise ApiError(400, "user_ids must name at least one user (omit it for everyone)")
    if len(raw) > MAX_USER_IDS:
        raise ApiError(400, f"user_ids may name at most {MAX_USER_IDS} users")
    return frozenset(raw)


def read_layer(raw: object) -> tuple[str, str]:
    """The layer name and file-name prefix: the first layer's, or ``default`` for both.

    Accepts the new form (``media_kind``) and the older one (``outputs``); checks each layer.
    """
    if raw is None:
        return "default", "default"
    if not isinstance(raw, dict):
        raise ApiError(400, "layers must be an object of layer name to layer options")
    for name, options in raw.items():
        where = f"layers.{name}"
        if options is None:
            continue
        if not isinstance(options, dict):
            raise ApiError(400, f"{where} must be an object")
        prefix = options.get("file_name_prefix")
        if prefix is not None and (not isinstance(prefix, str) or "/" in prefix):
            raise ApiError(400, f"{where}.file_name_prefix must be a string without '/'")
        if options.get("media_kind") not in (None, "audio"):
            raise ApiError(400, f"{where}.media_kind: only 'audio' is recorded")
        outputs = options.get("outputs")
        if outputs is not None and (
            not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs)
        ):
            raise ApiError(400, f"{where}.outputs must be a list of objects")
    if not raw:
        return "default", "default"
    name, options = next(iter(raw.items()))
    return name, (options or {}).get("file_name_prefix") or "default"
