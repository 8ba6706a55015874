"""Decode one participant file (WebM/Opus or anything FFmpeg reads) to 16 kHz mono PCM on disk.

Streaming: packets are decoded, resampled and written one at a time, so memory does not depend
on the length of the track. Track time is container time: if the first packet is stamped 2.5 s,
the output starts with 2.5 s of silence, and a jump in packet timestamps (a network drop, a
mute that stopped the encoder) becomes silence of the same length. Merging tracks on one clock
relies on this.
"""

import logging
from pathlib import Path
from typing import BinaryIO

import av
import av.error
import numpy as np

from models import SAMPLE_RATE, PcmAudio, sha256_file

__all__ = ["DecodeError", "decode"]

log = logging.getLogger(__name__)

_GAP_TOLERANCE = 0.010
"""WebM stamps packets in whole milliseconds; jumps smaller than this are rounding, not gaps."""


_TRUNCATION_TOLERANCE = 0.5
"""Seconds of declared audio that may be missing before a file counts as truncated."""


class DecodeError(ValueError):
    """The file cannot be used at all (missing, wrong checksum, not audio). Names the file."""


def decode(
    source: Path,
    pcm_path: Path,
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
) -> PcmAudio:
    """Decode ``source`` into ``pcm_path`` (raw int16, 16 kHz mono) and describe the result.

    ``expected_sha256``/``expected_size`` (from the manifest) are checked before any decoding,
    so a file that changed since it was listed is refused rather than silently transcribed.
    A file that breaks off part-way (truncated upload, corrupt packet) decodes up to the
    break; the returned :class:`PcmAudio` says where in ``problem``.
    """
    source = Path(source)
    size, digest = _check_file(source, expected_sha256, expected_size)
    try:
        container = av.open(str(source), mode="r")
    except av.error.FFmpegError as exc:
        raise DecodeError(f"{source}: not a readable audio file ({_reason(exc)})") from None
    with container:
        if not container.streams.audio:
            raise DecodeError(f"{source}: contains no audio stream")
        with Path(pcm_path).open("wb") as out:
            writer = _PcmWriter(out)
            problem = _decode_stream(container, container.streams.audio[0], writer)
        problem = problem or _missing_tail(container, writer.position / SAMPLE_RATE)
    if writer.first_time is None and problem is not None:
        pcm_path.unlink(missing_ok=True)
        raise DecodeError(f"{source}: no audio could be decoded ({problem})")
    if problem:
        log.warning("%s: %s", source, problem)
    return PcmAudio(
        source=source,
        source_sha256=digest,
        source_size=size,
        pcm_path=pcm_path,
        num_samples=writer.position,
        first_packet_time=writer.first_time or 0.0,
        gap_seconds=writer.gap_samples / SAMPLE_RATE,
        dropped_seconds=writer.dropped_samples / SAMPLE_RATE,
        problem=problem,
    )


def _check_file(source: Path, sha256: str | None, size: int | None) -> tuple[int, str]:
    try:
        actual_size = source.stat().st_size
    except FileNotFoundError:
        raise DecodeError(f"{source}: file not found") from None
    if size is not None and actual_size != size:
        raise DecodeError(f"{source}: size is {actual_size} bytes, the manifest says {size}")
    digest = sha256_file(source)
    if sha256 is not None and digest != sha256.lower():
        raise DecodeError(f"{source}: SHA-256 is {digest}, the manifest says {sha256}")
    return actual_size, digest


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream, writer: "_PcmWriter"
) -> str | None:
    """Feed every frame to ``writer``; return why decoding stopped early, or None."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                start = frame.time
                for out in resampler.resample(frame):
                    writer.write(out.to_ndarray().reshape(-1), start)
                    start = None  # later chunks of one frame follow on directly
        for out in resampler.resample(None):
            writer.write(out.to_ndarray().reshape(-1), None)
    except av.error.FFmpegError as exc:
        return f"decoding stopped at {writer.position / SAMPLE_RATE:.2f} s: {_reason(exc)}"
    if writer.first_time is None:
        return "the audio stream holds no decodable frames"
    return None


def _missing_tail(container: av.container.InputContainer, decoded: float) -> str | None:
    """A file cut short (an interrupted upload) often decodes without any error: FFmpeg just
    stops at the end of the bytes. The duration its header declares gives it away."""
    if container.duration is None:
        return None  # live-muxed files may not declare one
    declared = container.duration / av.time_base
    if declared - decoded > _TRUNCATION_TOLERANCE:
        return f"the file ends at {decoded:.2f} s but its header says {declared:.2f} s (truncated)"
    return None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class _PcmWriter:
    """Appends samples at their container time.

    Where timestamps jump ahead of the audio written so far, silence fills the gap; where they
    fall behind it (overlapping packets, a sender clock running slow), the audio that would
    overlap is dropped. Either way sample ``i`` stays at container time ``i / SAMPLE_RATE``.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._file = out
        self.position = 0  # samples written so far
        self.gap_samples = 0
        self.dropped_samples = 0
        self.first_time: float | None = None

    def write(self, samples: np.ndarray, time: float | None) -> None:
        if time is not None:
            leading = self.first_time is None
            if leading:
                self.first_time = time
            ahead = round(time * SAMPLE_RATE) - self.position
            if ahead > _GAP_TOLERANCE * SAMPLE_RATE:
                self._file.write(np.zeros(ahead, "<i2").tobytes())
                self.position += ahead
                if not leading:  # a late start is not a gap in the recording
                    self.gap_samples += ahead
            elif ahead < -_GAP_TOLERANCE * SAMPLE_RATE:
                drop = min(-ahead, samples.size)
                samples = samples[drop:]
                if not leading:  # audio stamped before zero is encoder delay, not loss
                    self.dropped_samples += drop
        self._file.write(samples.astype("<i2", copy=False).tobytes())
        self.position += samples.size
