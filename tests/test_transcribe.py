"""Transcription: only speech reaches the model, and every word comes back on the track clock."""

import gc
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import stages.transcribe._model as transcribe_model
from models import PcmAudio, SpeechRegion, Word
from stages.decode import decode
from stages.merge import track_offsets
from stages.transcribe import (
    BUNDLED_MODEL,
    ModelError,
    TracksFailed,
    TranscribeOptions,
    Transcriber,
    check_model,
    model_folder,
    model_identity,
    model_threads,
    resolve_model,
    usable_cores,
)
from stages.transcribe._model import (
    _forget_models,
    load_model,
    one_thread_math,
    one_thread_math_here,
)
from stages.transcribe._windows import Decoded, Piece, Window, pack, words_by_piece
from stages.transcribe._words import compression_ratio, heard_in_part
from stages.vad import detect_speech

from .conftest import silence, words_of, write_webm


@pytest.fixture(scope="module")
def transcriber():
    return Transcriber()


@pytest.fixture
def good_morning(sample_speech):
    """Alice's first turn, 1.0-5.09 s: "Good morning everyone, thanks for joining the weekly
    planning call." (48 kHz)"""
    return sample_speech[int(0.8 * 48_000) : int(5.3 * 48_000)]


@pytest.fixture
def great_news(sample_speech):
    """Alice again, 12.0-15.6 s: "Great news ..." (48 kHz)"""
    return sample_speech[int(11.8 * 48_000) : int(15.8 * 48_000)]


def _track(tmp_path: Path, name: str, samples: np.ndarray) -> PcmAudio:
    """``samples`` (48 kHz) as a real WebM/Opus track, decoded."""
    return decode(write_webm(tmp_path / f"{name}.webm", samples), tmp_path / f"{name}.pcm")


def test_the_default_model_is_the_bundled_one_and_needs_no_download():
    path = Path(resolve_model(BUNDLED_MODEL))
    assert (path / "model.bin").is_file()
    assert TranscribeOptions().model == BUNDLED_MODEL


def test_the_model_is_loaded_once_per_process(transcriber):
    assert Transcriber()._model is transcriber._model


def test_a_track_is_transcribed_with_words_on_its_own_clock(
    sample_manifest, sample_truth, transcriber, tmp_path
):
    index = next(i for i, t in enumerate(sample_manifest.tracks) if t.user_id == "user-chen")
    track = sample_manifest.tracks[index]
    offset = track_offsets(sample_manifest)[index]  # Chen joined 21.7 s late
    audio = decode(sample_manifest.track_path(track), tmp_path / "chen.pcm")
    regions = detect_speech(audio)
    segments = transcriber.transcribe(audio, regions)

    said = [w for s in segments for w in words_of(s.text)]
    for turn in (t for t in sample_truth if t["speaker"] == "user-chen"):
        expected = words_of(turn["words"])
        assert len(set(expected) & set(said)) >= 0.8 * len(set(expected))
        # The turn's first word is found within a few tenths of a second of where it was said.
        first = expected[0]
        times = [w.start for s in segments for w in s.words if words_of(w.word) == [first]]
        assert min(abs(t + offset - turn["start_time"]) for t in times) < 0.5
    for segment in segments:
        (region,) = [r for r in regions if r.start <= segment.words[0].start <= r.end]
        assert all(
            region.start - 1e-3 <= w.start <= w.end <= region.end + 1e-3 for w in segment.words
        )
        # A segment starts a little before its speech, never before the previous region ends.
        assert region.onset - 0.45 - 1e-3 <= segment.start <= segment.words[0].start  # ms


def test_a_log_at_info_gets_no_lines_of_faster_whispers_own(
    sample_manifest, tmp_path, caplog, monkeypatch
):
    # Two per window about its own VAD, which trackscribe does not use; at DEBUG they show.
    monkeypatch.setattr(logging.getLogger("faster_whisper"), "level", logging.NOTSET)
    caplog.set_level(logging.INFO)
    audio = decode(sample_manifest.track_path(sample_manifest.tracks[0]), tmp_path / "a.pcm")

    Transcriber().transcribe(audio, detect_speech(audio))

    assert [r.name for r in caplog.records if not r.name.startswith("trackscribe")] == []
    # Decided line by line, not by a level set once: a notebook that turns logging up later
    # gets them, and faster-whisper's logger keeps the level it had.
    assert logging.getLogger("faster_whisper").level == logging.NOTSET
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    Transcriber().transcribe(audio, detect_speech(audio))
    assert "faster_whisper" in {r.name for r in caplog.records}


def test_word_times_follow_the_audio_when_it_starts_later(sample_speech, transcriber, tmp_path):
    speech = sample_speech[: 6 * 48_000]  # Alice's first turn
    starts = []
    for lead in (0.0, 3.0):
        path = write_webm(tmp_path / f"{lead}.webm", speech, start=lead)
        audio = decode(path, tmp_path / f"{lead}.pcm")
        segments = transcriber.transcribe(audio, detect_speech(audio))
        starts.append([w.start for s in segments for w in s.words])
    assert len(starts[0]) == len(starts[1]) > 5
    assert all(b - a == pytest.approx(3.0, abs=0.06) for a, b in zip(*starts, strict=True))


