"""Merging: one clock from every track's start, one speaker per user, turns in time order."""

from datetime import UTC, datetime

import pytest

from models import Manifest, Provenance, Segment, TrackTiming, Word
from stages.merge import MergeOptions, merge, track_offsets

MANIFEST = Manifest.parse(
    {
        "schema": "trackscribe.manifest/1",
        "meeting_id": "m",
        "tracks": [
            {"user_id": "bob", "path": "b1.webm", "started_time": "2026-11-20T10:00:02.500Z"},
            {
                "user_id": "ann",
                "display_name": "Ann",
                "path": "a.webm",
                "started_time": "2026-11-20T10:00:00.000Z",
            },
            {
                "user_id": "bob",
                "display_name": "Bob",
                "path": "b2.webm",
                "started_time": "2026-11-20T10:00:30.000Z",
            },
            {"user_id": "cy", "path": "c.webm", "started_time": "2026-11-20T10:00:01.000Z"},
        ],
    }
)
PROVENANCE = Provenance(software="test", model="none")


def seg(start: float, end: float, text: str) -> Segment:
    words = text.split()
    step = (end - start) / len(words)
    return Segment(
        start=start,
        end=end,
        text=text,
        words=[
            Word(word=w, start=start + i * step, end=start + (i + 1) * step, probability=0.9)
            for i, w in enumerate(words)
        ],
    )


def test_track_offsets_count_from_the_earliest_start():
    assert track_offsets(MANIFEST) == [2.5, 0.0, 30.0, 1.0]


def test_times_are_track_start_plus_time_within_the_file_and_sorted():
    transcript = merge(
        MANIFEST,
        {
            0: [seg(1.0, 2.0, "hello there")],
            1: [seg(10.0, 11.0, "later on")],
            2: [seg(0.5, 1.5, "back again")],
        },
        PROVENANCE,
    )
    assert transcript.origin == datetime(2026, 11, 20, 10, tzinfo=UTC)
    got = [(u.speaker, u.start, u.end, u.text) for u in transcript.utterances]
    assert got == [
        ("bob", 3.5, 4.5, "hello there"),
        ("ann", 10.0, 11.0, "later on"),
        ("bob", 30.5, 31.5, "back again"),
    ]
    assert transcript.utterances[0].words[0].start == 3.5
    assert transcript.utterances[2].start_time == datetime(
        2026, 11, 20, 10, 0, 30, 500000, tzinfo=UTC
    )


def test_a_user_with_several_files_is_one_speaker_and_everyone_is_listed():
    transcript = merge(MANIFEST, {}, PROVENANCE)
    assert [(s.user_id, s.display_name) for s in transcript.speakers] == [
        ("bob", "Bob"),
        ("ann", "Ann"),
        ("cy", None),
    ]
    assert transcript.utterances == []


def test_close_segments_of_one_speaker_are_one_utterance():
    segments = {1: [seg(1.0, 2.0, "one two"), seg(2.5, 3.0, "three"), seg(6.0, 7.0, "four")]}
    transcript = merge(MANIFEST, segments, PROVENANCE, MergeOptions(join_gap=1.0))
    assert [u.text for u in transcript.utterances] == ["one two three", "four"]
    assert [len(u.words) for u in transcript.utterances] == [3, 1]


def test_overlapping_speech_is_marked_on_both_speakers():
    segments = {
        1: [seg(1.0, 5.0, "a long turn here")],
        3: [seg(3.0, 6.0, "an interjection")],
        0: [seg(10.0, 11.0, "alone")],
    }
    transcript = merge(MANIFEST, segments, PROVENANCE)
    overlaps = {(u.speaker, u.start): u.overlaps for u in transcript.utterances}
    assert overlaps == {("ann", 1.0): ["cy"], ("cy", 4.0): ["ann"], ("bob", 12.5): []}


@pytest.mark.parametrize("gap", [0.0, 0.25])
def test_touching_turns_are_not_overlaps(gap):
    segments = {1: [seg(1.0, 2.0, "first")], 3: [seg(2.0 - gap, 3.0, "second")]}
    transcript = merge(MANIFEST, segments, PROVENANCE)
    assert all(u.overlaps == [] for u in transcript.utterances)


