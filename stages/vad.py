"""Find the speech in a decoded track with webrtcvad, as regions the model can take whole.

webrtcvad's frame decisions flicker; on their own they would cut speech at every breath.
The frames are smoothed into regions the way people hear turns: short pauses stay inside a
region (``min_silence``), blips too short to be words are dropped (``min_speech``), and a
little audio is kept either side (``padding``) so first and last syllables are not clipped.
Regions longer than Whisper's 30-s window are split at their quietest moment, not blindly.
"""

import math
from itertools import pairwise
from typing import Literal

import numpy as np
import webrtcvad
from pydantic import BaseModel, ConfigDict, Field

from models import (
    FULL_SCALE,
    SAMPLE_RATE,
    PcmAudio,
    SpeechRegion,
    VoiceActivity,
    bridge_runs,
    frame_runs,
    level_db,
)

__all__ = ["VadOptions", "detect_speech", "speech_regions", "voice_activity"]


class VadOptions(BaseModel):
    """How speech is told apart from everything else. Times in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad mode: 3 rejects most")
    frame_ms: Literal[10, 20, 30] = Field(30, description="webrtcvad frame length, ms")
    min_level_db: float = Field(
        -55.0, description="frames quieter than this (dBFS RMS) are never speech"
    )
    padding: float = Field(0.2, ge=0, description="audio kept before and after each region")
    min_speech: float = Field(0.25, ge=0, description="shorter bursts are dropped")
    min_silence: float = Field(0.8, ge=0, description="shorter pauses stay inside a region")
    min_pause: float = Field(
        0.3,
        gt=0,
        description="a stretch without voice this long inside a region is a pause the model's "
        "word times may show (shorter: a breath or a hard consonant)",
    )
    max_region: float = Field(30.0, gt=1, le=30, description="longer regions are split")
    onset_below_db: float = Field(
        20.0,
        ge=0,
        description="a region's voice begins at its first voiced frame no more than this far "
        "below the region's speech level; quieter voiced frames before it are background "
        "webrtcvad took for voice (a weak first consonant may be missed: tens of ms)",
    )


def detect_speech(audio: PcmAudio, options: VadOptions | None = None) -> list[SpeechRegion]:
    """Speech regions of ``audio`` in track time, in order, none longer than ``max_region``."""
    options = options or VadOptions()
    return speech_regions(voice_activity(audio, options), options)


def voice_activity(audio: PcmAudio, options: VadOptions | None = None) -> VoiceActivity:
    """Frame by frame: speech or not (webrtcvad, level-gated), and level. Streams the file."""
    options = options or VadOptions()
    voiced, level_db = _classify_frames(audio, options)
    return VoiceActivity(
        frame_s=options.frame_ms / 1000, voiced=voiced, level_db=level_db, duration=audio.duration
    )


def speech_regions(
    activity: VoiceActivity, options: VadOptions | None = None
) -> list[SpeechRegion]:
    """Smooth frame decisions into regions: bridge short pauses, drop blips, pad, split."""
    options = options or VadOptions()
    frame_s = activity.frame_s
    voiced, level_db = activity.voiced, activity.level_db
    n = len(voiced)
    # Frames of someone else's voice are walls: no pause is bridged and no padding reaches
    # across them, so none of it is sent to the model inside this track's regions.
    blocked = activity.blocked if activity.blocked is not None else np.zeros(n, bool)
    runs = bridge_runs(frame_runs(voiced), round(options.min_silence / frame_s), blocked)
    runs = [(a, b) for a, b in runs if (b - a) * frame_s >= options.min_speech]

    regions: list[SpeechRegion] = []
    pad = round(options.padding / frame_s)
    walls = np.flatnonzero(blocked)
    padded = [_pad(a, b, pad, n, walls) for a, b in runs]
    for a, b in bridge_runs(padded, 0, blocked):
        for lo, hi in _split(a, b, level_db, _frames_within(options.max_region, frame_s)):
            end = min(hi * frame_s, activity.duration)
            if hi == n and activity.duration - lo * frame_s <= options.max_region:
                # Speech up to the last whole frame goes on to the end: the few ms after it
                # were too short for webrtcvad to take, not silence.
                end = activity.duration
            if end > lo * frame_s:
                level = _speech_level(level_db, voiced, lo, hi)
                first = _onset(voiced, level_db, lo, hi, level, options.onset_below_db)
                onset = min(first * frame_s, end)
                pauses = _pauses(voiced, lo, hi, round(options.min_pause / frame_s), frame_s)
                regions.append(
                    SpeechRegion(
                        start=lo * frame_s, end=end, onset=onset, level_db=level, pauses=pauses
                    )
                )
    return regions


def _classify_frames(audio: PcmAudio, options: VadOptions) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: is it speech, and how loud is it (dBFS RMS). Streams the file."""
    vad = webrtcvad.Vad(options.aggressiveness)
    frame_len = SAMPLE_RATE * options.frame_ms // 1000
    frames_per_block = 1000  # 30 s of audio per read at 30-ms frames
    voiced: list[np.ndarray] = []
    levels: list[np.ndarray] = []
    for block in audio.blocks(frame_len * frames_per_block):
        usable = block.size // frame_len * frame_len
        if usable == 0:
            break  # a final partial frame: webrtcvad cannot take it
        frames = block[:usable].reshape(-1, frame_len)
        db = level_db(frames, axis=1, full_scale=FULL_SCALE)
        loud = db >= options.min_level_db
        # Only frames loud enough to matter are sent to webrtcvad: quiet ones cannot be speech.
        flags = np.zeros(len(frames), bool)
        for i in np.flatnonzero(loud):
            flags[i] = vad.is_speech(frames[i].tobytes(), SAMPLE_RATE)
        voiced.append(flags)
        levels.append(db)
    if not voiced:
        return np.zeros(0, bool), np.zeros(0)
    return np.concatenate(voiced), np.concatenate(levels)


