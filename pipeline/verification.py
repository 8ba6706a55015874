"""Check a transcript against what it says it was made from: for a reviewer, afterwards.

A transcript names its inputs with their size and SHA-256 and the model's files with theirs,
and the folder an export wrote records the SHA-256 of each file it wrote there. :func:`verify`
reads all of that back, and transcribes nothing:

- each file the export wrote still has the bytes it wrote, and each export beside the
  transcript (subtitles, text, SegLST) is what the transcript renders to, so that no copy a
  reviewer reads says what the others do not;
- given the tracks' manifest, each input is there with the bytes that were transcribed, on
  the same participant and start, and every track of the manifest is in the transcript, as an
  input or as a failure with its reason: none was left out unsaid;
- the model's files are those that made the transcript, where that model is on this machine.

What the transcript itself says was lost (a track that failed, a file that broke off) is
listed, as it is no discrepancy. What cannot be checked (no record, no manifest, a model that
is not here) is said as such. The record is a file in the folder, as the transcript is: it
catches files changed or left behind, not someone who rewrites both.
"""

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from models import (
    InputFile,
    Manifest,
    Track,
    TrackFailure,
    Transcript,
    TranscriptError,
    sha256_file,
)
from stages.export import FORMATS, recorded
from stages.transcribe import BUNDLED_MODEL, model_folder

from .core import software_version

__all__ = ["Check", "Verification", "verify"]

Status = Literal["ok", "lost", "differs", "missing", "unchecked"]
"""``lost``: input the transcript itself says it lost (no discrepancy); ``differs`` and
``missing``: what is not as the transcript or the record says; ``unchecked``: what there is
nothing here to check against."""

_TRANSCRIPT = FORMATS["json"][0]


class Check(BaseModel):
    subject: str = Field(description="a file, the meeting, the inputs, or the model")
    status: Status
    detail: str


class Verification(BaseModel):
    transcript: str
    checks: list[Check]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """Nothing differs and nothing is missing."""
        return not any(check.status in ("differs", "missing") for check in self.checks)


def verify(
    transcript: Path | str,
    manifest: Manifest | Path | str | None = None,
    *,
    model: str | None = None,
) -> Verification:
    """Check ``transcript`` (``transcript.json``, or the folder holding it) and the exports
    beside it; with ``manifest`` (or the path of one), its inputs; and the model's files, in
    the folder ``model`` (default: the model the transcript names, if it is the bundled one or
    a hub model downloaded here). Raises :class:`TranscriptError` for a transcript that cannot
    be read, and :class:`ManifestError` for such a manifest."""
    path = _transcript_file(Path(transcript))
    made = Transcript.load(path)
    if manifest is not None and not isinstance(manifest, Manifest):
        manifest = Manifest.load(manifest)
    checks = _exports(made, path)
    checks += _inputs(made, manifest)
    checks.append(_model(made, model))
    return Verification(transcript=str(path), checks=checks)


def _transcript_file(path: Path) -> Path:
    if path.is_dir():
        if not (path / _TRANSCRIPT).exists():
            raise TranscriptError(_no_transcript_in(path))
        path = path / _TRANSCRIPT
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise TranscriptError(f"{path}: no such transcript file") from None
    except OSError as exc:
        raise TranscriptError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):  # a pipe would be waited on for good
        raise TranscriptError(f"{path}: not a regular file")
    return path


def _no_transcript_in(folder: Path) -> str:
    if any(folder.glob(f"*/{_TRANSCRIPT}")):
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


def _exports(made: Transcript, path: Path) -> list[Check]:
    try:
        record = recorded(path.parent)
    except OSError as exc:
        reason = f"the record of what trackscribe wrote here cannot be read: {_why(exc)}"
        record = None
        checks = [Check(subject=path.name, status="missing", detail=reason)]
    else:
        checks = [_as_written(path, record)]
    other_version = made.provenance.software != software_version()
    for name, (file_name, render) in FORMATS.items():
        export = path.parent / file_name
        if name == "json" or export == path:
            continue
        checks += _export(export, made, render, record, path.name, other_version)
    return checks


def _export(
    export: Path,
    made: Transcript,
    render: Callable[[Transcript], str],
    record: dict[str, str] | None,
    source: str,
    other_version: bool,
) -> list[Check]:
    name = export.name
    try:
        mode = export.lstat().st_mode
    except FileNotFoundError:
        if record is not None and name in record:
            detail = "trackscribe wrote it here, and it is gone"
            return [Check(subject=name, status="missing", detail=detail)]
        return []
    except OSError as exc:
        return [Check(subject=name, status="missing", detail=f"cannot be read: {_why(exc)}")]
    if not stat.S_ISREG(mode):
        return [Check(subject=name, status="differs", detail=_not_a_file(export, mode))]
    try:
        found = export.read_bytes()
    except OSError as exc:
        return [Check(subject=name, status="missing", detail=f"cannot be read: {_why(exc)}")]
    written = _as_written(export, record)
    line = _first_difference(found, render(made).encode("utf-8"))
    if line is None:
        detail = f"what {source} renders to; {written.detail}"
        status = "differs" if written.status == "differs" else "ok"
        return [Check(subject=name, status=status, detail=detail)]
    detail = f"not what {source} renders to (from line {line}); {written.detail}"
    if other_version:
        detail += f"; {made.provenance.software} made it, {software_version()} renders it"
    return [Check(subject=name, status="differs", detail=detail)]


