"""``trackscribe bench``: the pipeline against the alternatives a user has, in one run.

Every approach runs in a fresh process of its own, one after another, with the same model and
settings, so wall time and peak memory are its own and the machine's load is shared alike. The
model load is timed apart and left out of the real-time factor (meeting seconds per wall
second).

- ``pipeline``: trackscribe.
- ``full``: faster-whisper on every full track, each placed at its start time.
- ``silero``: the same with faster-whisper's own Silero VAD (``vad_filter=True``).
- ``batched``: faster-whisper's own batched path (``BatchedInferencePipeline``: its Silero
  VAD cuts each full track into speech of up to 30 s, decoded several at once).
- ``mix``: all tracks mixed on their start times into one signal, ``vad_filter=True``; it has
  no speakers, so it is scored with ORC WER.
- ``oracle`` (needs the truth): each true utterance cut from its speaker's own files and
  transcribed alone: the practical limit of the model.

The alternatives load the model as one worker with all the threads the pipeline's workers
have together (:func:`model_threads` times ``parallel``): the same cores, used as a user of
faster-whisper alone would use them. They share the pipeline's model, compute type, beam size
and language, and take faster-whisper's defaults for the rest (its temperature fallback,
conditioning on the previous text); each reads one track at a time, as such a user would.

Lost input is never hidden behind a figure: each approach's lost tracks (and the oracle's
true turns no file holds) are carried into its result (``lost``), and an approach that cannot
run on the input at all is recorded as ``failed`` with the reason, so the other approaches'
figures are kept.
"""

import logging
import multiprocessing
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from models import SAMPLE_RATE, Manifest, Track
from stages.export import export
from stages.merge import track_offsets
from stages.transcribe import check_model, load_model, model_threads

from ._worker import WorkerLink, interruptible, interrupts_held, unrunnable_script
from .core import NoUsableTrackError, PipelineOptions, run_meeting
from .evaluate import (
    Evaluation,
    Turn,
    TurnFile,
    check_truth,
    evaluate,
    normalised_seglst,
    paired_by_name,
    quiet_meeteval,
    read_turns,
    without_spans,
)

__all__ = ["APPROACHES", "Approach", "ApproachFailed", "available_approaches", "bench"]

log = logging.getLogger(f"trackscribe.{__name__}")

APPROACHES = ("pipeline", "full", "silero", "batched", "mix", "oracle")


def available_approaches(with_truth: bool) -> tuple[str, ...]:
    """Every approach the inputs allow: ``oracle`` cuts the true utterances, so it needs a
    truth."""
    return tuple(a for a in APPROACHES if a != "oracle" or with_truth)


class ApproachFailed(Exception):
    """An approach could not run on this input (no track it can read, a truth whose speakers
    have no track); the message says why."""


class Approach(BaseModel):
    """The figures of one approach. Ratios are this approach's figure over the pipeline's.

    A failed approach has no figures (None), only ``failed``: a zero would read as a result.
    """

    wall_s: float | None = Field(None, description="wall time without the model load")
    model_load_s: float | None = None
    realtime_factor: float | None = Field(None, description="meeting seconds per wall second")
    peak_rss_mb: float | None = None
    failed: str | None = Field(None, description="why the approach gave no result")
    lost: list[str] = Field(
        default_factory=list, description="inputs lost in whole or in part, one line each"
    )
    cpwer: float | None = Field(None, description="percent; None for mix")
    orcwer: float | None = Field(None, description="percent; for mix")
    unscored: str | None = Field(None, description="why it ran but could not be scored")
    evaluation: Evaluation | None = None
    ratios: dict[str, float | None] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    turns: list[Turn] = Field(default_factory=list, exclude=True)


