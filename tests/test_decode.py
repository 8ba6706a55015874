"""Decoding: container time is track time, memory does not grow, bad files say what is wrong."""

import ctypes.util
import fractions
import logging
import os
import struct
import tracemalloc
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest

import stages.decode
from models import SAMPLE_RATE, sha256_file
from stages.decode import DecodeError, decode, decoder_version

from .conftest import silence, tone, write_webm


@pytest.fixture(params=["libopus", "ffmpeg"], autouse=True)
def opus_decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every behaviour below holds whichever decodes Opus: libopus at 16 kHz (the default) or
    FFmpeg at 48 kHz (where no libopus can be found)."""
    if request.param == "ffmpeg":
        monkeypatch.setattr(stages.decode, "_libopus", lambda: None)
    else:
        assert decoder_version().startswith("libopus")  # PyAV's wheels bundle it
    return request.param


def _onset(x: np.ndarray, db: float = -30.0) -> float:
    """Time of the first 10-ms block louder than ``db``."""
    blocks = x[: x.size // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt(np.mean(blocks**2, axis=1)) > 10 ** (db / 20))
    return loud[0] * 160 / SAMPLE_RATE


def test_a_file_of_more_than_one_audio_stream_says_that_only_the_first_was_used(tmp_path):
    # A track recording holds one voice; a file of two, made elsewhere, must not lose the
    # second one's words in silence.
    path = tmp_path / "two.webm"
    with av.open(str(path), mode="w", format="webm") as container:
        streams = [container.add_stream("libopus", rate=48_000, layout="mono") for _ in "ab"]
        for stream, samples in zip(streams, (silence(1.0), tone(1.0)), strict=True):
            frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48_000, 0
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
    audio = decode(path, tmp_path / "two.pcm")
    assert audio.problem == "holds 2 audio streams; only the first was transcribed"


def test_a_sample_track_decodes_to_16k_mono_of_the_right_length(sample_manifest, tmp_path):
    track = sample_manifest.tracks[0]
    audio = decode(sample_manifest.track_path(track), tmp_path / "a.pcm")
    assert audio.problem is None
    assert audio.duration == pytest.approx(50.5, abs=0.05)
    assert (tmp_path / "a.pcm").stat().st_size == audio.num_samples * 2
    assert audio.source_sha256 == track.sha256 and audio.source_size == track.size


def test_audio_starts_at_the_first_packets_timestamp(tmp_path):
    path = write_webm(tmp_path / "late.webm", tone(1.0), start=2.5)
    audio = decode(path, tmp_path / "late.pcm")
    x = audio.read()
    assert audio.problem is None and audio.gap_seconds == 0
    assert audio.first_packet_time == pytest.approx(2.5, abs=0.002)
    assert _onset(x) == pytest.approx(2.5, abs=0.02)
    assert np.max(np.abs(x[: int(2.4 * SAMPLE_RATE)])) == 0
    assert audio.duration == pytest.approx(3.5, abs=0.03)


def test_audio_first_stamped_minutes_into_a_file_is_placed_there_with_a_warning(tmp_path, caplog):
    path = write_webm(tmp_path / "minutes.webm", tone(1.0), start=90.0)
    with caplog.at_level(logging.WARNING, "trackscribe"):
        audio = decode(path, tmp_path / "minutes.pcm")
    assert audio.problem is None and audio.duration == pytest.approx(91.0, abs=0.03)
    assert "minutes.webm: its first audio is stamped 90.0 s into the file" in caplog.text


def test_a_failed_decoding_says_why_even_when_what_it_wrote_cannot_be_removed(
    tmp_path, monkeypatch
):
    path = write_webm(tmp_path / "a.webm", tone(1.0))

    def cannot_remove(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", cannot_remove)
    monkeypatch.setattr(stages.decode, "_decode_stream", lambda *_: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        decode(path, tmp_path / "a.pcm")


def test_a_gap_in_packet_timestamps_becomes_silence_of_the_same_length(tmp_path):
    samples = np.concatenate([tone(1.0), tone(1.0, freq=880)])
    path = write_webm(tmp_path / "gap.webm", samples, gaps={1.0: 3.0})
    audio = decode(path, tmp_path / "gap.pcm")
    x = audio.read()
    assert audio.gap_seconds == pytest.approx(3.0, abs=0.02)
    [(at, seconds)] = audio.gaps  # where, for the provenance: not only how much
    assert (at, seconds) == (pytest.approx(1.0, abs=0.03), pytest.approx(3.0, abs=0.02))
    assert audio.duration == pytest.approx(5.0, abs=0.03)
    assert np.max(np.abs(audio.read(1.1, 3.9))) < 1e-3
    assert _onset(audio.read(3.5)) + 3.5 == pytest.approx(4.0, abs=0.02)
    assert x.size == audio.num_samples


def test_stereo_is_downmixed_to_mono(tmp_path):
    path = write_webm(tmp_path / "stereo.webm", tone(2.0), channels=2)
    audio = decode(path, tmp_path / "stereo.pcm")
    assert audio.duration == pytest.approx(2.0, abs=0.03)
    level = np.sqrt(np.mean(audio.read(0.5, 1.5) ** 2))
    assert 20 * np.log10(level) == pytest.approx(-15.0, abs=1.0)  # -12 dB peak sine: -15 dB RMS


def test_a_stereo_track_whose_channels_are_opposite_in_phase_keeps_its_voice(tmp_path, caplog):
    # A microphone with one side wired reversed: averaged, as every player mixes it down,
    # the voice cancels to nothing and its speaker would vanish from the transcript.
    voice = np.concatenate([silence(1.0), tone(3.0)])
    path = write_webm(tmp_path / "opposite.webm", voice, channels=2, opposite=True)
    with caplog.at_level(logging.WARNING, logger="trackscribe"):
        audio = decode(path, tmp_path / "opposite.pcm")
    assert audio.channels_opposite
    assert audio.duration == pytest.approx(4.0, abs=0.03)
    level = np.sqrt(np.mean(audio.read(1.5, 3.5) ** 2))
    assert 20 * np.log10(level) == pytest.approx(-15.0, abs=1.0)  # the voice at its own level
    assert np.max(np.abs(audio.read(0.0, 0.9))) < 1e-3  # and where it was, not earlier
    assert audio.problem is None  # no audio is missing: a note, not a fault
    [warning] = [r.getMessage() for r in caplog.records if "opposite phase" in r.getMessage()]
    assert str(path) in warning and "difference" in warning


def test_stereo_channels_that_agree_or_differ_are_averaged_as_usual(tmp_path):
    same = decode(write_webm(tmp_path / "same.webm", tone(2.0), channels=2), tmp_path / "s.pcm")
    assert not same.channels_opposite
    # Two unrelated voices, one a channel: each is kept at half its level, neither cancelled.
    path = tmp_path / "two.wav"
    left, right = tone(2.0, 300.0), tone(2.0, 700.0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes((np.stack([left, right]).T * 32767).astype("<i2").tobytes())
    both = decode(path, tmp_path / "two.pcm")
    assert not both.channels_opposite
    spectrum = np.abs(np.fft.rfft(both.read(0.5, 1.5)))  # 1 s: one bin per hertz
    assert spectrum[300] == pytest.approx(spectrum[700], rel=0.1)
    assert 20 * np.log10(np.sqrt(np.mean(both.read(0.5, 1.5) ** 2))) == pytest.approx(
        -18.0, abs=1.0
    )  # two -21 dB halves


def test_a_wav_file_whose_channels_are_opposite_in_phase_keeps_its_voice(tmp_path):
    path = tmp_path / "opposite.wav"
    voice = tone(2.0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes((np.stack([voice, -voice]).T * 32767).astype("<i2").tobytes())
    audio = decode(path, tmp_path / "opposite.pcm")
    assert audio.channels_opposite
    level = np.sqrt(np.mean(audio.read(0.5, 1.5) ** 2))
    assert 20 * np.log10(level) == pytest.approx(-15.0, abs=1.0)


def test_the_output_gain_in_the_opus_header_is_applied(tmp_path):
    path = write_webm(tmp_path / "gain.webm", tone(2.0))
    data = bytearray(path.read_bytes())
    head = data.index(b"OpusHead")
    data[head + 16 : head + 18] = round(6.0206 * 256).to_bytes(2, "little", signed=True)
    path.write_bytes(bytes(data))  # +6 dB: twice the amplitude
    audio = decode(path, tmp_path / "gain.pcm")
    level = np.sqrt(np.mean(audio.read(0.5, 1.5) ** 2))
    assert 20 * np.log10(level) == pytest.approx(-15.0 + 6.0, abs=1.0)


def test_a_truncated_file_decodes_as_far_as_it_can_and_says_where_it_broke(tmp_path):
    whole = write_webm(tmp_path / "whole.webm", tone(10.0))
    cut = tmp_path / "cut.webm"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    audio = decode(cut, tmp_path / "cut.pcm")
    assert 4.0 < audio.duration < 7.0
    assert audio.problem is not None
    assert f"ends at {audio.duration:.2f} s but its header says 10.0" in audio.problem


def test_a_file_that_is_not_audio_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "notes.webm"
    path.write_text("these are meeting notes, not audio\n" * 50)
    with pytest.raises(DecodeError, match=r"notes\.webm: not a readable audio file"):
        decode(path, tmp_path / "x.pcm")


def test_a_playlist_named_as_a_track_is_refused_not_followed_to_other_files(tmp_path):
    # FFmpeg reads a text file as a playlist of other files: the audio transcribed would not
    # be the bytes the transcript's SHA-256 names.
    write_webm(tmp_path / "other.webm", tone(5.0))
    playlist = tmp_path / "default_user-a_peer-b_peer_audio_1760000000000.webm"
    playlist.write_text("ffconcat version 1.0\nfile other.webm\n")
    with pytest.raises(DecodeError, match=r"_1760000000000\.webm: not a file of an audio format"):
        decode(playlist, tmp_path / "x.pcm")


@pytest.mark.parametrize("name", ["concat:a.webm|a.webm", "file:a.webm", "subfile,,end,1,,:a.webm"])
def test_a_track_named_like_an_ffmpeg_url_is_the_file_of_that_name(tmp_path, monkeypatch, name):
    write_webm(tmp_path / "a.webm", tone(1.0))
    write_webm(tmp_path / name, tone(3.0))
    monkeypatch.chdir(tmp_path)  # a manifest's relative paths, from the meeting's folder
    assert decode(Path(name), tmp_path / "x.pcm").duration == pytest.approx(3.0, abs=0.05)


def test_an_empty_file_is_named_as_empty_not_as_unreadable(tmp_path):
    path = tmp_path / "default_user-a_peer-b_peer_audio_1760000000000.webm"
    path.touch()  # what an upload that failed can leave
    with pytest.raises(DecodeError, match=r"peer_audio_1760000000000\.webm: empty file \(0 bytes"):
        decode(path, tmp_path / "x.pcm")


def test_a_missing_file_or_a_wrong_checksum_is_refused_before_decoding(sample_manifest, tmp_path):
    with pytest.raises(DecodeError, match=r"absent\.webm: file not found"):
        decode(tmp_path / "absent.webm", tmp_path / "x.pcm")
    track = sample_manifest.tracks[0]
    path = sample_manifest.track_path(track)
    with pytest.raises(DecodeError, match=r"SHA-256 is .* the manifest says"):
        decode(path, tmp_path / "x.pcm", expected_sha256="0" * 64)
    with pytest.raises(DecodeError, match=r"size is .* the manifest says 1"):
        decode(path, tmp_path / "x.pcm", expected_size=1)
    (tmp_path / "folder.webm").mkdir()
    with pytest.raises(DecodeError, match=r"folder\.webm: not a file but a folder"):
        decode(tmp_path / "folder.webm", tmp_path / "x.pcm", expected_size=144685)
    os.mkfifo(tmp_path / "pipe.webm")  # reading it would wait for a writer forever
    with pytest.raises(DecodeError, match=r"pipe\.webm: not a file but a pipe"):
        decode(tmp_path / "pipe.webm", tmp_path / "x.pcm")
    (tmp_path / "loop.webm").symlink_to("loop.webm")  # said as the system says it
    with pytest.raises(DecodeError, match=r"loop\.webm: cannot read: Too many levels of symbolic"):
        decode(tmp_path / "loop.webm", tmp_path / "x.pcm")


def test_a_decoding_that_fails_midway_leaves_nothing_and_a_refused_file_touches_nothing(
    sample_manifest, tmp_path
):
    pcm = tmp_path / "x.pcm"
    pcm.write_bytes(b"kept")
    source = sample_manifest.track_path(sample_manifest.tracks[0])
    with pytest.raises(DecodeError, match="size is"):
        decode(source, pcm, expected_size=1)
    assert pcm.read_bytes() == b"kept"  # refused before decoding began: not the decoder's

    with av.open(str(source)) as container:
        first_packet = next(container.demux(container.streams.audio[0])).pos
    header_only = tmp_path / "header.webm"  # an audio stream, and not one packet of it
    header_only.write_bytes(source.read_bytes()[:first_packet])
    with pytest.raises(DecodeError, match="no audio could be decoded"):
        decode(header_only, pcm)
    assert not pcm.exists()


def test_a_file_that_changes_after_it_was_hashed_or_while_it_decodes_is_refused(
    tmp_path, monkeypatch
):
    # Work is kept under the digest taken when the meeting began: audio of other bytes
    # (a sync tool or a download rewriting the file) must never be kept under it.
    source = tmp_path / "t.webm"
    write_webm(source, tone(1.0))
    digest = sha256_file(source)
    write_webm(source, tone(2.0))  # replaced between the hashing and the decoding
    with pytest.raises(DecodeError, match=r"t\.webm: changed since it was first read"):
        decode(source, tmp_path / "x.pcm", known_sha256=digest)
    assert not (tmp_path / "x.pcm").exists()

    decode_stream = stages.decode._decode_stream

    def rewritten_midway(container, stream, writer):
        problem = decode_stream(container, stream, writer)
        with source.open("ab") as f:  # still being written by someone else
            f.write(b"\0")
        return problem

    monkeypatch.setattr(stages.decode, "_decode_stream", rewritten_midway)
    with pytest.raises(DecodeError, match=r"t\.webm: changed while it was being decoded"):
        decode(source, tmp_path / "x.pcm", known_sha256=sha256_file(source))
    assert not (tmp_path / "x.pcm").exists()


def test_memory_does_not_grow_with_track_length(tmp_path):
    rng = np.random.default_rng(0)

    def peak(seconds: float) -> int:
        noise = (0.05 * rng.standard_normal(round(seconds * 48_000))).astype(np.float32)
        path = write_webm(tmp_path / f"{seconds}.webm", noise)
        tracemalloc.start()
        decode(path, tmp_path / f"{seconds}.pcm")
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    short, long = peak(20), peak(200)
    # Ten times the audio; the peak stays within a small constant, far below 200 s of PCM.
    assert long < short + 1_000_000
    assert long < 200 * SAMPLE_RATE * 2 / 4


def test_a_long_timestamp_gap_does_not_cost_memory(tmp_path):
    path = write_webm(
        tmp_path / "muted.webm", np.concatenate([tone(1.0), tone(1.0)]), gaps={1.0: 600.0}
    )  # a ten-minute mute
    tracemalloc.start()
    audio = decode(path, tmp_path / "muted.pcm")
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert audio.duration == pytest.approx(602.0, abs=0.05)
    assert top < 20_000_000  # ten minutes at 48 kHz in float32 alone would be 115 MB


def test_timestamps_that_fall_behind_the_audio_keep_it_on_container_time(tmp_path):
    # Frames of 20 ms stamped 19 ms apart: a click every 10 s of samples sits at 9.5 s steps
    # of container time, and the decoded track must put it there.
    samples = np.zeros(50 * 48_000, np.float32)
    for k in range(5):
        samples[k * 480_000 : k * 480_000 + 4800] = tone(0.1)
    audio = decode(write_webm(tmp_path / "slow.webm", samples, clock=0.95), tmp_path / "s.pcm")
    x = audio.read()
    blocks = np.sqrt(np.mean(x[: x.size // 160 * 160].reshape(-1, 160) ** 2, axis=1))
    loud = np.flatnonzero(blocks > 0.01) * 160 / SAMPLE_RATE
    onsets = [t for i, t in enumerate(loud) if i == 0 or t - loud[i - 1] > 1]
    assert onsets == pytest.approx([0.0, 9.5, 19.0, 28.5, 38.0], abs=0.03)
    assert audio.dropped_seconds == pytest.approx(2.5, abs=0.05)
    assert audio.problem is None


def test_short_jumps_back_that_add_up_to_seconds_of_lost_audio_are_a_problem(tmp_path):
    # Each cluster (about 5 s) stamped 0.3 s earlier than the one before it: no one jump is
    # long, but every one stamps 0.3 s of speech over audio already laid down.
    data = write_webm(tmp_path / "whole.webm", tone(30.0)).read_bytes()
    for k in range(1, len(_cluster_timecodes(data))):
        at = _cluster_timecodes(data)[k]
        ms = int.from_bytes(data[at : at + (data[at - 1] & 0x7F)], "big")
        data = _restamped(data, k, ms - 300 * k)
    (tmp_path / "slipping.webm").write_bytes(data)
    audio = decode(tmp_path / "slipping.webm", tmp_path / "s.pcm")
    lost = audio.dropped_seconds
    assert 1.2 < lost < 0.3 * len(_cluster_timecodes(data))  # the last cluster is short
    assert audio.problem == (
        f"its timestamps went back by up to 0.30 s; {lost:.2f} s of audio stamped over audio "
        "before it was dropped"
    )


def test_audio_stamped_before_the_tracks_start_is_left_out_and_said_so(tmp_path):
    # An Ogg file whose first second is stamped before time 0 (a 300 Hz tone), then 880 Hz.
    path = tmp_path / "early.ogg"
    samples = np.concatenate([tone(1.0, freq=300), tone(1.0, freq=880)])
    with av.open(str(path), "w", "ogg", options={"avoid_negative_ts": "disabled"}) as container:
        stream = container.add_stream("libopus", rate=48_000, layout="mono")
        for at in range(0, samples.size, 960):
            frame = av.AudioFrame.from_ndarray(samples[None, at : at + 960], "flt", "mono")
            frame.sample_rate, frame.pts = 48_000, at - 48_000
            frame.time_base = fractions.Fraction(1, 48_000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    audio = decode(path, tmp_path / "early.pcm")
    assert audio.dropped_seconds == 0  # not audio stamped over audio: the clock is kept
    assert audio.duration == pytest.approx(1.0, abs=0.02)
    spectrum = np.abs(np.fft.rfft(audio.read()[1600:8000]))
    assert np.argmax(spectrum) * SAMPLE_RATE / 6400 == pytest.approx(880, abs=5)
    # A second of it is a second the transcript does not hold.
    assert audio.problem == (
        "0.99 s of audio stamped before the track's start (time 0 of the file) was left out"
    )


def _restart_clock_at_second_cluster(path):
    """Set the WebM's second cluster's timecode to 0, as a muxer that restarted its clock
    mid-file would write it."""
    data = bytearray(path.read_bytes())
    cluster = b"\x1f\x43\xb6\x75"
    second = data.index(cluster, data.index(cluster) + 4)
    size_length = 9 - data[second + 4].bit_length()  # an EBML size: leading zeros + 1 bytes
    timecode = second + 4 + size_length
    assert data[timecode] == 0xE7  # the cluster's first child, its Timecode
    length = data[timecode + 1] & 0x7F
    data[timecode + 2 : timecode + 2 + length] = bytes(length)
    path.write_bytes(bytes(data))


def _cluster_timecodes(data: bytes) -> list[int]:
    """Where each WebM cluster's Timecode value starts (after its element ID and size)."""
    cluster, places = b"\x1f\x43\xb6\x75", []
    at = data.find(cluster)
    while at >= 0:
        size_length = 9 - data[at + 4].bit_length()
        timecode = at + 4 + size_length
        assert data[timecode] == 0xE7
        places.append(timecode + 2)
        at = data.find(cluster, at + 4)
    return places


