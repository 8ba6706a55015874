"""The compliance bundle: one file that a reviewer can be sent, check and keep.

A zip of the transcript in every text format, its provenance as a reviewer reads it
(``provenance.txt``) and ``SHA256SUMS``, which ``sha256sum -c SHA256SUMS`` checks on a
machine without trackscribe. It is made from the transcript alone, the same way every time
(members in one order, each dated at the meeting's start, no extra fields), so that what a
bundle holds can be checked against what the transcript in it renders to. The audio is not
in it: the transcript names each input's size and SHA-256, which is what proves a copy kept
elsewhere is the one transcribed.
"""

import hashlib
import io
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable
from datetime import UTC
from typing import NamedTuple

from models import Transcript

from ._report import to_report
from ._text import TEXT_FORMATS

BUNDLE_SCHEMA = "trackscribe.bundle/1"
SUMS_FILE = "SHA256SUMS"
REPORT_FILE = "provenance.txt"

_COMMENT = f"{BUNDLE_SCHEMA}: check with sha256sum -c {SUMS_FILE}".encode()
MAX_BUNDLE_BYTES = 1 << 30
"""The most a bundle may be, packed or unpacked: far above a day of meetings' text, and a cap
on what a zip bomb sent as a bundle can take."""
_PACKED_BY_US = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


class Bundle(NamedTuple):
    """What a bundle holds."""

    members: dict[str, bytes]
    """Member name -> bytes."""
    outside: list[str]
    """What the zip holds outside its members that trackscribe does not write there: a
    comment (which ``unzip`` shows whoever unpacks it), bytes before or after the zip."""


class BundleError(ValueError):
    """A file that cannot be read as a bundle; the message names it and says why."""


def bundle_members(transcript: Transcript) -> dict[str, bytes]:
    """Member name -> bytes, in the bundle's order: every text format, the provenance report,
    and ``SHA256SUMS`` of all of them."""
    members = {
        file_name: render(transcript).encode("utf-8") for file_name, render in TEXT_FORMATS.values()
    }
    members[REPORT_FILE] = to_report(transcript).encode("utf-8")
    members[SUMS_FILE] = sha256sums(
        (name, hashlib.sha256(data).hexdigest()) for name, data in members.items()
    )
    return members


def sha256sums(digests: Iterable[tuple[str, str]]) -> bytes:
    """``<sha256>  <name>`` lines, as ``sha256sum`` writes them and ``sha256sum -c`` reads
    them, for (name, SHA-256) pairs in the order given."""
    return "".join(f"{digest}  {name}\n" for name, digest in digests).encode("utf-8")


def to_bundle(transcript: Transcript) -> bytes:
    """The bundle's bytes (a zip). The same transcript gives the same bytes, with one zlib."""
    buffer = io.BytesIO()
    dated = _zip_time(transcript)
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in bundle_members(transcript).items():
            member = zipfile.ZipInfo(name, date_time=dated)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.create_system = 3  # Unix, wherever it is made: the same bytes everywhere
            member.external_attr = 0o100644 << 16  # a plain file, readable by all
            bundle.writestr(member, data, compresslevel=6)
        bundle.comment = _COMMENT
    return buffer.getvalue()


def read_bundle(data: bytes, source: str) -> Bundle:
    """What the bundle ``data`` (read from ``source``, which errors name) holds. Nothing is
    written to disk, so no member name can point anywhere.

    Raises :class:`BundleError` for what is not a whole zip, holds one name twice (which of
    the two a tool shows is its own choice), is packed in a way trackscribe does not pack
    (encrypted, or compressed otherwise than by deflate), or is, or would unpack to, more
    than :data:`MAX_BUNDLE_BYTES`.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{source}: more than {MAX_BUNDLE_BYTES >> 30} GiB: not a bundle")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            members = bundle.infolist()
            counted = Counter(member.filename for member in members)
            twice = sorted(name for name, times in counted.items() if times > 1)
            if twice:
                raise BundleError(f"{source}: holds {', '.join(twice)} more than once")
            for member in members:
                if member.flag_bits & 0x1 or member.compress_type not in _PACKED_BY_US:
                    raise BundleError(
                        f"{source}: {member.filename} is encrypted or compressed in a way "
                        "trackscribe does not write"
                    )
            if sum(member.file_size for member in members) > MAX_BUNDLE_BYTES:
                raise BundleError(
                    f"{source}: would unpack to more than {MAX_BUNDLE_BYTES >> 30} GiB"
                )
            read = {member.filename: bundle.read(member) for member in members}
            return Bundle(read, _outside(data, bundle, members))
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


def _outside(data: bytes, bundle: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> list[str]:
    found = []
    if bundle.comment not in (b"", _COMMENT):  # none at all shows nothing
        found.append(f"a zip comment trackscribe does not write ({bundle.comment[:80]!r})")
    first = min((member.header_offset for member in members), default=bundle.start_dir)
    if first > 0:
        found.append(f"{first} bytes before the zip")
    end = data.rfind(b"PK\x05\x06")  # the zip's end record, then its comment
    after = len(data) - (end + 22 + len(bundle.comment)) if end >= 0 else 0
    if after > 0:
        found.append(f"{after} bytes after the zip")
    return found


def _zip_time(transcript: Transcript) -> tuple[int, int, int, int, int, int]:
    """The meeting's start in UTC, as a zip dates a member (years 1980 to 2107 only)."""
    start = transcript.origin.astimezone(UTC)
    if start.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    if start.year > 2107:
        return (2107, 12, 31, 23, 59, 58)
    return (start.year, start.month, start.day, start.hour, start.minute, start.second)
