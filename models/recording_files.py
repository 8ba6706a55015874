"""What a RealtimeKit track-recording file name says about the file.

Names follow ``{file_name_prefix}_{user_id}_{peer_id}_{stream_kind}_{media_kind}_{date_time}``
plus an extension, ``date_time`` in Unix milliseconds: when the file was begun, the only
per-file time the API gives. User ids may themselves contain underscores, so the name is read
from its right end.
"""

from datetime import UTC, datetime
from pathlib import PurePosixPath

__all__ = ["time_from_file_name"]

_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def time_from_file_name(name: str) -> datetime | None:
    """The ``date_time`` of a track file name, or None if the name does not carry one."""
    stem = PurePosixPath(name).name.split(".", 1)[0]
    last = stem.rsplit("_", 1)[-1]
    if "_" not in stem or not last.isdigit() or len(last) != 13:
        return None
    when = datetime.fromtimestamp(int(last) / 1000, tz=UTC)
    return when if when >= _EARLIEST else None
