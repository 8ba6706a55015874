"""Voice activity: speech regions where people talk, nothing on silence or noise, <= 30 s each."""

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from models import VoiceActivity
from stages.decode import decode
from stages.merge import track_offsets
from stages.vad import VadOptions, detect_speech, speech_regions

from .conftest import silence, write_webm


@pytest.fixture(scope="module")
def decoded(sample_manifest, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vad")
    return [
        decode(sample_manifest.track_path(t), folder / f"{i}.pcm")
        for i, t in enumerate(sample_manifest.tracks)
    ]


def test_every_spoken_turn_lies_in_a_region_of_its_speakers_track(
    sample_manifest, sample_truth, decoded
):
    offsets = track_offsets(sample_manifest)
    regions = {}
    for track, audio, offset in zip(sample_manifest.tracks, decoded, offsets, strict=True):
        regions.setdefault(track.user_id, []).extend(
            (r.start + offset, r.end + offset) for r in detect_speech(audio)
        )
    for turn in sample_truth:
        covering = [
            (a, b)
            for a, b in regions[turn["speaker"]]
            if a <= turn["start_time"] + 0.1 and b >= turn["end_time"] - 0.1
        ]
        assert covering, f"{turn['speaker']} at {turn['start_time']} s is not in any region"
        a, _ = covering[0]
        assert turn["start_time"] - a <= VadOptions().padding + 0.15  # padded, not far early
    assert regions["user-dana"] == []  # the listener's track carries only room noise


def test_silence_and_low_noise_give_no_regions(tmp_path):
    rng = np.random.default_rng(1)
    noise = (10 ** (-60 / 20) * rng.standard_normal(10 * 48_000)).astype(np.float32)
    for name, samples in [("silence", silence(10)), ("noise", noise)]:
        audio = decode(write_webm(tmp_path / f"{name}.webm", samples), tmp_path / f"{name}.pcm")
        assert detect_speech(audio) == [], name


def test_long_speech_is_split_at_quiet_moments_into_regions_of_at_most_max_region(decoded):
    alice = decoded[0]  # 50 s, five turns with pauses between them
    options = VadOptions(min_silence=20.0, max_region=20.0)  # bridge every pause: one long run
    regions = detect_speech(alice, options)
    assert len(regions) >= 3
    assert all(r.duration <= 20.0 + 1e-9 for r in regions)
    splits = [left.end for left, right in itertools.pairwise(regions) if left.end == right.start]
    assert splits  # the run was cut, not left whole or broken at pauses alone
    for at in splits:
        cut = alice.read(at - 0.05, at + 0.05)
        assert 20 * np.log10(np.sqrt(np.mean(cut**2)) + 1e-9) < -40, f"cut at {at} s"


def test_no_region_is_longer_than_max_region_by_a_frames_rounding():
    # 20 s of 30-ms frames is 666.7 frames; rounded up, a region came to 20.01 s, over a
    # window of 20 s, which then cut it blindly into 20 s and a sliver of 10 ms.
    frames = 1200  # all voiced, growing louder: the quietest cut is always the earliest
    activity = VoiceActivity(
        frame_s=0.03,
        voiced=np.ones(frames, bool),
        level_db=np.linspace(-40, -20, frames),
        duration=frames * 0.03,
    )
    regions = speech_regions(activity, VadOptions(max_region=20.0))
    assert max(r.duration for r in regions) <= 20.0


def test_a_region_names_the_pauses_inside_it_and_not_the_breaths(sample_speech, tmp_path):
    first_turn = sample_speech[int(0.8 * 48_000) : int(5.3 * 48_000)]  # Alice at 1.0-5.09 s
    second_turn = sample_speech[int(11.8 * 48_000) : int(15.8 * 48_000)]  # and at 7.7-11.3 s
    samples = np.concatenate([silence(1), first_turn, silence(2), second_turn, silence(1)])
    audio = decode(write_webm(tmp_path / "pause.webm", samples), tmp_path / "pause.pcm")
    options = VadOptions(min_silence=5.0)  # one region across the two seconds of silence

    (region,) = detect_speech(audio, options)

    assert region.pauses is not None
    assert all(b - a >= options.min_pause - 1e-9 for a, b in region.pauses)
    assert all(region.onset < a < b < region.end for a, b in region.pauses)
    longest = max(region.pauses, key=lambda p: p[1] - p[0])
    assert 5.0 < longest[0] < 5.6 and 7.4 < longest[1] < 7.9
    assert len(region.pauses) <= 4  # within a turn: only real pauses, never every breath


def test_regions_carry_the_speech_level(decoded):
    (first, *_) = detect_speech(decoded[0])
    assert first.level_db is not None and -30 < first.level_db < -5


def test_a_region_starts_its_speech_where_the_voice_does_not_on_background_before_it():
    # On a track that carries other voices' leakage, webrtcvad can call the steady background
    # before a talker's voice (here 28 dB under it) voice too, where on a quiet track it would
    # not. The speech, and so the start its transcript gets, begins with the voice.
    frame_s = 0.03
    level = np.concatenate([np.full(33, -80.0), np.full(17, -48.0), np.full(67, -20.0)])
    voiced = level > -60

    def regions(level_db: np.ndarray) -> list:
        activity = VoiceActivity(
            frame_s=frame_s, voiced=voiced, level_db=level_db, duration=level.size * frame_s
        )
        return speech_regions(activity)

    (after_background,) = regions(level)
    assert after_background.onset == pytest.approx(50 * frame_s)
    assert after_background.start < 33 * frame_s  # the audio sent still holds all of it
    (quiet,) = regions(np.where(voiced, -48.0, -80.0))  # a quiet talker, nothing before
    assert quiet.onset == pytest.approx(33 * frame_s)


def test_speech_running_to_the_end_of_a_track_keeps_its_last_milliseconds():
    # webrtcvad takes whole frames only: the last 20 ms of this track were never classified.
    frame_s = 0.03
    voiced = np.concatenate([np.zeros(50, bool), np.ones(50, bool)])
    activity = VoiceActivity(
        frame_s=frame_s, voiced=voiced, level_db=np.where(voiced, -20.0, -80.0), duration=3.02
    )
    (region,) = speech_regions(activity)
    assert region.end == 3.02
    # unless taking them would make a region longer than the model's window
    long = activity.model_copy(
        update={"voiced": np.ones(1000, bool), "level_db": np.full(1000, -20.0), "duration": 30.02}
    )
    assert max(r.duration for r in speech_regions(long)) <= 30


def test_options_are_validated():
    with pytest.raises(ValidationError, match="frame_ms"):
        VadOptions(frame_ms=25)
    with pytest.raises(ValidationError):
        VadOptions(aggressiveness=4)
    with pytest.raises(ValidationError):
        VadOptions(max_region=45)


def test_hours_of_unbroken_speech_are_split_like_a_minute_of_it():
    """A hot microphone or music can read as speech for a whole meeting; cutting it into
    regions must neither run out of stack nor depend on what lies far from each cut."""
    frame_s = 0.03
    frames = round(6 * 3600 / frame_s)
    level = -20 + 3 * np.random.default_rng(7).standard_normal(frames)
    six_hours = VoiceActivity(
        frame_s=frame_s, voiced=np.ones(frames, bool), level_db=level, duration=frames * frame_s
    )
    minute = round(60 / frame_s)
    one_minute = six_hours.model_copy(
        update={"voiced": six_hours.voiced[:minute], "level_db": level[:minute], "duration": 60}
    )

    regions = speech_regions(six_hours)

    assert regions[0].start == 0 and regions[-1].end == pytest.approx(6 * 3600)
    assert all(a.end == b.start for a, b in itertools.pairwise(regions))
    assert max(r.duration for r in regions) <= 30
    assert speech_regions(one_minute)[0] == regions[0]
