"""The order of the stages, and what happens when one track goes wrong.

Every track is decoded and searched for speech before any is transcribed, so the speech of
the whole meeting is known, on one clock, before the model sees any of it (deciding across
tracks whose voice a region is needs exactly that). A track that fails is recorded with its
reason and costs nothing else: the other tracks still make the transcript.
"""

import hashlib
import logging
import math
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from models import (
    ClockEstimate,
    DroppedSpeech,
    InputFile,
    LeakedSpan,
    Manifest,
    PcmAudio,
    Provenance,
    Segment,
    SpeechRegion,
    Track,
    TrackFailure,
    TrackTiming,
    Transcript,
    VoiceActivity,
    WriteError,
    describe_error,
    in_this_context,
)
from stages.attribute import AttributionOptions, TrackClock, attribute, estimate_clock
from stages.decode import DecodeError, check_file, decode, decoder_version
from stages.merge import MergeOptions, meeting_origin, merge, track_offsets
from stages.transcribe import (
    TracksFailed,
    TranscribeOptions,
    Transcriber,
    model_identity,
    usable_cores,
)
from stages.vad import VadOptions, speech_regions

from ._analysis import analyse_track, ready
from ._scratch import scratch_folder
from ._worker import (
    WorkerLink,
    guard_hint,
    interrupts_held,
    refuse_in_rerun_script,
    unrunnable_script,
)
from .checkpoint import Checkpoints, work_key

__all__ = [
    "MeetingRun",
    "NoUsableTrackError",
    "PipelineOptions",
    "RunStats",
    "run_meeting",
    "runtime_versions",
    "software_version",
    "transcribe_tracks",
]

log = logging.getLogger(f"trackscribe.{__name__}")

_T = TypeVar("_T")