def quieter(samples: np.ndarray, level_db: float) -> np.ndarray:
    """``samples`` scaled to ``level_db`` dBFS (RMS)."""
    now = 10 * np.log10(np.mean(samples.astype(np.float64) ** 2))
    return (samples * 10 ** ((level_db - now) / 20)).astype(np.float32)


def test_text_over_audio_too_quiet_to_hold_it_is_left_out_and_said_why(
    good_morning, transcriber, tmp_path
):
    # Mostly the model's own invention over near-silence; here real speech, that quiet.
    audio = _track(tmp_path, "quiet", quieter(good_morning, -53))
    regions = detect_speech(audio)
    assert regions  # heard as speech ...
    assert transcriber.transcribe(audio, regions) == []  # ... left out of the text ...
    left_out = transcriber.transcribe(audio, regions, with_dropped=True)
    assert "morning" in words_of(" ".join(s.text for s in left_out))  # ... and accounted for
    assert all(s.dropped.endswith("dBFS, under -50") for s in left_out)
    louder = _track(tmp_path, "louder", quieter(good_morning, -45))
    kept = transcriber.transcribe(louder, detect_speech(louder), with_dropped=True)
    assert kept and all(s.dropped is None for s in kept)  # the same speech, louder, is text
    assert "morning" in words_of(" ".join(s.text for s in kept))


def test_a_word_timed_into_the_pause_after_it_is_kept_as_the_speech_it_was_anchored_to(
    good_morning, transcriber
):
    # A region's only word ("Good"), timed by Whisper into the pause after it: measured over
    # that pause alone, the segment read as text on near-silence and was dropped, its words
    # lost and its start moved to the next segment's.
    said = good_morning[: int(0.6 * 48_000) : 3]  # "Good", 0.2-0.6 s in (16 kHz, roughly)
    samples = np.concatenate([np.zeros(8_000), said, np.zeros(16_000)]).astype(np.float32)
    onset = 0.5 + 0.2  # where VAD heard the voice begin, in the window and on the track
    piece = Piece(window_start=0.0, track_start=0.0, duration=2.1, floor=0.0, onset=onset)
    late = Word(word="Good.", start=onset + 0.6, end=onset + 0.8, probability=0.9)
    decoded = Decoded(text="Good.", words=[late], avg_logprob=-0.3, no_speech_prob=0.1)
    lead_in = transcriber.options.lead_in

    segment = transcriber._segment(onset - lead_in, [late], decoded, piece, samples, "t.webm")

    assert segment.dropped is None and segment.text == "Good."
    silent = np.zeros_like(samples)  # no voice anywhere: still text on near-silence
    nothing = transcriber._segment(onset - lead_in, [late], decoded, piece, silent, "t.webm")
    assert nothing.dropped is not None and nothing.dropped.endswith("dBFS, under -50")


@pytest.mark.parametrize("level_db", [-50, -35, -25])
def test_noise_sent_to_the_model_yields_no_text(transcriber, tmp_path, level_db):
    rng = np.random.default_rng(3)
    noise = (10 ** (level_db / 20) * rng.standard_normal(10 * 48_000)).astype(np.float32)
    audio = _track(tmp_path, "noise", noise)
    assert transcriber.transcribe(audio, [SpeechRegion(start=1.0, end=9.0)]) == []


def test_a_one_word_segment_whose_word_has_no_length_is_kept_over_speech(
    good_morning, transcriber, tmp_path, monkeypatch
):
    # Whisper's alignment gives some words no length (start == end), mostly the first word
    # after a pause. Alone in a segment, such a word spans no audio; the guard against text
    # over near-silence must still hear the speech around it.
    audio = _track(tmp_path, "one", np.concatenate([silence(1), good_morning, silence(1)]))
    regions = detect_speech(audio)
    real = transcriber._decode_batch

    def one_word_without_length(clips):
        found = real(clips)
        for d in filter(None, found):
            said = d.words[1]  # "morning", well inside the speech
            d.words[:] = [Word(word="Morning.", start=said.start, end=said.start, probability=1)]
        return found

    def the_same_alone(samples):  # one word in 4 s is few: the careful path is asked too
        (decoded,) = one_word_without_length([samples])
        return decoded

    monkeypatch.setattr(transcriber, "_decode_batch", one_word_without_length)
    monkeypatch.setattr(transcriber, "_decode_one", the_same_alone)
    (segment,) = transcriber.transcribe(audio, regions)
    assert segment.text == "Morning." and segment.words[0].start == segment.words[0].end


def test_no_regions_means_no_model_call(transcriber, tmp_path, monkeypatch):
    def model_called(*args, **kwargs):
        pytest.fail("the model was given audio with no speech region in it")

    # Both ways audio reaches the model: batched windows, and one window alone.
    monkeypatch.setattr(transcriber, "_decode_batch", model_called)
    monkeypatch.setattr(transcriber, "_decode_one", model_called)
    audio = decode(write_webm(tmp_path / "quiet.webm", silence(2)), tmp_path / "quiet.pcm")
    assert transcriber.transcribe(audio, []) == []