def _onset(
    voiced: np.ndarray, level_db: np.ndarray, a: int, b: int, level: float | None, below: float
) -> int:
    """The frame of [a, b) where the voice begins.

    webrtcvad adapts to what it has heard: on a track that carries other voices' leakage it
    may call a steady background voice, where on a quiet track it would not. Frames far below
    the region's speech level are not where its speech begins, whatever webrtcvad says, so the
    same speech gets the same onset whatever leaks in around it.
    """
    span = voiced[a:b]
    if level is not None:
        loud = span & (level_db[a:b] >= level - below)
        if loud.any():
            return a + int(np.argmax(loud))
    return a + int(np.argmax(span))


def _pad(a: int, b: int, pad: int, n: int, walls: np.ndarray) -> tuple[int, int]:
    """[a, b) widened by ``pad`` frames each side, stopping short of blocked frames."""
    before = walls[(walls < a) & (walls >= a - pad)]
    after = walls[(walls >= b) & (walls < b + pad)]
    start = before.max() + 1 if before.size else max(0, a - pad)
    end = after.min() if after.size else min(n, b + pad)
    return start, end


_SMOOTHING = np.ones(7) / 7
"""About 0.2 s at 30-ms frames: a cut goes where the level stays low, not in one quiet frame."""


def _split(a: int, b: int, level_db: np.ndarray, max_len: int) -> list[tuple[int, int]]:
    """Cut [a, b) into pieces of at most ``max_len`` frames at the quietest moments.

    The cut is placed at the lowest short-term level among the positions that keep both sides
    usable, which in speech is almost always a pause between words or sentences. Only the
    frames around the next cut are looked at, so hours of unbroken "speech" (a hot
    microphone, music) cost no more per cut than a minute does.
    """
    pieces = []
    half = len(_SMOOTHING) // 2
    while b - a > max_len:
        # Where a cut may go: the left piece must fit, and must not leave an oversized
        # remainder when one cut could do (b - a < 2 * max_len).
        lo = max(a + 1, b - max_len) if b - a < 2 * max_len else a + max_len // 2
        hi = a + max_len
        start, stop = max(a, lo - half), min(b, hi + half)
        smooth = np.convolve(level_db[start:stop], _SMOOTHING, mode="same")
        cut = lo + int(np.argmin(smooth[lo - start : hi - start]))
        pieces.append((a, cut))
        a = cut
    pieces.append((a, b))
    return pieces


def _pauses(
    voiced: np.ndarray, a: int, b: int, min_frames: int, frame_s: float
) -> tuple[tuple[float, float], ...]:
    """The runs of at least ``min_frames`` unvoiced frames between voiced ones in [a, b)."""
    spoken = frame_runs(voiced[a:b])
    return tuple(
        ((a + end) * frame_s, (a + start) * frame_s)
        for (_, end), (start, _) in pairwise(spoken)
        if start - end >= min_frames
    )


def _speech_level(level_db: np.ndarray, voiced: np.ndarray, a: int, b: int) -> float | None:
    """RMS level of the voiced frames of a region, in dBFS."""
    frames = level_db[a:b][voiced[a:b]]
    if frames.size == 0:
        return None
    power = np.mean(np.power(10.0, frames / 10))
    return round(float(10 * np.log10(power)), 2)


def _frames_within(seconds: float, frame_s: float) -> int:
    """The most whole frames that last no longer than ``seconds`` (rounded, 20 s of 30-ms
    frames came to 667: a region 10 ms longer than the model's window, cut again there)."""
    return max(1, math.floor(seconds / frame_s + 1e-9))