def _as_written(path: Path, record: dict[str, str] | None) -> Check:
    """Whether ``path`` still has the bytes the folder's record says trackscribe wrote."""
    if record is None or path.name not in record:
        detail = "no record of trackscribe writing it here"
        return Check(subject=path.name, status="unchecked", detail=detail)
    try:
        mode = path.lstat().st_mode
        if not stat.S_ISREG(mode):
            return Check(subject=path.name, status="differs", detail=_not_a_file(path, mode))
        digest = sha256_file(path)
    except OSError as exc:
        detail = f"cannot be read: {_why(exc)}"
        return Check(subject=path.name, status="missing", detail=detail)
    if digest != record[path.name]:
        detail = "changed since trackscribe wrote it"
        return Check(subject=path.name, status="differs", detail=detail)
    return Check(subject=path.name, status="ok", detail="as trackscribe wrote it")


def _not_a_file(path: Path, mode: int) -> str:
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


def _inputs(made: Transcript, manifest: Manifest | None) -> list[Check]:
    failures = made.provenance.failures
    if manifest is None:
        checks = [Check(subject="inputs", status="unchecked", detail="no manifest given")]
        checks += [
            Check(subject=used.path, status="lost", detail=used.problem)
            for used in made.provenance.inputs
            if used.problem
        ]
        checks += [Check(subject=f.path, status="lost", detail=_reason(f)) for f in failures]
        return checks
    checks = _meeting(made, manifest)
    listed = {_key(track.path): track for track in manifest.tracks}
    accounted = set()
    for used in made.provenance.inputs:
        accounted.add(_key(used.path))
        track = listed.get(_key(used.path))
        if track is None:
            detail = "the transcript was made from it; the manifest does not list it"
            checks.append(Check(subject=used.path, status="missing", detail=detail))
        else:
            checks.append(_input(used, track, manifest.track_path(track)))
    for failure in failures:
        accounted.add(_key(failure.path))
        track = listed.get(_key(failure.path))
        if track is None:
            detail = (
                f"the transcript says it failed ({failure.reason}); the manifest does not list it"
            )
            checks.append(Check(subject=failure.path, status="missing", detail=detail))
        elif track.user_id != failure.user_id:
            detail = f"the manifest puts it on {track.user_id}, the transcript on {failure.user_id}"
            checks.append(Check(subject=failure.path, status="differs", detail=detail))
        else:
            detail = f"not transcribed, and the transcript says why: {_reason(failure)}"
            checks.append(Check(subject=failure.path, status="lost", detail=detail))
    for key, track in listed.items():
        if key not in accounted:
            detail = "in the manifest, but the transcript neither used it nor says why not"
            checks.append(Check(subject=track.path, status="missing", detail=detail))
    return checks


def _reason(failure: TrackFailure) -> str:
    """Why a track failed, without its path (the line's subject), which most reasons lead with."""
    return failure.reason.removeprefix(f"{failure.path}: ")


def _key(path: str) -> tuple[str, ...]:
    """A track's identity, as the manifest has it (``./tracks/a.webm`` is ``tracks/a.webm``)."""
    return Path(path).parts


def _meeting(made: Transcript, manifest: Manifest) -> list[Check]:
    said = []
    if manifest.meeting_id != made.meeting_id:
        said.append(f"meeting {manifest.meeting_id} in the manifest, {made.meeting_id} here")
    recording = made.provenance.recording_id
    if None not in (manifest.recording_id, recording) and manifest.recording_id != recording:
        said.append(f"recording {manifest.recording_id} in the manifest, {recording} here")
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
    if (track.size, track.sha256) != (None, None) and (
        track.size not in (None, size) or track.sha256 not in (None, digest)
    ):
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


def _model(made: Transcript, given: str | None) -> Check:
    named = made.provenance.model_files
    name = given or made.provenance.model
    if not named:
        detail = f"the transcript names no files of {made.provenance.model}"
        return Check(subject="model", status="unchecked", detail=detail)
    folder = model_folder(name, folders=given is not None)
    if folder is None:
        detail = f"{name} is not on this machine"
        if given is None and name != BUNDLED_MODEL:
            detail += " as a downloaded model: give --model to say where it is"
        return Check(subject="model", status="unchecked", detail=detail)
    said = []
    for file_name, digest in sorted(named.items()):
        if file_name in ("", ".", "..") or Path(file_name).name != file_name:
            said.append(f"{file_name!r} is not the name of a file in a model's folder")
            continue
        try:
            if sha256_file(folder / file_name) != digest:
                said.append(f"{file_name} is not as when it transcribed")
        except OSError as exc:
            said.append(f"{file_name}: {_why(exc)}")
    try:
        extra = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in named)
    except OSError as exc:
        said.append(f"{folder} cannot be listed: {_why(exc)}")
        extra = []
    if extra:
        said.append(f"{', '.join(extra)} not among the files it transcribed with")
    if said:
        return Check(subject="model", status="differs", detail=f"{name}: {'; '.join(said)}")
    detail = f"{name}: {len(named)} files, each as when it transcribed"
    return Check(subject="model", status="ok", detail=detail)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)