def test_a_reply_in_the_pause_splits_the_turn_and_keeps_the_dialogue_in_order():
    segments = {
        1: [seg(0.0, 5.0, "are you ready to ship"), seg(5.9, 8.0, "ok then lets go")],
        3: [seg(4.1, 4.8, "yes")],
    }  # cy's track starts 1 s in: 5.1-5.8
    transcript = merge(MANIFEST, segments, PROVENANCE, MergeOptions(join_gap=1.0))
    got = [(u.speaker, u.text, u.overlaps) for u in transcript.utterances]
    assert got == [
        ("ann", "are you ready to ship", []),
        ("cy", "yes", []),
        ("ann", "ok then lets go", []),
    ]


def test_a_reply_that_starts_as_the_speaker_resumes_did_not_speak_into_the_pause():
    ann = [seg(0.0, 2.0, "so the plan"), seg(2.5, 3.5, "is this")]
    cy = [seg(1.5, 2.5, "yes")]  # cy's track starts 1 s in: 2.5-3.5, as Ann resumes
    # The order the tracks come in decides nothing.
    for segments in ({1: ann, 3: cy}, {3: cy, 1: ann}):
        transcript = merge(MANIFEST, segments, PROVENANCE, MergeOptions(join_gap=1.0))
        got = [(u.speaker, u.text) for u in transcript.utterances]
        assert got == [("ann", "so the plan is this"), ("cy", "yes")]


def test_an_interjection_inside_a_turn_is_an_overlap_not_a_split():
    segments = {
        1: [seg(0.0, 5.0, "a b c d e f"), seg(5.5, 8.0, "g h i")],
        3: [seg(2.0, 3.0, "mm hmm")],
    }
    transcript = merge(MANIFEST, segments, PROVENANCE, MergeOptions(join_gap=1.0))
    got = [(u.speaker, u.text, u.overlaps) for u in transcript.utterances]
    assert got == [("ann", "a b c d e f g h i", ["cy"]), ("cy", "mm hmm", ["ann"])]


def test_a_pause_after_a_full_stop_starts_a_new_utterance_a_pause_after_a_comma_does_not():
    segments = {
        1: [
            seg(0.0, 2.0, "we shipped it,"),
            seg(2.8, 4.0, "on friday."),
            seg(4.8, 6.0, "next question"),
        ]
    }
    transcript = merge(MANIFEST, segments, PROVENANCE)
    assert [u.text for u in transcript.utterances] == [
        "we shipped it, on friday.",
        "next question",
    ]


def test_two_files_of_one_user_that_speak_at_once_are_two_utterances_in_order():
    # Bob's first file (from 2.5 s) still runs when his second (from 30 s) says something
    # else: two people on one user id, say. Joined, the words would go 35.5 s, then 30.6 s.
    t = merge(
        MANIFEST,
        {
            0: [seg(28.0, 34.0, "one two three four five six")],
            2: [seg(0.6, 1.4, "hello again")],
            1: [seg(34.0, 38.0, "ann talks over bob")],
        },
        PROVENANCE,
    )
    bobs = [u for u in t.utterances if u.speaker == "bob"]
    assert [u.text for u in bobs] == ["one two three four five six", "hello again"]
    for u in t.utterances:
        assert [w.start for w in u.words] == sorted(w.start for w in u.words)
    assert bobs[0].overlaps == ["ann"]  # ann talks over his long sentence's end


def test_a_track_whose_clock_ran_fast_is_taken_back_to_the_meeting_clock():
    # 500 ppm fast: 600 s of the track's time are 599.7 s of the meeting's.
    segments = {1: [seg(600.0, 601.0, "late words")]}
    timings = [TrackTiming(offset) for offset in track_offsets(MANIFEST)]
    timings[1] = TrackTiming(0.0, drift_ppm=500.0)
    transcript = merge(MANIFEST, segments, PROVENANCE, timings=timings)
    (utterance,) = transcript.utterances
    assert utterance.start == pytest.approx(600 / 1.0005, abs=1e-3)
    assert utterance.words[-1].end == pytest.approx(601 / 1.0005, abs=1e-3)