def test_regions_far_apart_packed_into_one_window_map_back_to_their_own_times(
    good_morning, transcriber, tmp_path
):
    samples = np.concatenate([silence(2), good_morning, silence(30), good_morning, silence(1)])
    audio = _track(tmp_path, "twice", samples)
    regions = detect_speech(audio)
    assert len(regions) == 2 and sum(r.duration for r in regions) < 30  # one window
    segments = transcriber.transcribe(audio, regions)
    first = [w for s in segments for w in s.words if w.start < regions[0].end]
    second = [w for s in segments for w in s.words if w.start >= regions[1].start]
    assert [w.word for w in first] == [w.word for w in second] and len(first) > 5
    assert all(regions[0].start <= w.start <= w.end <= regions[0].end for w in first)
    assert all(regions[1].start <= w.start <= w.end <= regions[1].end for w in second)
    # Whisper's own word timing varies with context by a few tenths; the map adds nothing.
    shifts = sorted(b.start - a.start for a, b in zip(first, second, strict=True))
    assert shifts[len(shifts) // 2] == pytest.approx(30 + good_morning.size / 48_000, abs=0.25)


def test_a_window_gets_the_same_word_times_wherever_it_sits_in_its_batch(
    good_morning, transcriber, tmp_path
):
    # faster-whisper times a batched window's words from its start rounded down to 10 ms;
    # taken from the exact start, a window after one of 2.345 s would come out 5 ms early.
    audio = _track(tmp_path, "twice", np.concatenate([silence(0.5), good_morning]))
    clip = audio.read(0.0, 2.345)
    first, second = transcriber._decode_batch([clip, clip])
    timed = [
        [(w.word, round(w.start, 3), round(w.end, 3)) for w in d.words] for d in (first, second)
    ]
    assert timed[0] and timed[1] == timed[0]


def test_a_model_that_cannot_be_loaded_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match=r"cannot load model '.*nowhere': no such folder"):
        Transcriber(TranscribeOptions(model=str(tmp_path / "nowhere")))


def test_a_model_folder_whose_tokenizer_changed_in_place_is_another_model(tmp_path):
    # Checkpoints are keyed by it: words decoded with other token ids must not be reused,
    # though the weights, and the file's size, are the same.
    folder = tmp_path / "model"
    folder.mkdir()
    for path in Path(resolve_model(BUNDLED_MODEL)).iterdir():
        (folder / path.name).symlink_to(path)  # the weights as they are, not copied
    tokenizer = folder / "tokenizer.json"
    tokenizer.unlink()
    tokenizer.write_bytes(Path(resolve_model(BUNDLED_MODEL), "tokenizer.json").read_bytes())
    before = model_identity(str(folder))
    assert model_identity(str(folder)) == before  # the same files: the same model
    text = bytearray(tokenizer.read_bytes())
    at = next(i for i in range(1000, len(text)) if text[i] != text[i + 1])
    text[at], text[at + 1] = text[at + 1], text[at]  # two token ids swapped, say
    written = tokenizer.stat().st_mtime_ns
    tokenizer.write_bytes(bytes(text))
    os.utime(tokenizer, ns=(written, written + 10**9))  # a second later, on any file system
    assert model_identity(str(folder)) != before


def test_a_model_is_its_files_bytes_not_where_they_are_or_when_they_were_written(tmp_path):
    # Results are keyed by it: pip stamps a model's files with the install time, so a venv
    # built again, or another machine of a Dask cluster, made every finished meeting "changed".
    bundled = model_identity(BUNDLED_MODEL)
    copy = tmp_path / "elsewhere"
    shutil.copytree(resolve_model(BUNDLED_MODEL), copy)
    later = time.time_ns() + 3600 * 10**9
    for path in copy.iterdir():
        os.utime(path, ns=(later, later))
    assert model_identity(str(copy)) == bundled


@pytest.mark.parametrize("left_out", ["tokenizer.json", "config.json"])
def test_a_model_folder_without_a_file_it_needs_is_named_before_any_work(tmp_path, left_out):
    # Without its tokenizer, faster-whisper fetched one from the hub (offline: half a minute
    # of retries, then "check your connection"); without its settings, every track failed.
    folder = tmp_path / "converted"
    folder.mkdir()
    for path in Path(resolve_model(BUNDLED_MODEL)).iterdir():
        if path.name != left_out:
            (folder / path.name).symlink_to(path)
    with pytest.raises(
        ModelError, match=f"not a whole CTranslate2 Whisper model: no {re.escape(left_out)}"
    ):
        check_model(str(folder))


def test_a_model_folder_named_without_dot_slash_is_a_folder_not_a_hub_name(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine").symlink_to(resolve_model(BUNDLED_MODEL))
    monkeypatch.chdir(tmp_path)
    assert model_folder("models/mine") == Path("models/mine")
    _forget_models()
    try:
        assert load_model("models/mine", "cpu", "int8", 1, 1) is not None
    finally:
        _forget_models()


def test_a_model_folder_changed_in_place_is_loaded_again(tmp_path):
    # Loaded once per name, a batch worker kept the old weights while the transcripts it
    # made named the new files' SHA-256; then, loaded again, it held both versions.
    bundled = Path(resolve_model(BUNDLED_MODEL))
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).symlink_to(bundled / name)
    first = load_model(str(folder), "cpu", "int8", 1, 1)
    assert load_model(str(folder), "cpu", "int8", 1, 1) is first  # once, while unchanged
    (folder / "config.json").unlink()
    (folder / "config.json").write_bytes((bundled / "config.json").read_bytes())
    second = load_model(str(folder), "cpu", "int8", 1, 1)
    assert second is not first
    first = weakref.ref(first)
    gc.collect()
    assert first() is None  # the old weights let go, not held beside the new ones


