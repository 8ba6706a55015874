"""The order of the stages, and what happens when one track goes wrong.

Every track is decoded and searched for speech before any is transcribed, so the speech of
the whole meeting is known, on one clock, before the model sees any of it (deciding across
tracks whose voice a region is needs exactly that). A track that fails is recorded with its
reason and costs nothing else: the other tracks still make the transcript.
"""

import logging
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from models import (
    InputFile,
    Manifest,
    PcmAudio,
    Provenance,
    Segment,
    SpeechRegion,
    TrackFailure,
    Transcript,
)
from stages.decode import decode
from stages.merge import MergeOptions, merge
from stages.transcribe import TranscribeOptions, Transcriber
from stages.vad import VadOptions, detect_speech

__all__ = ["PipelineOptions", "transcribe_tracks"]

log = logging.getLogger("trackscribe")


class PipelineOptions(BaseModel):
    """Every setting that can change a transcript, recorded whole in its provenance."""

    model_config = ConfigDict(frozen=True)

    vad: VadOptions = Field(default_factory=VadOptions)
    transcribe: TranscribeOptions = Field(default_factory=TranscribeOptions)
    merge: MergeOptions = Field(default_factory=MergeOptions)


@dataclass
class _TrackWork:
    index: int
    audio: PcmAudio | None = None
    regions: list[SpeechRegion] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    failure: str | None = None


def software_version() -> str:
    try:
        return f"trackscribe {version('trackscribe')}"
    except PackageNotFoundError:
        return "trackscribe (not installed)"


def transcribe_tracks(
    manifest: Manifest | Path | str,
    *,
    options: PipelineOptions | None = None,
    progress: bool = True,
    workdir: Path | None = None,
) -> Transcript:
    """Transcribe a meeting's tracks into one speaker-attributed transcript.

    ``manifest`` is a :class:`Manifest` or the path of a ``manifest.json``. ``workdir`` is where
    decoded audio is kept while the meeting is processed (about 115 MB per hour of track;
    default: the system's temporary folder); it is removed afterwards. Tracks that cannot
    be used are listed in ``transcript.provenance.failures`` (see ``Transcript.partial``);
    only a manifest that cannot be read at all raises (:class:`models.ManifestError`).
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest.load(manifest)
    options = options or PipelineOptions()
    work = [_TrackWork(index=i) for i in range(len(manifest.tracks))]

    with tempfile.TemporaryDirectory(prefix="trackscribe-", dir=workdir) as scratch:
        for item in tqdm(work, desc="decode + VAD", unit="track", disable=not progress):
            _analyse(manifest, item, Path(scratch), options.vad)

        transcriber = Transcriber(options.transcribe)
        todo = [w for w in work if w.audio is not None and w.regions]
        for item in tqdm(todo, desc="transcribe", unit="track", disable=not progress):
            _transcribe(manifest, item, transcriber)

    provenance = Provenance(
        software=software_version(),
        model=options.transcribe.model,
        parameters=options.model_dump(mode="json"),
        inputs=[_input_file(manifest, w) for w in work if w.audio is not None],
        failures=[
            TrackFailure(
                path=manifest.tracks[w.index].path,
                user_id=manifest.tracks[w.index].user_id,
                reason=w.failure,
            )
            for w in work
            if w.failure is not None
        ],
    )
    segments = {w.index: w.segments for w in work if w.failure is None}
    return merge(manifest, segments, provenance, options.merge)


def _analyse(manifest: Manifest, item: _TrackWork, scratch: Path, vad: VadOptions) -> None:
    track = manifest.tracks[item.index]
    try:
        item.audio = decode(
            manifest.track_path(track),
            scratch / f"{item.index}.pcm",
            expected_sha256=track.sha256,
            expected_size=track.size,
        )
        item.regions = detect_speech(item.audio, vad)
    except Exception as exc:  # one bad track must not cost the others
        item.audio = None
        item.failure = _reason(exc)
        log.error("%s: %s", track.path, item.failure)


def _transcribe(manifest: Manifest, item: _TrackWork, transcriber: Transcriber) -> None:
    assert item.audio is not None
    try:
        item.segments = transcriber.transcribe(item.audio, item.regions)
    except Exception as exc:  # one bad track must not cost the others
        item.failure = _reason(exc)
        log.error("%s: %s", manifest.tracks[item.index].path, item.failure)


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def _input_file(manifest: Manifest, item: _TrackWork) -> InputFile:
    track, audio = manifest.tracks[item.index], item.audio
    assert audio is not None
    return InputFile(
        path=track.path,
        user_id=track.user_id,
        sha256=audio.source_sha256,
        size=audio.source_size,
        started_time=track.started_time,
        decoded_seconds=round(audio.duration, 3),
        problem=audio.problem,
    )
