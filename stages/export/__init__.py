"""Write a transcript in the formats people and tools read.

``json`` is the contract (``trackscribe.transcript/1``); ``vtt`` (WebVTT with voice tags) and
``srt`` are subtitles, cut into readable cues at word boundaries; ``txt`` is for reading;
``seglst`` is meeteval's segment list, for scoring; ``bundle`` is all of them in one zip with
the provenance as a reviewer reads it and their SHA-256, to send and keep, signed when a
signer is given. Every file is
written to a temporary name and renamed, all of them together: an interrupted export leaves no
half file, and one that fails (a full disk, a folder in the way) leaves the files as they were.
A hidden record in the folder names the files trackscribe wrote there with their SHA-256, so
that an export that owns the folder (the command line's ``-o``, a batch's meeting folder) can
remove an earlier run's files in formats not written this time, which beside the new transcript
would show a reviewer a different one, without touching a file that is not, byte for byte, what
trackscribe wrote; and so that a reviewer can check later that each file is still what was
written, and from which transcript it was rendered (:func:`recorded_files`).

A signed bundle is never written over, nor removed, by an export given no signer
(:func:`keep_signed`): that would turn a signed record into an unsigned one.
"""

import errno
import hashlib
import json
import logging
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from models import Transcript, TranscriptError, atomic_write_files, remove_unfinished_writes

from ._bundle import (
    MAX_EXPORT_BYTES,
    SIGNATURE_FILE,
    SUMS_FILE,
    BundleError,
    Signer,
    bundle_members,
    holds_signature,
    packed_as_written,
    read_bundle,
    read_sha256sums,
    sha256sums,
    to_bundle,
)
from ._text import TEXT_FORMATS, export_format_of, to_seglst, to_srt, to_txt, to_vtt

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "MAX_EXPORT_BYTES",
    "RECORD_FILE",
    "SIGNATURE_FILE",
    "SUMS_FILE",
    "BundleError",
    "RecordedFile",
    "Signer",
    "SigningKeyError",
    "bundle_members",
    "export",
    "export_format_of",
    "formats_to_write",
    "holds_signature",
    "keep_signed",
    "packed_as_written",
    "read_bundle",
    "read_sha256sums",
    "recorded",
    "recorded_files",
    "render",
    "to_bundle",
    "to_seglst",
    "to_srt",
    "to_txt",
    "to_vtt",
    "withdraw",
]

log = logging.getLogger(f"trackscribe.{__name__}")

FORMATS: dict[str, tuple[str, Callable[[Transcript], str | bytes]]] = {
    **TEXT_FORMATS,
    "bundle": ("transcript.bundle.zip", to_bundle),
}
"""Format name -> (file name, renderer)."""

DEFAULT_FORMATS: tuple[str, ...] = tuple(TEXT_FORMATS)
"""What is written when no format is named: every format but the bundle, which holds the
same again."""


class RecordedFile(NamedTuple):
    """What a folder's record says of one file trackscribe's exports wrote there."""

    sha256: str
    source: str | None = None
    """The SHA-256 of the transcript JSON it was rendered from (``render(transcript,
    "json")``, written or not): which transcript it shows. None in a record an earlier
    version wrote, which did not say."""
    removing: bool = False
    """An export that owns the folder (``replace``) is removing it as an earlier run's file:
    gone, it is as that export meant to leave it, not a file lost."""


class SigningKeyError(ValueError):
    """A signing key that cannot be used, or a signed bundle that would be lost for want of
    one; the message names the file and says why (never a key's bytes)."""


def keep_signed(
    folder: Path | str,
    key: object | None,
    signed_by: str | None = None,
    *,
    formats: Iterable[str] | None = None,
) -> None:
    """Refuse (:class:`SigningKeyError`), before any work, a run with no ``key`` (a key or a
    :data:`Signer`: only whether there is one counts here) that would write over or remove
    the signed bundle in ``folder`` (signed by the key ``signed_by``, where that is known):
    a re-run that lost its key must not turn a signed record into an unsigned one and report
    success. Removing the bundle first is how to do without.

    With the ``formats`` an export that owns the folder (``replace``) will write, a bundle it
    would leave alone (not asked for, and not one the folder's record says an earlier export
    wrote: a reviewer's copy of one received) is no reason to refuse; without them, any
    signed bundle there is."""
    folder = Path(folder)
    bundle = folder / FORMATS["bundle"][0]
    if key is not None or not holds_signature(bundle):
        return
    if formats is not None and not _bundle_at_stake(
        folder, formats_to_write(formats), _read_record(folder / RECORD_FILE), replace=True
    ):
        return
    whose = f" with the key {signed_by}" if signed_by else ""
    raise SigningKeyError(
        f"{bundle}: signed{whose}; with no signing key it would be written again unsigned, "
        "or removed: give the key (--sign-key), or remove the bundle first to do without"
    )