@pytest.mark.parametrize(
    ("cluster", "gaps", "length"),
    [
        (1, {}, 16.0),  # the next clusters are on time again
        (-1, {}, 16.0),  # the last: the header's duration says where the file ends
        (1, {7.0: 0.1}, 16.1),  # a packet lost inside the damaged cluster too
    ],
    ids=["a middle cluster", "the last cluster", "with a gap inside"],
)
def test_a_cluster_stamped_far_ahead_by_a_flipped_bit_is_put_back_in_sequence(
    tmp_path, cluster, gaps, length
):
    # One bit of one cluster's timecode: that cluster (5 s) reads as 32.8 s later. Taken at
    # its word, the file would get 32.8 s of silence, and lose everything after that cluster
    # as stamped over it (or, for the last cluster, put its words 33 s late).
    samples = np.concatenate([tone(6.0), silence(2.0), tone(8.0)])
    path = write_webm(tmp_path / "flipped.webm", samples, gaps=gaps)
    data = bytearray(path.read_bytes())
    data[_cluster_timecodes(data)[cluster]] |= 0x80  # 4,981 ms becomes 37,749 ms
    path.write_bytes(bytes(data))
    audio = decode(path, tmp_path / "flipped.pcm")
    assert audio.duration == pytest.approx(length, abs=0.05)
    assert audio.gap_seconds == pytest.approx(length - 16.0, abs=0.01)
    assert audio.dropped_seconds == 0
    onset = 8.0 + sum(gaps.values())
    assert _onset(audio.read(onset - 0.5)) + onset - 0.5 == pytest.approx(onset, abs=0.03)
    assert audio.problem is not None and "damaged timestamps" in audio.problem
    assert "stamped 33 s ahead" in audio.problem


