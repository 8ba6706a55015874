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

from pydantic import BaseModel, ConfigDict, Field, model_validator
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
from stages.decode import DecodeError, decode
from stages.merge import MergeOptions, merge
from stages.transcribe import TranscribeOptions, Transcriber
from stages.vad import VadOptions, detect_speech

__all__ = ["NoUsableTrackError", "PipelineOptions", "transcribe_tracks"]

log = logging.getLogger("trackscribe")


class PipelineOptions(BaseModel):
    """Every setting that can change a transcript, recorded whole in its provenance."""

    model_config = ConfigDict(frozen=True)

    vad: VadOptions = Field(default_factory=VadOptions)
    transcribe: TranscribeOptions = Field(default_factory=TranscribeOptions)
    merge: MergeOptions = Field(default_factory=MergeOptions)

    @model_validator(mode="after")
    def _regions_fit_windows(self) -> "PipelineOptions":
        if self.vad.max_region > self.transcribe.max_window:
            raise ValueError(
                f"vad.max_region ({self.vad.max_region} s) must not exceed "
                f"transcribe.max_window ({self.transcribe.max_window} s)"
            )
        return self


class NoUsableTrackError(ValueError):
    """Not one track of the meeting could be used; the message lists each and why."""


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
    # Loaded first: a model that cannot be loaded should fail before any decoding is spent.
    transcriber = Transcriber(options.transcribe)

    with tempfile.TemporaryDirectory(prefix="trackscribe-", dir=workdir) as scratch:
        for item in tqdm(work, desc="decode + VAD", unit="track", disable=not progress):
            _analyse(manifest, item, Path(scratch), options.vad)

        todo = [w for w in work if w.audio is not None and w.regions]
        _transcribe(manifest, todo, transcriber, progress)

    if all(w.failure is not None for w in work):
        lines = "\n".join(f"  {manifest.tracks[w.index].path}: {w.failure}" for w in work)
        raise NoUsableTrackError(
            f"no track of meeting {manifest.meeting_id} could be used:\n{lines}"
        )
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
        _fail(item, track.path, exc)


def _transcribe(
    manifest: Manifest, todo: list[_TrackWork], transcriber: Transcriber, progress: bool
) -> None:
    speech = sum(r.duration for w in todo for r in w.regions)
    with tqdm(
        total=round(speech, 1), desc="transcribe", unit="s", disable=not progress or not todo
    ) as bar:
        try:
            results = transcriber.transcribe_tracks(
                [(w.audio, w.regions) for w in todo], on_progress=lambda s: bar.update(round(s, 1))
            )
        except Exception:
            # The tracks were transcribed together; find the one that fails, alone.
            log.warning("transcribing the tracks together failed; retrying one by one")
            for item in todo:
                try:
                    item.segments = transcriber.transcribe(item.audio, item.regions)
                except Exception as exc:  # one bad track must not cost the others
                    _fail(item, manifest.tracks[item.index].path, exc)
            return
    for item, segments in zip(todo, results, strict=True):
        item.segments = segments


def _fail(item: _TrackWork, path: str, exc: Exception) -> None:
    # Our own errors already say what and where; anything else is named by its type, and its
    # traceback is kept for -vv.
    item.failure = str(exc) if isinstance(exc, DecodeError) else f"{type(exc).__name__}: {exc}"
    log.error("%s: %s", path, item.failure)
    log.debug("%s failed", path, exc_info=exc)


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
        first_packet_time=round(audio.first_packet_time, 3),
        gap_seconds=round(audio.gap_seconds, 3),
        dropped_seconds=round(audio.dropped_seconds, 3),
        problem=audio.problem,
    )
