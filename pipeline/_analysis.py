"""The work done in a decode worker process. Imports only what that work needs: a worker
should not pay for loading the speech model's libraries."""

import time
from pathlib import Path

from models import PcmAudio, VoiceActivity
from stages.decode import decode
from stages.vad import VadOptions, voice_activity


def analyse_track(
    source: Path,
    pcm_path: Path,
    sha256: str | None,
    size: int | None,
    known_sha256: str | None,
    vad: VadOptions,
) -> tuple[PcmAudio, VoiceActivity, float, float]:
    """Decode one track and find its voice activity; also the seconds each took."""
    start = time.perf_counter()
    audio = decode(
        source,
        pcm_path,
        expected_sha256=sha256,
        expected_size=size,
        known_sha256=known_sha256,
    )
    decoded = time.perf_counter()
    activity = voice_activity(audio, vad)
    return audio, activity, decoded - start, time.perf_counter() - decoded


def ready() -> None:
    """Nothing: the first job a worker runs, to get it started early."""