@pytest.fixture
def hub(monkeypatch) -> list[Path]:
    """The hub stood in for by a folder that appears when "downloaded" (the bundled model's);
    gives the folders downloaded so far."""
    bundled = Path(resolve_model(BUNDLED_MODEL))
    here: list[Path] = []

    def folder(name: str, *, folders: bool = True) -> Path | None:
        return bundled if name == BUNDLED_MODEL else (here[0] if here else None)

    monkeypatch.setattr(transcribe_model, "model_folder", folder)
    monkeypatch.setattr(
        transcribe_model, "_downloaded", lambda name: here.append(bundled) or bundled
    )
    return here


def test_a_hub_model_downloaded_on_first_use_is_loaded_once(hub):
    # Named by its name until downloaded and by its files after, it was loaded a second time
    # on the next meeting, and both copies held.
    _forget_models()
    try:
        first = load_model("trackscribe-tests/downloaded-once", "cpu", "int8", 1, 1)
        assert load_model("trackscribe-tests/downloaded-once", "cpu", "int8", 1, 1) is first
        assert len(transcribe_model._held) == 1
    finally:
        _forget_models()


def test_a_hub_model_is_known_by_its_files_from_before_its_first_download(hub):
    # Named by its name until downloaded, the meetings of a first run were keyed apart from
    # those of every run after, and all done again. It is downloaded to be known (it is about
    # to be loaded anyway).
    first = model_identity("trackscribe-tests/downloaded-once")
    assert hub == [Path(resolve_model(BUNDLED_MODEL))]  # downloaded, once
    assert model_identity("trackscribe-tests/downloaded-once") == first
    assert first == model_identity(BUNDLED_MODEL)  # the same files


def test_a_hub_that_never_answers_is_given_up_on_with_a_clear_error(monkeypatch):
    # A network that takes connections and never answers (a proxy, a firewall) hung the
    # run for ever: the hub's library waits without a time limit.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    host, port = listener.getsockname()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://{host}:{port}")
    monkeypatch.setattr(transcribe_model, "_HUB_TIMEOUT", 0.5)
    _forget_models()
    try:
        with pytest.raises(ModelError, match=r"did not answer within 0\.5 s"):
            load_model("trackscribe-tests/never-downloaded", "cpu", "int8", 1, 1)
    finally:
        _forget_models()
        listener.close()


def test_another_language_asked_of_an_english_only_model_is_refused():
    # It was decoded in English, and the provenance named the language asked for.
    with pytest.raises(ModelError, match="knows English only: language 'fr'"):
        Transcriber(TranscribeOptions(language="fr"))


def test_a_bundled_model_that_is_not_bundled_names_the_one_that_is():
    # not faster-whisper's list of hub names, which has small.en in it and confuses
    with pytest.raises(ModelError, match=r"only bundled model is 'bundled:tiny.en'.*'small.en'"):
        Transcriber(TranscribeOptions(model="bundled:small.en"))


def test_a_pause_inside_one_region_splits_the_region_into_segments(
    good_morning, great_news, transcriber, tmp_path
):
    # Another voice leaking into the pause can keep one region open across it; the words
    # still show the pause, and each side becomes its own segment, starting before its words.
    samples = np.concatenate([silence(1), good_morning, silence(2), great_news, silence(1)])
    audio = _track(tmp_path, "pause", samples)
    whole = SpeechRegion(start=0.8, end=audio.duration - 0.8, onset=1.0)
    first, second = transcriber.transcribe(audio, [whole])
    assert words_of(first.text)[:2] == ["good", "morning"]
    assert words_of(second.text)[:2] == ["great", "news"]
    lead_in = TranscribeOptions().lead_in
    assert first.end < second.start == pytest.approx(second.words[0].start - lead_in, abs=1e-3)


def test_a_pause_only_the_words_show_does_not_split_a_region_the_voice_ran_on_through(
    good_morning, great_news, transcriber, tmp_path
):
    # Whisper's word times can put a second's gap where the voice did not stop (before a
    # sentence's first word, mostly); a split needs the voice-activity detector to agree.
    samples = np.concatenate([silence(1), good_morning, silence(2), great_news, silence(1)])
    audio = _track(tmp_path, "pause", samples)
    span = {"start": 0.8, "end": audio.duration - 0.8, "onset": 1.0}

    (ran_on,) = transcriber.transcribe(audio, [SpeechRegion(**span, pauses=())])
    assert words_of(ran_on.text)[:2] == ["good", "morning"] and "great" in words_of(ran_on.text)

    heard = SpeechRegion(**span, pauses=((5.3, 7.6),))  # the silence, as the detector marks it
    first, second = transcriber.transcribe(audio, [heard])
    assert words_of(second.text)[:2] == ["great", "news"]
    assert first.words + second.words == ran_on.words