class PipelineOptions(BaseModel):
    """Every setting of a run; those that can change a transcript go into its provenance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vad: VadOptions = Field(default_factory=VadOptions)
    attribution: AttributionOptions = Field(default_factory=AttributionOptions)
    transcribe: TranscribeOptions = Field(default_factory=TranscribeOptions)
    merge: MergeOptions = Field(default_factory=MergeOptions)

    def result_settings(self) -> dict[str, Any]:
        """The settings as JSON, without those that only spread the work over threads (they
        never change a transcript): what provenance records and results are keyed by."""
        return self.model_dump(
            mode="json", exclude={"transcribe": set(TranscribeOptions.RUNTIME_FIELDS)}
        )

    @model_validator(mode="after")
    def _regions_fit_windows(self) -> "PipelineOptions":
        if self.vad.max_region > self.transcribe.max_window:
            raise ValueError(
                f"vad.max_region ({self.vad.max_region} s) must not exceed "
                f"transcribe.max_window ({self.transcribe.max_window} s)"
            )
        return self


def keyed_settings(options: PipelineOptions) -> dict[str, Any]:
    """The settings results are keyed by: :meth:`PipelineOptions.result_settings` with the model
    as what it is (:func:`model_identity`, the SHA-256 of its files), not as it is named: the
    same model by another path (copied, installed again) gives the same results, and is not
    run again. The provenance keeps the name it was given."""
    settings = options.result_settings()
    settings["transcribe"]["model"] = model_identity(options.transcribe.model)
    return settings


class NoUsableTrackError(ValueError):
    """Not one track of the meeting could be used; the message lists each and why, and
    ``failures`` holds them (a caller tells by them whether a try again can help: see
    ``TrackFailure.fetch_again``)."""

    def __init__(self, message: str, failures: Sequence[TrackFailure] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


@dataclass
class _TrackWork:
    index: int
    file_key: str | None = None  # SHA-256 of the track's file, when it can be read
    audio: PcmAudio | None = None
    activity: VoiceActivity | None = None
    regions: list[SpeechRegion] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    failure: str | None = None


def runtime_versions() -> str:
    """trackscribe and the libraries whose versions can change a result (decoder, VAD, model
    runtime): what checkpoints are keyed by, so an upgrade redoes the work it may change."""
    names = ("av", "webrtcvad-wheels", "faster-whisper", "ctranslate2", "numpy")
    found = [decoder_version(), software_version()]
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} ?")
    return ", ".join(found)


def software_version() -> str:
    """trackscribe's version and a digest of its code: the version number alone does not
    change from one commit to the next, and a checkout or wheel of other code must neither
    take this one's checkpoints nor pass for it in a transcript's provenance."""
    try:
        number = version("trackscribe")
    except PackageNotFoundError:
        number = "(not installed)"
    return f"trackscribe {number} (code {_code_digest()})"


@cache
def _code_digest() -> str:
    """SHA-256 (first 12 hex digits) of every module of the three packages, by path."""
    digest = hashlib.sha256()
    for name in ("models", "stages", "pipeline"):
        root = Path(sys.modules[name].__path__[0])  # all three are imported by now
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class RunStats(BaseModel):
    """Where the time of one run went, for benchmarks. Seconds unless named otherwise.

    ``decode_s`` and ``vad_s`` add up the time spent on each track (they run in parallel, one
    track per worker process); ``analyse_s`` is the wall time of that phase.
    """

    model_load_s: float = 0.0
    workers_start_s: float = Field(
        0.0,
        description="starting the decode workers, beyond the model load they overlap with: "
        "the wait before decoding that the model load does not already account for",
    )
    decode_s: float = 0.0
    vad_s: float = 0.0
    analyse_s: float = 0.0
    attribute_s: float = 0.0
    transcribe_s: float = 0.0
    merge_s: float = 0.0
    meeting_s: float = Field(0.0, description="from the origin to the end of the last track")
    audio_s: float = Field(0.0, description="all decoded track audio together")
    speech_s: float = Field(0.0, description="audio that reached the model")

    @property
    def wall_s(self) -> float:
        """Everything but the model load (reported on its own)."""
        return (
            self.workers_start_s
            + self.analyse_s
            + self.attribute_s
            + self.transcribe_s
            + self.merge_s
        )


@dataclass
class MeetingRun:
    transcript: Transcript
    stats: RunStats


def transcribe_tracks(
    manifest: Manifest | Path | str,
    *,
    options: PipelineOptions | Mapping[str, Any] | None = None,
    progress: bool | None = None,
    workdir: Path | str | None = None,
) -> Transcript:
    """Transcribe a meeting's tracks into one speaker-attributed transcript.

    ``manifest`` is a :class:`Manifest` or the path of a ``manifest.json``; ``options`` a
    :class:`PipelineOptions` or a dict of the same shape. ``workdir`` is where
    decoded audio is kept while the meeting is processed (about 115 MB per hour of track;
    default: the system's temporary folder); it is removed afterwards. ``progress`` draws
    progress bars; by default (None) only where someone watches (see :func:`bars_wanted`).
    Tracks that cannot be used are listed in ``transcript.provenance.failures`` (see
    ``Transcript.partial``);
    a manifest that cannot be read raises :class:`models.ManifestError`, and a meeting none
    of whose tracks can be used raises :class:`NoUsableTrackError`.
    """
    refuse_in_rerun_script("transcribe_tracks")
    return run_meeting(manifest, options=options, progress=progress, workdir=workdir).transcript


def bars_wanted(progress: bool | None) -> bool:
    """Whether to draw progress bars: as asked, or when not asked (None), where someone
    watches: a terminal, or a Jupyter kernel (whose output is no terminal but shows bars).
    A script run unattended, its stderr in a log file, gets no redraws in its log.
    Anything else is refused: in a notebook, ``progress="no"`` would draw bars."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, not {progress!r}")
    if progress is not None:
        return progress
    try:
        terminal = sys.stderr is not None and sys.stderr.isatty()
    except ValueError:  # stderr closed
        terminal = False
    return terminal or "ipykernel" in sys.modules


