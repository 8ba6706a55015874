"""Decoded audio laid on container time and written at 16 kHz, and what the laying found
(gaps, jumps back, restamped clusters) said as problems of the file."""

import math
from dataclasses import dataclass, field
from typing import BinaryIO

import av
import av.error
import numpy as np

from models import FULL_SCALE, SAMPLE_RATE

from ._opus import OPUS_MAX_PACKET_S

_GAP_TOLERANCE = 0.010
"""WebM stamps packets in whole milliseconds; jumps smaller than this are rounding, not gaps."""


TRUNCATION_TOLERANCE = 0.5
"""Seconds of declared audio that may be missing before a file counts as truncated."""


JUMP_BACK = 0.5
"""Seconds by which one packet's timestamp may fall behind the audio before it before the
file counts as damaged: a sender clock running slow falls behind milliseconds at a time, a
muxer that restarted its clock mid-file by whole seconds."""


_SLIPPED = 0.1
"""Seconds: a jump back this long drops a syllable's worth of audio; a slow sender clock
slips a few milliseconds at a time. More than :data:`JUMP_BACK` dropped in such jumps,
however many, is loss as one long jump is."""


_SUSPECT_JUMP = 2.0
"""Seconds: a jump ahead longer than this is held back until the packets after it show
whether the recording really paused (they go on from the new time) or one cluster of the
file was stamped wrong (they go on from the old time, as a flipped bit in a cluster's
timecode leaves it)."""


_HELD_AT_MOST = 33.0
"""Seconds of audio held back after a jump at most: a WebM cluster spans at most 32.767 s
(its blocks' times are 16-bit millisecond offsets from the cluster's)."""


_LONGEST_RECORDING = 86_400.0
"""Seconds: RealtimeKit stops a recording after ``max_seconds``, 24 h unless asked; a
timestamp past that is damage, and laying silence up to it would fill the disk."""


def jump_back_problem(writer: "AlignedWriter") -> str | None:
    """Timestamps that go back by seconds (a muxer that restarted its clock mid-file) stamp
    audio over audio already laid down; it is dropped to keep the clock, and that is loss."""
    if writer.largest_jump_back <= JUMP_BACK and writer.dropped_in_chunks <= JUMP_BACK:
        return None  # a slow sender clock's slips, or one short overlap
    return (
        f"its timestamps went back by up to {writer.largest_jump_back:.2f} s; "
        f"{writer.dropped_seconds:.2f} s of audio stamped over audio before it was dropped"
    )


def before_start_problem(writer: "AlignedWriter") -> str | None:
    """Audio stamped before the track's start cannot be placed on its clock, and is left
    out: more than an encoder's delay of it is audio the transcript does not hold."""
    return left_before_start(writer) if writer.before_start > JUMP_BACK else None


def left_before_start(writer: "AlignedWriter") -> str:
    return (
        f"{writer.before_start:.2f} s of audio stamped before the track's start (time 0 of "
        "the file) was left out"
    )


def restamp_problem(writer: "AlignedWriter") -> str | None:
    """Audio stamped far ahead of what comes before and after it (a damaged cluster) was
    kept in sequence: nothing is lost, but the file is damaged, and a reviewer should know."""
    if not writer.restamped:
        return None
    where, seconds, jump = writer.restamped[0]
    more = f" (and {len(writer.restamped) - 1} more)" if len(writer.restamped) > 1 else ""
    return (
        f"damaged timestamps: {seconds:.2f} s of audio at {where:.2f} s was stamped "
        f"{jump:.0f} s ahead of the audio around it{more}, and was kept in sequence"
    )


@dataclass
class _Held:
    """Audio held back after a long jump ahead, until it is clear what the jump was."""

    start: int  # the position (source-rate samples) where the jump began
    jump: int  # how far ahead the timestamps jumped, in samples
    audio: list[np.ndarray]
    count: int  # samples held
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (at, samples) into what is held