def test_speech_that_repeats_itself_is_transcribed_whole_and_the_same_on_every_run(
    good_morning, transcriber, tmp_path, monkeypatch
):
    # Said five times over, a sentence reads to Whisper's loop guard like a model stuck in a
    # loop: the window goes to the careful path. That path must not sample (sampling cannot
    # be seeded per call, so a rerun would differ), and must keep every repetition.
    samples = np.concatenate([silence(1), *[np.concatenate([good_morning, silence(0.3)])] * 5])
    audio = _track(tmp_path, "again", samples)
    regions = detect_speech(audio)
    assert len(regions) == 1  # said over and over in one turn
    careful = []
    real = transcriber._decode_one
    monkeypatch.setattr(transcriber, "_decode_one", lambda x: careful.append(x) or real(x))
    runs = [transcriber.transcribe(audio, regions) for _ in range(2)]
    assert len(careful) == 2  # the careful path was taken, once per run
    assert runs[0] == runs[1]
    assert words_of(" ".join(s.text for s in runs[0])).count("planning") == 5


def test_a_sentence_said_again_in_turns_of_its_own_is_not_taken_for_a_loop(
    good_morning, transcriber, tmp_path, monkeypatch
):
    # The same sentence in four turns packs into one window whose text compresses like a
    # loop (ratio about 3). Each copy is a piece of its own, so that is the talker repeating
    # themselves: the window's one pass is kept, not decoded again at two or three times the
    # cost, and every copy is heard at its own time.
    samples = np.concatenate([silence(1), *[np.concatenate([good_morning, silence(3)])] * 4])
    audio = _track(tmp_path, "turns", samples)
    regions = detect_speech(audio)
    assert len(regions) == 4
    passes = []
    real = transcriber._decode_batch
    monkeypatch.setattr(
        transcriber, "_decode_batch", lambda clips: passes.append(real(clips)) or passes[-1]
    )
    monkeypatch.setattr(transcriber, "_decode_one", lambda x: pytest.fail("careful path"))
    segments = transcriber.transcribe(audio, regions)
    (heard,) = passes[0]  # one window holds all four turns ...
    loop_guard = transcriber.options.compression_ratio_threshold
    assert compression_ratio(heard.text) > loop_guard  # ... and its whole text reads as a loop
    for region in regions:
        heard = [w.word for s in segments for w in s.words if region.start <= w.start < region.end]
        words = words_of(" ".join(heard))
        assert words[:2] == ["good", "morning"] and words[-2:] == ["planning", "call"]


def _said(word: str, start: float, end: float) -> Word:
    return Word(word=word, start=start, end=end, probability=0.9)


def _window_saying(sentence: str, durations: list[float]) -> tuple[Window, Decoded]:
    """A packed window of pieces this long, each given ``sentence``, its words spread evenly."""
    pieces, words, start = [], [], 0.0
    for duration in durations:
        pieces.append(Piece(start, 100 + start, duration, floor=0.0, onset=100 + start))
        said = sentence.split()
        step = duration / len(said)
        words += [_said(w, start + i * step, start + (i + 1) * step) for i, w in enumerate(said)]
        start += duration
    text = " ".join(w.word for w in words)
    return Window(0, tuple(pieces)), Decoded(text, words, avg_logprob=-0.2, no_speech_prob=0.0)


def test_words_timed_across_a_seam_before_the_next_voice_end_the_sentence_they_finish():
    # Seen on an unseen meeting: a turn cut where a louder voice's leak took over, at "make
    # themselves at"; in the packed window Whisper finished the sentence after the cut and
    # timed "home." in the next region's lead-in, 20 s later on the track, before that
    # region's voice began. It belongs to the sentence before, not to the next utterance.
    cut = Piece(0.0, 1.11, 2.61, floor=0.0, onset=1.32)
    later = Piece(2.61, 24.6, 4.92, floor=3.72, onset=24.81)
    window = Window(0, (cut, later))
    words = [
        _said("make", 2.0, 2.3),
        _said("themselves", 2.3, 2.5),
        _said("at", 2.5, 2.61),
        _said("home.", 2.61, 2.83),  # ends 0.02 s into the voice of the later piece
        _said("When", 2.93, 3.03),
        _said("are", 3.03, 3.13),
    ]
    groups = words_by_piece(window, words)
    assert [(piece, [w.word for w in ws]) for piece, ws in groups] == [
        (cut, ["make", "themselves", "at", "home."]),
        (later, ["When", "are"]),
    ]
    home = groups[0][1][-1]
    assert home.start == home.end == pytest.approx(cut.track_start + cut.duration)


def test_a_word_run_far_across_a_seam_sends_both_regions_to_be_heard_alone():
    # Seen on an unseen meeting: "Tell me what happened quoth Zau al Makan" then, 40 s later
    # on the track, "What ails thee then". In the window Whisper wrote "Tell me what
    # happened. What else | did then": "else" from 0.93 s before the seam to 0.89 s after
    # it. The first turn's last words were lost, and the second's first put on the first.
    first = Piece(0.0, 168.99, 2.85, floor=0.0, onset=169.2)
    second = Piece(2.85, 212.4, 11.67, floor=171.84, onset=212.61)
    window = Window(0, (first, second))

    def decoded(*words: Word) -> Decoded:
        return Decoded(" ".join(w.word for w in words), list(words), -0.2, 0.0)

    opening = [_said("Tell", 0.2, 0.4), _said("me", 0.4, 0.55), _said("what", 0.55, 0.8)]
    rest = [_said("did", 3.8, 4.0), *(_said("then", 4 + i / 2, 4.4 + i / 2) for i in range(20))]
    ran_together = decoded(*opening, _said("What", 1.4, 1.9), _said("else", 1.92, 3.74), *rest)
    assert set(heard_in_part(window, ran_together, opening=True)) == {first, second}
    # a last word timed a few tenths into the next region's padding is common, and fine
    timed_late = decoded(*opening, _said("happened,", 1.9, 3.3), *rest)
    assert heard_in_part(window, timed_late, opening=True) == []