def run_meeting(
    manifest: Manifest | Path | str,
    *,
    options: PipelineOptions | Mapping[str, Any] | None = None,
    progress: bool | None = None,
    workdir: Path | str | None = None,
    workers: int | None = None,
    decode_apart: bool = False,
    transcriber: Transcriber | None = None,
    checkpoints: Checkpoints | None = None,
) -> MeetingRun:
    """:func:`transcribe_tracks`, also telling where the time went.

    ``workers`` processes decode and search tracks for speech in parallel (default: one per
    CPU core, at most one per track, and one at least even on one core, so that a file that
    kills its decoder costs its track, not this process; 1: all in this process, for a caller
    that is itself a process apart). With ``decode_apart``, each
    track is decoded in a process of its own, one after another instead: slower, but a file
    that kills its decoder then costs only its own track even in a meeting of one track, or
    in a process that must not die (a batch worker with other work). ``transcriber`` is a model
    already loaded with ``options.transcribe`` (a batch worker keeps one for many meetings).
    With ``checkpoints``, each track's decoded audio, voice activity and segments are kept
    as they are finished and taken from there when their inputs and settings are unchanged.
    """
    refuse_in_rerun_script("run_meeting")  # public too, and what the others call
    if not isinstance(manifest, Manifest | Path | str):
        raise TypeError(
            f"manifest must be a Manifest, or the path of a manifest.json or of its folder, "
            f"not {type(manifest).__name__}"
        )
    if isinstance(manifest, Manifest):
        manifest.check()  # a caller's object, perhaps changed in place since it was made
    else:
        manifest = Manifest.load(manifest)
    options = PipelineOptions.model_validate(options or {})  # a dict, as in a notebook
    if transcriber is not None:
        _check_loaded_as(transcriber, options.transcribe)
    progress = bars_wanted(progress)
    stats = RunStats()
    unplaced = manifest.unplaced_tracks()
    work = [_TrackWork(index=i, failure=unplaced.get(i)) for i in range(len(manifest.tracks))]
    for reason in unplaced.values():
        log.error("%s", reason)
    placed = [item for item in work if item.failure is None]

    with scratch_folder(parent=workdir) as scratch:
        store = _Store(checkpoints, scratch, options)
        # The model loads while the decode workers start; decoding waits for both, so that
        # it has the cores to itself (and a model that cannot load stops everything).
        started = time.perf_counter()
        loading = _model_loading(options.transcribe) if transcriber is None else None
        with _analysis_pool(len(placed), workers, apart=decode_apart) as decoders:
            pool_s = time.perf_counter() - started
            if loading is not None:
                transcriber = loading.result()
                stats.model_load_s = loading.seconds
            stats.workers_start_s = max(0.0, pool_s - stats.model_load_s)
            with _timer(stats, "analyse_s"):
                _analyse(decoders, manifest, placed, store, options.vad, stats, progress)
        assert transcriber is not None  # given, or loaded above
        _refuse_copies(manifest, work)
        with _timer(stats, "attribute_s"):
            timings, echoes, clock, origin = _clock(manifest, work, options, unplaced.keys())
            dropped = _attribute(manifest, work, options, timings, echoes)

        todo = [w for w in work if w.audio is not None and w.regions]
        stats.speech_s = sum(r.duration for w in todo for r in w.regions)
        with _timer(stats, "transcribe_s"):
            _transcribe(manifest, todo, transcriber, store, progress)

    failures = [
        TrackFailure(
            path=manifest.tracks[w.index].path,
            user_id=manifest.tracks[w.index].user_id,
            reason=w.failure,
            fetch_again=False,  # on disk, fetched: no fetch again changes it
        )
        for w in work
        if w.failure is not None
    ]
    if len(failures) == len(work):
        lines = "\n".join(f"  {failure.describe()}" for failure in failures)
        raise NoUsableTrackError(
            f"no track of meeting {manifest.meeting_id} could be used:\n{lines}", failures
        )
    decoded = [w for w in work if w.audio is not None]
    stats.audio_s = sum(_audio(w).duration for w in decoded)
    stats.meeting_s = max(timings[w.index].meeting_time(_audio(w).duration) for w in decoded)
    provenance = Provenance(
        software=software_version(),
        model=options.transcribe.model,
        recording_id=manifest.recording_id,
        model_files=transcriber.model_files,
        runtime=runtime_versions(),
        parameters=options.result_settings(),
        inputs=[_input_file(manifest, w) for w in decoded],
        dropped=sorted(
            dropped + _dropped_text(manifest, work, timings), key=lambda d: (d.start, d.path)
        ),
        clock=clock,
        failures=failures,
    )
    segments = {w.index: w.segments for w in work if w.failure is None}
    with _timer(stats, "merge_s"):
        transcript = merge(manifest, segments, provenance, options.merge, timings, origin)
    return MeetingRun(transcript=transcript, stats=stats)


def _check_loaded_as(transcriber: Transcriber, wanted: TranscribeOptions) -> None:
    """A model loaded elsewhere must be the one the options name: provenance and checkpoints
    are written from the options, and must say what really made the words."""
    runtime = set(TranscribeOptions.RUNTIME_FIELDS)
    loaded = transcriber.options.model_dump(exclude=runtime)
    asked = wanted.model_dump(exclude=runtime)
    if loaded != asked:
        differing = ", ".join(
            f"{key} {loaded[key]!r} (asked: {asked[key]!r})"
            for key in loaded
            if loaded[key] != asked[key]
        )
        raise ValueError(f"the transcriber given was loaded with other settings: {differing}")


class _ModelLoading:
    """The model loading on a thread of its own, while this one starts the decode workers
    (which takes the fork server's imports, about as long as the load itself).

    A run stopped meanwhile (Ctrl-C) does not wait for a load nobody wants: it cleans up and
    raises at once. The process, though, waits for the load before it exits (the thread is not
    a daemon): CTranslate2's loading code cannot be cut off by the interpreter's end, which
    aborted the process (SIGABRT, exit 134 instead of 130). A load that fails is raised in
    the caller, by :meth:`result`, as if it had loaded there.
    """

    def __init__(self, load: Callable[[], Transcriber]) -> None:
        self.seconds = 0.0
        """How long the load took, once :meth:`result` has returned."""
        self._load = load
        self._done = threading.Event()
        self._loaded: Transcriber | None = None
        self._error: BaseException | None = None
        threading.Thread(target=in_this_context(self._run), name="trackscribe-model-load").start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self._loaded = self._load()
        except BaseException as exc:  # handed to the caller, which decides
            self._error = exc
        finally:
            self.seconds = time.perf_counter() - started
            self._done.set()

    def result(self) -> Transcriber:
        """The loaded model, once loaded; what stopped the load, raised here."""
        self._done.wait()  # Ctrl-C interrupts the wait, not the load
        if self._error is not None:
            raise self._error
        assert self._loaded is not None  # set when no error was
        return self._loaded


