"""Decoded audio as the later stages read it: 16 kHz mono 16-bit PCM in a raw file on disk.

Keeping the decoded track on disk rather than in memory is what keeps memory flat in meeting
length: VAD streams through it once and transcription reads back only the speech it needs.
Sample ``i`` is at track time ``i / SAMPLE_RATE``: leading offsets and gaps in the container
are already written as silence, so nothing downstream needs to know about container time.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SAMPLE_RATE = 16_000
"""What Whisper and webrtcvad both want."""

_BYTES_PER_SAMPLE = 2

FULL_SCALE = 32768.0
"""The stored 16-bit samples' full scale: a sample of 1.0 is stored as this."""

SILENCE_DB = -120.0
"""The lowest level given: digital silence, and anything quieter. A 30-ms frame of 16-bit
audio holds nothing quieter but silence (one least-significant bit: -117 dBFS); a longer
stretch can, and is given this level all the same."""


def level_db(
    samples: np.ndarray, *, axis: int | None = None, full_scale: float = 1.0
) -> np.ndarray:
    """RMS level in dBFS (of ``full_scale``), along ``axis``; :data:`SILENCE_DB` at the least."""
    rms = np.sqrt(np.mean(np.square(samples, dtype=np.float64), axis=axis)) / full_scale
    return 20 * np.log10(np.maximum(rms, 10 ** (SILENCE_DB / 20)))


class PcmAudio(BaseModel):
    """A decoded track. ``problem`` is set when the file broke off before its end."""

    model_config = ConfigDict(frozen=True)

    source: Path = Field(description="the file it was decoded from")
    source_sha256: str = Field(description="SHA-256 of the source file's bytes")
    source_size: int = Field(ge=0, description="size of the source file in bytes")
    pcm_path: Path = Field(description="raw little-endian int16 mono samples")
    num_samples: int = Field(ge=0)
    first_packet_time: float = Field(description="container time of the first audio, s")
    gap_seconds: float = Field(default=0.0, description="silence inserted for timestamp gaps")
    gaps: list[tuple[float, float]] = Field(
        default_factory=list,
        description="each timestamp gap: where (track time, s) silence was written, how long",
    )
    dropped_seconds: float = Field(
        default=0.0, description="audio dropped where timestamps went back over written audio"
    )
    channels_opposite: bool = Field(
        default=False,
        description="its two channels were one signal in opposite phase, which cancels when "
        "averaged: half their difference was decoded instead",
    )
    problem: str | None = Field(
        default=None, description="why decoding stopped early, and where; None if it did not"
    )

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def read(self, start: float = 0.0, end: float | None = None) -> np.ndarray:
        """Samples between two track times as float32 in [-1, 1] (the model's input)."""
        first = max(0, round(start * SAMPLE_RATE))
        last = self.num_samples if end is None else min(self.num_samples, round(end * SAMPLE_RATE))
        if last <= first:
            return np.zeros(0, np.float32)
        with self.pcm_path.open("rb") as f:
            f.seek(first * _BYTES_PER_SAMPLE)
            raw = np.fromfile(f, dtype="<i2", count=last - first)
        return raw.astype(np.float32) / FULL_SCALE

    def blocks(self, block_samples: int) -> Iterator[np.ndarray]:
        """The whole track as int16 blocks of ``block_samples`` (the last may be shorter)."""
        with self.pcm_path.open("rb") as f:
            while True:
                block = np.fromfile(f, dtype="<i2", count=block_samples)
                if block.size == 0:
                    return
                yield block
