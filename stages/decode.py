"""Decode one participant file (WebM/Opus, or audio in another common container) to 16 kHz
mono PCM on disk.

Streaming: packets are decoded one at a time and the aligned audio is written in blocks of
about a second, so memory does not depend on the length of the track.

Opus is decoded by libopus straight to 16 kHz mono, the rate and layout the later stages use.
FFmpeg's decoders (and so PyAV's) always give Opus at 48 kHz: decoding that, mixing it down
and resampling it costs a third more than libopus's own 16 kHz output, and decoding is most of
what a run does outside the model. The libopus used is the one PyAV's wheels bundle for their
FFmpeg, else the system's; without one, or for other codecs, FFmpeg decodes.

Two channels are averaged, as players mix them down, unless they are one signal in opposite
phase (a microphone with one side wired reversed), which averaging cancels: then half their
difference is taken, and the result says so.

Track time is container time: if the first packet is stamped 2.5 s, the output starts with
2.5 s of silence, and a jump in packet timestamps (a network drop, a mute that stopped the
encoder) becomes silence of the same length. Merging tracks on one clock relies on this.
"""

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import math
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple, Self

import av
import av.error
import av.logging
import numpy as np

from models import FULL_SCALE, SAMPLE_RATE, PcmAudio, file_state, sha256_file, write_error

__all__ = ["DecodeError", "check_file", "decode", "decoder_version"]

log = logging.getLogger(f"trackscribe.{__name__}")

_GAP_TOLERANCE = 0.010
"""WebM stamps packets in whole milliseconds; jumps smaller than this are rounding, not gaps."""


_TRUNCATION_TOLERANCE = 0.5
"""Seconds of declared audio that may be missing before a file counts as truncated."""


_JUMP_BACK = 0.5
"""Seconds by which one packet's timestamp may fall behind the audio before it before the
file counts as damaged: a sender clock running slow falls behind milliseconds at a time, a
muxer that restarted its clock mid-file by whole seconds."""


_SLIPPED = 0.1
"""Seconds: a jump back this long drops a syllable's worth of audio; a slow sender clock
slips a few milliseconds at a time. More than :data:`_JUMP_BACK` dropped in such jumps,
however many, is loss as one long jump is."""

_BEFORE_START_NOTED = 0.1
"""Seconds of audio before the track's start worth a warning: more than an encoder's
delay. More than :data:`_JUMP_BACK` of it is a problem: the transcript lacks it."""

_LATE_FIRST_AUDIO = 60.0
"""Seconds: a file whose first audio is stamped later than this is worth a warning. A
recording's file begins with its audio; its late start is said by its start time."""

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

_OPUS_RATE = 48_000
"""Opus counts pre-skip and end trimming in 48 kHz samples, whatever rate it decodes to."""

_OPUS_MAX_PACKET_S = 0.120
"""The longest audio one Opus packet can hold."""

_OPUS_MAX_SAMPLES = round(_OPUS_MAX_PACKET_S * SAMPLE_RATE)

_BALANCE_FLOOR = 1e-5
"""Mean square per sample (-50 dBFS) a stretch of a stereo track must reach to count in
judging whether its channels are opposite in phase: above a microphone's own noise."""

_OPPOSITE_NOTE = (
    "its two channels are one signal in opposite phase (a microphone wired with one side "
    "reversed): averaged, they cancel, so half their difference was transcribed"
)

_OPPOSITE = 4.0
"""How many times the power of the channels' mean the power of their difference must have
(6 dB) for them to count as opposite in phase. Two unrelated channels give about the same."""


class DecodeError(ValueError):
    """The file cannot be used at all (missing, wrong checksum, not audio). Names the file."""


def decoder_version() -> str:
    """What decodes Opus here (libopus and its version, or FFmpeg): decoders differ in their
    last bits, so results and checkpoints name it."""
    library = _libopus()
    if library is None:
        return f"FFmpeg {av.ffmpeg_version_info}"
    return library.opus_get_version_string().decode()


