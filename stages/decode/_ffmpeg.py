"""What FFmpeg says about a file: its errors while demuxing, and the duration its header
declares."""

import contextlib
import logging
import threading
from collections.abc import Iterator

import av
import av.logging

from ._writer import TRUNCATION_TOLERANCE, AlignedWriter


@contextlib.contextmanager
def ffmpeg_errors() -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg's error messages while in the block. Damage its demuxer steps over (a broken
    element, a live-written file that ends mid-cluster) is told only there: decoding goes
    on as if nothing were wrong, with seconds of audio gone. It is quiet on sound files.
    What the caller's own FFmpeg log level would have shown is passed on to it afterwards."""
    wanted = _FFMPEG_LOG.enter()
    try:
        with av.logging.Capture(local=True) as logs:
            yield logs
    finally:
        _FFMPEG_LOG.leave()
        for level, name, message in logs:
            if wanted is not None and level <= wanted:
                logging.getLogger(f"libav.{name}").log(
                    av.logging.adapt_level(level), message.strip()
                )


class _SharedLogLevel:
    """FFmpeg's log level and PyAV's skipping of repeated messages are the process's, not
    a thread's: decodings in several threads turn errors on and put the caller's settings
    back once, when the last of them ends. Errors are turned on for the capture (PyAV has
    FFmpeg's log off by default), and repeats are not skipped: the same damage in the next
    file is news too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: tuple[int | None, bool] = (None, True)

    def enter(self) -> int | None:
        """The caller's own level (None: off)."""
        with self._lock:
            if self._users == 0:
                self._saved = (av.logging.get_level(), av.logging.get_skip_repeated())
                level = self._saved[0]
                if level is None or level < av.logging.ERROR:
                    av.logging.set_level(av.logging.ERROR)
                av.logging.set_skip_repeated(False)
            self._users += 1
            return self._saved[0]

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                av.logging.set_level(self._saved[0])
                av.logging.set_skip_repeated(self._saved[1])


_FFMPEG_LOG = _SharedLogLevel()


def skipped_damage(errors: list[tuple[int, str, str]], writer: "AlignedWriter") -> str | None:
    said = [message.strip() for level, _, message in errors if level <= av.logging.ERROR]
    if not said:
        return None
    more = f" (and {len(said) - 1} more)" if len(said) > 1 else ""
    lost = f"; {writer.duration:.2f} s decoded, and audio may be missing"
    if writer.gaps:  # where the damage most likely is
        where, seconds = max(writer.gaps, key=lambda gap: gap[1])
        skips = f"skips {len(writer.gaps)} times, the longest" if len(writer.gaps) > 1 else "skips"
        lost += f": the audio {skips} {seconds:.2f} s at {where:.2f} s"
    return f"the file is damaged (FFmpeg: {said[0]}{more}){lost}"


def missing_tail(container: av.container.InputContainer, decoded: float) -> str | None:
    """A file cut short (an interrupted upload) often decodes without any error: FFmpeg just
    stops at the end of the bytes. The duration its header declares gives it away."""
    declared = declared_seconds(container)
    if declared is None:
        return None  # live-muxed files may not declare one
    if declared - decoded > TRUNCATION_TOLERANCE:
        return f"the file ends at {decoded:.2f} s but its header says {declared:.2f} s (truncated)"
    return None


def declared_seconds(container: av.container.InputContainer) -> float | None:
    """How long the file's header says it is (None: it does not say)."""
    return None if container.duration is None else container.duration / av.time_base
