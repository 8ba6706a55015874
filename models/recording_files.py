"""What a RealtimeKit track-recording file name says about the file, and how to store it safely.

Names follow ``{file_name_prefix}_{user_id}_{peer_id}_{stream_kind}_{media_kind}_{date_time}``
plus an extension, ``date_time`` in Unix milliseconds: when the file was generated, the only
per-file time the API gives. Prefixes and user ids may themselves contain underscores, so the
name is read from its right end, and the prefix/user boundary needs the prefix or the user ids.
All files of one layer share its prefix: :func:`parse_file_names` reads a layer's names
together, so that what one name shows (the user id asked for at its end) places the boundary
in all of them.
"""

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import NamedTuple

__all__ = [
    "TrackFileName",
    "parse_file_name",
    "parse_file_names",
    "safe_file_name",
    "time_from_file_name",
]

_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_UNSAFE_BUT_LETTERS = re.compile(r"[^\w.-]+")  # \w: letters and digits of every script
_MAX_NAME = 200
_KEPT_END = 100
"""Of a name cut to ``_MAX_NAME``, the end kept (a track's start and type are at its end)."""
_DEFAULT_PREFIX = "default"
"""RealtimeKit's prefix for a recording started without ``layers``."""
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
    to end at the first underscore. Names of one layer are better read together, with
    :func:`parse_file_names`.
    """
    when = time_from_file_name(name)
    head = _head(name)
    if when is None or head is None:
        return None
    peer_id, stream_kind, media_kind = _stem(name).rsplit("_", 4)[1:4]
    if prefix is not None and head.startswith(prefix + "_"):
        user_id = head[len(prefix) + 1 :]
        if not user_id:  # "prefix__peer…": no user to put the file on
            return None
        return TrackFileName(prefix, user_id, peer_id, stream_kind, media_kind, when)
    for user_id in sorted(user_ids, key=len, reverse=True):
        if user_id and head.endswith("_" + user_id):
            return TrackFileName(
                head[: -len(user_id) - 1], user_id, peer_id, stream_kind, media_kind, when
            )
    if "_" not in head:
        return None
    found_prefix, user_id = head.split("_", 1)
    if not user_id:  # "prefix__peer…": no user to put the file on
        return None
    return TrackFileName(found_prefix, user_id, peer_id, stream_kind, media_kind, when)


def parse_file_names(
    names: Iterable[str], *, prefix: str | None = None, user_ids: Iterable[str] = ()
) -> dict[str, TrackFileName | None]:
    """Each of one layer's file names split into its parts (None: not a track file name).

    The files of a layer share one prefix, so it is chosen once for them all, rather than
    guessed name by name: ``prefix`` if given; else ``default`` (RealtimeKit's own) if every
    name starts ``default_``; else, of the prefixes the names could have, the one that makes
    the most of them end in a user id asked for (so that, with ``my_meeting`` found from
    ``bob``'s name, ``my_meeting_carol_…`` is carol's, not ``meeting_carol``'s); else the
    shortest all the names could have. A name that does not start with the prefix chosen is
    read on its own, as :func:`parse_file_name` does.
    """
    names = list(dict.fromkeys(names))
    asked = [user_id for user_id in dict.fromkeys(user_ids) if user_id]
    if prefix is None:
        heads = [head for name in names if (head := _head(name)) is not None]
        prefix = _layer_prefix(heads, asked)
    return {name: parse_file_name(name, prefix=prefix, user_ids=asked) for name in names}


def _layer_prefix(heads: Sequence[str], user_ids: Sequence[str]) -> str | None:
    """The prefix of a layer whose names start with ``heads`` (``{prefix}_{user_id}``), by the
    rules of :func:`parse_file_names`; None when the heads have no prefix in common."""
    if not heads:
        return None
    if all(head.startswith(_DEFAULT_PREFIX + "_") for head in heads):
        return _DEFAULT_PREFIX
    # Only a prefix every name could have: one that some names alone could have won the vote
    # when they were many (a rejoin, audio and video), and gave ``p_alice_bob_…`` to ``bob``
    # beside ``p_bob_…``.
    # A name with nothing after its prefix's underscore (``p__peer…``) carries no user: it
    # sways nothing.
    heads = [head for head in heads if not head.endswith("_")] or heads
    common = set.intersection(*(_prefixes(head) for head in heads))
    if not common:
        return None
    if user_ids:
        ends = {"_" + user_id for user_id in user_ids}
        votes = Counter(
            prefix for head in heads for prefix in common if head[len(prefix) :] in ends
        )
        if votes:  # the most names; of prefixes as good, the shortest (the longest user id)
            return min(votes, key=lambda prefix: (-votes[prefix], len(prefix)))
    return min(common, key=len)


def _prefixes(head: str) -> set[str]:
    """Every prefix ``head`` (``{prefix}_{user_id}``) could have: up to each underscore that
    leaves a user id after it."""
    return {head[:i] for i, char in enumerate(head[:-1]) if char == "_"}


def _head(name: str) -> str | None:
    """``{prefix}_{user_id}`` of a track file name: what is left of its stem once the four
    parts after it are taken off its right end; None when there are not four."""
    parts = _stem(name).rsplit("_", 4)
    return parts[0] if len(parts) == 5 else None


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