def decode(
    source: Path,
    pcm_path: Path,
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    known_sha256: str | None = None,
) -> PcmAudio:
    """Decode ``source`` into ``pcm_path`` (raw int16, 16 kHz mono) and describe the result.

    ``expected_sha256``/``expected_size`` (from the manifest) are checked before any decoding,
    so a file that changed since it was listed is refused rather than silently transcribed.
    ``known_sha256`` is the digest the caller took earlier (in another process, say) and
    keyed this work by: a file that no longer has it, or that changes while it is decoded
    (a copy or download still under way), is refused, so that audio of other bytes is never
    kept under that key.
    A file that breaks off part-way (truncated upload, corrupt packet) decodes up to the
    break; the returned :class:`PcmAudio` says where in ``problem``. A decoding that fails
    once it has begun writing ``pcm_path`` removes it; a file refused before that leaves
    ``pcm_path`` as it was. ``pcm_path`` that cannot be written (a full disk) raises
    :class:`models.WriteError`, not :class:`DecodeError`: the file is not at fault.
    """
    source, pcm_path = Path(source), Path(pcm_path)
    before = file_state(source) if source.exists() else None  # check_file says what is wrong
    size, digest = check_file(source, expected_sha256, expected_size)
    if known_sha256 is not None and digest != known_sha256:
        raise DecodeError(f"{source}: changed since it was first read (SHA-256 is now {digest})")
    if size == 0:
        raise DecodeError(f"{source}: empty file (0 bytes; an upload or copy that failed?)")
    container = _open(source)
    with container:
        if not container.streams.audio:
            raise DecodeError(f"{source}: contains no audio stream")
        if container.streams.audio[0].codec_context is None:
            raise DecodeError(f"{source}: its audio is in a format FFmpeg has no decoder for")
        try:
            with pcm_path.open("wb") as out, _ffmpeg_errors() as errors:
                writer = _AlignedWriter(out)
                opposite = False
                try:
                    problem = _decode_stream(container, container.streams.audio[0], writer)
                except _ChannelsOpposite:
                    opposite = True
                    out.seek(0)
                    out.truncate()
                    errors.clear()  # the same damage is found again
                    writer = _AlignedWriter(out)
                    with _open(source) as again:
                        problem = _decode_stream(
                            again, again.streams.audio[0], writer, difference=True
                        )
                writer.close()
            problem = (
                problem
                or _jumped_back(writer)
                or _before_start(writer)
                or _restamped(writer)
                or _missing_tail(
                    container, writer.duration + writer.dropped_seconds + writer.before_start
                )
                or _skipped_damage(errors, writer)
            )
            if writer.first_time is None and problem is not None:
                raise DecodeError(f"{source}: no audio could be decoded ({problem})")
            if len(container.streams.audio) > 1:  # a track holds one participant's voice
                ignored = (
                    f"holds {len(container.streams.audio)} audio streams; only the first was "
                    "transcribed"
                )
                problem = f"{problem}; {ignored}" if problem else ignored
            if file_state(source) != before:
                raise DecodeError(f"{source}: changed while it was being decoded")
        except BaseException as exc:
            # What a failed decoding wrote is of use to no one; that it cannot be removed
            # must not hide why decoding failed.
            with contextlib.suppress(OSError):
                pcm_path.unlink(missing_ok=True)
            if isinstance(exc, OSError) and not isinstance(exc, av.error.FFmpegError):
                # Reading the file is FFmpeg's (its errors end decoding with a problem);
                # an OSError here comes from writing ours: a full disk is not the track's fault.
                raise write_error(pcm_path, exc) from exc
            raise
    if problem:
        log.warning("%s: %s", source, problem)
    if opposite:
        log.warning("%s: %s", source, _OPPOSITE_NOTE)
    if (writer.first_time or 0.0) > _LATE_FIRST_AUDIO:
        log.warning(
            "%s: its first audio is stamped %.1f s into the file; silence was laid before it",
            source,
            writer.first_time,
        )
    if _BEFORE_START_NOTED < writer.before_start <= _JUMP_BACK:  # more is a problem
        log.warning("%s: %s", source, _left_before_start(writer))
    return PcmAudio(
        source=source,
        source_sha256=digest,
        source_size=size,
        pcm_path=pcm_path,
        num_samples=writer.samples_out,
        first_packet_time=writer.first_time or 0.0,
        gap_seconds=writer.gap_seconds,
        gaps=[(round(at, 3), round(seconds, 3)) for at, seconds in writer.gaps],
        dropped_seconds=writer.dropped_seconds,
        channels_opposite=opposite,
        problem=problem,
    )


