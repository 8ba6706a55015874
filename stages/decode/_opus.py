"""Opus through libopus itself: straight to 16 kHz, in place, and the header and side data
FFmpeg would otherwise read for it (pre-skip, gain, trimming)."""

import contextlib
import ctypes
import ctypes.util
import functools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Self

import av
import numpy as np

from models import SAMPLE_RATE

from ._channels import ChannelBalance

if TYPE_CHECKING:
    from ._writer import AlignedWriter

OPUS_RATE = 48_000
"""Opus counts pre-skip and end trimming in 48 kHz samples, whatever rate it decodes to."""


OPUS_MAX_PACKET_S = 0.120
"""The longest audio one Opus packet can hold."""


_OPUS_MAX_SAMPLES = round(OPUS_MAX_PACKET_S * SAMPLE_RATE)


def at_16k(samples_48k: int) -> int:
    return round(samples_48k * SAMPLE_RATE / OPUS_RATE)


class OpusHead(NamedTuple):
    """What an Opus stream's header (its OpusHead, the codec's extradata) says."""

    pre_skip: int
    """The encoder's delay, in 48 kHz samples: skipped at the start, by FFmpeg too."""
    gain: float
    """Output gain as a factor (the header has it in Q7.8 dB; almost always none)."""
    mapping_family: int
    """0: one stream of one or two channels; others are multistream surround layouts."""
    channels: int
    """How many channels the stream was encoded with."""

    @classmethod
    def of(cls, stream: av.AudioStream) -> "OpusHead | None":
        """The stream's header; None for a stream that is not Opus."""
        if stream.codec_context.name not in ("opus", "libopus"):  # FFmpeg's own, or its wrapper
            return None
        data = stream.codec_context.extradata or b""
        if len(data) < 19:  # no OpusHead: mono or stereo, nothing to skip, no gain
            channels = stream.codec_context.channels
            return cls(pre_skip=0, gain=1.0, mapping_family=0, channels=channels)
        db = int.from_bytes(data[16:18], "little", signed=True) / 256
        return cls(
            pre_skip=int.from_bytes(data[10:12], "little"),
            gain=float(10 ** (db / 20)),
            mapping_family=data[18],
            channels=data[9],
        )


def skip_samples(packet: av.Packet) -> tuple[int, int]:
    """Samples (at 48 kHz) to drop from the start and end of a packet's audio."""
    for side in packet.iter_sidedata():  # cheaper than has_sidedata, 50 times a second
        if side.data_type == "skip_samples":
            data = bytes(side)
            return int.from_bytes(data[0:4], "little"), int.from_bytes(data[4:8], "little")
    return 0, 0


class OpusError(Exception):
    """libopus refused a packet."""


class OpusDecoder:
    """One libopus decoder state, decoding to 16 kHz, mono unless asked for both channels
    (libopus mixes a stereo stream down to mono itself, at no extra cost)."""

    def __init__(self, library: ctypes.CDLL, channels: int = 1) -> None:
        self._lib = library
        error = ctypes.c_int()
        self._state = library.opus_decoder_create(SAMPLE_RATE, channels, ctypes.byref(error))
        if error.value != 0 or not self._state:
            raise OpusError(self._message(error.value))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._state:
            self._lib.opus_decoder_destroy(self._state)
            self._state = None

    def decode_into(self, packet: av.Packet, address: int, room: int) -> int:
        """Decode the packet's audio to float32 memory at ``address`` with space for ``room``
        samples per channel (interleaved); return how many each channel holds."""
        count = self._lib.opus_decode_float(
            self._state, packet.buffer_ptr, packet.size, address, room, 0
        )
        if count < 0:
            raise OpusError(self._message(count))
        return count

    def _message(self, code: int) -> str:
        return f"libopus: {self._lib.opus_strerror(code).decode()}"


class StereoDecoder(OpusDecoder):
    """Decodes both channels of a stereo stream, into a buffer of its own."""

    def __init__(self, library: ctypes.CDLL) -> None:
        super().__init__(library, channels=2)
        self._buffer = np.empty(2 * _OPUS_MAX_SAMPLES, np.float32)

    def channels_of(self, packet: av.Packet) -> tuple[np.ndarray, np.ndarray]:
        """The packet's left and right channels (views of the buffer, until the next)."""
        count = super().decode_into(packet, self._buffer.ctypes.data, _OPUS_MAX_SAMPLES)
        both = self._buffer[: 2 * count]
        return both[0::2], both[1::2]