def render(transcript: Transcript, name: str, *, signer: Signer | None = None) -> bytes:
    """The bytes the format ``name`` writes for ``transcript``: what its file holds (a
    bundle signed by ``signer``, if one is given)."""
    if name == "bundle":
        return to_bundle(transcript, signer)
    rendered = FORMATS[name][1](transcript)
    return rendered.encode("utf-8") if isinstance(rendered, str) else rendered


def formats_to_write(formats: Iterable[str] | str) -> list[str]:
    """``formats`` (one name, or several) as a list of known names, each once; raises
    :class:`ValueError` naming any unknown one, before anything is done."""
    formats = [formats] if isinstance(formats, str) else list(dict.fromkeys(formats))
    unknown = [f for f in formats if not isinstance(f, str) or f not in FORMATS]
    if unknown:
        named = ", ".join(map(str, unknown))
        raise ValueError(f"unknown format(s) {named}; known: {', '.join(FORMATS)}")
    if not formats:
        raise ValueError(f"no format to write; known: {', '.join(FORMATS)}")
    return formats


def _transcript_at(path: object) -> tuple[Transcript, bytes]:
    """The transcript saved at ``path`` (a notebook may well pass the file's name), and the
    bytes it was read from."""
    if not isinstance(path, Path | str):
        raise TypeError(
            f"transcript must be a Transcript, or the path of a transcript.json, "
            f"not {type(path).__name__}"
        )
    data = Transcript.read_bytes(path)
    return Transcript.from_json(data, str(path)), data


def export(
    transcript: Transcript | Path | str,
    out_dir: Path | str,
    formats: Iterable[str] | str = DEFAULT_FORMATS,
    *,
    replace: bool = False,
    signer: Signer | None = None,
) -> dict[str, Path]:
    """Write ``transcript`` (or the one saved at that path) in each format into ``out_dir``
    (one name, or several; default :data:`DEFAULT_FORMATS`), the bundle signed by ``signer``
    if one is given; returns the path written per format.

    The formats asked for are always written over. With ``replace`` the folder holds this
    transcript alone: files of other formats that an earlier export wrote there are then
    removed, each only if its bytes are still those the folder's record says trackscribe
    wrote: one changed since is kept, with a warning, and one trackscribe did not write is
    never touched. Without it, nothing is removed, and the record goes on naming what earlier
    exports wrote.

    With no ``signer``, an export that would write over or remove a signed bundle in
    ``out_dir`` raises :class:`SigningKeyError` (:func:`keep_signed`) and writes nothing.
    A transcript that would not load again (:meth:`Transcript.check`) raises
    :class:`TranscriptError` and writes nothing. A ``transcript.json`` exported by path into
    its own folder with ``replace`` is written again with the formats asked for (it is what
    the others are checked against, and must not be removed as an earlier run's file),
    unless it holds fields this version does not know (a reviewer's note, a later version's
    field), which would be lost: that raises :class:`TranscriptError`.
    """
    formats = formats_to_write(formats)
    out_dir = Path(out_dir)
    own: tuple[Path, bytes] | None = None  # the folder's own transcript, if exported
    read: bytes | None = None  # the transcript.json's bytes, if exported from its path
    if isinstance(transcript, Transcript):
        transcript.check()  # changed in place in a notebook, say: written, it must read back
    else:
        source = transcript
        transcript, read = _transcript_at(source)
        held = out_dir / FORMATS["json"][0]
        if replace and not held.is_symlink() and _same_file(held, Path(source)):
            # The folder's transcript is the one its exports are checked against: written
            # (so recorded) as the others are, never removed as an earlier run's file, and
            # never with less than it holds (checked once it is rendered, below). A link is
            # not the folder's own: it is left.
            own = Path(source), read
            formats = list(dict.fromkeys(["json", *formats]))
    record_path = out_dir / RECORD_FILE
    earlier = _read_record(record_path)
    if signer is None and _bundle_at_stake(out_dir, formats, earlier, replace=replace):
        keep_signed(out_dir, signer)
    written = {name: out_dir / FORMATS[name][0] for name in formats}
    # Render everything before writing anything, and replace the files together: a renderer
    # or a write that fails leaves the folder as it was, never half this run's files.
    files = {written[name]: render(transcript, name, signer=signer) for name in formats}
    if own is not None:
        _refuse_losing_fields(*own, files[written["json"]])
    # Which transcript each file shows: the JSON written with them; else the file they were
    # rendered from, as read (an earlier version's, or one edited by hand, is not what this
    # version renders it to, and verify checks them against that file); else the JSON the
    # transcript renders to.
    if "json" in formats:
        rendered_from = _sha256(files[written["json"]])
    else:
        rendered_from = _sha256(read if read is not None else render(transcript, "json"))
    ours = {path.name: RecordedFile(_sha256(data), rendered_from) for path, data in files.items()}
    stale = {
        name: entry._replace(removing=entry.removing or replace)
        for name, entry in earlier.items()
        if name not in ours
    }
    recordable = _recordable(record_path)
    if recordable:
        # Still ours only while their bytes are the same; and named until they are removed:
        # a run stopped in between must leave the next one a record of them to remove, and
        # a reviewer one that says they are being removed, not lost.
        files[record_path] = _record_bytes(ours | stale)
    atomic_write_files(files)
    if replace and recordable and stale:
        removed, left = _remove_stale(out_dir, stale)
        for path in removed:
            log.warning("removed %s: an earlier run wrote it, and this one did not", path)
        atomic_write_files({record_path: _record_bytes(ours | left)})
    for path in files:  # hidden copies of exports, old or half-written, beside the new ones
        remove_unfinished_writes(out_dir, path.name, older_than=_ABANDONED)
    return written