def check_file(source: Path, sha256: str | None, size: int | None) -> tuple[int, str]:
    """The file's size and SHA-256, checked against the manifest's; :class:`DecodeError`
    when it is missing or does not match."""
    try:
        info = source.stat()
        if not stat.S_ISREG(info.st_mode):  # a folder, or a pipe that reading would wait on
            raise DecodeError(f"{source}: not a file but a {_kind(info.st_mode)}")
        actual_size = info.st_size
        if size is not None and actual_size != size:
            raise DecodeError(f"{source}: size is {actual_size} bytes, the manifest says {size}")
        digest = sha256_file(source)
    except FileNotFoundError:
        raise DecodeError(f"{source}: file not found") from None
    except OSError as exc:  # a link that loops, no permission, a disk that fails
        raise DecodeError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if sha256 is not None and digest != sha256.lower():
        raise DecodeError(f"{source}: SHA-256 is {digest}, the manifest says {sha256}")
    return actual_size, digest


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "pipe"
    return "device or socket"


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    writer: "_AlignedWriter",
    *,
    difference: bool = False,
) -> str | None:
    """Feed all the stream's audio to ``writer``; return why decoding stopped early, or None.

    Raises :class:`_ChannelsOpposite` for a stereo stream whose channels are opposite in
    phase, unless ``difference`` asks for the mix that keeps such a stream's voice.
    """
    head = _OpusHead.of(stream)
    library = _libopus() if head is not None and head.mapping_family == 0 else None
    stopped = None
    try:
        if library and head:
            _decode_opus(container, stream, library, head, writer, difference=difference)
        else:
            balance = None if difference else _ChannelBalance()
            # frame.time builds a Fraction for every 20-ms frame; one float is enough.
            time_base = float(stream.time_base) if stream.time_base else 0.0
            for frame in container.decode(stream):
                time = frame.pts * time_base if frame.pts is not None and time_base else None
                planes = _planes(frame)
                if balance is not None and len(planes) == 2:
                    balance.add(*planes)
                    if balance.decided:
                        balance = None
                writer.write(_mix(planes, difference=difference), time, frame.sample_rate)
    except (av.error.FFmpegError, _OpusError) as exc:
        stopped = exc
    try:  # audio may still be held back after a jump ahead when the file ends (or breaks off)
        writer.finish(_declared_seconds(container))
    except av.error.InvalidDataError as exc:  # held past the longest recording: left out
        stopped = stopped or exc
    if stopped is not None:
        return f"decoding stopped at {writer.duration:.2f} s: {_reason(stopped)}"
    if writer.first_time is None:
        return "the audio stream holds no decodable frames"
    return None