def bench(
    manifest_path: Path,
    *,
    truth: Path | TurnFile | None = None,
    options: PipelineOptions | None = None,
    approaches: tuple[str, ...] | None = None,
    on_start: Any = None,
) -> dict[str, Approach]:
    """Run each approach and score it against the truth (``oracle`` needs one).

    ``approaches`` defaults to every one the inputs allow (``oracle`` only with a truth).
    An approach that cannot run on the input is recorded as failed; the others still run.
    What can be known before any run is decided first: an oracle whose true speakers have no
    track fails without being run, and a truth of another meeting is warned of.
    ``truth`` is a file of turns, or what :func:`read_turns` made of one (and the caller
    checked with :func:`check_truth`). An approach whose result cannot be scored (words put
    on more speakers than cpWER takes) keeps its other figures, with ``unscored`` saying why.
    """
    if approaches is None:
        approaches = available_approaches(truth is not None)
    if "oracle" in approaches and truth is None:
        raise ValueError("the oracle approach needs the truth")
    if reason := unrunnable_script():  # every approach would fail, each with a traceback
        raise RuntimeError(f"bench runs each approach in a process of its own, but {reason}")
    options = options or PipelineOptions()
    check_model(options.transcribe.model)  # one clear error now, not one per approach
    manifest = Manifest.load(manifest_path)
    if isinstance(truth, Path):
        truth = read_turns(truth)
        check_truth(truth.turns)  # now, not after the runs
    turns = truth.turns if truth else []
    decided = _decided_before(manifest, truth, approaches)
    meeting = TurnFile(
        [],
        [t.user_id for t in manifest.tracks],
        [],
        names=_names(manifest),
        meeting=manifest.meeting_id,
    )
    context = multiprocessing.get_context("spawn")
    results: dict[str, Approach] = {}
    meeting_s = None
    for name in approaches:
        if name in decided:
            results[name] = decided[name]
            continue
        if on_start is not None:
            on_start(name)
        # A fresh process per approach (not a daemon: the pipeline starts workers of its own),
        # logging here and stopping with this one; Ctrl-C stops it too.
        try:
            with WorkerLink(context, ignore_interrupt=False) as link, link.pool(1) as pool:
                try:
                    with interrupts_held():
                        running = pool.submit(_run, name, str(manifest_path), turns, options)
                    raw = running.result()
                except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM: the approach
                    # stops. An approach's own failure is only its result: its process is
                    # idle again, and the pool is shut down as usual.
                    link.stop(pool)
                    raise
        except (ApproachFailed, NoUsableTrackError) as exc:
            results[name] = Approach(failed=str(exc))
            continue
        except BrokenProcessPool:
            results[name] = Approach(failed="its process died (out of memory?)")
            continue
        hyp = [Turn(**t) for t in raw.pop("turns")]
        meeting_s = meeting_s or raw["details"].get("meeting_s")
        result = Approach(**raw, realtime_factor=0.0, turns=hyp)
        if truth is not None:
            _score(result, truth, meeting._replace(turns=hyp), by_orcwer=name == "mix")
        results[name] = result
    meeting_s = meeting_s or 0.0
    for result in results.values():
        if result.failed is None:
            result.realtime_factor = round(meeting_s / result.wall_s, 2) if result.wall_s else 0.0
    _add_ratios(results)
    return results


def _decided_before(
    manifest: Manifest, truth: TurnFile | None, approaches: tuple[str, ...]
) -> dict[str, Approach]:
    """What the inputs decide before any approach runs, not minutes later: an oracle whose
    true speakers have no track (its result, failed); a truth of another meeting, warned of
    (every approach would be scored against words never said in this one)."""
    if truth is not None and truth.meeting and str(truth.meeting) != manifest.meeting_id:
        log.warning(
            "the truth is of meeting %s and the manifest of %s: every approach is scored "
            "against another meeting's words",
            truth.meeting,
            manifest.meeting_id,
        )
    decided = {}
    if "oracle" in approaches and truth is not None:
        try:
            _owners(manifest, truth.turns)
        except ApproachFailed as exc:
            decided["oracle"] = Approach(failed=str(exc))
    return decided


def _add_ratios(results: dict[str, Approach]) -> None:
    base = results.get("pipeline")
    if base is None:
        return
    for result in results.values():
        for key in ("wall_s", "realtime_factor", "peak_rss_mb", "cpwer"):
            mine, theirs = getattr(result, key), getattr(base, key)
            result.ratios[key] = round(mine / theirs, 2) if mine is not None and theirs else None


def _score(result: Approach, truth: TurnFile, made: TurnFile, *, by_orcwer: bool) -> None:
    """``result``'s accuracy, what it ``made`` against the truth; ORC WER for an approach
    without speakers. What cannot be scored (words put on more speakers than cpWER takes)
    is said in ``unscored``: its speed still counts."""
    try:
        if by_orcwer:
            result.orcwer = _orcwer(without_spans(made.turns, truth.excluded), truth.turns)
        else:
            result.evaluation = evaluate(made, truth)
            result.cpwer = result.evaluation.cpwer
    except ValueError as exc:
        result.unscored = str(exc)


def _names(manifest: Manifest) -> dict[str, str]:
    """User id -> display name, for a truth labelled by names: those two people share are
    left out (their words could not be told apart by the name)."""
    labels = {t.user_id: t.label for t in manifest.tracks}
    shared = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    return {uid: label for uid, label in labels.items() if label not in shared}