_ABANDONED = 600.0
"""Seconds after which a temporary file of an export is one a killed run left: a run that
is writing takes a moment, not minutes, from making it to renaming it."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _refuse_losing_fields(source: Path, read: bytes, again: bytes) -> None:
    """:class:`TranscriptError` naming the first fields of ``source`` (``read`` from it) that
    ``again``, the transcript read from it as this version writes it, no longer holds."""
    lost = _fields_lost(json.loads(read), json.loads(again))
    if lost:
        more = f" and {len(lost) - 3} more" if len(lost) > 3 else ""
        raise TranscriptError(
            f"{source}: holds fields this version of trackscribe does not know "
            f"({', '.join(lost[:3])}{more}); written again, they would be lost: export "
            "into another folder"
        )


def _fields_lost(before: object, after: object, where: str = "") -> list[str]:
    """Paths of the keys ``before`` has and ``after`` does not, objects and lists walked."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            lost
            for key, value in before.items()
            for lost in (
                [f"{where}.{key}".lstrip(".")]
                if key not in after
                else _fields_lost(value, after[key], f"{where}.{key}")
            )
        ]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            lost
            for i, (item, again) in enumerate(zip(before, after, strict=True))
            for lost in _fields_lost(item, again, f"{where}[{i}]")
        ]
    return []


def _bundle_at_stake(
    out_dir: Path, formats: list[str], earlier: dict[str, RecordedFile], *, replace: bool
) -> bool:
    """Whether exporting ``formats`` into ``out_dir`` would write over the bundle there or,
    with ``replace``, remove it (as :func:`_remove_stale` does: only one still byte for byte
    what the record ``earlier`` says trackscribe wrote)."""
    if "bundle" in formats:
        return True
    name = FORMATS["bundle"][0]
    if not replace or name not in earlier:
        return False
    try:
        return _sha256((out_dir / name).read_bytes()) == earlier[name].sha256
    except OSError:
        return False


def withdraw(out_dir: Path) -> list[Path]:
    """Remove the files earlier exports wrote in ``out_dir``, each only if its bytes are still
    those recorded (as :func:`export` with ``replace`` does): for a folder whose transcript
    no longer stands for its inputs. Returns the files removed, for the caller to say why;
    the record names what could not be removed, if any."""
    out_dir = Path(out_dir)
    record_path = out_dir / RECORD_FILE
    earlier = _read_record(record_path)
    if not earlier or not _recordable(record_path):
        return []
    removed, left = _remove_stale(out_dir, earlier)
    if left:
        atomic_write_files({record_path: _record_bytes(left)})
    else:
        record_path.unlink(missing_ok=True)
    return removed


