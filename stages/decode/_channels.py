"""Two channels to one: the mix players make, unless it would cancel the voice."""

import av
import numpy as np

from models import SAMPLE_RATE

_BALANCE_FLOOR = 1e-5
"""Mean square per sample (-50 dBFS) a stretch of a stereo track must reach to count in
judging whether its channels are opposite in phase: above a microphone's own noise."""


OPPOSITE_NOTE = (
    "its two channels are one signal in opposite phase (a microphone wired with one side "
    "reversed): averaged, they cancel, so half their difference was transcribed"
)


_OPPOSITE = 4.0
"""How many times the power of the channels' mean the power of their difference must have
(6 dB) for them to count as opposite in phase. Two unrelated channels give about the same."""


class ChannelsOpposite(Exception):
    """A stereo track's channels were found opposite in phase: decode it again, taking their
    difference."""


class ChannelBalance:
    """Whether a stereo track's two channels are one signal in opposite phase.

    A microphone with one capsule wired the wrong way round records the voice in one channel
    and its negative in the other: mixed down as every decoder mixes it, averaging the two,
    the voice cancels and the speaker vanishes from the transcript without a trace. What
    decides is the first second of sound (packets above :data:`_BALANCE_FLOOR`): a mid
    (their mean) far weaker than the side (half their difference) means opposite phase.
    Quiet packets do not count: each channel's own electrical noise is unrelated to the other's.
    """

    def __init__(self) -> None:
        self._mid = self._side = 0.0
        self._heard = 0

    @property
    def decided(self) -> bool:
        return self._heard >= SAMPLE_RATE

    def add(self, left: np.ndarray, right: np.ndarray) -> None:
        """Take a stretch of both channels; raise :class:`ChannelsOpposite` once they are
        known to be opposite."""
        ll, rr, lr = float(left @ left), float(right @ right), float(left @ right)
        if ll + rr < 2 * _BALANCE_FLOOR * left.size:
            return
        self._mid += ll + rr + 2 * lr
        self._side += ll + rr - 2 * lr
        self._heard += left.size
        if self.decided and self._side > _OPPOSITE * self._mid:
            raise ChannelsOpposite


def channel_planes(frame: av.AudioFrame) -> list[np.ndarray]:
    """A frame's channels as float32 arrays.

    Opus decodes to planar float; reading its planes directly is several times cheaper than
    the generic conversion, and decoding is done 50 times a second of audio.
    """
    if frame.format.name == "fltp":
        return [np.frombuffer(memoryview(p), np.float32, frame.samples) for p in frame.planes]
    x = frame.to_ndarray()
    if not frame.format.is_planar:
        x = x.reshape(-1, len(frame.layout.channels)).T
    if np.issubdtype(x.dtype, np.unsignedinteger):  # 8-bit PCM: silence is 128
        middle = np.iinfo(x.dtype.name).max // 2 + 1
        x = (x.astype(np.float32) - middle) / middle
    elif np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / np.iinfo(x.dtype.name).max
    return list(x.astype(np.float32, copy=False))


def mix(planes: list[np.ndarray], *, difference: bool = False) -> np.ndarray:
    """Channels mixed to mono: averaged, or for two opposite in phase, half their difference."""
    if len(planes) == 1:
        return planes[0]
    if difference and len(planes) == 2:
        return (planes[0] - planes[1]) * np.float32(0.5)
    return np.stack(planes).mean(axis=0, dtype=np.float32)