def _live_written_and_cut(tmp_path: Path) -> tuple[Path, Path]:
    """A 16-s WebM written live (no duration in its header), and a copy cut at 60 %."""
    whole = write_webm(tmp_path / "whole.webm", tone(16.0))
    live = tmp_path / "live.webm"
    with av.open(str(whole)) as source, av.open(str(live), "w", "webm", {"live": "1"}) as out:
        stream = out.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux(source.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = live.read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: len(data) * 6 // 10])
    return live, cut


def test_a_live_written_file_cut_short_is_reported_though_it_decodes_without_error(tmp_path):
    # Written live (no duration in its header, as a recorder streaming to storage writes it)
    # and cut mid-cluster: FFmpeg only logs "File ended prematurely" and stops, and nothing
    # else shows that the end of the recording is gone.
    live, cut = _live_written_and_cut(tmp_path)
    assert decode(live, tmp_path / "live.pcm").problem is None
    audio = decode(cut, tmp_path / "cut.pcm")
    assert 5 < audio.duration < 14
    assert audio.problem == (
        f"the file is damaged (FFmpeg: File ended prematurely); {audio.duration:.2f} s "
        "decoded, and audio may be missing"
    )


def test_ffmpeg_log_settings_of_the_caller_are_kept_and_its_messages_still_reach_it(
    tmp_path, caplog
):
    # Errors are captured while decoding; a caller who asked for FFmpeg's warnings still
    # gets them, and its settings are as it left them, also with decodings in threads.
    _, cut = _live_written_and_cut(tmp_path)
    av.logging.set_level(av.logging.WARNING)
    try:
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda i: decode(cut, tmp_path / f"{i}.pcm"), range(4)))
        assert all("File ended prematurely" in audio.problem for audio in done)
        assert av.logging.get_level() == av.logging.WARNING
        assert av.logging.get_skip_repeated()
    finally:
        av.logging.set_level(None)
    said = [r for r in caplog.records if r.name == "libav.matroska,webm"]
    assert [r.getMessage() for r in said] == ["File ended prematurely"] * 4


