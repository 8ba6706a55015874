"""Check a transcript against what it says it was made from: for a reviewer, afterwards.

A transcript names its inputs with their size and SHA-256 and the model's files with theirs,
and the folder an export wrote records the SHA-256 of each file it wrote there. :func:`verify`
reads all of that back, and transcribes nothing:

- each file the export wrote still has the bytes it wrote, and each export beside the
  transcript (subtitles, text, SegLST, each member of a compliance bundle) is what the
  transcript renders to, so that no copy a reviewer reads says what the others do not; a
  bundle sent on its own is checked against the transcript it holds and, given the public
  key it must be signed with, against its signature;
- given the tracks' manifest, each input is there with the bytes that were transcribed, on
  the same participant and start, and every track of the manifest is in the transcript, as an
  input or as a failure with its reason: none was left out unsaid;
- the model's files are those that made the transcript, where that model is on this machine.

What the transcript itself says was lost (a track that failed, a file that broke off) is
listed, as it is no discrepancy. What cannot be checked (no record, no manifest, a model that
is not here) is said as such. The record is a file in the folder, as the transcript is: it
catches files changed or left behind, not someone who rewrites both; a signature does,
for the bundle and for the exports beside it, which must be what it holds.
"""

import errno
import hashlib
import stat
from collections import Counter
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

from pydantic import BaseModel, Field, computed_field

from models import (
    BATCH_SUMMARY,
    DONE_FILE,
    MANIFEST_FILE,
    STARTED_FILE,
    InputFile,
    Manifest,
    Track,
    TrackFailure,
    Transcript,
    TranscriptError,
    printable,
    read_regular_file,
    sha256_file,
)
from stages.export import (
    FORMATS,
    MAX_EXPORT_BYTES,
    RECORD_FILE,
    SIGNATURE_FILE,
    SUMS_FILE,
    BundleError,
    RecordedFile,
    bundle_members,
    packed_as_written,
    read_bundle,
    read_sha256sums,
    recorded,
    recorded_files,
)
from stages.transcribe import ModelError, model_folder

from .core import software_version
from .signing import SIGNATURE_BYTES, PublicKey

__all__ = ["Check", "Verification", "verify"]

Status = Literal["ok", "lost", "differs", "missing", "unchecked"]
"""``lost``: input the transcript itself says it lost (no discrepancy); ``differs`` and
``missing``: what is not as the transcript or the record says; ``unchecked``: what there is
nothing here to check against."""

_TRANSCRIPT = FORMATS["json"][0]
_BUNDLE = FORMATS["bundle"][0]


class Check(BaseModel):
    subject: str = Field(description="a file, the meeting, the inputs, or the model")
    status: Status
    detail: str


