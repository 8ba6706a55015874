"""UTC timestamps as the contracts write them: ISO 8601, millisecond precision, ``Z``."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, NamedTuple, TypeVar

import numpy as np
from pydantic import AfterValidator, PlainSerializer


def _as_utc(value: datetime) -> datetime:
    # A naive time in a manifest is ambiguous; refusing it is safer than guessing a zone.
    if value.tzinfo is None:
        raise ValueError("timestamp needs a time zone (for example a trailing 'Z')")
    try:
        # Kept as it is written: a time held to the microsecond would place a track (and
        # render a report) other than the same time read back from the file does.
        return _to_millisecond(value)
    except OverflowError:  # named here, with its field: at the ends of the calendar
        raise ValueError("timestamp is outside the years 1 to 9999 in UTC") from None


def _to_millisecond(value: datetime) -> datetime:
    value = value.astimezone(UTC)
    millis = (value.microsecond + 500) // 1000  # half up, not half to even
    return value.replace(microsecond=0) + timedelta(milliseconds=millis)


def format_utc(value: datetime) -> str:
    """``2026-11-20T10:00:03.250Z``: the one spelling every output uses."""
    value = _to_millisecond(value)
    # strftime's %Y gives year 1 as "1", not the four digits ISO 8601 asks for.
    return f"{value.year:04d}-{value:%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def format_clock(seconds: float, millis_sep: str | None = None) -> str:
    """``01:02:03.456`` on a meeting's clock: ``millis_sep`` '.' (WebVTT) or ',' (SRT), or
    None for whole seconds. Rounded to the millisecond first, so that every place that shows
    a time (subtitles, text, a notebook) shows the same second for it."""
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return text if millis_sep is None else f"{text}{millis_sep}{ms:03d}"


UtcDatetime = Annotated[
    datetime,
    AfterValidator(_as_utc),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
]
"""A timezone-aware datetime, normalised to UTC and written with millisecond precision."""


_Seconds = TypeVar("_Seconds", float, np.ndarray)


class TrackTiming(NamedTuple):
    """Where a track lies on the meeting clock: when it started, and how fast its own clock
    ran. Every conversion from a track's time to the meeting's goes through it."""

    offset: float
    """Seconds from the meeting's origin to the track's start."""
    drift_ppm: float = 0.0
    """How fast the track's clock ran against the meeting's (parts per million; positive:
    fast, so its audio is stretched)."""

    def meeting_time(self, track_time: _Seconds) -> _Seconds:
        """Where ``track_time`` (seconds into the track, or an array of them) falls on the
        meeting clock: the start plus the track's own time, taken back from its clock."""
        return self.offset + track_time / (1 + self.drift_ppm * 1e-6)
