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
import logging
import stat
from pathlib import Path

import av
import av.error

from models import PcmAudio, file_state, sha256_file, write_error

from ._channels import OPPOSITE_NOTE, ChannelBalance, ChannelsOpposite, channel_planes, mix
from ._ffmpeg import declared_seconds, ffmpeg_errors, missing_tail, skipped_damage
from ._opus import OpusError, OpusHead, decode_opus
from ._opus import libopus as _libopus
from ._writer import (
    JUMP_BACK,
    AlignedWriter,
    before_start_problem,
    jump_back_problem,
    left_before_start,
    restamp_problem,
)

__all__ = ["DecodeError", "check_file", "decode", "decoder_version"]

log = logging.getLogger(f"trackscribe.{__name__}")


_BEFORE_START_NOTED = 0.1
"""Seconds of audio before the track's start worth a warning: more than an encoder's
delay. More than :data:`JUMP_BACK` of it is a problem: the transcript lacks it."""


_LATE_FIRST_AUDIO = 60.0
"""Seconds: a file whose first audio is stamped later than this is worth a warning. A
recording's file begins with its audio; its late start is said by its start time."""


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
            with pcm_path.open("wb") as out, ffmpeg_errors() as errors:
                writer = AlignedWriter(out)
                opposite = False
                try:
                    problem = _decode_stream(container, container.streams.audio[0], writer)
                except ChannelsOpposite:
                    opposite = True
                    out.seek(0)
                    out.truncate()
                    errors.clear()  # the same damage is found again
                    writer = AlignedWriter(out)
                    with _open(source) as again:
                        problem = _decode_stream(
                            again, again.streams.audio[0], writer, difference=True
                        )
                writer.close()
            problem = (
                problem
                or jump_back_problem(writer)
                or before_start_problem(writer)
                or restamp_problem(writer)
                or missing_tail(
                    container, writer.duration + writer.dropped_seconds + writer.before_start
                )
                or skipped_damage(errors, writer)
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
        log.warning("%s: %s", source, OPPOSITE_NOTE)
    if (writer.first_time or 0.0) > _LATE_FIRST_AUDIO:
        log.warning(
            "%s: its first audio is stamped %.1f s into the file; silence was laid before it",
            source,
            writer.first_time,
        )
    if _BEFORE_START_NOTED < writer.before_start <= JUMP_BACK:  # more is a problem
        log.warning("%s: %s", source, left_before_start(writer))
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
    writer: "AlignedWriter",
    *,
    difference: bool = False,
) -> str | None:
    """Feed all the stream's audio to ``writer``; return why decoding stopped early, or None.

    Raises :class:`ChannelsOpposite` for a stereo stream whose channels are opposite in
    phase, unless ``difference`` asks for the mix that keeps such a stream's voice.
    """
    head = OpusHead.of(stream)
    library = _libopus() if head is not None and head.mapping_family == 0 else None
    stopped = None
    try:
        if library and head:
            decode_opus(container, stream, library, head, writer, difference=difference)
        else:
            balance = None if difference else ChannelBalance()
            # frame.time builds a Fraction for every 20-ms frame; one float is enough.
            time_base = float(stream.time_base) if stream.time_base else 0.0
            for frame in container.decode(stream):
                time = frame.pts * time_base if frame.pts is not None and time_base else None
                planes = channel_planes(frame)
                if balance is not None and len(planes) == 2:
                    balance.add(*planes)
                    if balance.decided:
                        balance = None
                writer.write(mix(planes, difference=difference), time, frame.sample_rate)
    except (av.error.FFmpegError, OpusError) as exc:
        stopped = exc
    try:  # audio may still be held back after a jump ahead when the file ends (or breaks off)
        writer.finish(declared_seconds(container))
    except av.error.InvalidDataError as exc:  # held past the longest recording: left out
        stopped = stopped or exc
    if stopped is not None:
        return f"decoding stopped at {writer.duration:.2f} s: {_reason(stopped)}"
    if writer.first_time is None:
        return "the audio stream holds no decodable frames"
    return None


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
    with ffmpeg_errors() as said:
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