def _element_size(data: bytes, at: int) -> tuple[int, int]:
    """An EBML element's size at ``at``: (value, bytes it takes)."""
    length = 9 - data[at].bit_length()
    return int.from_bytes(data[at : at + length], "big") & ((1 << (7 * length)) - 1), length


def _restamped(data: bytes, cluster: int, ms: int) -> bytes:
    """``data`` with one cluster's Timecode rewritten as ``ms``, in eight bytes (so any time
    fits), the Cluster's and the Segment's sizes grown to match."""
    out = bytearray(data)
    at = _cluster_timecodes(data)[cluster] - 2  # the Timecode element's ID
    old = 2 + data[at + 1] - 0x80  # ID, a one-byte size, the value
    out[at : at + old] = b"\xe7\x88" + ms.to_bytes(8, "big")
    grow = 10 - old
    for element in (b"\x1f\x43\xb6\x75", b"\x18\x53\x80\x67"):  # its Cluster, the Segment
        start = data.rfind(element, 0, at) if element[0] == 0x1F else data.find(element)
        size, length = _element_size(data, start + 4)
        if size != (1 << (7 * length)) - 1:  # not "unknown"
            out[start + 4 : start + 4 + length] = ((1 << (7 * length)) | size + grow).to_bytes(
                length, "big"
            )
    return bytes(out)


