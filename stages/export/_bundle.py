"""The compliance bundle: one file that a reviewer can be sent, check and keep.

A zip of the transcript in every text format, its provenance as a reviewer reads it
(``provenance.txt``) and ``SHA256SUMS``, which ``sha256sum -c SHA256SUMS`` checks on a
machine without trackscribe; signed, also ``SHA256SUMS.sig``, an Ed25519 signature of
``SHA256SUMS`` (``openssl pkeyutl -verify -rawin`` checks it): the sums alone find damage, and
only a signature tells a bundle made by the key's holder from one made again, whole, from an
altered transcript. It is made from the transcript alone, the same way every time
(members in one order, each dated at the meeting's start, stored rather than compressed, so
that no zlib version changes a byte): a bundle can then be checked not only member by member
against what the transcript in it renders to, but byte for byte against the zip trackscribe
writes for those members, which is what shows every zip tool what was checked. The audio is not
in it: the transcript names each input's size and SHA-256, which is what proves a copy kept
elsewhere is the one transcribed.
"""

import hashlib
import io
import re
import stat
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from pathlib import Path

from models import Transcript

from ._report import to_report
from ._text import TEXT_FORMATS

BUNDLE_SCHEMA = "trackscribe.bundle/1"
SUMS_FILE = "SHA256SUMS"
REPORT_FILE = "provenance.txt"
SIGNATURE_FILE = "SHA256SUMS.sig"

Signer = Callable[[bytes], bytes]
"""What signs a bundle: the signature of the bytes given (Ed25519's is deterministic, so that
the same transcript and key still give the same bundle)."""

_ORDER = [
    *(file_name for file_name, _ in TEXT_FORMATS.values()),
    REPORT_FILE,
    SUMS_FILE,
    SIGNATURE_FILE,
]
_RANK = {name: rank for rank, name in enumerate(_ORDER)}
"""Each member a bundle can hold -> its place in the bundle (the order
:func:`bundle_members` gives them in)."""
_COMMENT = f"{BUNDLE_SCHEMA}: check with sha256sum -c {SUMS_FILE}".encode()
MAX_EXPORT_BYTES = 1 << 30
"""The most an export, or a bundle unpacked, may be: far above a day of meetings' text, and a
cap on what a file sent as one can take to read."""
_READABLE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # a bundle packed again by a zip tool


class BundleError(ValueError):
    """A file that cannot be read as a bundle; the message names it and says why."""


def bundle_members(transcript: Transcript, signer: Signer | None = None) -> dict[str, bytes]:
    """Member name -> bytes, in the bundle's order: every text format, the provenance report,
    ``SHA256SUMS`` of all of them and, with ``signer``, its signature of ``SHA256SUMS``."""
    members = {
        file_name: render(transcript).encode("utf-8") for file_name, render in TEXT_FORMATS.values()
    }
    members[REPORT_FILE] = to_report(transcript).encode("utf-8")
    members[SUMS_FILE] = sha256sums(
        (name, hashlib.sha256(data).hexdigest()) for name, data in members.items()
    )
    if signer is not None:
        members[SIGNATURE_FILE] = signer(members[SUMS_FILE])
    return members


def sha256sums(digests: Iterable[tuple[str, str]]) -> bytes:
    """``<sha256>  <name>`` lines, as ``sha256sum`` writes them and ``sha256sum -c`` reads
    them, for (name, SHA-256) pairs in the order given."""
    return "".join(f"{digest}  {name}\n" for name, digest in digests).encode("utf-8")


def read_sha256sums(text: str, names: Collection[str]) -> dict[str, str]:
    """Name -> SHA-256 of the lines :func:`sha256sums` writes. Only lines of ``names`` with a
    SHA-256 that is one count: such a file is anyone's to edit."""
    listed = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if name in names and re.fullmatch(r"[0-9a-f]{64}", digest):
            listed[name] = digest
    return listed