class Verification(BaseModel):
    """What :func:`verify` found: one :class:`Check` per file, the meeting, the inputs and
    the model; printed (or shown in a notebook), the table ``trackscribe verify`` prints."""

    transcript: str
    checks: list[Check]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """Nothing differs and nothing is missing."""
        return not any(check.status in ("differs", "missing") for check in self.checks)

    def __str__(self) -> str:
        subjects = [printable(check.subject) for check in self.checks]
        width = max(map(len, subjects), default=0)
        alarming = ("differs", "missing")
        lines = [
            f"{check.status.upper() if check.status in alarming else check.status:9s} "
            f"{subject:{width}s}  {printable(check.detail)}"
            for subject, check in zip(subjects, self.checks, strict=True)
        ]
        counts = Counter(check.status for check in self.checks)
        summary = ", ".join(f"{counts[s]} {s}" for s in get_args(Status) if counts[s])
        if not self.ok:
            lines.append(f"NOT verified: {summary}")
        elif counts["unchecked"]:
            lines.append(f"nothing differs, but not everything could be checked: {summary}")
        else:
            lines.append(f"verified: {summary}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's display
        printer.text(str(self))


def verify(
    transcript: Path | str,
    manifest: Manifest | Path | str | None = None,
    *,
    model: str | None = None,
    public_key: PublicKey | Path | str | None = None,
) -> Verification:
    """Check ``transcript`` (``transcript.json``, or the folder holding it) and the exports
    beside it, or a compliance bundle (``transcript.bundle.zip``, or a folder holding one
    and no ``transcript.json``), what it holds and the exports beside it; with ``manifest``
    (or the path of one), its inputs; and the model's files: in the folder ``model``, else
    in the bundled model or the hub model the transcript names, if it was downloaded here.
    With ``public_key`` (or the path of one), the bundle must be signed with that key.

    Raises :class:`TranscriptError` for a transcript that cannot be read,
    :class:`ManifestError` for such a manifest, :class:`ModelError` for a ``model`` that
    is no model here and :class:`SigningKeyError` for a key that cannot be read: what the
    caller asked to be checked against must be there.
    """
    if public_key is not None and not isinstance(public_key, PublicKey):
        public_key = PublicKey(public_key)
    path = _transcript_file(Path(transcript))
    data = _read_given(path)
    if path.suffix.lower() == ".zip" or data.startswith(_ZIP_STARTS):
        members = _members_of(data, path)
        made = Transcript.from_json(members[_TRANSCRIPT], f"{path}:{_TRANSCRIPT}")
        checks = _exports(made, path, data, public_key, members)
    else:
        made = Transcript.from_json(data, str(path))
        checks = _exports(made, path, data, public_key)
    if isinstance(manifest, Manifest):
        manifest.check()
    elif manifest is not None:
        manifest = Manifest.load(manifest)
    folder = None
    if model is not None:
        folder = model_folder(model) if model.strip() else None
        if folder is None:
            raise ModelError(f"model {model!r}: no such model folder, nor a model downloaded here")
    checks += _inputs(made, manifest) if manifest is not None else _unchecked_inputs(made)
    checks.append(_model(made, model, folder))
    return Verification(transcript=str(path), checks=checks)


def _transcript_file(path: Path) -> Path:
    if not path.is_dir():
        return path
    if (path / _TRANSCRIPT).exists():
        return path / _TRANSCRIPT
    if (path / _BUNDLE).exists():  # written as a bundle alone
        return path / _BUNDLE
    raise TranscriptError(_no_transcript_in(path))


_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")
"""How a zip starts, whatever its name (a transcript's JSON never does): read as a bundle."""


def _read_given(path: Path) -> bytes:
    """The bytes of the transcript or bundle given, read once for every check of it."""
    try:
        return read_regular_file(path, MAX_EXPORT_BYTES)
    except FileNotFoundError:
        kind = "bundle" if path.suffix.lower() == ".zip" else "transcript"
        raise TranscriptError(f"{path}: no such {kind} file") from None
    except OSError as exc:
        raise TranscriptError(f"{path}: cannot read: {exc}") from None


def _members_of(data: bytes, path: Path) -> dict[str, bytes]:
    """The members of the bundle ``data`` read from ``path``; a bundle that cannot be read,
    or holds no transcript, is no transcript to check: :class:`TranscriptError`."""
    try:
        members = read_bundle(data, str(path))
    except BundleError as exc:
        raise TranscriptError(str(exc)) from None
    if _TRANSCRIPT not in members:
        raise TranscriptError(f"{path}: holds no {_TRANSCRIPT}: not a trackscribe bundle")
    return members


def _no_transcript_in(folder: Path) -> str:
    # Hidden folders are our own (a batch's .work): not transcripts to send a reviewer to.
    if any(not found.parent.name.startswith(".") for found in folder.glob(f"*/{_TRANSCRIPT}")):
        return f"{folder} has no {_TRANSCRIPT}, but its folders do: verify each of those"
    try:
        exported = recorded(folder)
    except OSError:
        exported = None
    if exported:
        return (
            f"{folder} has exports but no {_TRANSCRIPT} (written without the json format?): "
            "they cannot be checked without it"
        )
    return f"{folder}: no {_TRANSCRIPT} in it"


class _Record(NamedTuple):
    """What the folder's record says trackscribe wrote (file name -> its SHA-256, and that
    of the transcript it was rendered from), and what to say of a file it does not name."""

    files: dict[str, RecordedFile]
    unrecorded: str


class _Source(NamedTuple):
    """The transcript that exports are checked against, how the lines name it, what it
    renders to, and the key a bundle's signature is checked against."""

    made: Transcript
    name: str
    """``transcript.json``, or ``bundle.zip:transcript.json`` for the one in a bundle."""
    rendered: dict[str, bytes]
    """File name -> bytes of each text format, and of the rest of a bundle: rendered once,
    for the exports beside it and a bundle's members alike."""
    digest: str
    """The SHA-256 of the transcript's JSON (the file given, or the bundle's member): what
    the record names as the transcript an export was rendered from."""
    key: PublicKey | None
    given: bytes | None = None
    """The bytes of the transcript given, when it is a file of its own: a bundle beside it must
    hold these, not only what they parse to (extra fields and a key given twice parse alike,
    yet other JSON readers show them otherwise)."""

    def against(self, found: bytes, rendered: bytes) -> tuple[bool, str]:
        """Whether ``found`` is ``rendered``, what this transcript renders to, and what to
        say of it."""
        line = _first_difference(found, rendered)
        if line is None:
            return True, f"what {self.name} renders to"
        detail = f"not what {self.name} renders to (from line {line})"
        if self.other_version:
            # Exports of another version may be rendered otherwise: a reviewer should know.
            detail += f"; {self.made.provenance.software} made it, {software_version()} renders it"
        return False, detail

    @property
    def other_version(self) -> bool:
        """Whether another version of trackscribe made the transcript."""
        return self.made.provenance.software != software_version()

    def rendered_otherwise(
        self, same: bool, written: str | None, rendered_from: str | None
    ) -> Status:
        """The status of an export that is (``same``) or is not what this transcript renders
        to, where ``written`` says whether it is what was recorded as written ("ok"), and
        ``rendered_from`` is the SHA-256 of the transcript JSON it was rendered from, as the
        record says (None where an earlier version's record does not say). One another
        version made, which this version renders otherwise (a header added, say), can be
        checked against that record only: unchecked, not differing, when it is what the
        record says, rendered from this transcript. That trackscribe wrote it does not say
        which transcript it shows: one rendered from another (an earlier run's, left beside
        a later one) differs. One the record does not say of is given the benefit of the
        doubt, as before records said it, and its line says so (:meth:`from_which`)."""
        if same:
            return "ok"
        from_this = rendered_from in (None, self.digest)
        return "unchecked" if self.other_version and written == "ok" and from_this else "differs"

    def from_which(self, rendered_from: str | None) -> str:
        """What to say, of an export recorded as written that is not what this transcript
        renders to, of the transcript it was rendered from (as the record says)."""
        if rendered_from is None:
            return " (the record does not say from which transcript)" if self.other_version else ""
        return "" if rendered_from == self.digest else ", rendered from another transcript"


def _exports(
    made: Transcript,
    path: Path,
    data: bytes,
    key: PublicKey | None,
    members: dict[str, bytes] | None = None,
) -> list[Check]:
    """The file given (``data``, read from ``path``: a transcript, or a bundle holding
    ``members``) and each export beside it, against the folder's record and against what
    the transcript renders to; a bundle's signature against ``key``."""
    checks, record = _folder_record(path.parent)
    rendered = bundle_members(made)
    if members is None:
        # The transcript given is checked against the one trackscribe wrote here, whatever
        # its name: exports rendered again from another file must not pass for that one's.
        checks.append(_as_written(path, hashlib.sha256(data).hexdigest(), record, _TRANSCRIPT))
        source = _Source(made, path.name, rendered, _digest(data), key, given=data)
    else:
        digest = _digest(members[_TRANSCRIPT])
        source = _Source(made, f"{path.name}:{_TRANSCRIPT}", rendered, digest, key)
    beside = {
        name: _read_export(path.parent / file_name, record)
        for name, (file_name, _) in FORMATS.items()
        if path.parent / file_name != path and (name != "json" or members is not None)
    }
    opened = _opened(beside.get("bundle"))  # read once: for its signed members, then checked
    # The bundle whose signature vouches for the exports: the one beside, else the one
    # given; its signature is checked once, here, and its check kept for its own.
    vouching = (FORMATS["bundle"][0], opened) if isinstance(opened, dict) else (path.name, members)
    signature = _signature(vouching[0], vouching[1], key) if vouching[1] is not None else None
    signed = _signed_members(vouching[1], source, signature)

    def checked_once(bundle: dict[str, bytes]) -> _Signed | None:
        return (signature, signed) if bundle is vouching[1] else None

    if members is not None:
        checks += _bundle(path.name, data, members, source, record, _BUNDLE, checked_once(members))
    for name, found in beside.items():
        file_name = FORMATS[name][0]
        if not isinstance(found, bytes):
            checks += [found] if found is not None else []
        elif name == "bundle":
            if isinstance(opened, dict):
                checks += _bundle(
                    file_name, found, opened, source, record, file_name, checked_once(opened)
                )
            else:
                checks += _bundle_beside(file_name, found, opened, record)
        else:
            expected = source.rendered[file_name]
            signed_as = signed.get(file_name)
            checks.append(_export(file_name, found, expected, source, record, signed_as))
    if key is not None and members is None and all(check.subject != _BUNDLE for check in checks):
        # Asked to check a signature, and there was no bundle to check: not a pass.
        detail = "no compliance bundle here, so no signature to check against the key given"
        checks.append(Check(subject=_BUNDLE, status="missing", detail=detail))
    if record.files:  # a folder trackscribe wrote its exports into
        checks += _others_beside(path)
    return checks


_EXPORT_LIKE = (".json", ".vtt", ".srt", ".txt", ".zip", ".stm")
_NOT_EXPORTS = frozenset({DONE_FILE, STARTED_FILE, BATCH_SUMMARY, MANIFEST_FILE})
"""A batch meeting's own files, and a meeting's manifest when exported beside it."""


def _others_beside(path: Path) -> list[Check]:
    """Files beside the exports that look like one (``transcript.final.srt``) but are not
    what trackscribe writes: a reviewer handed one must not take it as verified with the
    rest. Each is said to be unchecked."""
    ours = {name for name, _ in FORMATS.values()}
    try:
        found = sorted(path.parent.iterdir())
    except OSError:
        return []
    return [
        Check(
            subject=other.name,
            status="unchecked",
            detail="not a file trackscribe writes here: nothing says what it should hold",
        )
        for other in found
        if other.name not in ours | _NOT_EXPORTS
        and other != path
        and not other.name.startswith(".")
        and other.suffix.lower() in _EXPORT_LIKE
        and other.is_file()
    ]


def _folder_record(folder: Path) -> tuple[list[Check], _Record]:
    """The record of what trackscribe wrote in ``folder``, and a line if it cannot be read."""
    try:
        found = recorded_files(folder)
    except OSError as exc:
        detail = f"cannot be read: {_why(exc)}"
        unreadable = [Check(subject=RECORD_FILE, status="missing", detail=detail)]
        return unreadable, _Record({}, "the record of what trackscribe wrote here cannot be read")
    return [], _Record(found or {}, "no record of trackscribe writing it here")


def _read_export(path: Path, record: _Record) -> bytes | Check | None:
    """The bytes of the export at ``path``; else what to say of it, or None when it is not
    there and trackscribe never wrote it."""
    name = path.name
    try:
        found = path.lstat()
        if not stat.S_ISREG(found.st_mode):
            return Check(subject=name, status="differs", detail=_not_a_file(found.st_mode))
        return read_regular_file(path, MAX_EXPORT_BYTES)
    except FileNotFoundError:
        # One an export was removing (as an earlier run's) is as that export meant to leave
        # it: the export was stopped before it wrote the record again without it.
        if name in record.files and not record.files[name].removing:
            detail = "trackscribe wrote it here, and it is gone"
            return Check(subject=name, status="missing", detail=detail)
        return None
    except OSError as exc:
        status: Status = "differs" if exc.errno == errno.EFBIG else "missing"
        return Check(subject=name, status=status, detail=f"cannot be read: {_why(exc)}")


def _opened(data: bytes | Check | None) -> dict[str, bytes] | BundleError | None:
    """The members of the bundle read beside a transcript, or why it cannot be read; None
    where there is none to read."""
    if not isinstance(data, bytes):
        return None
    try:
        return read_bundle(data, _BUNDLE)
    except BundleError as exc:
        return exc


def _bundle_beside(
    name: str, data: bytes, opened: BundleError | None, record: _Record
) -> list[Check]:
    """The bundle ``name`` beside the transcript, its bytes ``data``, that could not be
    opened (:func:`_opened`)."""
    written = _against_record(name, hashlib.sha256(data).hexdigest(), record, name)
    return [written, Check(subject=name, status="differs", detail=str(opened))]


_Signed = tuple[Check | None, dict[str, bytes]]
"""A bundle's signature check (:func:`_signature`) and the members it vouches for
(:func:`_signed_members`)."""


def _bundle(
    name: str,
    data: bytes,
    members: dict[str, bytes],
    source: _Source,
    record: _Record,
    recorded_as: str,
    signed: _Signed | None = None,
) -> list[Check]:
    """The bundle ``name``: its bytes against what the record says trackscribe wrote as
    ``recorded_as``, and against the zip trackscribe writes holding its members; and each
    member against what ``source`` renders to.

    A bundle sent on its own has no record beside it, and one made again, whole, from an
    altered transcript is consistent in itself: its bytes are then said to be unchecked,
    unless it is signed with the key given, which vouches for them as a record would.
    But one not laid out as trackscribe lays it out differs, whatever its members: zip
    tools that read other records of it than Python does could show other members."""
    written = _against_record(name, hashlib.sha256(data).hexdigest(), record, recorded_as)
    if signed is None:  # not checked already, as the bundle that vouches for the exports
        signature = _signature(name, members, source.key)
        signed = signature, _signed_members(members, source, signature)
    signature, vouched_for = signed
    held = _members(name, members, source, vouched_for)
    if signature is not None:
        held.append(signature)
    vouched = signature is not None and all(check.status == "ok" for check in held)
    if not packed_as_written(data, members, source.made.origin):
        detail = (
            "not laid out byte for byte as trackscribe writes a bundle of what it holds: a zip "
            f"tool could show other than what is checked here; {written.detail}"
        )
        written = Check(subject=name, status="differs", detail=detail)
    elif written.status == "unchecked" and vouched:
        detail = f"{written.detail}, but signed with the key given, as is all it holds"
        written = Check(subject=name, status="ok", detail=detail)
    return [written, *held]


def _signature(bundle: str, members: dict[str, bytes], key: PublicKey | None) -> Check | None:
    """Whether ``bundle`` is signed with ``key``: None for a bundle not signed, where no key
    was given to check it against."""
    subject = f"{bundle}:{SIGNATURE_FILE}"
    signature = members.get(SIGNATURE_FILE)
    if signature is None:
        if key is None:
            return None
        return Check(subject=subject, status="missing", detail="the bundle is not signed")
    if len(signature) != SIGNATURE_BYTES:
        detail = f"not an Ed25519 signature ({SIGNATURE_BYTES} bytes), but {len(signature)} bytes"
        return Check(subject=subject, status="differs", detail=detail)
    if key is None:
        detail = "signed, but no public key was given to check whose key signed it"
        return Check(subject=subject, status="unchecked", detail=detail)
    if not key.signed(members.get(SUMS_FILE, b""), signature):
        detail = f"not a signature of its SHA256SUMS with the key {key.fingerprint} ({key.path})"
        return Check(subject=subject, status="differs", detail=detail)
    detail = f"its SHA256SUMS signed with the key {key.fingerprint} ({key.path})"
    return Check(subject=subject, status="ok", detail=detail)


def _members(
    bundle: str, members: dict[str, bytes], source: _Source, signed: dict[str, bytes]
) -> list[Check]:
    """Each member of ``bundle`` against what ``source`` renders to; a member that
    trackscribe does not put in a bundle differs: the bundle says more than it made.

    One another version rendered otherwise is checked against the bundle's SHA256SUMS, as
    an export is against the folder's record: which anyone can rewrite, unless it is signed
    with the key given (``signed``: the members it vouches for), which vouches for it."""
    checks = []
    expected = source.rendered
    rendered_from = _digest(members.get(_TRANSCRIPT, b""))  # what the bundle's members show
    listed = read_sha256sums(members.get(SUMS_FILE, b"").decode("utf-8", "replace"), members)
    for name, rendered in expected.items():
        subject = f"{bundle}:{name}"
        if name not in members:
            detail = "not in the bundle, where trackscribe puts it"
            checks.append(Check(subject=subject, status="missing", detail=detail))
            continue
        if name == _TRANSCRIPT and source.given is not None:
            same, detail = _same_bytes(members[name], source.given, source.name)
            status: Status = "ok" if same else "differs"
        else:
            same, detail = source.against(members[name], rendered)
            if name == SUMS_FILE:  # the record itself: whole if every member is as it lists
                whole = all(_digest(members.get(n, b"")) == d for n, d in listed.items())
                written = "ok" if whole and listed else None
            else:
                written = "ok" if _digest(members[name]) == listed.get(name) else None
            status = source.rendered_otherwise(same, written, rendered_from)
            if not same and rendered_from != source.digest:
                detail += "; rendered from another transcript"
            if status == "unchecked":
                detail += (
                    "; every member is as it lists"
                    if name == SUMS_FILE
                    else "; as the bundle's SHA256SUMS lists it"
                )
                if name in signed:
                    status, detail = "ok", f"{detail}, signed with the key given"
        checks.append(Check(subject=subject, status=status, detail=detail))
    for name in members:
        if name not in expected and name != SIGNATURE_FILE:  # the signature: checked apart
            detail = "not among what trackscribe puts in a bundle"
            checks.append(Check(subject=f"{bundle}:{name}", status="differs", detail=detail))
    return checks


def _same_bytes(found: bytes, given: bytes, name: str) -> tuple[bool, str]:
    line = _first_difference(found, given)
    if line is None:
        return True, f"{name}, byte for byte"
    return False, f"not {name}, byte for byte (from line {line})"


def _export(
    name: str,
    found: bytes,
    rendered: bytes,
    source: _Source,
    record: _Record,
    signed: bytes | None,
) -> Check:
    """The export ``name`` (``found``, its bytes) against ``rendered``, what ``source``
    renders to, and against the record.

    ``signed``: what a bundle signed with the key given holds under the same name. The
    signature vouches for those bytes as no record in the folder can (anyone can rewrite a
    record, or copy the exports without it), so an export that is not what the transcript
    renders to here (another version rendered it) is checked against them, unless the record
    says it was changed since it was written."""
    written = _against_record(name, _digest(found), record, name)
    same, detail = source.against(found, rendered)
    detail = f"{detail}; {written.detail}"
    if written.status == "differs":
        return Check(subject=name, status="differs", detail=detail)
    rendered_from = record.files[name].source if written.status == "ok" else None
    if not same and written.status == "ok":
        detail += source.from_which(rendered_from)
    status = source.rendered_otherwise(same, written.status, rendered_from)
    if status == "ok" or signed is None:
        return Check(subject=name, status=status, detail=detail)
    if found == signed:
        detail = f"{detail}; what the bundle signed with the key given holds"
        return Check(subject=name, status="ok", detail=detail)
    line = _first_difference(found, signed)
    detail = f"not what the bundle signed with the key given holds (from line {line}); {detail}"
    return Check(subject=name, status="differs", detail=detail)


def _signed_members(
    members: dict[str, bytes] | None, source: _Source, signature: Check | None
) -> dict[str, bytes]:
    """The members of a bundle of ``source``'s transcript that its signature (``signature``:
    :func:`_signature`'s check of it with the key given) vouches for: its SHA256SUMS, and
    those it lists as they are; none without a signature made with that key, or for a bundle
    of another transcript (an earlier run's: what it holds is not this transcript's)."""
    if members is None or signature is None or signature.status != "ok":
        return {}
    if _digest(members.get(_TRANSCRIPT, b"")) != source.digest:
        return {}
    listed = read_sha256sums(members.get(SUMS_FILE, b"").decode("utf-8", "replace"), members)
    signed = {name: data for name, data in members.items() if listed.get(name) == _digest(data)}
    if SUMS_FILE in members:  # what the signature is of
        signed[SUMS_FILE] = members[SUMS_FILE]
    return signed


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _as_written(path: Path, digest: str, record: _Record, name: str) -> Check:
    """Whether ``path``, whose bytes have the SHA-256 ``digest``, is what the record says
    trackscribe wrote as ``name``: a link to such a file is not."""
    if name not in record.files:
        return Check(subject=path.name, status="unchecked", detail=record.unrecorded)
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        detail = f"cannot be read: {_why(exc)}"
        return Check(subject=path.name, status="missing", detail=detail)
    if not stat.S_ISREG(mode):
        return Check(subject=path.name, status="differs", detail=_not_a_file(mode))
    return _against_record(path.name, digest, record, name)


def _against_record(subject: str, digest: str, record: _Record, name: str) -> Check:
    """Whether ``digest`` (of ``subject``) is what the record says trackscribe wrote as
    ``name``."""
    if name not in record.files:
        return Check(subject=subject, status="unchecked", detail=record.unrecorded)
    as_what = "" if subject == name else f" as {name}"
    if digest != record.files[name].sha256:
        detail = f"not what trackscribe wrote here{as_what}"
        if not as_what:
            detail = "changed since trackscribe wrote it"
        return Check(subject=subject, status="differs", detail=detail)
    return Check(subject=subject, status="ok", detail=f"as trackscribe wrote it{as_what}")


def _not_a_file(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a link, not the file trackscribe wrote"
    if stat.S_ISDIR(mode):
        return "a folder in place of the file trackscribe writes"
    return "not a regular file"


def _first_difference(found: bytes, expected: bytes) -> int | None:
    """The first line (from 1) where two texts differ; None when they do not."""
    if found == expected:
        return None
    ours, theirs = found.splitlines(keepends=True), expected.splitlines(keepends=True)
    for number, (a, b) in enumerate(zip(ours, theirs, strict=False), 1):
        if a != b:
            return number
    return min(len(ours), len(theirs)) + 1


def _unchecked_inputs(made: Transcript) -> list[Check]:
    """With no manifest, the inputs cannot be checked, but what the transcript says it lost
    is still listed."""
    checks = [Check(subject="inputs", status="unchecked", detail="no manifest given")]
    checks += [
        Check(subject=used.path, status="lost", detail=used.problem)
        for used in made.provenance.inputs
        if used.problem
    ]
    checks += [_failed(failure, None) for failure in made.provenance.failures]
    return checks


def _inputs(made: Transcript, manifest: Manifest) -> list[Check]:
    checks = _meeting(made, manifest)
    listed = {_key(track.path): track for track in manifest.tracks}
    accounted: set[tuple[str, ...]] = set()
    for used in made.provenance.inputs:
        accounted.add(_key(used.path))
        track = listed.get(_key(used.path))
        if track is None:
            detail = "the transcript was made from it; the manifest does not list it"
            checks.append(Check(subject=used.path, status="missing", detail=detail))
        else:
            checks.append(_input(used, track, manifest.track_path(track)))
    for failure in made.provenance.failures:
        accounted.add(_key(failure.path))
        checks.append(_failed(failure, listed.get(_key(failure.path))))
    for key, track in listed.items():
        if key not in accounted:
            detail = "in the manifest, but the transcript neither used it nor says why not"
            checks.append(Check(subject=track.path, status="missing", detail=detail))
    return checks


def _failed(failure: TrackFailure, track: Track | None) -> Check:
    """A track the transcript says it lost. Its file is not checked: the transcript has no
    size or SHA-256 of it. A failure before the manifest was written (a file the recording
    named that could not be fetched) is in no manifest."""
    subject = failure.path or failure.user_id
    reason = failure.reason.removeprefix(f"{failure.path}: ")  # the subject already says it
    if track is not None and track.user_id != failure.user_id:
        detail = f"the manifest puts it on {track.user_id}, the transcript on {failure.user_id}"
        return Check(subject=subject, status="differs", detail=detail)
    return Check(subject=subject, status="lost", detail=f"not transcribed: {reason}")


def _key(path: str) -> tuple[str, ...]:
    """A track's identity, as the manifest has it (``./tracks/a.webm`` is ``tracks/a.webm``)."""
    return Path(path).parts


def _meeting(made: Transcript, manifest: Manifest) -> list[Check]:
    said = []
    if manifest.meeting_id != made.meeting_id:
        said.append(f"meeting {manifest.meeting_id} in the manifest, {made.meeting_id} here")
    if manifest.recording_id != made.provenance.recording_id:
        said.append(
            f"recording {manifest.recording_id} in the manifest, "
            f"{made.provenance.recording_id} here"
        )
    if said:
        return [Check(subject="meeting", status="differs", detail="; ".join(said))]
    return []


def _input(used: InputFile, track: Track, file: Path) -> Check:
    try:
        size, digest = file.stat().st_size, sha256_file(file)
    except OSError as exc:
        detail = f"cannot be read ({file}): {_why(exc)}"
        return Check(subject=used.path, status="missing", detail=detail)
    said = []
    if (size, digest) != (used.size, used.sha256):
        said.append(
            f"not the bytes transcribed: {size} bytes, SHA-256 {digest[:12]}…, where "
            f"{used.size} bytes, SHA-256 {used.sha256[:12]}… were"
        )
    if track.size not in (None, size) or track.sha256 not in (None, digest):
        said.append("not the size and SHA-256 the manifest gives")
    if track.user_id != used.user_id:
        said.append(f"the manifest puts it on {track.user_id}, the transcript on {used.user_id}")
    if track.started_time != used.started_time:
        said.append(
            f"the manifest starts it at {track.started_time.isoformat()}, the transcript at "
            f"{used.started_time.isoformat()}"
        )
    if said:
        return Check(subject=used.path, status="differs", detail="; ".join(said))
    detail = f"the bytes transcribed ({size} bytes, SHA-256 {digest[:12]}…)"
    if used.problem:
        return Check(subject=used.path, status="lost", detail=f"{detail}; {used.problem}")
    return Check(subject=used.path, status="ok", detail=detail)


def _model(made: Transcript, given: str | None, folder: Path | None) -> Check:
    named = made.provenance.model_files
    name = given if given is not None else made.provenance.model
    if not named:
        detail = f"the transcript names no files of {made.provenance.model}"
        return Check(subject="model", status="unchecked", detail=detail)
    if folder is None:
        # A folder the transcript names was one of the machine that made it (relative to
        # where it ran, perhaps): only the bundled model or the hub's cache are looked in.
        folder = model_folder(name, folders=False)
    if folder is None:
        detail = f"{name} is not on this machine as a downloaded model: give --model"
        return Check(subject="model", status="unchecked", detail=detail)
    changed, gone = [], []
    for file_name, digest in sorted(named.items()):
        if file_name in ("", ".", "..") or "\0" in file_name or Path(file_name).name != file_name:
            changed.append(f"{file_name!r} is not the name of a file in a model's folder")
            continue
        try:
            if sha256_file(folder / file_name) != digest:
                changed.append(f"{file_name} is not as when it transcribed")
        except FileNotFoundError:
            gone.append(f"{file_name} is not there")
        except OSError as exc:
            changed.append(f"{file_name}: {_why(exc)}")
    try:
        extra = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in named)
    except OSError as exc:
        changed.append(f"{folder} cannot be listed: {_why(exc)}")
        extra = []
    if extra:
        changed.append(f"{', '.join(extra)} not among the files it transcribed with")
    if changed or gone:
        status: Status = "differs" if changed else "missing"
        return Check(subject="model", status=status, detail=f"{name}: {'; '.join(changed + gone)}")
    detail = f"{name}: {len(named)} files, each as when it transcribed"
    return Check(subject="model", status="ok", detail=detail)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)