def _decode_opus(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    library: ctypes.CDLL,
    head: "_OpusHead",
    writer: "_AlignedWriter",
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
        _DifferenceDecoder(library) if difference else _OpusDecoder(library) as decoder,
        _StereoProbe(library) if probing else contextlib.nullcontext() as probe,
    ):
        for packet in container.demux(stream):
            if not packet.size:
                continue  # the demuxer's end-of-stream marker
            if probe is not None:
                probe.add(packet)
                if probe.balance.decided:
                    probe.close()
                    probe = None
            start, end = _skip_samples(packet)
            if start:
                pending = start
            count = decoder.decode_into(packet, *writer.free_space(SAMPLE_RATE))
            skipped = min(_at_16k(pending), count) if pending else 0
            pending = max(0, pending - skipped * _OPUS_RATE // SAMPLE_RATE)
            tail = _at_16k(end) if end else 0
            stop = count - tail if tail <= count - skipped else count
            if stop <= skipped:
                continue  # all of it encoder delay: no audio, and no time to stamp
            time = None
            if packet.pts is not None and time_base:
                shift = math.floor(skipped / SAMPLE_RATE / time_base + 0.5) if skipped else 0
                time = (packet.pts + shift) * time_base
            writer.commit(skipped, stop, time)


def _at_16k(samples_48k: int) -> int:
    return round(samples_48k * SAMPLE_RATE / _OPUS_RATE)


class _OpusHead(NamedTuple):
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
    def of(cls, stream: av.AudioStream) -> "_OpusHead | None":
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


def _skip_samples(packet: av.Packet) -> tuple[int, int]:
    """Samples (at 48 kHz) to drop from the start and end of a packet's audio."""
    for side in packet.iter_sidedata():  # cheaper than has_sidedata, 50 times a second
        if side.data_type == "skip_samples":
            data = bytes(side)
            return int.from_bytes(data[0:4], "little"), int.from_bytes(data[4:8], "little")
    return 0, 0


class _OpusError(Exception):
    """libopus refused a packet."""


class _OpusDecoder:
    """One libopus decoder state, decoding to 16 kHz, mono unless asked for both channels
    (libopus mixes a stereo stream down to mono itself, at no extra cost)."""

    def __init__(self, library: ctypes.CDLL, channels: int = 1) -> None:
        self._lib = library
        error = ctypes.c_int()
        self._state = library.opus_decoder_create(SAMPLE_RATE, channels, ctypes.byref(error))
        if error.value != 0 or not self._state:
            raise _OpusError(self._message(error.value))

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
            raise _OpusError(self._message(count))
        return count

    def _message(self, code: int) -> str:
        return f"libopus: {self._lib.opus_strerror(code).decode()}"


class _ChannelsOpposite(Exception):
    """A stereo track's channels were found opposite in phase: decode it again, taking their
    difference."""


class _ChannelBalance:
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
        """Take a stretch of both channels; raise :class:`_ChannelsOpposite` once they are
        known to be opposite."""
        ll, rr, lr = float(left @ left), float(right @ right), float(left @ right)
        if ll + rr < 2 * _BALANCE_FLOOR * left.size:
            return
        self._mid += ll + rr + 2 * lr
        self._side += ll + rr - 2 * lr
        self._heard += left.size
        if self.decided and self._side > _OPPOSITE * self._mid:
            raise _ChannelsOpposite


class _StereoDecoder(_OpusDecoder):
    """Decodes both channels of a stereo stream, into a buffer of its own."""

    def __init__(self, library: ctypes.CDLL) -> None:
        super().__init__(library, channels=2)
        self._buffer = np.empty(2 * _OPUS_MAX_SAMPLES, np.float32)

    def channels_of(self, packet: av.Packet) -> tuple[np.ndarray, np.ndarray]:
        """The packet's left and right channels (views of the buffer, until the next)."""
        count = super().decode_into(packet, self._buffer.ctypes.data, _OPUS_MAX_SAMPLES)
        both = self._buffer[: 2 * count]
        return both[0::2], both[1::2]


class _StereoProbe(_StereoDecoder):
    """A second decoder that decodes a stereo stream's first packets in stereo, for
    :class:`_ChannelBalance`, while the first decodes it to mono: decoding both channels
    costs a third more, and is done only until the first second of sound has been heard."""

    def __init__(self, library: ctypes.CDLL) -> None:
        super().__init__(library)
        self.balance = _ChannelBalance()

    def add(self, packet: av.Packet) -> None:
        self.balance.add(*self.channels_of(packet))


class _DifferenceDecoder(_StereoDecoder):
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
def _libopus() -> ctypes.CDLL | None:
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


def _planes(frame: av.AudioFrame) -> list[np.ndarray]:
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


def _mix(planes: list[np.ndarray], *, difference: bool = False) -> np.ndarray:
    """Channels mixed to mono: averaged, or for two opposite in phase, half their difference."""
    if len(planes) == 1:
        return planes[0]
    if difference and len(planes) == 2:
        return (planes[0] - planes[1]) * np.float32(0.5)
    return np.stack(planes).mean(axis=0, dtype=np.float32)


def _jumped_back(writer: "_AlignedWriter") -> str | None:
    """Timestamps that go back by seconds (a muxer that restarted its clock mid-file) stamp
    audio over audio already laid down; it is dropped to keep the clock, and that is loss."""
    if writer.largest_jump_back <= _JUMP_BACK and writer.dropped_in_chunks <= _JUMP_BACK:
        return None  # a slow sender clock's slips, or one short overlap
    return (
        f"its timestamps went back by up to {writer.largest_jump_back:.2f} s; "
        f"{writer.dropped_seconds:.2f} s of audio stamped over audio before it was dropped"
    )


def _before_start(writer: "_AlignedWriter") -> str | None:
    """Audio stamped before the track's start cannot be placed on its clock, and is left
    out: more than an encoder's delay of it is audio the transcript does not hold."""
    return _left_before_start(writer) if writer.before_start > _JUMP_BACK else None


def _left_before_start(writer: "_AlignedWriter") -> str:
    return (
        f"{writer.before_start:.2f} s of audio stamped before the track's start (time 0 of "
        "the file) was left out"
    )


@contextlib.contextmanager
def _ffmpeg_errors() -> Iterator[list[tuple[int, str, str]]]:
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


def _skipped_damage(errors: list[tuple[int, str, str]], writer: "_AlignedWriter") -> str | None:
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


def _restamped(writer: "_AlignedWriter") -> str | None:
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


def _missing_tail(container: av.container.InputContainer, decoded: float) -> str | None:
    """A file cut short (an interrupted upload) often decodes without any error: FFmpeg just
    stops at the end of the bytes. The duration its header declares gives it away."""
    declared = _declared_seconds(container)
    if declared is None:
        return None  # live-muxed files may not declare one
    if declared - decoded > _TRUNCATION_TOLERANCE:
        return f"the file ends at {decoded:.2f} s but its header says {declared:.2f} s (truncated)"
    return None


def _declared_seconds(container: av.container.InputContainer) -> float | None:
    """How long the file's header says it is (None: it does not say)."""
    return None if container.duration is None else container.duration / av.time_base


_CONTAINERS = (
    "matroska,webm,ogg,wav,w64,mp3,flac,mov,mp4,m4a,aac,aiff,caf,mpegts,asf,amr,ac3,eac3,wv,au"
)
"""The containers FFmpeg may read a track as. Not any it knows: a text file named ``.webm``
that is an FFmpeg playlist (``ffconcat``, HLS) would have it read other files, and the audio
transcribed would not be the bytes whose SHA-256 the transcript gives."""


def _open(source: Path) -> av.container.InputContainer:
    """``source`` opened for demuxing, as a file and nothing else: a name FFmpeg would read
    as a URL (``concat:a|b``, ``subfile,,…:a``, both legal file names) is opened as the file of
    that name."""
    with _ffmpeg_errors() as said:
        try:
            return av.open(
                f"file:{source.absolute()}",
                mode="r",
                container_options={"format_whitelist": _CONTAINERS},
            )
        except av.error.FFmpegError as exc:
            failure = exc
    if any("not on whitelist" in message for _, _, message in said):
        raise DecodeError(
            f"{source}: not a file of an audio format trackscribe reads (WebM, Ogg, WAV, MP3, "
            "FLAC, MP4/M4A, AAC, AIFF, CAF, MPEG-TS, WMA, AMR, AC-3, WavPack, AU)"
        )
    raise DecodeError(f"{source}: not a readable audio file ({_reason(failure)})")


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


@dataclass
class _Held:
    """Audio held back after a long jump ahead, until it is clear what the jump was."""

    start: int  # the position (source-rate samples) where the jump began
    jump: int  # how far ahead the timestamps jumped, in samples
    audio: list[np.ndarray]
    count: int  # samples held
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (at, samples) into what is held


class _AlignedWriter:
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
            if abs(in_sequence - declared_end) <= _TRUNCATION_TOLERANCE:
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
        self._block = np.empty(rate + math.ceil(_OPUS_MAX_PACKET_S * rate), np.float32)
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