class AlignedWriter:
    """Lays decoded audio on container time, then resamples it to 16 kHz (if it is not at 16 kHz
    already) into the file.

    Alignment happens at the source rate: where timestamps jump ahead of the audio so far,
    silence fills the gap; where they fall behind it (overlapping packets, a sender clock
    running slow), the audio that would overlap is dropped. The aligned stream is one
    continuous signal, gathered in a block of about a second and resampled and written a block
    at a time, so sample ``i`` of the output is at container time ``i / SAMPLE_RATE`` and the
    resampler runs 50 times less often than there are packets.

    Audio comes in two ways: :meth:`write` copies samples in, and a decoder that can decode
    into memory it is given (libopus) decodes straight into :meth:`free_space` and then calls
    :meth:`commit`, which copies nothing unless the audio has to be moved to be aligned.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._resampler: av.AudioResampler | None = None  # none needed for 16 kHz input
        self._block = np.empty(0, np.float32)  # at the source rate; sized by the first audio
        self._address = 0  # of the block, for decoders that write to memory
        self._fill = 0  # samples in the block not yet written
        self._rate = 0
        self.gain = 1.0
        """Applied as the block is written (an Opus header's output gain)."""
        self.position = 0  # source-rate samples laid down so far
        self.samples_out = 0
        self.first_time: float | None = None
        self._dropped = 0
        self._dropped_in_chunks = 0  # in jumps back of _SLIPPED or more
        self._before_start = 0
        self._jump_back = 0
        self._held: _Held | None = None
        self.gaps: list[tuple[float, float]] = []
        """(where, seconds) of each jump ahead in the timestamps, filled with silence."""
        self.restamped: list[tuple[float, float, float]] = []
        """(where, seconds of audio, how far its timestamps had jumped) for each stretch that
        was stamped far ahead of the audio around it and was put back in sequence."""

    @property
    def duration(self) -> float:
        return self.position / self._rate if self._rate else 0.0

    @property
    def gap_seconds(self) -> float:
        """Seconds of silence written for jumps ahead; complete once :meth:`finish` has laid
        down what was held back."""
        return math.fsum(seconds for _, seconds in self.gaps)

    @property
    def dropped_seconds(self) -> float:
        return self._dropped / self._rate if self._rate else 0.0

    @property
    def dropped_in_chunks(self) -> float:
        """Seconds of the audio dropped in jumps back of :data:`_SLIPPED` or more."""
        return self._dropped_in_chunks / self._rate if self._rate else 0.0

    @property
    def before_start(self) -> float:
        """Seconds of audio stamped before container time zero, left out: an encoder's delay,
        or a recording that began before the time its track says it started."""
        return self._before_start / self._rate if self._rate else 0.0

    @property
    def largest_jump_back(self) -> float:
        """Seconds: the most one timestamp fell behind the audio laid down before it."""
        return self._jump_back / self._rate if self._rate else 0.0

    def free_space(self, rate: int) -> tuple[int, int]:
        """Where the next audio at ``rate`` goes: the address of the free part of the block
        and how many samples fit (at least the longest Opus packet)."""
        self._use_rate(rate)
        return self._address + self._block.itemsize * self._fill, self._block.size - self._fill

    def commit(self, start: int, stop: int, time: float | None) -> None:
        """Take samples ``start:stop`` of the free space, just decoded there, as audio from
        container time ``time``."""
        if start == 0 and self.first_time is not None and self._held is None:
            ahead = round(time * self._rate) - self.position if time is not None else 0
            if abs(ahead) <= _GAP_TOLERANCE * self._rate:  # in place: nearly every packet
                self._fill += stop
                self.position += stop
                if self._fill >= self._rate:
                    self._flush()
                return
        # Copied out: aligning may write silence where these samples now lie.
        at = self._fill
        self.write(self._block[at + start : at + stop].copy(), time, self._rate)

    def write(self, samples: np.ndarray, time: float | None, rate: int) -> None:
        self._use_rate(rate)
        if self._held is not None and self._held_back(samples, time):
            return
        if time is not None:
            leading = self.first_time is None
            ahead = round(time * rate) - self.position
            if ahead > _SUSPECT_JUMP * rate and not leading:
                # Past the longest recording too: one damaged cluster's timecode can say
                # anything, and the packets after it may still go on from the old time.
                self._held = _Held(self.position, ahead, [samples], samples.size)
                return
            self._check_length(time)
            if leading:
                self.first_time = time
            if ahead > _GAP_TOLERANCE * rate:
                if not leading:  # a late start is not a gap in the recording
                    self.gaps.append((self.position / rate, ahead / rate))
                self._append(None, ahead)  # in blocks: a long mute is not one huge array
            elif ahead < -_GAP_TOLERANCE * rate:
                drop = min(-ahead, samples.size)
                samples = samples[drop:]
                if self.position == 0 and time < 0:  # before the track's start: counted apart
                    self._before_start += drop
                else:
                    self._dropped += drop
                    self._jump_back = max(self._jump_back, -ahead)
                    if -ahead >= _SLIPPED * rate:
                        self._dropped_in_chunks += drop
        self._append(samples, samples.size)

    def _held_back(self, samples: np.ndarray, time: float | None) -> bool:
        """Whether this audio joins what is held back after a long jump ahead. Audio stamped
        as going on from before the jump (perhaps after a short gap) puts the held audio back
        in sequence there; audio that goes on from neither, or more than a cluster's worth,
        shows that the jump was real. A short gap inside the held stretch (a packet lost in
        the damaged cluster too) is kept in it as silence."""
        held = self._held
        assert held is not None
        if time is not None:
            at = round(time * self._rate)
            tolerance, short = _GAP_TOLERANCE * self._rate, _SUSPECT_JUMP * self._rate
            if -tolerance <= at - (held.start + held.count) <= short:  # the old timeline again
                self._put_back()
                return False
            ahead = at - (held.start + held.jump + held.count)
            if not -tolerance <= ahead <= short:
                self._release_held()
                return False
            if ahead > tolerance:
                held.gaps.append((held.count, ahead))
                held.audio.append(np.zeros(ahead, np.float32))
                held.count += ahead
        if held.count + samples.size > _HELD_AT_MOST * self._rate:
            self._release_held()
            return False
        held.audio.append(samples)
        held.count += samples.size
        return True

    def finish(self, declared_end: float | None) -> None:
        """The file has ended (or broken off). Audio still held back after a jump ends the
        recording where its header says (``declared_end``, seconds) only if laid in sequence:
        then its last cluster was stamped wrong. Otherwise the recording paused."""
        held = self._held
        if held is not None and declared_end is not None:
            in_sequence = (held.start + held.count) / self._rate
            if abs(in_sequence - declared_end) <= TRUNCATION_TOLERANCE:
                self._put_back()
                return
        self._release_held()

    def _put_back(self) -> None:
        held, self._held = self._held, None
        assert held is not None
        where = held.start / self._rate
        self.restamped.append((where, held.count / self._rate, held.jump / self._rate))
        self._note_held_gaps(held, held.start)
        for audio in held.audio:
            self._append(audio, audio.size)

    def _release_held(self) -> None:
        """Lay down what is held back as it was stamped: the recording paused."""
        held, self._held = self._held, None
        if held is None:
            return
        self._check_length((held.start + held.jump + held.count) / self._rate)
        self.gaps.append((held.start / self._rate, held.jump / self._rate))
        self._note_held_gaps(held, held.start + held.jump)
        self._append(None, held.jump)
        for audio in held.audio:
            self._append(audio, audio.size)

    def _note_held_gaps(self, held: _Held, laid_at: int) -> None:
        """List the gaps inside ``held`` where its audio is laid, from ``laid_at``."""
        self.gaps += [((laid_at + at) / self._rate, n / self._rate) for at, n in held.gaps]

    def _check_length(self, time: float) -> None:
        if time > _LONGEST_RECORDING:
            raise av.error.InvalidDataError(
                0,
                f"a timestamp jumps to {time / 3600:.2f} h, past the longest recording "
                f"RealtimeKit makes ({_LONGEST_RECORDING / 3600:.0f} h): damaged timestamps",
            )

    def _use_rate(self, rate: int) -> None:
        if self._rate == rate:
            return
        if self._rate:
            raise av.error.InvalidDataError(0, f"sample rate changed from {self._rate} to {rate}")
        self._rate = rate
        self._block = np.empty(rate + math.ceil(OPUS_MAX_PACKET_S * rate), np.float32)
        self._address = self._block.ctypes.data
        if rate != SAMPLE_RATE:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def _append(self, samples: np.ndarray | None, count: int) -> None:
        """Add ``samples``, or ``count`` samples of silence if None."""
        self.position += count
        done = 0
        while done < count:
            n = min(count - done, self._block.size - self._fill)
            into = self._block[self._fill : self._fill + n]
            into[:] = 0 if samples is None else samples[done : done + n]
            self._fill += n
            done += n
            if self._fill >= self._rate:
                self._flush()

    def _flush(self) -> None:
        if not self._fill:
            return
        block = self._block[: self._fill]
        if self.gain != 1.0:
            np.multiply(block, np.float32(self.gain), out=block)
        self._fill = 0
        if self._resampler is None:
            self._write(np.clip(np.rint(block * FULL_SCALE), -32768, 32767).astype("<i2"))
            return
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self._rate
        self._emit(self._resampler.resample(frame))

    def close(self) -> None:
        self._flush()
        if self._resampler is not None:
            self._emit(self._resampler.resample(None))

    def _emit(self, frames: list[av.AudioFrame]) -> None:
        for out in frames:
            self._write(out.to_ndarray().reshape(-1).astype("<i2", copy=False))

    def _write(self, samples: np.ndarray) -> None:
        self._out.write(samples.tobytes())
        self.samples_out += samples.size