def _orcwer(hyp: list[Turn], truth: list[Turn]) -> float:
    import meeteval

    if not hyp:  # nothing transcribed: every true word is missed, which meeteval scores
        # only if the hypothesis has some entry
        hyp = [Turn(speaker="mix", start=0.0, end=0.0, text="")]
    with quiet_meeteval():
        result = meeteval.wer.orcwer(normalised_seglst(truth), normalised_seglst(hyp))["meeting"]
    return round(100 * result.error_rate, 2)


# Everything below runs in the approach's own process.


def _run(name: str, manifest_path: str, truth: list[Turn], options: PipelineOptions) -> dict:
    manifest = Manifest.load(manifest_path)
    with interruptible():
        if name == "pipeline":
            out = _pipeline(manifest, options)
        else:
            out = _alternative(name, manifest, truth, options)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _peak_rss_mb() -> float:
    """This process's own peak resident memory, in MB.

    Not ``ru_maxrss``: on Linux, a process started by fork and exec (as every approach's is)
    keeps there the high-water mark its parent had at the fork, so each approach showed at
    least the size of the bench itself. ``VmHWM`` is the memory of this program alone; where
    there is no /proc, ``ru_maxrss`` is what there is (in bytes on macOS, KiB elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # in kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _pipeline(manifest: Manifest, options: PipelineOptions) -> dict:
    run = run_meeting(manifest, options=options, progress=False)
    stats = run.stats
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        export(run.transcript, Path(out))
        export_s = time.perf_counter() - started
    wall = stats.wall_s + export_s
    o = options.transcribe
    return {
        "wall_s": round(wall, 3),
        "model_load_s": round(stats.model_load_s, 3),
        "lost": run.transcript.problems(),
        "turns": [
            {"speaker": u.speaker, "start": u.start, "end": u.end, "text": u.text}
            for u in run.transcript.utterances
        ],
        "details": {
            "meeting_s": round(stats.meeting_s, 3),
            "audio_s": round(stats.audio_s, 3),
            "speech_s": round(stats.speech_s, 3),
            "speech_share": round(stats.speech_s / stats.audio_s, 4) if stats.audio_s else 0,
            "stages_s": {
                "start decode workers": round(stats.workers_start_s, 3),
                "decode (sum over tracks)": round(stats.decode_s, 3),
                "vad (sum over tracks)": round(stats.vad_s, 3),
                "decode + vad (wall, parallel)": round(stats.analyse_s, 3),
                "attribute (across tracks)": round(stats.attribute_s, 3),
                "transcribe (model)": round(stats.transcribe_s, 3),
                "merge": round(stats.merge_s, 3),
                "export": round(export_s, 3),
            },
            "outside_model_share": round(1 - stats.transcribe_s / wall, 4) if wall else 0,
            "decode_vad_x_realtime_per_core": round(
                stats.audio_s / (stats.decode_s + stats.vad_s), 1
            )
            if stats.decode_s
            else None,
            "machine": {
                "cpus": multiprocessing.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "settings": o.model_dump(include={"model", "compute_type", "beam_size"}),
            "model_workers": o.parallel,
            "model_threads_each": model_threads(o),
        },
    }


def _alternative(
    name: str, manifest: Manifest, truth: list[Turn], options: PipelineOptions
) -> dict:
    o = options.transcribe
    threads = model_threads(o) * o.parallel
    started = time.perf_counter()
    # As the pipeline loads it (checked, a folder without the network, a hub name with a time
    # limit), and with the threads its workers have together: one stream, the same cores.
    model = load_model(o.model, o.device, o.compute_type, threads, workers=1)
    load = time.perf_counter() - started
    settings = {"language": o.language, "beam_size": o.beam_size}
    unplaced = manifest.unplaced_tracks()  # left out, as the pipeline leaves them out
    every_offset = track_offsets(manifest)
    placed = [(t, every_offset[i]) for i, t in enumerate(manifest.tracks) if i not in unplaced]
    lost = list(unplaced.values())
    ends: list[float] = []

    def read(track: Track, offset: float) -> np.ndarray | None:
        """A track's samples, read when its turn comes, as a user of faster-whisper alone
        reads them (not every track held at once); None, and the track in ``lost``, when it
        cannot be read: the approach goes on without it, as the pipeline does."""
        try:
            samples = _decode(manifest.track_path(track))
        except _Unreadable as exc:
            lost.append(f"{track.path}: {exc}")
            return None
        ends.append(offset + samples.size / SAMPLE_RATE)
        return samples

    started = time.perf_counter()
    if name in ("full", "silero", "batched"):
        turns = _each_full_track(name, model, placed, read, settings)
    elif name == "mix":
        mix = _Mix()
        for track, offset in sorted(placed, key=lambda pair: pair[1]):  # as the mix lays out
            if (samples := read(track, offset)) is not None:
                mix.add(offset, samples)
            del samples  # before the next is read
        turns = []
        if ends:
            segments, _ = model.transcribe(mix.samples, vad_filter=True, **settings)
            turns = [
                {
                    "speaker": "mix",
                    "start": _in_meeting(s.start, mix.shifts),
                    "end": _in_meeting(s.end, mix.shifts),
                    "text": s.text,
                }
                for s in segments
            ]
    elif name == "oracle":
        owner = _owners(manifest, truth)

        def cut_from(user_id: str) -> list[dict]:
            # A function of its own, so that one user's samples are let go before the next's.
            theirs = [
                (offset, samples)
                for track, offset in placed
                if track.user_id == user_id and (samples := read(track, offset)) is not None
            ]
            said = [t for t in truth if owner[t.speaker] == user_id]
            return [
                done for turn in said for done in _oracle_turn(model, turn, theirs, settings, lost)
            ]

        users = [track.user_id for track, _ in placed] + list(owner.values())
        # A user at a time; one who has no file too (their turns are lost).
        turns = [turn for user_id in dict.fromkeys(users) for turn in cut_from(user_id)]
        turns.sort(key=lambda turn: turn["start"])
    else:
        raise ValueError(f"unknown approach {name!r}; known: {', '.join(APPROACHES)}")
    wall = time.perf_counter() - started
    if not ends:
        raise ApproachFailed(f"no track could be read: {'; '.join(lost)}")
    return {
        "wall_s": round(wall, 3),
        "model_load_s": round(load, 3),
        "lost": lost,
        "turns": turns,
        "details": {
            "meeting_s": round(max(ends), 3),
            "model_workers": 1,
            "model_threads_each": threads,
            **({"batch_size": _BATCH_SIZE} if name == "batched" else {}),
        },
    }


def _each_full_track(
    name: str,
    model: Any,
    placed: list[tuple[Track, float]],
    read: Callable[[Track, float], np.ndarray | None],
    settings: dict[str, Any],
) -> list[dict]:
    """Every full track transcribed on its own: as it is (``full``), with faster-whisper's
    Silero VAD (``silero``), or by its batched path (``batched``)."""
    from faster_whisper import BatchedInferencePipeline

    batched = BatchedInferencePipeline(model) if name == "batched" else None

    def transcribed(track: Track, offset: float) -> list[dict]:
        # A function of its own, so that the track's samples are let go before the next's.
        if (samples := read(track, offset)) is None:
            return []
        if batched is not None:
            segments, _ = batched.transcribe(samples, batch_size=_BATCH_SIZE, **settings)
        else:
            segments, _ = model.transcribe(samples, vad_filter=name == "silero", **settings)
        return [
            {
                "speaker": track.user_id,
                "start": offset + s.start,
                "end": offset + s.end,
                "text": s.text,
            }
            for s in segments
        ]

    return [turn for track, offset in placed for turn in transcribed(track, offset)]


def _oracle_turn(
    model: Any,
    turn: Turn,
    files: list[tuple[float, np.ndarray]],
    settings: dict[str, Any],
    lost: list[str],
) -> list[dict]:
    """A true turn cut from its speaker's ``files`` (each its offset and samples) and
    transcribed alone; nothing, and the turn in ``lost``, when no file holds it."""
    pieces = _pieces(turn.start, turn.end, [(off, a.size / SAMPLE_RATE) for off, a in files])
    if not pieces:
        lost.append(
            f"truth turn of {turn.speaker} at {turn.start:.2f}-{turn.end:.2f} s: no file of "
            "theirs holds it; not transcribed"
        )
        return []
    said = []
    for which, since, until in pieces:
        offset, samples = files[which]
        first, last = (round((t - offset) * SAMPLE_RATE) for t in (since, until))
        segments, _ = model.transcribe(samples[first:last], **settings)
        said += [s.text.strip() for s in segments]
    text = " ".join(text for text in said if text)
    return [{"speaker": turn.speaker, "start": turn.start, "end": turn.end, "text": text}]


_MIN_PIECE_S = 0.05
"""The oracle cuts no piece shorter than this (s): a few hundredths of a second at a file's
edge (a truth's rounded times, a file a frame short) hold no word, only room for Whisper to
invent one."""


def _pieces(
    start: float, end: float, files: list[tuple[float, float]]
) -> list[tuple[int, float, float]]:
    """Where the oracle cuts the true turn ``start``-``end`` (meeting seconds) from its
    speaker's ``files`` (each its start and duration): ``(file, since, until)`` in time
    order, each stretch of meeting time from one file only. A speaker who left and joined
    again has a file for each stay, and a turn across the rejoin is in both; files that
    overlap in time hold the overlap twice, taken from the earlier-starting one, the next
    giving only what is left. Empty when no file holds any of the turn."""
    pieces = []
    cursor = start
    for which in sorted(range(len(files)), key=lambda i: files[i][0]):
        begins, duration = files[which]
        since, until = max(cursor, begins), min(end, begins + duration)
        if until - since >= _MIN_PIECE_S:
            pieces.append((which, since, until))
            cursor = until
    return pieces


_MIX_GAP_S = 2.0
"""Seconds of silence the mix keeps between tracks that lie further apart than that."""

_BATCH_SIZE = 8
"""Windows the ``batched`` approach decodes at once (faster-whisper suggests 8-16; on two
cores, more only holds more memory)."""


class _Mix:
    """All tracks mixed on their start times into one signal, built a track at a time (each
    added in the order of its start), so that no more than the mix and one track are held.

    A track may be placed up to a day from the others (a device's clock gone wrong, but not far
    enough to be left out): laid out as it is, the mix would be gigabytes of silence. Stretches
    no track covers are cut to :data:`_MIX_GAP_S`, which changes nothing the model hears;
    ``shifts`` take the mix's time back to the meeting's: ``(from, seconds)`` pairs, the mix's
    time from ``from`` on being ``seconds`` earlier than the meeting's.
    """

    def __init__(self) -> None:
        self.samples = np.zeros(0, np.float32)
        self.shifts: list[tuple[float, float]] = []
        self._removed = 0.0
        self._covered: float | None = None

    def add(self, start: float, samples: np.ndarray) -> None:
        """Add a track that starts at ``start`` (meeting seconds), no earlier than any added
        before it."""
        if self._covered is not None and start - self._covered > _MIX_GAP_S:
            self._removed += start - self._covered - _MIX_GAP_S
            self.shifts.append((start - self._removed, self._removed))
        first = round((start - self._removed) * SAMPLE_RATE)
        end = first + samples.size
        if end > self.samples.size:
            grown = np.zeros(end, np.float32)
            grown[: self.samples.size] = self.samples
            self.samples = grown
        self.samples[first:end] += samples
        reach = start + samples.size / SAMPLE_RATE
        self._covered = reach if self._covered is None else max(self._covered, reach)


def _in_meeting(mix_s: float, shifts: list[tuple[float, float]]) -> float:
    """The meeting time of ``mix_s`` seconds into the mix :class:`_Mix` laid out."""
    removed = max((seconds for since, seconds in shifts if mix_s >= since), default=0.0)
    return mix_s + removed


def _owners(manifest: Manifest, truth: list[Turn]) -> dict[str, str]:
    """True speaker -> the user id whose track holds their voice: the true speakers named by
    user id, else by display name. One the manifest has not by either fails the approach: its
    utterances cannot be cut, and a figure without them would not be the practical limit."""
    speakers = {t.speaker for t in truth}
    user_ids = [t.user_id for t in manifest.tracks]
    names = _names(manifest)
    pairs = paired_by_name(user_ids, speakers, names)  # as the scoring finds them
    if pairs is not None:
        return {speaker: uid for uid, speaker in pairs.items()}
    unknown = ", ".join(sorted(speakers - set(user_ids) - set(names.values())))  # 20 at most
    raise ApproachFailed(
        f"no track is the truth's speaker {unknown}, by user id or display name: the true "
        "utterances cannot be cut from their tracks"
    )


class _Unreadable(Exception):
    """A track that cannot be read; the message says why (its file is named by the caller)."""


def _decode(path: Path) -> np.ndarray:
    """A track's samples; a track that cannot be read raises :class:`_Unreadable`."""
    from faster_whisper import decode_audio

    try:
        with path.open("rb") as file:  # not its name, which FFmpeg could take for a URL
            return decode_audio(file, sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # not a readable audio file, in whichever way
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise _Unreadable(reason) from None
