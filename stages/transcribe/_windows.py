"""Regions of a track packed end to end into model windows, and the way back to track time."""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models import SAMPLE_RATE, PcmAudio, SpeechRegion, Word, ends_sentence

log = logging.getLogger(f"trackscribe.{__name__}")


@dataclass(frozen=True)
class Piece:
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
class Window:
    """Regions of one track, packed end to end for one model call."""

    track: int
    pieces: tuple[Piece, ...]

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.pieces)

    def read(self, audio: PcmAudio) -> np.ndarray:
        return np.concatenate(
            [audio.read(p.track_start, p.track_start + p.duration) for p in self.pieces]
        )

    def piece_of(self, word: Word) -> Piece | None:
        """The piece a word (in window time) belongs to: the one holding its middle."""
        middle = midpoint(word)
        for piece in self.pieces:
            if piece.window_start <= middle <= piece.window_start + piece.duration:
                return piece
        return None

    def by_piece(self, words: Sequence[Word]) -> dict["Piece | None", list[Word]]:
        """``words`` (window time) grouped by :meth:`piece_of`, in their order; every piece
        has its list, and None holds the words in no piece."""
        groups: dict[Piece | None, list[Word]] = {piece: [] for piece in self.pieces}
        groups[None] = []
        for word in words:
            groups[self.piece_of(word)].append(word)
        return groups


@dataclass(frozen=True)
class Decoded:
    """One model result for one window; word times are seconds into the window."""

    text: str
    words: list[Word]
    avg_logprob: float
    no_speech_prob: float


def midpoint(word: Word) -> float:
    return (word.start + word.end) / 2


def clip(samples: np.ndarray, start: float, end: float) -> np.ndarray:
    """``samples`` between two times (s) into them."""
    return samples[max(0, round(start * SAMPLE_RATE)) : round(end * SAMPLE_RATE)]


def bare(word: str) -> str:
    """A word's letters and digits, lower case: how two decodings of it are compared."""
    return "".join(ch for ch in word.lower() if ch.isalnum())


def cost(windows: Sequence[Window]) -> float:
    """About what ``windows`` cost the model, in encoder passes, to order tracks by: a window
    costs one whatever it holds, and decoding costs about one more per 20 s of speech (tiny.en
    on one thread: 1.4 s for a window of 10 s, 2.2 s for one of 27 s)."""
    return len(windows) + sum(window.duration for window in windows) / 20


def pack(
    track: int, audio: PcmAudio, regions: Sequence[SpeechRegion], max_window: float
) -> list[Window]:
    """Group consecutive regions of a track into windows of at most ``max_window`` seconds.

    Windows never mix tracks: without timestamp tokens Whisper's word times are good to a few
    tenths of a second, enough to move a word across a piece boundary, and that must never
    move it to another speaker.
    """
    windows: list[Window] = []
    pieces: list[Piece] = []
    offset, previous_end = 0.0, 0.0
    for region in regions:
        first = max(0, round(region.start * SAMPLE_RATE))
        duration = (min(audio.num_samples, round(region.end * SAMPLE_RATE)) - first) / SAMPLE_RATE
        if duration <= 0:
            continue
        parts = _parts(duration, max_window)
        if len(parts) > 1:
            # Whisper hears 30 s at most: the rest of a longer window was lost without a word
            # (a caller's own regions; the pipeline's are split at pauses before this).
            log.warning(
                "a speech region of %.1f s at %.2f s is longer than the model's window (%g s): "
                "cut every %g s, where a word may be split (cut regions at pauses instead)",
                duration,
                first / SAMPLE_RATE,
                max_window,
                max_window,
            )
        onset = region.onset if region.onset is not None else region.start
        for into, part in parts:
            start = first / SAMPLE_RATE + into
            if pieces and offset + part > max_window:
                windows.append(Window(track=track, pieces=tuple(pieces)))
                pieces, offset = [], 0.0
            pieces.append(
                Piece(
                    window_start=offset,
                    track_start=start,
                    duration=part,
                    # A later part's segments start after the part before it, not after
                    # the region before: they would overlap that part's.
                    floor=previous_end if into == 0 else start,
                    onset=min(onset, start + part) if into == 0 else start,
                    pauses=region.pauses,
                )
            )
            offset += part
        previous_end = region.end
    if pieces:
        windows.append(Window(track=track, pieces=tuple(pieces)))
    return windows


def _parts(duration: float, max_window: float) -> list[tuple[float, float]]:
    """Where in a region of ``duration`` seconds each piece it is sent in starts, and how
    long it is: the whole region, or cuts of ``max_window`` when it is longer."""
    if duration <= max_window + _SAMPLE_SLACK:
        return [(0.0, duration)]
    starts = [k * max_window for k in range(math.ceil(duration / max_window))]
    return [(into, min(max_window, duration - into)) for into in starts]


_SAMPLE_SLACK = 1e-3
"""Seconds a region may run over the window and still be sent whole: a region cut to the
window's length (the voice detector's ``max_region``) can gain a sample where its ends are
rounded to samples."""

_VOICED_WORD = 0.08
"""Seconds of voice a word needs at the least; no word is said in less."""


def words_by_piece(window: Window, words: Sequence[Word]) -> list[tuple[Piece, list[Word]]]:
    """Words mapped from window time to track time and grouped by the region they fall in.

    A word is placed by its midpoint; a word whose midpoint is in no region (past the end of
    the audio, which Whisper sometimes invents) is dropped, and so is a "word" without a letter
    or digit (on noise Whisper writes lone full stops).

    Words that open a later piece but end before its voice has lasted a word, after a piece
    whose sentence is unfinished, are that piece's, timed late across the seam, and end it: a
    sentence cut off where someone else's voice took over, which Whisper finishes after the
    cut ("make themselves at | home."). Left where their time put them, they would open an
    utterance said much later. After a finished sentence, such a word (a short "Yes." pulled
    to the region's padded start) stays where it was said.
    """
    groups: list[tuple[Piece, list[Word]]] = []
    for w in words:
        if not bare(w.word):
            continue
        piece = window.piece_of(w)
        if piece is None:
            log.debug("dropped word %r outside every region", w.word)
            continue
        if (
            groups
            and groups[-1][0] is not piece  # the word opens its piece ...
            and groups[-1][0] is _piece_before(window, piece)  # ... right after a piece ...
            and not ends_sentence(groups[-1][1][-1].word)  # ... whose sentence is unfinished
            and piece.to_track(w.end) < piece.onset + _VOICED_WORD
        ):
            piece = groups[-1][0]  # its time is clamped to that piece's end
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


def _piece_before(window: Window, piece: Piece) -> Piece | None:
    at = window.pieces.index(piece)
    return window.pieces[at - 1] if at else None