def test_a_cluster_stamped_past_the_longest_recording_is_put_back_in_sequence_too(tmp_path):
    # Damage can say any time; the clusters after it, on time again, show what it was.
    path = write_webm(tmp_path / "whole.webm", np.concatenate([tone(6.0), tone(10.0)]))
    damaged = tmp_path / "damaged.webm"
    damaged.write_bytes(_restamped(path.read_bytes(), 1, 30 * 3_600_000 + 4981))
    audio = decode(damaged, tmp_path / "damaged.pcm")
    assert audio.duration == pytest.approx(16.0, abs=0.05)  # nothing after it lost
    assert "stamped 108000 s ahead" in audio.problem and "kept in sequence" in audio.problem


def test_every_gap_is_listed_where_it_lies_even_one_in_audio_held_after_a_long_jump(tmp_path):
    # A gap in the audio held back after a long jump counted in the total, not in the list
    # the provenance shows.
    path = write_webm(tmp_path / "paused.webm", tone(40.0), gaps={1.0: 10.0, 2.0: 0.5})
    audio = decode(path, tmp_path / "paused.pcm")
    assert [(round(at), round(seconds, 1)) for at, seconds in audio.gaps] == [(1, 10.0), (12, 0.5)]
    assert sum(seconds for _, seconds in audio.gaps) == pytest.approx(audio.gap_seconds, abs=1e-3)