class StereoProbe(StereoDecoder):
    """A second decoder that decodes a stereo stream's first packets in stereo, for
    :class:`ChannelBalance`, while the first decodes it to mono: decoding both channels
    costs a third more, and is done only until the first second of sound has been heard."""

    def __init__(self, library: ctypes.CDLL) -> None:
        super().__init__(library)
        self.balance = ChannelBalance()

    def add(self, packet: av.Packet) -> None:
        self.balance.add(*self.channels_of(packet))


class DifferenceDecoder(StereoDecoder):
    """Decodes a stereo stream whose channels are opposite in phase to half their difference,
    where averaging them would cancel the voice."""

    def decode_into(self, packet: av.Packet, address: int, room: int) -> int:
        left, right = self.channels_of(packet)
        space = memoryview((ctypes.c_float * left.size).from_address(address))
        out = np.frombuffer(space, np.float32)
        np.subtract(left, right, out=out)
        out *= np.float32(0.5)
        return left.size


def _libopus_files() -> Iterator[str]:
    """Where libopus may be, PyAV's first. The system's is looked for only once no bundled
    one has loaded: where ldconfig does not know libopus, ``find_library`` runs the C
    compiler, and a run stopped meanwhile left its output file in the temporary folder."""
    package = Path(av.__file__).parent
    yield from map(str, sorted(package.parent.glob("av.libs/libopus*")))
    yield from map(str, sorted(package.glob(".dylibs/libopus*")))
    if system := ctypes.util.find_library("opus"):
        yield system


@functools.cache
def libopus() -> ctypes.CDLL | None:
    """The libopus bundled with PyAV (the one its FFmpeg uses), else the system's, or None."""
    for name in _libopus_files():
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        if not hasattr(library, "opus_decode_float"):
            continue
        library.opus_get_version_string.restype = ctypes.c_char_p
        library.opus_strerror.restype = ctypes.c_char_p
        library.opus_strerror.argtypes = [ctypes.c_int]
        library.opus_decoder_create.restype = ctypes.c_void_p
        library.opus_decoder_create.argtypes = [
            ctypes.c_int32,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
        ]
        library.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        library.opus_decode_float.restype = ctypes.c_int
        library.opus_decode_float.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int32,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int,
        ]
        return library
    return None


def decode_opus(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    library: ctypes.CDLL,
    head: "OpusHead",
    writer: "AlignedWriter",
    *,
    difference: bool = False,
) -> None:
    """Each packet decoded by libopus at 16 kHz mono, trimmed as FFmpeg's decoders trim it.

    The encoder's delay to skip is the OpusHead's pre-skip, unless a packet's ``skip_samples``
    says otherwise (both in 48 kHz samples); skipping can run on over several packets, and a
    packet's end padding comes the same way. A packet's timestamp is that of its first sample
    before trimming, and moves with what is trimmed, rounded to the stream's tick as FFmpeg
    rounds it (so a WebM track starts at 0, not half a millisecond before).

    Packets are decoded straight into the writer's block: at 50 packets a second, copying and
    slicing each one cost 40 % on top of libopus itself (in place: under 10 %).
    """
    time_base = float(stream.time_base) if stream.time_base else 0.0
    pending = head.pre_skip  # 48 kHz samples still to skip at the start
    writer.gain = head.gain
    probing = head.channels == 2 and not difference
    with (
        DifferenceDecoder(library) if difference else OpusDecoder(library) as decoder,
        StereoProbe(library) if probing else contextlib.nullcontext() as probe,
    ):
        for packet in container.demux(stream):
            if not packet.size:
                continue  # the demuxer's end-of-stream marker
            if probe is not None:
                probe.add(packet)
                if probe.balance.decided:
                    probe.close()
                    probe = None
            start, end = skip_samples(packet)
            if start:
                pending = start
            count = decoder.decode_into(packet, *writer.free_space(SAMPLE_RATE))
            skipped = min(at_16k(pending), count) if pending else 0
            pending = max(0, pending - skipped * OPUS_RATE // SAMPLE_RATE)
            tail = at_16k(end) if end else 0
            stop = count - tail if tail <= count - skipped else count
            if stop <= skipped:
                continue  # all of it encoder delay: no audio, and no time to stamp
            time = None
            if packet.pts is not None and time_base:
                shift = math.floor(skipped / SAMPLE_RATE / time_base + 0.5) if skipped else 0
                time = (packet.pts + shift) * time_base
            writer.commit(skipped, stop, time)