def _model_loading(options: TranscribeOptions) -> _ModelLoading:
    """Start loading the model ``options`` name (see :class:`_ModelLoading`)."""
    return _ModelLoading(lambda: Transcriber(options))


@contextmanager
def _timer(stats: RunStats, field_name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        setattr(stats, field_name, getattr(stats, field_name) + time.perf_counter() - start)


def _clock(
    manifest: Manifest,
    work: list[_TrackWork],
    options: PipelineOptions,
    unplaced: Collection[int],
) -> tuple[list[TrackTiming], list[float], list[ClockEstimate], datetime]:
    """Each track's place and rate on the meeting clock: its start time and its clock's
    drift, each corrected where the leakage between tracks shows it clearly; how late the
    others' voices come back into it through its speakers, where that is clear; and the clock's
    origin, the earliest start of the tracks placed on it (not ``unplaced``). A start
    measured before the stated earliest one moves the origin back with it, so that no time
    is negative; everything after this (leakage records, the transcript, its length) counts
    from that origin."""
    offsets = track_offsets(manifest)
    estimates = estimate_clock(
        [w.activity for w in work],
        offsets,
        [t.user_id for t in manifest.tracks],
        options.attribution,
    )
    timings = [TrackTiming(offset) for offset in offsets]
    echoes = [0.0] * len(offsets)
    records = []
    for item, estimate in zip(work, estimates, strict=True):
        if estimate is None:
            continue
        offset, drift_ppm = timings[item.index]
        if estimate.start_clear:
            offset += estimate.correction_s
        if estimate.drift_clear and estimate.drift_ppm is not None:
            drift_ppm = estimate.drift_ppm
        timings[item.index] = TrackTiming(offset, drift_ppm)
        if estimate.echo_clear:
            echoes[item.index] = estimate.echo_s
        track = manifest.tracks[item.index]
        log.debug(
            "%s: start %+.3f s (%s), drift %s ppm (%s), echo %.3f s (%s), from %d pair(s), "
            "correlation %.2f",
            track.path,
            estimate.correction_s,
            "applied" if estimate.start_clear else "not applied",
            "?" if estimate.drift_ppm is None else f"{estimate.drift_ppm:+.0f}",
            "applied" if estimate.drift_clear else "not applied",
            estimate.echo_s,
            "applied" if estimate.echo_clear else "not applied",
            estimate.pairs,
            estimate.correlation,
        )
        records.append(
            ClockEstimate(
                path=track.path,
                user_id=track.user_id,
                correction_s=estimate.correction_s,
                pairs=estimate.pairs,
                correlation=estimate.correlation,
                applied=estimate.start_clear,
                drift_ppm=estimate.drift_ppm,
                drift_applied=estimate.drift_clear,
                echo_s=estimate.echo_s,
                echo_applied=estimate.echo_clear,
            )
        )
    if records:  # the leakage measured the others' clocks: one it did not is told of
        records += _unmeasured(manifest, work, estimates, options.attribution.max_clock_error)
    earliest = min(0.0, *(timing.offset for i, timing in enumerate(timings) if i not in unplaced))
    timings = [timing._replace(offset=timing.offset - earliest) for timing in timings]
    origin = meeting_origin(manifest) + timedelta(seconds=earliest)
    return timings, echoes, records, origin


_CLOCK_SPEECH_S = 5.0
"""Seconds of voice a track holds for its clock to be expected measured where the others'
are: a rejoin's short reply may not be."""


def _unmeasured(
    manifest: Manifest,
    work: Sequence[_TrackWork],
    estimates: Sequence[TrackClock | None],
    search_s: float,
) -> list[ClockEstimate]:
    """Records of the tracks with a voice of their own whose clock was not measured, in a
    meeting whose leakage measured the others': the sign of a start off by more than the
    search (a device clock gone wrong, a container's first timestamp far from zero) or of
    timing that jumps inside the file. Their words may then be placed off, or taken for
    leakage or leakage for theirs: a reviewer must be told, not left with no record."""
    records = []
    for item, estimate in zip(work, estimates, strict=True):
        activity = item.activity
        if estimate is not None or activity is None:
            continue
        if activity.voiced_s < _CLOCK_SPEECH_S:
            continue
        track = manifest.tracks[item.index]
        why = (
            f"its voice, on the others' microphones, matched theirs at no lag within "
            f"±{search_s:g} s: its start may be off by more, or its timing jump inside the file"
        )
        log.warning("%s: clock not measured, though the other tracks' were: %s", track.path, why)
        records.append(
            ClockEstimate(
                path=track.path,
                user_id=track.user_id,
                correction_s=0.0,
                pairs=0,
                correlation=0.0,
                applied=False,
                unmeasured=why,
            )
        )
    return records


def _attribute(
    manifest: Manifest,
    work: list[_TrackWork],
    options: PipelineOptions,
    timings: list[TrackTiming],
    echoes: list[float],
) -> list[DroppedSpeech]:
    """Take leaked speech out of every track, then cut what is left into regions."""
    owned, leaks = attribute(
        [w.activity for w in work],
        timings,
        [t.user_id for t in manifest.tracks],
        options.attribution,
        echoes,
    )
    dropped = []
    for item, activity, spans in zip(work, owned, leaks, strict=True):
        if activity is None:
            continue
        item.regions = speech_regions(activity, options.vad)
        track = manifest.tracks[item.index]
        log.debug(
            "%s: %d region(s), %.1f s of its own speech; %d leaked span(s), %.1f s, held back",
            track.path,
            len(item.regions),
            sum(r.duration for r in item.regions),
            len(spans),
            sum(span.end - span.start for span in spans),
        )
        sent = [(r.start, r.end) for r in item.regions]
        timing = timings[item.index]
        # Recorded is what the model was spared: leaked speech outside every region sent.
        dropped += [
            DroppedSpeech(
                path=track.path,
                user_id=track.user_id,
                start=round(timing.meeting_time(start), 3),
                end=round(timing.meeting_time(end), 3),
                reason=_dropped_because(manifest, span),
                attributed_to=None if span.owner is None else manifest.tracks[span.owner].user_id,
            )
            for span in spans
            for start, end in _outside(span.start, span.end, sent)
        ]
    return dropped


def _dropped_text(
    manifest: Manifest, work: list[_TrackWork], timings: list[TrackTiming]
) -> list[DroppedSpeech]:
    """What the model said over audio too quiet to hold it, left out of the transcript: most
    likely its own invention, but it may be real speech that quiet, which a reviewer must be
    able to find."""
    return [
        DroppedSpeech(
            path=manifest.tracks[item.index].path,
            user_id=manifest.tracks[item.index].user_id,
            start=round(timings[item.index].meeting_time(segment.start), 3),
            end=round(timings[item.index].meeting_time(segment.end), 3),
            reason=f"near-silence ({segment.dropped}): the model heard {_quoted(segment.text)}",
        )
        for item in work
        if item.failure is None
        for segment in item.segments
        if segment.dropped is not None
    ]


def _quoted(text: str, most: int = 80) -> str:
    """``text`` quoted for a reason, cut to ``most`` characters: a reason is one line."""
    return repr(text if len(text) <= most else text[: most - 1] + "…")


def _dropped_because(manifest: Manifest, span: LeakedSpan) -> str:
    if span.noise:
        return f"noise: near the track's noise floor, {-span.margin_db:.1f} dB short of own speech"
    if span.owner is None:
        below = "" if math.isnan(span.margin_db) else f", {-span.margin_db:.1f} dB below its own"
        return f"leakage: a voice heard on other tracks too, and no track's own{below}"
    if span.duplicate:
        return f"duplicate: the same voice is kept on {manifest.tracks[span.owner].path}"
    if math.isnan(span.margin_db):  # a track whose owner never talks alone: no own level
        return "leakage: it follows the voice's copy on another track, and is not clearly louder"
    return f"leakage: {-span.margin_db:.1f} dB short of own speech"


def _outside(
    start: float, end: float, covered: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The parts of [start, end) that no interval of ``covered`` (sorted) overlaps."""
    parts, cursor = [], start
    for a, b in covered:
        if b <= cursor or a >= end:
            continue
        if a > cursor:
            parts.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < end:
        parts.append((cursor, end))
    return [(a, b) for a, b in parts if b - a > 1e-3]


@dataclass
class _Workers:
    """The decode workers, and how to start one more for a job of its own."""

    pool: ProcessPoolExecutor | None  # None: every job is started alone
    link: WorkerLink

    def alone(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in a process of its own: if something in it kills the process (a
        decoder that crashes on a damaged file, the kernel's out-of-memory killer), only this
        call fails, with :class:`BrokenProcessPool`. Where no process can be started, here."""
        with self.link.pool(1) as one:
            try:
                with interrupts_held():  # the process starts here
                    future = one.submit(fn, *args)
            except (RuntimeError, OSError):
                return fn(*args)
            return future.result()


@cache
def _decoding_here(reason: str) -> None:
    """Said once, not for every meeting of a batch."""
    log.warning("decoding here, not in worker processes: %s", reason)


@contextmanager
def _analysis_pool(
    tracks: int, workers: int | None, *, apart: bool = False
) -> Iterator[_Workers | None]:
    """Worker processes for decoding, or None when asked to decode here (``workers`` 1) or
    none can be had; with ``apart``, no shared pool, but what starts a process for each job.

    Processes, because PyAV holds the GIL while it decodes. They come from a fork server that
    has imported only what they run (forking this process could copy the model's threads'
    locks into a child). Like all of multiprocessing, this needs a script that calls
    trackscribe to guard its top level with ``if __name__ == "__main__":``.
    """
    if workers == 1 and not apart:  # asked for: the caller is a process that may die
        yield None
        return
    if reason := unrunnable_script():
        _decoding_here(reason)
        yield None
        return
    count = max(1, min(tracks, workers or usable_cores()))
    try:
        context = multiprocessing.get_context("forkserver")
    except ValueError:  # a platform without a fork server: decode here instead
        yield None
        return
    context.set_forkserver_preload(["pipeline._analysis", "pipeline._worker"])
    with WorkerLink(context) as link:
        pool = None if apart else link.pool(count)
        try:
            if pool is not None:
                with interrupts_held():
                    for _ in range(count):
                        pool.submit(ready)  # start the workers now, while the caller does more
            yield _Workers(pool, link)
        except BaseException:  # Ctrl-C, say: tracks still being decoded are not waited for
            if pool is not None:
                link.stop(pool)
            else:
                link.cut()
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def _analyse(
    workers: _Workers | None,
    manifest: Manifest,
    work: list[_TrackWork],
    store: "_Store",
    vad: VadOptions,
    stats: RunStats,
    progress: bool,
) -> None:
    """Decode every track and find its voice activity, in the workers when there are any.

    A track the workers could not finish because the pool broke is done again in a process
    of its own, so that a file that kills its decoder (a crash, the out-of-memory killer)
    fails alone, naming itself, and the tracks that were decoded beside it do not; where
    workers cannot start at all (a script without a main guard), it is done here. One that
    fails on its own merits fails. Tracks already analysed with these settings (checkpoints)
    are taken as they are.
    """

    given: dict[int, Path] = {}  # where each track's decoded audio was to go

    def job(item: _TrackWork) -> tuple:
        track = manifest.tracks[item.index]
        given[item.index] = store.pcm_path(item)
        return (
            manifest.track_path(track),
            given[item.index],
            track.sha256,
            track.size,
            item.file_key,  # what the work is kept under: the file must still have it
            vad,
        )

    def record(item: _TrackWork, outcome: tuple) -> None:
        audio, activity, decode_s, vad_s = outcome
        item.audio, item.activity = store.analysed(item, audio, activity)
        log.debug(
            "%s: %.1f s decoded in %.2f s, %.1f s voiced",
            manifest.tracks[item.index].path,
            audio.duration,
            decode_s,
            activity.voiced_s,
        )
        stats.decode_s += decode_s
        stats.vad_s += vad_s

    def fail(item: _TrackWork, exc: Exception) -> None:
        _fail(manifest, item, exc)
        if (path := given.get(item.index)) is not None:
            path.unlink(missing_ok=True)  # a refused file leaves it there, as it was made

    for item in work:
        track = manifest.tracks[item.index]
        store.identify(item, track, manifest.track_path(track))
    work = [item for item in work if not store.restore_analysis(item)]
    leftover = list(work)
    with tqdm(total=len(work), desc="decode + VAD", unit="track", disable=not progress) as bar:
        if workers is not None and workers.pool is not None:
            # Largest files first, so that the workers finish at about the same time.
            ordered = sorted(
                work, key=lambda w: -_size(manifest.track_path(manifest.tracks[w.index]))
            )
            futures: dict[Future, _TrackWork] = {}
            try:
                for item in ordered:
                    futures[workers.pool.submit(analyse_track, *job(item))] = item
            except (BrokenProcessPool, RuntimeError, OSError):
                # None sent: the workers could not start. Some sent: one of them already broke
                # the pool (a file that crashed its decoder at once); the rest are left over.
                pass
            leftover = ordered[len(futures) :]  # sent in this order, each that was sent
            for future in as_completed(futures):
                item = futures[future]
                try:
                    record(item, future.result())
                except BrokenProcessPool:
                    leftover.append(item)
                    continue
                except Exception as exc:  # one bad track must not cost the others
                    fail(item, exc)
                bar.update()
            if leftover and (not futures or guard_hint()):  # none started, or none ever will
                log.warning(
                    "decode workers unavailable; decoding %d track(s) here%s",
                    len(leftover),
                    guard_hint(),
                )
                workers = None
            elif leftover:
                log.warning(
                    "a decode worker died; decoding the %d track(s) it left, each in a "
                    "process of its own",
                    len(leftover),
                )
        for item in leftover:
            try:
                args = job(item)
                record(
                    item, workers.alone(analyse_track, *args) if workers else analyse_track(*args)
                )
            except BrokenProcessPool:
                path = manifest.track_path(manifest.tracks[item.index])
                fail(
                    item,
                    DecodeError(
                        f"{path}: the process decoding it died (the decoder "
                        "crashed on it, or it ran out of memory)"
                    ),
                )
            except Exception as exc:  # one bad track must not cost the others
                fail(item, exc)
            bar.update()


def _refuse_copies(manifest: Manifest, work: list[_TrackWork]) -> None:
    """Fail a track whose file holds the same bytes as an earlier one of another user: one
    recording listed for two people would give every word in it to both, and which of them
    spoke cannot be told. (The manifest refuses one path listed twice; this is a copy.)"""
    first: dict[str, _TrackWork] = {}
    for item in work:
        if item.audio is None:
            continue
        earlier = first.setdefault(item.audio.source_sha256, item)
        mine, theirs = manifest.tracks[item.index], manifest.tracks[earlier.index]
        if earlier is item or mine.user_id == theirs.user_id:
            continue  # one user's copies are one voice, which attribution takes once
        _fail(
            manifest,
            item,
            DecodeError(
                f"{manifest.track_path(mine)}: the same bytes as {theirs.path} "
                f"({theirs.user_id}): one recording listed for two people; left out, so "
                "that its words are not given to both"
            ),
        )
        item.audio = item.activity = None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except (OSError, ValueError):  # the track's own decoding says what is wrong with it
        return 0


def _transcribe(
    manifest: Manifest,
    todo: list[_TrackWork],
    transcriber: Transcriber,
    store: "_Store",
    progress: bool,
) -> None:
    todo = [item for item in todo if not store.restore_segments(item)]
    for item in todo:  # decoded audio dropped after an earlier run: decode again
        try:
            store.ensure_pcm(item, manifest.track_path(manifest.tracks[item.index]))
        except Exception as exc:
            _fail(manifest, item, exc)
    todo = [item for item in todo if item.failure is None]

    finished: set[int] = set()

    def done(position: int, segments: list[Segment]) -> None:
        todo[position].segments = segments
        store.transcribed(todo[position])
        log.debug(
            "%s: %d segment(s), %d word(s)",
            manifest.tracks[todo[position].index].path,
            len(segments),
            sum(len(s.text.split()) for s in segments),
        )
        finished.add(position)

    with tqdm(
        total=round(sum(r.duration for w in todo for r in w.regions), 1),
        desc="transcribe",
        unit="s",
        disable=not progress or not todo,
    ) as bar:
        spoken = 0.0

        def advance(seconds: float) -> None:
            # Shown to a tenth of a second, counted exactly: rounding each step would drift.
            nonlocal spoken
            spoken += seconds
            bar.update(round(spoken, 1) - bar.n)

        try:
            transcriber.transcribe_tracks(
                [(_audio(w), w.regions) for w in todo],
                on_progress=advance,
                on_track_done=done,
                with_dropped=True,
            )
        except TracksFailed as stopped:  # the others are done and kept
            for position, error in stopped.failures.items():
                _fail(manifest, todo[position], error)
        except WriteError:
            raise
        except Exception:
            # Find the track that fails, alone; the others' results are the same either way.
            log.warning("transcribing the tracks together failed; retrying one by one")
            for position, item in enumerate(todo):
                if position in finished:
                    continue
                try:
                    item.segments = transcriber.transcribe(
                        _audio(item), item.regions, with_dropped=True
                    )
                    store.transcribed(item)
                except Exception as exc:  # one bad track must not cost the others
                    _fail(manifest, item, exc)
        failed = sum(item.failure is not None for item in todo)
        if failed:  # what a failed track had left was not transcribed, but the work is over
            bar.total = bar.n
            bar.set_postfix_str(f"{failed} track{'s' * (failed > 1)} failed")


def _audio(item: _TrackWork) -> PcmAudio:
    """The audio of a track that has some: only those are transcribed."""
    assert item.audio is not None
    return item.audio


def _fail(manifest: Manifest, item: _TrackWork, exc: Exception) -> None:
    if isinstance(exc, WriteError):
        raise exc  # a full disk is not the track's fault: the meeting stops, to be run again
    # Our own errors already say what and where; anything else is named by its type, and its
    # traceback is kept for -vv.
    track = manifest.tracks[item.index]
    named = isinstance(exc, DecodeError)
    reason = str(exc) if named else describe_error(exc)
    log.error("%s", reason if named else f"{track.path}: {reason}")
    log.debug("%s failed", track.path, exc_info=exc)
    # Named as the manifest names it, not by the path it was opened by (relative to where
    # the run was started): the same inputs give the same transcript from anywhere.
    item.failure = reason.replace(str(manifest.track_path(track)), track.path)


def _input_file(manifest: Manifest, item: _TrackWork) -> InputFile:
    track, audio = manifest.tracks[item.index], _audio(item)
    return InputFile(
        path=track.path,
        user_id=track.user_id,
        sha256=audio.source_sha256,
        size=audio.source_size,
        started_time=track.started_time,
        decoded_seconds=round(audio.duration, 3),
        first_packet_time=round(audio.first_packet_time, 3),
        gap_seconds=round(audio.gap_seconds, 3),
        gaps=audio.gaps,
        dropped_seconds=round(audio.dropped_seconds, 3),
        channels_opposite=audio.channels_opposite,
        problem=audio.problem,
    )


class _Store:
    """Where a run keeps each track's work: checkpoints when it has them, else scratch space.

    Keys: decoding depends on the file's bytes only; voice activity also on the VAD settings;
    segments on the file, the regions sent and the settings that change the model's output
    (not how many threads or batches run at once: a track's result does not depend on them).
    """

    def __init__(
        self, checkpoints: Checkpoints | None, scratch: Path, options: PipelineOptions
    ) -> None:
        self._checkpoints = checkpoints
        self._scratch = scratch
        self._software = runtime_versions() if checkpoints is not None else ""
        self._vad = options.vad
        keyed = checkpoints is not None  # the model's files are hashed only for keys
        self._transcribe = keyed_settings(options)["transcribe"] if keyed else None

    def identify(self, item: _TrackWork, track: Track, source: Path) -> None:
        """Hash the file; a file that is not what the manifest says gets no key, so nothing
        is taken from checkpoints and decoding reports the mismatch."""
        if self._checkpoints is None:
            return
        try:
            _, item.file_key = check_file(source, track.sha256, track.size)
        except (DecodeError, OSError):
            item.file_key = None  # decoding will say what is wrong with it

    def _kept(self, item: _TrackWork) -> Checkpoints | None:
        """The checkpoints, if this track's work may be kept there (its file is known)."""
        return None if item.file_key is None else self._checkpoints

    def pcm_path(self, item: _TrackWork) -> Path:
        if (kept := self._kept(item)) is None:
            return self._scratch / f"{item.index}.pcm"
        return kept.pcm_path(self._decode_key(item))

    def _decode_key(self, item: _TrackWork) -> str:
        return work_key("decode", item.file_key, self._software)

    def _vad_key(self, item: _TrackWork) -> str:
        return work_key("vad", item.file_key, self._software, self._vad)

    def restore_analysis(self, item: _TrackWork) -> bool:
        if (kept := self._kept(item)) is None:
            return False
        audio = kept.decoded(self._decode_key(item))
        activity = kept.activity(self._vad_key(item))
        if audio is None or activity is None:
            return False
        item.audio, item.activity = audio, activity
        return True

    def analysed(
        self, item: _TrackWork, audio: PcmAudio, activity: VoiceActivity
    ) -> tuple[PcmAudio, VoiceActivity]:
        if (kept := self._kept(item)) is None:
            return audio, activity
        audio = kept.save_decoded(self._decode_key(item), audio)
        kept.save_activity(self._vad_key(item), activity)
        kept.journal("analysed", path=str(audio.source), key=item.file_key)
        return audio, activity

    def ensure_pcm(self, item: _TrackWork, source: Path) -> None:
        """Decode again a track whose decoded audio an earlier run already removed."""
        if _audio(item).pcm_path.exists():
            return
        audio = decode(source, self.pcm_path(item), expected_sha256=_audio(item).source_sha256)
        if (kept := self._kept(item)) is not None:
            audio = kept.save_decoded(self._decode_key(item), audio)
            kept.journal("decoded again", path=str(source), key=item.file_key)
        item.audio = audio

    def _segments_key(self, item: _TrackWork) -> str:
        return work_key("transcribe", item.file_key, self._software, item.regions, self._transcribe)

    def restore_segments(self, item: _TrackWork) -> bool:
        if (kept := self._kept(item)) is None:
            return False
        segments = kept.segments(self._segments_key(item))
        if segments is None:
            return False
        item.segments = segments
        return True

    def transcribed(self, item: _TrackWork) -> None:
        if (kept := self._kept(item)) is None:
            return
        key = self._segments_key(item)
        kept.save_segments(key, item.segments)
        kept.journal("transcribed", path=str(_audio(item).source), key=key)