def test_a_pause_longer_than_a_cluster_is_still_a_pause(tmp_path):
    # Held back after the jump until the audio after it shows it was real: more than a
    # cluster's worth of audio going on from the new time is enough.
    path = write_webm(tmp_path / "paused.webm", tone(40.0), gaps={1.0: 10.0})
    audio = decode(path, tmp_path / "paused.pcm")
    assert audio.gap_seconds == pytest.approx(10.0, abs=0.02)
    assert audio.duration == pytest.approx(50.0, abs=0.05)
    assert np.max(np.abs(audio.read(1.2, 10.8))) < 1e-3
    assert audio.problem is None


def test_a_timestamp_past_the_longest_recording_stops_decoding_instead_of_filling_the_disk(
    tmp_path,
):
    # A day of silence would be 2.8 GB of scratch audio and gigabytes of memory later on.
    path = write_webm(tmp_path / "day.webm", tone(6.0), gaps={2.0: 25 * 3600.0})
    audio = decode(path, tmp_path / "day.pcm")
    assert audio.duration == pytest.approx(2.0, abs=0.05)
    assert audio.problem is not None
    assert "a timestamp jumps to 25.00 h, past the longest recording" in audio.problem
    with pytest.raises(DecodeError, match=r"no audio could be decoded .* jumps to 25\.00 h"):
        decode(write_webm(tmp_path / "late.webm", tone(1.0), start=25 * 3600.0), tmp_path / "l")