def test_a_short_first_word_pulled_before_the_voice_stays_where_it_was_said():
    # Whisper pulls a region's first word to its padded start, before the voice: a word that
    # reaches into the voice for as long as a word takes is the region's own, and so is any
    # word after a finished sentence, even one the model timed all before the voice.
    before = Piece(0.0, 1.0, 2.0, floor=0.0, onset=1.2)
    later = Piece(2.0, 30.0, 3.0, floor=3.0, onset=30.2)
    window = Window(0, (before, later))
    unfinished = [_said("and", 1.5, 1.9), _said("I", 2.0, 2.3), _said("agree.", 2.3, 2.8)]
    groups = words_by_piece(window, unfinished)
    assert [[w.word for w in ws] for _, ws in groups] == [["and"], ["I", "agree."]]
    reply = [_said("so.", 1.5, 1.9), _said("Yes.", 2.0, 2.22)]  # ends 0.02 s into the voice
    groups = words_by_piece(window, reply)
    assert [(piece, [w.word for w in ws]) for piece, ws in groups] == [
        (before, ["so."]),
        (later, ["Yes."]),
    ]


def test_a_loop_spread_over_turns_of_different_lengths_is_still_a_loop(transcriber):
    # The loop guard forgives a sentence said again in a turn of its own, which takes about as
    # long as the first time. A model stuck on one sentence over audio of other lengths is
    # still sent to the careful path; the same words over turns of one length are not.
    sentence = "and so we went on to the next item on the list of things"
    looping = _window_saying(sentence, [3.0, 6.0, 1.5, 9.0])
    said_again = _window_saying(sentence, [3.0, 3.2, 2.9, 3.1])
    assert transcriber._unreliable(looping[1], looping[0])
    assert not transcriber._unreliable(said_again[1], said_again[0])
    assert transcriber._unreliable(said_again[1])  # the whole text alone reads as a loop


def test_an_opening_utterance_the_model_passed_over_is_heard_on_its_own(
    good_morning, great_news, transcriber, tmp_path, monkeypatch
):
    # Whisper sometimes goes straight past a short utterance that opens a packed window (seen
    # on dev-meeting: "answered he", then the sentence). Here the model's pass over the whole
    # window is made to lose the opening's words; they must come back, at their own time.
    samples = np.concatenate([silence(2), good_morning, silence(30), great_news, silence(1)])
    audio = _track(tmp_path, "two", samples)
    regions = detect_speech(audio)
    opening = regions[0].end - regions[0].start
    real = transcriber._decode_batch

    def passing_over_the_opening(clips):
        found = real(clips)
        if clips[0].size / 16_000 > opening + 1:  # the whole window, not the opening alone
            for d in filter(None, found):
                d.words[:] = [w for w in d.words if (w.start + w.end) / 2 > opening]
        return found

    monkeypatch.setattr(transcriber, "_decode_batch", passing_over_the_opening)
    monkeypatch.setattr(transcriber, "_decode_one", lambda x: pytest.fail("careful path"))
    segments = transcriber.transcribe(audio, regions)
    first = [w for s in segments for w in s.words if w.start < regions[0].end]
    assert words_of(" ".join(w.word for w in first))[:2] == ["good", "morning"]
    assert all(regions[0].start <= w.start <= w.end <= regions[0].end for w in first)
    lead_in = transcriber.options.lead_in
    assert segments[0].start == pytest.approx(regions[0].onset - lead_in, abs=0.05)


def test_a_talker_who_runs_on_for_half_a_minute_has_every_sentence_written(
    sample_manifest, sample_truth, transcriber, tmp_path
):
    # A presenter's pauses are too short to end a region, so one region fills a window alone;
    # the batched pass wrote part of such a window, with a confidence that looked sound, and
    # "Great news. Did the old invoices move over as well?" was lost without a trace.
    origin = min(t.started_time for t in sample_manifest.tracks)
    tracks = [
        (
            t,
            (t.started_time - origin).total_seconds(),
            decode(sample_manifest.track_path(t), tmp_path / f"{k}.pcm").read(),
        )
        for k, t in enumerate(sample_manifest.tracks)
    ]
    said, parts = [], [silence(0.5)]
    for turn in sample_truth:  # every turn, cut from its speaker's track, one after another
        (samples,) = [
            x[int((turn["start_time"] - at) * 16_000) : int((turn["end_time"] - at) * 16_000)]
            for t, at, x in tracks
            if t.user_id == turn["speaker"] and at <= turn["start_time"] < at + x.size / 16_000
        ]
        parts += [np.repeat(samples, 3), silence(0.35)]
        said += words_of(turn["words"])
    audio = _track(tmp_path, "presenter", np.concatenate([*parts, silence(0.5)]))
    regions = detect_speech(audio)
    assert max(r.duration for r in regions) > 25  # a window of one region

    segments = transcriber.transcribe(audio, regions)

    heard = words_of(" ".join(w.word for s in segments for w in s.words))
    assert len(said) == 96 and len(heard) >= 0.95 * len(said)
    assert "great news did the old invoices move over" in " ".join(heard)


