"""Check a transcript against what it says it was made from: for a reviewer, afterwards.

A transcript names its inputs with their size and SHA-256, and the model's files with theirs;
the folder an export wrote records the SHA-256 of each file it wrote there. :func:`verify`
reads all of that back, and transcribes nothing:

- each file the export wrote still has the bytes it wrote, and each export beside the
  transcript (subtitles, text, SegLST) is what the transcript renders to, so that no copy a
  reviewer reads says what the others do not;
- given the tracks' manifest, each input is there with the bytes that were transcribed and on
  the same participant, and every track of the manifest is in the transcript, as an input or
  as a failure with its reason: none was left out unsaid;
- the model's files are those that made the transcript, where that model is on this machine.

What cannot be checked (no record, no manifest, a model that is not here) is said as such,
and is not counted as a difference.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from models import Manifest, Transcript, sha256_file
from stages.export import FORMATS, recorded
from stages.transcribe import model_files

from .core import software_version

__all__ = ["Check", "Verification", "verify"]

Status = Literal["ok", "differs", "missing", "unchecked"]


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
        """Nothing differs and nothing is missing; what could not be checked does not count."""
        return all(check.status in ("ok", "unchecked") for check in self.checks)


def verify(
    transcript: Path | str, manifest: Manifest | None = None, *, model: str | None = None
) -> Verification:
    """Check ``transcript`` (``transcript.json``, or the folder holding it) and the exports
    beside it; with ``manifest``, its inputs; and its model's files, found where ``model``
    says (default: the model the transcript names). Raises :class:`TranscriptError` for a
    transcript that cannot be read."""
    path = Path(transcript)
    if path.is_dir():
        path = path / FORMATS["json"][0]
    made = Transcript.load(path)
    checks = _exports(made, path)
    if manifest is None:
        checks.append(Check(subject="inputs", status="unchecked", detail="no manifest given"))
    else:
        checks += _inputs(made, manifest)
    checks.append(_model(made, model or made.provenance.model))
    return Verification(transcript=str(path), checks=checks)


def _exports(made: Transcript, path: Path) -> list[Check]:
    record = recorded(path.parent)
    checks = [_as_written(path, record)]
    other_version = made.provenance.software != software_version()
    for name, (file_name, render) in FORMATS.items():
        export = path.parent / file_name
        if name == "json" or export == path:
            continue
        if not export.is_file():
            if file_name in record:
                detail = "trackscribe wrote it here, and it is gone"
                checks.append(Check(subject=file_name, status="missing", detail=detail))
            continue
        written = _as_written(export, record)
        line = _first_difference(export.read_bytes(), render(made).encode("utf-8"))
        if line is None:
            detail = f"what {path.name} renders to"
            if written.status == "differs":  # as rendered now, though not as first written
                detail += f"; {written.detail}"
            checks.append(Check(subject=file_name, status="ok", detail=detail))
            continue
        detail = f"not what {path.name} renders to (from line {line}); {written.detail}"
        if other_version:
            detail += f"; {made.provenance.software} made it, {software_version()} renders it"
        checks.append(Check(subject=file_name, status="differs", detail=detail))
    return checks


def _as_written(path: Path, record: dict[str, str]) -> Check:
    """Whether ``path`` still has the bytes the folder's record says trackscribe wrote."""
    if path.name not in record:
        detail = "no record of trackscribe writing it here"
        return Check(subject=path.name, status="unchecked", detail=detail)
    if sha256_file(path) != record[path.name]:
        detail = "changed since trackscribe wrote it"
        return Check(subject=path.name, status="differs", detail=detail)
    return Check(subject=path.name, status="ok", detail="as trackscribe wrote it")


def _first_difference(found: bytes, expected: bytes) -> int | None:
    """The first line (from 1) where two texts differ; None when they do not."""
    if found == expected:
        return None
    lines = zip(found.splitlines(), expected.splitlines(), strict=False)
    for number, (a, b) in enumerate(lines, 1):
        if a != b:
            return number
    return min(found.count(b"\n"), expected.count(b"\n")) + 1


def _inputs(made: Transcript, manifest: Manifest) -> list[Check]:
    checks = []
    if manifest.meeting_id != made.meeting_id:
        detail = (
            f"the manifest is of meeting {manifest.meeting_id}, the transcript of {made.meeting_id}"
        )
        checks.append(Check(subject="meeting", status="differs", detail=detail))
    listed = {track.path: track for track in manifest.tracks}
    for used in made.provenance.inputs:
        track = listed.get(used.path)
        if track is None:
            detail = "the transcript was made from it; the manifest does not list it"
            checks.append(Check(subject=used.path, status="missing", detail=detail))
            continue
        file = manifest.track_path(track)
        try:
            size, digest = file.stat().st_size, sha256_file(file)
        except OSError as exc:
            detail = f"cannot be read ({file}): {exc.strerror or exc}"
            checks.append(Check(subject=used.path, status="missing", detail=detail))
            continue
        problems = []
        if (size, digest) != (used.size, used.sha256):
            problems.append(
                f"not the bytes transcribed: {size} bytes, SHA-256 {digest[:12]}…, where "
                f"{used.size} bytes, SHA-256 {used.sha256[:12]}… were"
            )
        if track.user_id != used.user_id:
            problems.append(
                f"the manifest puts it on {track.user_id}, the transcript on {used.user_id}"
            )
        if problems:
            checks.append(Check(subject=used.path, status="differs", detail="; ".join(problems)))
        else:
            detail = f"the bytes transcribed ({size} bytes, SHA-256 {digest[:12]}…)"
            checks.append(Check(subject=used.path, status="ok", detail=detail))
    failed = {failure.path: failure for failure in made.provenance.failures}
    used_paths = {used.path for used in made.provenance.inputs}
    for track in manifest.tracks:
        if track.path in used_paths:
            continue
        if track.path in failed:
            detail = f"not transcribed, and the transcript says why: {failed[track.path].reason}"
            checks.append(Check(subject=track.path, status="ok", detail=detail))
        else:
            detail = "in the manifest, but the transcript neither used it nor says why not"
            checks.append(Check(subject=track.path, status="missing", detail=detail))
    return checks


def _model(made: Transcript, model: str) -> Check:
    named = made.provenance.model_files
    if not named:
        detail = f"the transcript names no files of {made.provenance.model}"
        return Check(subject="model", status="unchecked", detail=detail)
    here = model_files(model)
    if not here:
        return Check(subject="model", status="unchecked", detail=f"{model} is not on this machine")
    names = named.keys() | here.keys()
    changed = sorted(name for name in names if named.get(name) != here.get(name))
    if changed:
        detail = f"{model}: {', '.join(changed)} not as when it transcribed"
        return Check(subject="model", status="differs", detail=detail)
    detail = f"{model}: {len(named)} files, each as when it transcribed"
    return Check(subject="model", status="ok", detail=detail)