def test_timestamps_that_jump_back_by_seconds_are_reported_with_the_audio_they_cost(tmp_path):
    # Half the file stamped over the first half: dropped to keep the clock, which is loss to
    # report, not a file cut short (its header declares the length it has).
    path = write_webm(tmp_path / "restart.webm", tone(12.0))
    _restart_clock_at_second_cluster(path)
    audio = decode(path, tmp_path / "restart.pcm")
    assert audio.dropped_seconds > 1
    assert audio.problem is not None and "timestamps went back" in audio.problem
    assert f"{audio.dropped_seconds:.2f} s of audio" in audio.problem
    assert "truncated" not in audio.problem


def _wav(path, samples, *, sample_width=2, format_tag=None):
    """A 16-kHz mono WAV of ``samples`` (floats), in PCM of ``sample_width`` bytes (1: the
    unsigned 8-bit kind), or with its format tag replaced by ``format_tag``."""
    if sample_width == 1:
        data = np.clip(np.rint(samples * 127 + 128), 0, 255).astype(np.uint8)
    else:
        data = np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(sample_width)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(data.tobytes())
    if format_tag is not None:
        raw = bytearray(path.read_bytes())
        raw[20:22] = struct.pack("<H", format_tag)  # the fmt chunk's format tag
        path.write_bytes(bytes(raw))
    return path