def test_a_sentence_a_window_holds_twice_is_heard_whole_both_times(
    good_morning, transcriber, tmp_path, monkeypatch
):
    # Seen on a LibriSpeech-built meeting: a talker said one sentence twice within a packed
    # window, and Whisper wrote it once, its first half on the first copy and its second half
    # on the second. Here the window's pass is made to do that; each copy must come back
    # whole, each at its own time.
    samples = np.concatenate([silence(2), good_morning, silence(30), good_morning, silence(1)])
    audio = _track(tmp_path, "twice", samples)
    regions = detect_speech(audio)
    assert len(regions) == 2
    boundary = regions[0].duration  # where the second copy starts in the packed window
    real = transcriber._decode_batch

    def writing_it_once(clips):
        found = real(clips)
        if clips[0].size / 16_000 > boundary + 1:  # the whole window, not a copy alone
            for d in filter(None, found):
                first = [w for w in d.words if (w.start + w.end) / 2 < boundary]
                second = [w for w in d.words if (w.start + w.end) / 2 >= boundary]
                d.words[:] = first[: len(first) // 2] + second[len(second) // 2 :]
        return found

    monkeypatch.setattr(transcriber, "_decode_batch", writing_it_once)
    monkeypatch.setattr(transcriber, "_decode_one", lambda x: pytest.fail("careful path"))
    segments = transcriber.transcribe(audio, regions)
    heard = [
        words_of(" ".join(w.word for s in segments for w in s.words if r.start <= w.start < r.end))
        for r in regions
    ]
    for words in heard:  # "Good morning everyone, thanks for joining the weekly planning call."
        assert words[:2] == ["good", "morning"] and words[-2:] == ["planning", "call"]


def test_a_window_heard_whole_is_not_decoded_again(
    good_morning, great_news, transcriber, tmp_path, monkeypatch
):
    samples = np.concatenate([silence(2), good_morning, silence(30), great_news, silence(1)])
    audio = _track(tmp_path, "two", samples)
    regions = detect_speech(audio)
    calls = []
    real = transcriber._decode_batch
    monkeypatch.setattr(
        transcriber, "_decode_batch", lambda clips: calls.append(clips) or real(clips)
    )
    segments = transcriber.transcribe(audio, regions)
    assert len(calls) == 1  # one batch of windows, nothing decoded a second time
    first, second = (words_of(s.text) for s in segments)
    assert first[:2] == ["good", "morning"] and second[:2] == ["great", "news"]
    assert segments[1].start > 30  # the second where it was said, after 30 s of silence


def test_the_cores_are_counted_where_the_platform_has_no_cpu_affinity(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # as on macOS
    assert usable_cores() == (os.cpu_count() or 1)
    Transcriber()  # sizes its model threads by the cores: it loads, instead of AttributeError


def test_a_track_that_fails_costs_the_others_nothing(good_morning, transcriber, tmp_path):
    first = _track(tmp_path, "first", np.concatenate([silence(1), good_morning, silence(1)]))
    lost = _track(tmp_path, "lost", np.concatenate([silence(1), good_morning, silence(1)]))
    regions = detect_speech(first)
    lost.pcm_path.unlink()  # its decoded audio is gone by the time the model wants it
    finished = {}
    with pytest.raises(TracksFailed) as failed:
        transcriber.transcribe_tracks(
            [(lost, regions), (first, regions)],
            on_track_done=lambda index, segments: finished.update({index: segments}),
        )
    assert list(failed.value.failures) == [0]
    assert isinstance(failed.value.failures[0], FileNotFoundError)
    assert list(finished) == [1]
    assert words_of(" ".join(s.text for s in finished[1]))[:2] == ["good", "morning"]
    assert failed.value.results == [[], finished[1]]  # also for a caller without the callback
    with pytest.raises(FileNotFoundError):  # one track alone: its own error
        transcriber.transcribe(lost, regions)


def test_the_costliest_track_goes_to_the_model_first_and_its_batches_stay_together(
    transcriber, tmp_path, monkeypatch
):
    # A host who talks most may be the last track: were their batches started last, one
    # worker would run them alone while the other has nothing left to do. A window costs its
    # encoder pass whatever it holds, so three short windows cost more than one long one.
    audio = decode(write_webm(tmp_path / "long.webm", silence(40)), tmp_path / "long.pcm")

    def talk(*spans: tuple[float, float]) -> list[SpeechRegion]:
        return [SpeechRegion(start=start, end=end) for start, end in spans]

    started = []

    def record(batch, tracks):
        started.append(batch[0].track)
        return []

    monkeypatch.setattr(transcriber, "_run_batch", record)
    one_at_a_time = {"parallel": 1, "batch_size": 1, "max_window": 10.0}
    monkeypatch.setattr(
        transcriber, "options", transcriber.options.model_copy(update=one_at_a_time)
    )
    tracks = [
        (audio, talk((0.0, 10.0))),  # one window of 10 s
        (audio, talk((0.0, 8.0), (10.0, 18.0), (20.0, 28.0))),  # three of 8 s, a batch each
        (audio, talk((0.0, 5.0))),  # one of 5 s
    ]
    transcriber.transcribe_tracks(tracks)
    assert started == [1, 1, 1, 0, 2]


def test_an_interrupt_stops_transcription_without_running_the_batches_still_queued(
    transcriber, tmp_path, monkeypatch
):
    # Ctrl-C in a notebook or a terminal: waiting for every queued batch of an hour-long
    # meeting would look like a hang of minutes. Only what is already on the model finishes.
    audio = decode(write_webm(tmp_path / "long.webm", silence(40)), tmp_path / "long.pcm")
    started = []

    def record(batch, tracks):
        started.append(batch[0].track)
        time.sleep(0.02)  # as the model does, for far longer: the GIL is let go meanwhile
        return [(window, []) for window in batch]

    def press_ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(transcriber, "_run_batch", record)
    one_at_a_time = {"parallel": 1, "batch_size": 1, "max_window": 5.0}
    monkeypatch.setattr(
        transcriber, "options", transcriber.options.model_copy(update=one_at_a_time)
    )
    regions = [SpeechRegion(start=10.0 * k, end=10.0 * k + 5.0) for k in range(4)]
    with pytest.raises(KeyboardInterrupt):
        transcriber.transcribe_tracks([(audio, regions)] * 3, on_progress=press_ctrl_c)
    assert len(started) <= 2  # the batch whose progress was being told, and the one after


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_a_transcription_begun_in_any_thread_computes_on_one_blas_thread_and_restores_it():
    # After one begun in the main thread, one begun in another thread (a notebook's executor)
    # was left on two BLAS threads, and its words came out otherwise.
    before = _blas_threads()
    with one_thread_math():  # a transcription in this thread first
        pass
    seen: list[list[int]] = []

    def transcription() -> None:
        with (
            one_thread_math(),
            ThreadPoolExecutor(1, initializer=one_thread_math_here) as computing,
        ):
            seen.append(computing.submit(_blas_threads).result())

    elsewhere = threading.Thread(target=transcription)
    elsewhere.start()
    elsewhere.join()
    assert seen == [[1] * len(before)]
    assert _blas_threads() == before


def test_a_blas_library_loaded_after_a_transcription_is_held_to_one_thread_by_the_next():
    # scipy's BLAS, loaded by a notebook between two meetings, was left on its threads: the
    # libraries were found once, at the first transcription.
    script = """
import json, threading
from concurrent.futures import ThreadPoolExecutor
from threadpoolctl import threadpool_info
from stages.transcribe._model import one_thread_math, one_thread_math_here
def threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
with one_thread_math():
    pass
import scipy.linalg
seen = []
def transcription():
    with one_thread_math(), ThreadPoolExecutor(1, initializer=one_thread_math_here) as pool:
        seen.append(pool.submit(threads).result())
elsewhere = threading.Thread(target=transcription)
elsewhere.start()
elsewhere.join()
print(json.dumps({"during": seen[0], "after": threads()}))
"""
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "2"},
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert len(found["during"]) == 2 and found["during"] == [1, 1]
    assert found["after"] == [2, 2]


def test_a_region_longer_than_the_window_is_sent_whole_in_windows_the_model_hears(tmp_path, caplog):
    # Whisper hears 30 s: the rest of a 67-s region a caller gave was lost without a word.
    audio = decode(write_webm(tmp_path / "long.webm", silence(70)), tmp_path / "long.pcm")
    region = SpeechRegion(start=1.0, end=68.0, onset=1.5)
    with caplog.at_level(logging.WARNING, logger="trackscribe"):
        windows = pack(0, audio, [region], max_window=30.0)
    assert [w.duration for w in windows] == pytest.approx([30.0, 30.0, 7.0])
    pieces = [p for w in windows for p in w.pieces]
    assert [p.track_start for p in pieces] == pytest.approx([1.0, 31.0, 61.0])
    assert pieces[0].onset == 1.5
    # each part's segments start after the part before it: they overlapped it
    assert [p.floor for p in pieces] == pytest.approx([0.0, 31.0, 61.0])
    assert "longer than the model's window" in caplog.text


def test_each_model_worker_gets_its_share_of_the_cores_unless_told():
    # What the pipeline's workers get each, and (times parallel) what bench gives the
    # alternatives: one rule, so that both are measured on the same threads.
    cores = usable_cores()
    assert model_threads(TranscribeOptions(parallel=2)) == max(1, cores // 2)
    assert model_threads(TranscribeOptions(parallel=1)) == cores
    assert model_threads(TranscribeOptions(parallel=cores + 1)) == 1  # one at least
    assert model_threads(TranscribeOptions(cpu_threads=3, parallel=2)) == 3


def test_far_more_model_threads_than_cores_is_warned_of(caplog):
    # 1,024 threads on 2 cores ran 44 times slower, and said nothing.
    threads = 4 * usable_cores()
    with caplog.at_level(logging.WARNING, logger="trackscribe"):
        Transcriber(TranscribeOptions(cpu_threads=threads, parallel=1))
    assert f"{threads} model threads" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trackscribe"):
        Transcriber(TranscribeOptions())
    assert "model threads" not in caplog.text