def to_bundle(transcript: Transcript, signer: Signer | None = None) -> bytes:
    """The bundle's bytes (a zip): the same transcript (and key) always gives the same bytes."""
    return _pack(bundle_members(transcript, signer), transcript.origin)


def packed_as_written(data: bytes, members: dict[str, bytes], origin: datetime) -> bool:
    """Whether ``data`` is, byte for byte, the zip trackscribe writes holding ``members``
    (in the bundle's order, whatever theirs) for a meeting that started at ``origin``.

    Zip tools differ in which of a zip's records they believe (the central directory or
    the local headers, a zip64 end record or the plain one), and a zip can carry comments,
    extra fields and entries that only some tools show. Checking the members as Python
    reads them says nothing of what another tool shows; a zip laid out exactly as
    trackscribe lays it out shows every tool the same members. Reordered, a bundle shows
    the same, but is another file than the one written: a hash kept of it would not match."""
    ordered = sorted(members.items(), key=lambda member: _RANK.get(member[0], len(_RANK)))
    return data == _pack(dict(ordered), origin)


def holds_signature(path: Path) -> bool:
    """Whether the file at ``path`` is a bundle that holds a signature; False where there is
    no such file, or it is no zip (nothing a run would need to keep signed)."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return False
        with zipfile.ZipFile(path) as bundle:
            return SIGNATURE_FILE in bundle.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def read_bundle(data: bytes, source: str) -> dict[str, bytes]:
    """Member name -> bytes of the bundle ``data`` (read from ``source``, which errors
    name), as Python's zipfile reads it. Nothing is written to disk, so no member name can
    point anywhere.

    Raises :class:`BundleError` for what is not a whole zip, holds one name twice (which of
    the two a tool shows is its own choice), is encrypted or compressed otherwise than by
    deflate, or is, or would unpack to, more than :data:`MAX_EXPORT_BYTES`.
    """
    limit = f"more than {MAX_EXPORT_BYTES >> 30} GiB"
    if len(data) > MAX_EXPORT_BYTES:
        raise BundleError(f"{source}: {limit}: not a bundle")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            members = bundle.infolist()
            counted = Counter(member.filename for member in members)
            twice = sorted(name for name, times in counted.items() if times > 1)
            if twice:
                raise BundleError(f"{source}: holds {', '.join(twice)} more than once")
            for member in members:
                if member.flag_bits & 0x1 or member.compress_type not in _READABLE:
                    raise BundleError(
                        f"{source}: {member.filename} is encrypted, or compressed otherwise "
                        "than by deflate"
                    )
            if sum(member.file_size for member in members) > MAX_EXPORT_BYTES:
                raise BundleError(f"{source}: would unpack to {limit}")
            return {member.filename: bundle.read(member) for member in members}
    except BundleError:
        raise
    # Damage shows as any of these, from the zip's own records or from zlib.
    except (
        zipfile.BadZipFile,
        zlib.error,
        struct.error,
        EOFError,
        NotImplementedError,
        RuntimeError,
        ValueError,
        OSError,
    ) as exc:
        raise BundleError(f"{source}: not a readable zip: {exc}") from None


def _pack(members: dict[str, bytes], origin: datetime) -> bytes:
    buffer = io.BytesIO()
    dated = _zip_time(origin)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        for name, data in members.items():
            member = zipfile.ZipInfo(name, date_time=dated)
            member.create_system = 3  # Unix, wherever it is made: the same bytes everywhere
            member.external_attr = 0o100644 << 16  # a plain file, readable by all
            bundle.writestr(member, data)
        bundle.comment = _COMMENT
    return buffer.getvalue()


def _zip_time(origin: datetime) -> tuple[int, int, int, int, int, int]:
    """The meeting's start in UTC, as a zip dates a member (years 1980 to 2107 only)."""
    start = origin.astimezone(UTC)
    if start.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    if start.year > 2107:
        return (2107, 12, 31, 23, 59, 58)
    return (start.year, start.month, start.day, start.hour, start.minute, start.second)