def recorded(out_dir: Path) -> dict[str, str] | None:
    """File name -> SHA-256 of each file that trackscribe's exports wrote in ``out_dir``, as
    the folder's record says: what a reviewer checks the files against later. None for a
    folder with no record. A record that is there and cannot be read (or is not a plain
    file) raises :class:`OSError`: to a reviewer, that is not the same as no record."""
    files = recorded_files(out_dir)
    return None if files is None else {name: entry.sha256 for name, entry in files.items()}


def recorded_files(out_dir: Path) -> dict[str, RecordedFile] | None:
    """What :func:`recorded` gives, with what the record says of each file besides its
    SHA-256: which transcript it was rendered from, and whether it is being removed."""
    path = Path(out_dir) / RECORD_FILE
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        text = path.read_bytes().decode("utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except UnicodeDecodeError as exc:
        raise OSError(errno.EILSEQ, f"not UTF-8 text ({exc.reason})", str(path)) from None
    return _parse_record(text)


RECORD_FILE = ".trackscribe-exports"
"""Which files trackscribe's exports wrote in a folder, and their SHA-256: one
``<sha256>  <name>`` line each, as ``sha256sum`` writes them; then, on lines starting ``#``,
``# from <sha256>  <name>``, the SHA-256 of the transcript JSON each was rendered from, and
``# removing  <name>`` for each that an export is removing (:class:`RecordedFile`). Those are
comments to ``sha256sum -c``, and no lines at all to earlier versions of trackscribe, so both
still read the record: ``sha256sum -c`` checks it, and an earlier version still removes an
earlier run's files, and checks the rest, after a later one wrote it."""

_FROM = "# from "
_REMOVING = "# removing  "

_OUR_NAMES = frozenset(name for name, _ in FORMATS.values())


def _read_record(path: Path) -> dict[str, RecordedFile]:
    """What a folder's record says of each file. Nothing for a folder without one."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (FileNotFoundError, NotADirectoryError):  # none yet (no folder: writing says so)
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s cannot be read (%s): earlier runs' files here are left alone", path, exc)
        return {}
    return _parse_record(text)


def _parse_record(text: str) -> dict[str, RecordedFile]:
    """Only names of our formats count: the record is a file anyone can edit."""
    lines = text.splitlines()
    from_lines = "\n".join(line.removeprefix(_FROM) for line in lines if line.startswith(_FROM))
    sources = read_sha256sums(from_lines, _OUR_NAMES)
    removing = {line.removeprefix(_REMOVING) for line in lines if line.startswith(_REMOVING)}
    return {
        name: RecordedFile(digest, sources.get(name), name in removing)
        for name, digest in read_sha256sums(text, _OUR_NAMES).items()
    }


def _recordable(path: Path) -> bool:
    try:
        if stat.S_ISREG(path.lstat().st_mode):
            return True
    except (FileNotFoundError, NotADirectoryError):  # no record yet (or no folder: said below)
        return True
    log.warning("%s is not a file: which files trackscribe writes here is not recorded", path)
    return False


def _record_bytes(record: dict[str, RecordedFile]) -> bytes:
    names = sorted(record)
    sums = sha256sums((name, record[name].sha256) for name in names).decode("utf-8")
    sources = "".join(f"{_FROM}{record[n].source}  {n}\n" for n in names if record[n].source)
    removing = "".join(f"{_REMOVING}{name}\n" for name in names if record[name].removing)
    return (sums + sources + removing).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _remove_stale(
    out_dir: Path, stale: dict[str, RecordedFile]
) -> tuple[list[Path], dict[str, RecordedFile]]:
    """Remove each of ``stale`` (name -> what trackscribe wrote) that is still a
    regular file with those bytes; return those removed and those that could not be. One that
    cannot be is named in a warning: the new files are whole, and failing the run for an old
    file would lose them."""
    removed: list[Path] = []
    left = {}
    for name, entry in stale.items():
        path = out_dir / name
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                continue  # a link or a folder in its place: not what trackscribe wrote
            if _sha256(path.read_bytes()) != entry.sha256:
                log.warning("kept %s: it has changed since an earlier run wrote it", path)
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("%s is from an earlier run and could not be removed: %s", path, exc)
            left[name] = entry
        else:
            removed.append(path)
    return removed, left