def test_unsigned_8_bit_audio_is_centred_on_zero(tmp_path):
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    path = _wav(tmp_path / "u8.wav", 0.3 * np.sin(2 * np.pi * 440 * t), sample_width=1)
    x = decode(path, tmp_path / "u8.pcm").read()
    assert abs(float(np.mean(x))) < 0.01
    assert float(np.max(np.abs(x))) == pytest.approx(0.3, abs=0.02)


def test_audio_ffmpeg_has_no_decoder_for_is_an_error_naming_the_file(tmp_path):
    path = _wav(tmp_path / "odd.wav", np.zeros(SAMPLE_RATE), format_tag=0x1234)
    with pytest.raises(DecodeError, match=r"odd\.wav: its audio is in a format FFmpeg has no"):
        decode(path, tmp_path / "odd.pcm")


@pytest.mark.parametrize("opus_decoder", ["libopus"], indirect=True)
def test_libopus_and_ffmpeg_put_the_same_sound_in_the_same_place(
    sample_manifest, tmp_path, monkeypatch, opus_decoder
):
    path = sample_manifest.track_path(sample_manifest.tracks[0])
    fast = decode(path, tmp_path / "libopus.pcm")
    monkeypatch.setattr(stages.decode, "_libopus", lambda: None)
    reference = decode(path, tmp_path / "ffmpeg.pcm")
    assert fast.num_samples == reference.num_samples
    assert fast.first_packet_time == reference.first_packet_time  # to the millisecond tick
    a, b = fast.read(), reference.read()
    middle = slice(SAMPLE_RATE, a.size - SAMPLE_RATE)
    lags = range(-3, 4)
    best = max(lags, key=lambda lag: float(np.dot(a[middle], np.roll(b, lag)[middle])))
    assert best == 0  # not a sample apart
    difference = np.linalg.norm(a - b) / np.linalg.norm(b)
    assert 20 * np.log10(difference) < -30  # rounding, and FFmpeg's resampling filter


@pytest.mark.parametrize("opus_decoder", ["libopus"], indirect=True)
def test_the_system_is_not_searched_for_libopus_while_pyavs_own_loads(monkeypatch, opus_decoder):
    # ctypes.util.find_library runs the C compiler where ldconfig does not know libopus, and a
    # run stopped meanwhile left the compiler's output file in the temporary folder.
    def searched(name: str) -> str | None:
        raise AssertionError(f"searched the system for {name}")

    monkeypatch.setattr(ctypes.util, "find_library", searched)
    stages.decode._libopus.cache_clear()
    try:
        assert stages.decode._libopus() is not None
    finally:
        stages.decode._libopus.cache_clear()
