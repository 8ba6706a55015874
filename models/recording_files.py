"""What a RealtimeKit track-recording file name says about the file, and how to store it safely.

Names follow ``{file_name_prefix}_{user_id}_{peer_id}_{stream_kind}_{media_kind}_{date_time}``
plus an extension, ``date_time`` in Unix milliseconds: when the file was generated, the only
per-file time the API gives. Prefixes and user ids may themselves contain underscores, so the
name is read from its right end, and the prefix/user boundary needs the prefix or the user ids.
"""

import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import NamedTuple

__all__ = ["TrackFileName", "parse_file_name", "safe_file_name", "time_from_file_name"]

_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_UNSAFE_BUT_LETTERS = re.compile(r"[^\w.-]+")  # \w: letters and digits of every script
_MAX_NAME = 200
_KEPT_END = 100
"""Of a name cut to ``_MAX_NAME``, the end kept (a track's start and type are at its end)."""
_RESERVED = re.compile(r"(?i)(con|prn|aux|nul|com[0-9]|lpt[0-9])(\.|$)")
"""Device names Windows will not open as files, whatever their extension."""


class TrackFileName(NamedTuple):
    prefix: str
    user_id: str
    peer_id: str
    stream_kind: str
    media_kind: str
    date_time: datetime


def time_from_file_name(name: str) -> datetime | None:
    """The ``date_time`` of a track file name, or None if the name does not carry one."""
    stem = _stem(name)
    last = stem.rsplit("_", 1)[-1]
    if "_" not in stem or not (last.isascii() and last.isdigit()) or len(last) != 13:
        return None
    when = datetime.fromtimestamp(int(last) / 1000, tz=UTC)
    return when if when >= _EARLIEST else None


def _stem(name: str) -> str:
    """The name without its folder and its one extension (user ids may hold dots)."""
    base = PurePosixPath(name).name
    return base.rsplit(".", 1)[0] if "." in base else base


def parse_file_name(
    name: str, *, prefix: str | None = None, user_ids: Iterable[str] = ()
) -> TrackFileName | None:
    """Split a track file name into its parts, or None if it is not one.

    With ``prefix`` (the layer's ``file_name_prefix``) or the ``user_ids`` asked for, names
    whose prefix or user id hold underscores split right; without either, the prefix is taken
    to end at the first underscore.
    """
    when = time_from_file_name(name)
    if when is None:
        return None
    parts = _stem(name).rsplit("_", 4)
    if len(parts) != 5:
        return None
    head, peer_id, stream_kind, media_kind, _ = parts
    if prefix is not None and head.startswith(prefix + "_"):
        return TrackFileName(
            prefix, head[len(prefix) + 1 :], peer_id, stream_kind, media_kind, when
        )
    for user_id in sorted(user_ids, key=len, reverse=True):
        if head.endswith("_" + user_id):
            return TrackFileName(
                head[: -len(user_id) - 1], user_id, peer_id, stream_kind, media_kind, when
            )
    if "_" not in head:
        return None
    found_prefix, user_id = head.split("_", 1)
    if not user_id:  # "prefix__peer…": no user to put the file on
        return None
    return TrackFileName(found_prefix, user_id, peer_id, stream_kind, media_kind, when)


def safe_file_name(name: str, *, keep_letters: bool = False) -> str:
    """A name from an API made safe to use as one file name in a folder of ours.

    Keeps only the last path component, replaces anything outside ``[A-Za-z0-9._-]`` and
    refuses names that are empty or only dots: ``../../etc/passwd`` becomes ``passwd``,
    ``a/b\\c d.webm`` becomes ``c_d.webm``. Leading and trailing dots go (hidden files;
    Windows drops trailing ones), a Windows device name (``CON``, ``nul.webm``) or a name
    that a shell glob would pass as an option (``-rf``) gets ``_`` in front, and a name too
    long for most file systems loses its middle, not its end. ``keep_letters`` also keeps
    the letters and digits of other scripts (``会議-A``), for a name a person chose: made
    all ``_``, two different ones would read the same.
    """
    base = re.split(r"[/\\]", unicodedata.normalize("NFKC", name))[-1]
    cleaned = (_UNSAFE_BUT_LETTERS if keep_letters else _UNSAFE).sub("_", base).strip(".")
    if not cleaned.strip("._-"):
        raise ValueError(f"file name {name!r} has nothing usable as a file name")
    if len(cleaned.encode()) > _MAX_NAME:  # file systems count bytes: 3 a CJK letter
        cleaned = f"{_first_bytes(cleaned, _MAX_NAME - _KEPT_END - 1)}-{_last_bytes(cleaned)}"
    if _RESERVED.match(cleaned) or cleaned.startswith("-"):
        cleaned = f"_{cleaned}"
    return cleaned


def _first_bytes(text: str, limit: int) -> str:
    return text.encode()[:limit].decode(errors="ignore")  # a letter cut in two is dropped


def _last_bytes(text: str) -> str:
    return text.encode()[-_KEPT_END:].decode(errors="ignore")
