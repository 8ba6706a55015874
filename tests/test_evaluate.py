"""Scoring: trackscribe eval agrees with an independent cpWER and reports every figure."""

import itertools
import json
import logging
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from pipeline.cli import main
from pipeline.evaluate import (
    Evaluation,
    Turn,
    evaluate,
    load_turns,
    read_turns,
    relabelled,
    without_spans,
)
from pipeline.plot import plot_timeline
from stages.export import export


def independent_cpwer(hypothesis: list[Turn], truth: list[Turn]) -> float:
    """cpWER from first principles: best speaker mapping, word-level Levenshtein."""
    normalise = EnglishTextNormalizer()

    def words(turns: list[Turn], speaker: str) -> list[str]:
        ordered = sorted((t for t in turns if t.speaker == speaker), key=lambda t: t.start)
        return " ".join(normalise(t.text) for t in ordered).split()

    def distance(a: list[str], b: list[str]) -> int:
        row = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            prev, row[0] = row[0], i
            for j, y in enumerate(b, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
        return row[-1]

    refs = sorted({t.speaker for t in truth})
    hyps = sorted({t.speaker for t in hypothesis})
    size = max(len(refs), len(hyps))
    refs += [None] * (size - len(refs))
    hyps += [None] * (size - len(hyps))
    cost = {
        (r, h): distance(words(truth, r) if r else [], words(hypothesis, h) if h else [])
        for r in refs
        for h in hyps
    }
    best = min(
        sum(cost[r, h] for r, h in zip(refs, p, strict=True)) for p in itertools.permutations(hyps)
    )
    return 100 * best / sum(len(words(truth, r)) for r in refs if r)


def _renamed(turns: list[Turn], names: dict[str, str]) -> list[Turn]:
    """The turns with the speakers ``names`` maps given their new names."""
    return [t.model_copy(update={"speaker": names.get(t.speaker, t.speaker)}) for t in turns]


def test_cpwer_agrees_with_an_independent_implementation(sample_transcript, sample_dir):
    hypothesis = [
        Turn(speaker=u.speaker, start=u.start, end=u.end, text=u.text)
        for u in sample_transcript.utterances
    ]
    truth = load_turns(sample_dir / "truth.json")
    ours = evaluate(hypothesis, truth).cpwer
    assert ours == pytest.approx(independent_cpwer(hypothesis, truth), abs=0.5)
    # And when speakers are swapped, both see the words as right but on the wrong people.
    swapped = _renamed(hypothesis, {"user-alice": "user-chen", "user-chen": "user-alice"})
    assert evaluate(swapped, truth).cpwer == pytest.approx(
        independent_cpwer(swapped, truth), abs=0.5
    )


def test_a_notebook_scores_a_transcript_object_as_eval_scores_its_file(
    sample_transcript, sample_dir, tmp_path
):
    sample_transcript.save(tmp_path / "transcript.json")
    from_files = read_turns(tmp_path / "transcript.json")
    truth = read_turns(sample_dir / "truth.json")
    expected = evaluate(from_files.turns, truth.turns, participants=from_files.participants)
    assert evaluate(sample_transcript, truth) == expected
    assert evaluate(from_files, truth) == expected


def test_a_notebook_printing_an_evaluation_sees_the_table_eval_prints(
    sample_transcript, sample_dir, tmp_path, capsys
):
    sample_transcript.save(tmp_path / "transcript.json")
    assert main(["eval", str(tmp_path), str(sample_dir / "truth.json")]) == 0
    table = capsys.readouterr().out
    evaluation = evaluate(sample_transcript, read_turns(sample_dir / "truth.json"))
    assert str(evaluation) + "\n" == table
    assert table.startswith(f"cpWER                  {evaluation.cpwer:6.2f} %")
    assert f"start error p95        {evaluation.start_err_p95:.3f} s" in table
    shown = []  # what IPython's display does with it
    evaluation._repr_pretty_(SimpleNamespace(text=shown.append), cycle=False)
    assert shown == [str(evaluation)]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (lambda transcript, truth: (truth, transcript), "truth is a Transcript: give the t"),
        (lambda transcript, truth: ("transcript.json", truth), "hypothesis is a path or text"),
        (lambda transcript, truth: (transcript, Path("truth.json")), "truth is a path or text"),
        (lambda transcript, truth: (transcript, {"turns": []}), "truth must be what read_turns"),
    ],
    ids=["the wrong way round", "a path", "a Path", "a dict"],
)
def test_a_notebook_giving_evaluate_the_wrong_things_is_told_what_it_takes(
    sample_transcript, sample_dir, arguments, message
):
    hypothesis, truth = arguments(sample_transcript, read_turns(sample_dir / "truth.json"))
    with pytest.raises(TypeError, match=message):
        evaluate(hypothesis, truth)


@pytest.mark.parametrize("missing", ["meeteval", "whisper_normalizer", "matplotlib"])
def test_a_notebook_without_the_eval_extra_is_told_how_to_install_it(
    sample_transcript, sample_dir, tmp_path, monkeypatch, missing
):
    # the CLI says so too; a notebook has only the exception to go by
    truth = read_turns(sample_dir / "truth.json")
    monkeypatch.setitem(sys.modules, missing, None)  # as after a plain `pip install .`
    hint = rf"{missing} is needed here: pip install 'trackscribe\[eval\]'"
    with pytest.raises(ModuleNotFoundError, match=hint):
        if missing == "matplotlib":
            plot_timeline(truth.turns, truth.turns, tmp_path / "timeline.png")
        else:
            evaluate(sample_transcript, truth)


def test_scoring_a_speaker_whose_utterances_touch_warns_of_nothing(caplog):
    # Segments of a whole track may overlap by hundredths of a second: meeteval's
    # "Self-overlap detected" then names neither whose nor anything a user could do.
    truth = [Turn(speaker="a", start=0.0, end=2.0, text="hello there friend")]
    hypothesis = [
        Turn(speaker="a", start=0.0, end=1.01, text="hello there"),
        Turn(speaker="a", start=1.0, end=2.0, text="friend"),
    ]
    with caplog.at_level(logging.WARNING):
        assert evaluate(hypothesis, truth).cpwer == 0
    assert caplog.records == []


def test_the_truth_scored_against_itself_is_perfect(sample_dir):
    truth = load_turns(sample_dir / "truth.json")
    result = evaluate(truth, truth)
    assert (result.cpwer, result.tcpwer, result.missed_utterances) == (0, 0, 0)
    assert result.start_err_median == 0 and result.start_err_p95 == 0


def test_words_on_a_silent_participant_and_missed_turns_are_counted():
    truth = [
        Turn(speaker="a", start=0, end=2, text="hello there"),
        Turn(speaker="b", start=3, end=5, text="good morning"),
    ]
    hypothesis = [
        Turn(speaker="a", start=0.1, end=2, text="hello there"),
        Turn(speaker="listener", start=3, end=5, text="good morning to you"),
    ]
    result = evaluate(hypothesis, truth, participants=["a", "b", "listener"])
    assert result.silent_track_words == 4
    assert result.missed_utterances == 1
    assert result.start_err_median == pytest.approx(0.1)
    assert {s.speaker: s.wer for s in result.per_speaker} == {"a": 0.0, "b": 100.0}


def test_a_turn_of_nothing_that_scores_finds_no_true_utterance():
    # "Hmm." or "Uh," on leaked or noisy audio, at the time a true utterance was said, did
    # count as finding it: missed utterances were undercounted where they matter.
    truth = [
        Turn(speaker="a", start=0, end=2, text="hello there"),
        Turn(speaker="b", start=3, end=5, text="good morning"),
    ]
    hypothesis = [
        Turn(speaker="a", start=0, end=1, text="Hmm."),
        Turn(speaker="b", start=3, end=4, text="Uh,"),
    ]
    result = evaluate(hypothesis, truth, participants=["a", "b"])
    assert result.missed_utterances == 2 and result.start_err_median is None


def test_truth_in_stm_reads_the_same_as_seglst(tmp_path, sample_dir):
    truth = load_turns(sample_dir / "truth.json")
    stm = tmp_path / "truth.stm"
    stm.write_text("".join(f"meeting 1 {t.speaker} {t.start} {t.end} {t.text}\n" for t in truth))
    assert [(t.speaker, t.start, t.end, t.text) for t in load_turns(stm)] == [
        (t.speaker, t.start, t.end, t.text) for t in truth
    ]


def test_stm_lines_marked_for_no_scoring_and_lines_without_words_are_not_utterances(
    tmp_path, sample_dir
):
    truth = load_turns(sample_dir / "truth.json")
    stm = tmp_path / "truth.stm"
    stm.write_text(
        ";; made by hand\n"
        + "".join(f"meeting 1 {t.speaker} {t.start} {t.end} {t.text}\n" for t in truth)
        + "meeting 1 inter_segment_gap 0.0 2.0 IGNORE_TIME_SEGMENT_IN_SCORING\n"
        + "meeting 1 user-dana 60.0 61.0\n"
    )
    result = evaluate(truth, load_turns(stm))
    assert result.cpwer == 0.0 and result.missed_utterances == 0
    assert result.utterances == len(truth)
    assert "inter_segment_gap" not in {s.speaker for s in result.per_speaker}
    # Dana's only truth line has no words: words put on Dana are words on a silent participant
    leaked = Turn(speaker="user-dana", start=60.0, end=61.0, text="words from elsewhere")
    assert evaluate([*truth, leaked], load_turns(stm)).silent_track_words == 3


def test_stm_labels_are_not_words_and_a_stretch_left_out_of_scoring_leaves_out_the_transcript_too(
    tmp_path,
):
    # TED-LIUM and NIST write an optional <label> before the words, and mark what is not to
    # be scored with a pseudo-transcript, often under the pseudo-speaker inter_segment_gap.
    stm = tmp_path / "truth.stm"
    stm.write_text(
        "meeting 1 a 0.0 4.0 <o,f0,female> good morning everyone\n"
        "meeting 1 inter_segment_gap 4.0 10.0 <o,,unknown> ignore_time_segment_in_scoring\n"
        "meeting 1 b 10.0 12.0 <o,f0,male> thank you\n"
    )
    read = read_turns(stm)
    truth, participants, excluded = read.turns, read.participants, read.excluded
    assert [(t.speaker, t.text) for t in truth] == [
        ("a", "good morning everyone"),
        ("b", "thank you"),
    ]
    assert participants is None and excluded == [(4.0, 10.0, None)]  # one channel: everyone's

    hypothesis = [
        Turn(speaker="a", start=0.0, end=4.0, text="Good morning, everyone."),
        Turn(speaker="b", start=5.0, end=8.0, text="music playing in the break"),  # not scored
        Turn(speaker="b", start=10.0, end=12.0, text="Thank you."),
    ]
    result = evaluate(hypothesis, truth, excluded=excluded)
    assert (result.cpwer, result.errors, result.reference_words) == (0.0, 0, 5)
    assert evaluate(hypothesis, truth).errors == 5  # scored, the break's words are insertions


def test_an_stm_of_one_channel_per_speaker_leaves_a_gap_out_of_that_speakers_words_only(
    tmp_path,
):
    # One microphone per speaker, each with the gaps between its own speaker's turns marked:
    # while a is silent, b speaks, and b's words there are scored.
    stm = tmp_path / "truth.stm"
    stm.write_text(
        "meeting A a 0.0 4.0 good morning everyone\n"
        "meeting A inter_segment_gap 4.0 10.0 ignore_time_segment_in_scoring\n"
        "meeting B b 0.0 4.0 ignore_time_segment_in_scoring\n"
        "meeting B b 4.0 10.0 thank you all for coming today\n"
    )
    truth = read_turns(stm)
    assert truth.excluded == [(4.0, 10.0, {"a"}), (0.0, 4.0, {"b"})]
    hypothesis = [
        Turn(speaker="a", start=0.0, end=4.0, text="Good morning, everyone."),
        Turn(speaker="a", start=6.0, end=8.0, text="a cough"),  # not scored: a's gap
        Turn(speaker="b", start=4.0, end=10.0, text="Thank you all for coming today."),
    ]
    result = evaluate(hypothesis, truth)
    assert (result.cpwer, result.reference_words, result.missed_utterances) == (0.0, 9, 0)


def test_a_channel_of_no_ones_turns_leaves_out_its_own_speaker_only(tmp_path):
    stm = tmp_path / "truth.stm"
    stm.write_text(
        "meeting A alice 0.0 10.0 good morning everyone\n"
        "meeting B bob 0.0 10.0 ignore_time_segment_in_scoring\n"
    )
    truth = read_turns(stm)
    assert truth.excluded == [(0.0, 10.0, {"bob"})]
    said = [Turn(speaker="alice", start=0.0, end=10.0, text="Good morning, everyone.")]
    assert evaluate(said, truth).cpwer == 0.0


def test_a_turn_across_a_stretch_left_out_loses_only_its_words_in_it():
    # Each stretch is applied once: cut again, a shortened turn's words would be spread
    # over all of it once more, and words said outside it lost.
    said = [Turn(speaker="a", start=0.0, end=10.0, text="one two three four five six seven eight")]
    truth = [Turn(speaker="a", start=5.0, end=10.0, text="five six seven eight")]
    assert evaluate(said, truth, excluded=[(0.0, 5.0)]).cpwer == 0.0


def test_an_stm_file_is_read_whatever_its_name(tmp_path):
    (tmp_path / "truth.txt").write_text("meeting 1 a 0.0 4.0 good morning everyone\n")
    assert [t.text for t in read_turns(tmp_path / "truth.txt").turns] == ["good morning everyone"]
    (tmp_path / "notes.txt").write_text("minutes of the meeting\n")
    with pytest.raises(ValueError, match=r"notes\.txt: neither JSON .*; nor STM: line 1"):
        read_turns(tmp_path / "notes.txt")


def test_a_turn_the_transcript_splits_at_a_pause_was_started_on_time():
    truth = [Turn(speaker="a", start=0.0, end=10.0, text="one two three four five six")]
    split = [
        Turn(speaker="a", start=0.1, end=4.0, text="one two three"),
        Turn(speaker="a", start=4.2, end=10.0, text="four five six"),  # overlaps it the most
    ]
    assert evaluate(split, truth).start_err_median == 0.1


def test_a_transcript_that_stops_early_is_not_taken_for_one_in_milliseconds():
    truth = [
        Turn(speaker="a", start=0.1, end=1.0, text="hello everyone"),
        Turn(speaker="b", start=290.0, end=300.0, text="thanks all and goodbye"),
    ]
    early = [Turn(speaker="a", start=0.1, end=0.9, text="hello everyone")]
    assert evaluate(early, truth).warnings == []
    in_ms = [t.model_copy(update={"start": t.start * 1000, "end": t.end * 1000}) for t in truth]
    assert "are both in seconds?" in evaluate(in_ms, truth).warnings[0]


def test_only_the_words_inside_a_stretch_left_out_are_left_out():
    turn = Turn(speaker="a", start=0.0, end=4.0, text="one two three four")
    assert without_spans([turn], [(2.0, 9.0)]) == [turn.model_copy(update={"text": "one two"})]
    assert without_spans([turn], [(0.0, 4.0)]) == []
    assert without_spans([turn], []) == [turn]


def test_a_byte_order_mark_is_read_as_nothing(tmp_path):
    # Notepad and other editors on Windows begin UTF-8 files with one.
    stm = tmp_path / "truth.stm"
    stm.write_text(";; made on Windows\nmeeting 1 a 0.0 2.0 hello there\n", encoding="utf-8-sig")
    seglst = tmp_path / "truth.json"
    entry = {"session_id": "m", "speaker": "a", "start_time": 0, "end_time": 2, "words": "hi"}
    seglst.write_text(json.dumps([entry]), encoding="utf-8-sig")
    assert [t.text for t in load_turns(stm)] == ["hello there"]
    assert [t.text for t in load_turns(seglst)] == ["hi"]
    broken = tmp_path / "broken.stm"
    broken.write_bytes(b"\xef\xbb\xbfab\xffcd")
    with pytest.raises(ValueError, match=r"byte 0xff at offset 5\)"):  # as an editor counts
        load_turns(broken)


def test_a_true_utterance_of_no_length_is_met_by_a_transcript_utterance_that_holds_it():
    truth = [
        Turn(speaker="a", start=5.0, end=5.0, text="yes"),
        Turn(speaker="a", start=9, end=10, text="no"),
    ]
    hypothesis = [Turn(speaker="a", start=4.0, end=6.0, text="yes")]
    result = evaluate(hypothesis, truth)
    assert result.missed_utterances == 1  # "no" only
    assert result.start_err_median == pytest.approx(1.0)


def test_more_speakers_than_meeteval_scores_is_refused_in_plain_words():
    truth = [Turn(speaker=f"s{i}", start=i, end=i + 0.5, text="hello") for i in range(21)]
    with pytest.raises(ValueError, match="at most 20 speakers on either side: the truth has 21"):
        evaluate(truth, truth)
    assert evaluate(truth[:20], truth[:20]).cpwer == 0.0


def test_times_of_another_unit_on_one_side_are_warned_of():
    truth = [Turn(speaker="a", start=1000, end=4000, text="hello there")]  # milliseconds
    hypothesis = [Turn(speaker="a", start=1.0, end=4.0, text="hello there")]
    (warning,) = evaluate(hypothesis, truth).warnings
    assert "the truth runs to 4000 s and the transcript to 4 s: are both in seconds?" in warning

    in_seconds = [Turn(speaker="a", start=1.0, end=4.0, text="hello there")]
    assert evaluate(hypothesis, in_seconds).warnings == []
    # An hour of truth, and a transcript that stopped after 90 s (tracks lost): no unit mix-up.
    hour = [*in_seconds, Turn(speaker="a", start=3500, end=3570, text="goodbye")]
    stopped = [Turn(speaker="a", start=1.0, end=90.0, text="hello there")]
    assert evaluate(stopped, hour).warnings == []


def test_an_empty_transcript_misses_every_word_and_an_empty_truth_is_refused(sample_dir):
    truth = load_turns(sample_dir / "truth.json")
    nothing = evaluate([], truth)
    assert nothing.cpwer == 100.0 and nothing.missed_utterances == len(truth)
    with pytest.raises(ValueError, match="no words to score"):
        evaluate(truth, [])


def test_scoring_leaves_a_programs_logging_as_it_found_it(sample_dir):
    # meeteval warns of a transcript with no turns on the root logger itself, which, with no
    # handler there, would install one: every library's warnings printed from then on.
    program = (
        "import logging\n"
        "from pipeline.evaluate import evaluate, load_turns\n"
        f"evaluate([], load_turns({str(sample_dir / 'truth.json')!r}))\n"
        "print(len(logging.getLogger().handlers))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert (result.stdout, result.stderr) == ("0\n", "")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"words": None}, r"entry \[1\]: words must be text, not null"),
        ({"start_time": "soon"}, r"entry \[1\]: start_time must be a number, not \"soon\""),
        # read as a number, "2.5" or false would be scored as a time no one wrote
        ({"end_time": "2.5"}, r"entry \[1\]: end_time must be a number, not \"2\.5\""),
        ({"start_time": False}, r"entry \[1\]: start_time must be a number, not false"),
        ({"speaker": True}, r"entry \[1\]: speaker must be text \(not blank\) or a whole"),
        # scored, it was a speaker of no name, every true word of the meeting against it
        ({"speaker": " "}, r"entry \[1\]: speaker must be text \(not blank\) or a whole"),
        ({"session_id": "another-meeting"}, "holds 2 meetings"),
        (3, r"entry \[1\]: must be an object \(speaker, start_time, end_time, words\), not 3"),
        ({"end_time": 1.0}, r"truth\.json: entry \[1\]: end_time 1\.0 is before start_time"),
        (
            {"start_time": float("nan")},
            r"truth\.json: entry \[1\]: start_time nan is not a finite time",
        ),
        (
            {"end_time": float("inf")},
            r"truth\.json: entry \[1\]: end_time inf is not a finite time",
        ),
    ],
)
def test_a_bad_seglst_entry_is_named_by_its_place_and_field(tmp_path, sample_dir, change, message):
    entries = json.loads((sample_dir / "truth.json").read_text())
    if isinstance(change, dict):
        entries[1].update(change)
    else:
        entries[1] = change
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(entries))  # NaN and Infinity as Python's json writes them
    with pytest.raises(ValueError, match=message):
        load_turns(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("meeting 1 alice 0.0", r"line 1: 4 fields where STM has at least 5"),
        ("meeting 1 alice zero 2.0 hello", r"line 1: begin time 'zero' is not a number"),
        ("meeting 1 alice 0.0 2.0s hello", r"line 1: end time '2\.0s' is not a number"),
        (
            "SPEAKER meeting 1 1.015 10.445 <NA> <NA> alice <NA> <NA>",
            r"line 1 is RTTM \(who spoke when, without words\)",
        ),
    ],
)
def test_a_broken_stm_line_names_the_file_the_line_and_what_is_wrong(tmp_path, line, message):
    path = tmp_path / "truth.stm"
    path.write_text(f"{line}\n")
    with pytest.raises(ValueError, match=rf"truth\.stm: not STM: {message}"):
        load_turns(path)


def test_an_stm_channel_is_any_token_as_nist_writes_it(tmp_path):
    # Read as a number whenever the begin time was whole, channel A beginning at 0 was
    # refused, and channel 01 was two channels: 1 on one line, 01 on the next.
    path = tmp_path / "truth.stm"
    path.write_text(
        "meeting A alice 0 4 hello there my friend\n"
        "meeting 01 bob 4 6 good morning\n"
        "meeting 01 bob 6.5 8 ignore_time_segment_in_scoring\n"
        "meeting 01 bob 8.0 9.0 see you\n"
    )
    truth = read_turns(path)
    assert [(t.speaker, t.start, t.text) for t in truth.turns] == [
        ("alice", 0.0, "hello there my friend"),
        ("bob", 4.0, "good morning"),
        ("bob", 8.0, "see you"),
    ]
    # two channels, A and 01: the stretch left out is left out of bob's words only
    assert [(s.start, s.end, s.speakers) for s in truth.excluded] == [(6.5, 8.0, {"bob"})]


def test_an_stm_file_with_windows_line_ends_reads_as_any_other(tmp_path):
    path = tmp_path / "truth.stm"
    path.write_bytes(b"meeting 1 alice 0.0 2.0 hello there\r\nmeeting 1 bob 2.0 3.0 hi\r\n")
    assert [t.text for t in load_turns(path)] == ["hello there", "hi"]


def test_words_stm_marks_for_sclite_as_optional_or_alternatives_are_warned_of(tmp_path):
    path = tmp_path / "truth.stm"
    path.write_text(
        "meeting 1 bob 10.0 14.0 { yeah / yes } (and) we agree\n"
        "meeting 1 bob 15.0 16.0 (uh) fine\n"
        "meeting 1 bob 17.0 18.0 plain words\n"
    )
    said = [Turn(speaker="bob", start=10.0, end=14.0, text="yeah and we agree")]
    result = evaluate(said, read_turns(path))
    assert result.warnings == [
        "the truth marks words as optional, (word), or as alternatives, { a / b } (line 1 and "
        "1 more): the normaliser drops optional words (one said is an insertion) and "
        "alternatives are scored as all their words, so the figures can be higher than sclite's"
    ]
    path.write_text("meeting 1 bob 17.0 18.0 plain words (said twice)\n")
    assert read_turns(path).warnings == ()


def test_a_file_that_is_not_a_transcript_is_named(tmp_path):
    path = tmp_path / "notes.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match=r"notes\.json: not a trackscribe transcript"):
        load_turns(path)


def test_eval_of_more_speakers_than_meeteval_scores_is_bad_input_not_an_internal_error(
    tmp_path, capsys
):
    crowd = [
        {"session_id": "m", "speaker": f"s{i}", "start_time": i, "end_time": i + 1, "words": "hi"}
        for i in range(21)
    ]
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(crowd))
    assert main(["eval", str(truth), str(truth)]) == 2
    assert "at most 20 speakers on either side" in capsys.readouterr().err


def test_a_timeline_of_utterances_with_no_length_draws_them_without_a_warning(tmp_path, recwarn):
    moment = [Turn(speaker="a", start=0.0, end=0.0, text="yes")]
    plot_timeline(moment, moment, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0
    assert not [w for w in recwarn if "xlim" in str(w.message)]


def test_eval_command_prints_the_promised_json_and_draws_a_timeline(
    sample_transcript, sample_dir, tmp_path
):
    transcript = sample_transcript.save(tmp_path / "transcript.json")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "eval",
            str(transcript),
            str(sample_dir / "truth.json"),
            "--json",
            "--plot",
            str(tmp_path / "timeline.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in (
        "cpwer",
        "tcpwer",
        "silent_track_words",
        "start_err_median",
        "start_err_p95",
        "missed_utterances",
    ):
        assert key in figures
    assert figures["silent_track_words"] == 0 and figures["missed_utterances"] == 0
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_timeline_is_drawn_in_the_format_its_file_name_asks_for(sample_dir, tmp_path):
    truth = load_turns(sample_dir / "truth.json")
    plot_timeline(truth, truth, tmp_path / "timeline.pdf")
    plot_timeline(truth, truth, tmp_path / "timeline.svg")
    assert (tmp_path / "timeline.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in (tmp_path / "timeline.svg").read_bytes()[:1000]
    with pytest.raises(ValueError, match=r"timeline\.docx: cannot draw a \.docx file"):
        plot_timeline(truth, truth, tmp_path / "timeline.docx")
    assert not (tmp_path / "timeline.docx").exists()


def test_a_timeline_is_written_through_a_link_and_never_in_place_of_a_pipe(
    tmp_path, sample_dir, capsys
):
    truth = str(sample_dir / "truth.json")
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    assert main(["eval", truth, truth, "--plot", str(pipe)]) == 2
    assert "pipe.png: it is not a regular file" in capsys.readouterr().err
    assert pipe.is_fifo()  # not a PNG in its place
    (tmp_path / "shared").mkdir()
    link = tmp_path / "timeline.png"
    link.symlink_to(tmp_path / "shared" / "timeline.png")
    assert main(["eval", truth, truth, "--plot", str(link)]) == 0
    assert link.is_symlink()  # still the link, and the file it names is the timeline
    assert (tmp_path / "shared" / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_a_timeline_that_cannot_be_written_is_refused_before_anything_is_scored(
    tmp_path, sample_dir, capsys, monkeypatch
):
    import pipeline._cli_common

    def read_only(*args, **kwargs):  # a read-only disk (this test may run as root)
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(pipeline._cli_common.tempfile, "TemporaryFile", read_only)
    truth = str(sample_dir / "truth.json")
    assert main(["eval", truth, truth, "--plot", str(tmp_path / "new" / "t.png")]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no figures printed, then a failure
    assert (
        f"cannot write {tmp_path / 'new' / 't.png'}: a file cannot be made in {tmp_path}: "
        "Read-only file system"
    ) in err


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="Linux's /proc")
def test_a_timeline_in_a_folder_that_refuses_new_files_says_so_not_that_it_is_missing(
    sample_dir, capsys
):
    # /proc is there, but no file can be made in it: its "No such file or directory" is the
    # reason for the file, not a folder that is missing.
    truth = str(sample_dir / "truth.json")
    assert main(["eval", truth, truth, "--plot", "/proc/nope.png"]) == 2
    assert capsys.readouterr().err == (
        "trackscribe: cannot write /proc/nope.png: a file cannot be made in /proc: "
        "No such file or directory\n"
    )


def test_a_truth_file_that_is_not_utf8_is_named_and_refused(tmp_path, sample_dir, capsys):
    for name in ("truth.json", "truth.stm"):
        path = tmp_path / name
        path.write_bytes(b"meeting 1 alice 0.0 1.0 caf\xe9\n")
        with pytest.raises(ValueError, match=rf"{name}: not UTF-8 text"):
            load_turns(path)
    assert main(["eval", str(sample_dir / "truth.json"), str(tmp_path / "truth.json")]) == 2
    assert "truth.json: not UTF-8 text" in capsys.readouterr().err


def test_a_truth_file_nested_too_deep_for_python_is_bad_input(tmp_path, sample_dir, capsys):
    (tmp_path / "truth.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["eval", str(sample_dir / "truth.json"), str(tmp_path / "truth.json")]) == 2
    assert "truth.json: not JSON (transcript, SegLST): maximum recursion" in capsys.readouterr().err


def test_an_stm_line_with_its_end_before_its_start_is_named_by_line(tmp_path):
    path = tmp_path / "truth.stm"
    path.write_text(";; made by hand\nmeeting 1 alice 0.0 1.0 hello\nmeeting 1 bob 3.0 2.0 hi\n")
    with pytest.raises(ValueError, match=r"truth\.stm: line 3: end_time 2\.0 is before"):
        load_turns(path)


def test_a_transcript_utterance_with_its_end_before_its_start_is_named(sample_transcript, tmp_path):
    broken = sample_transcript.model_copy(deep=True)
    broken.utterances[2].end = broken.utterances[2].start - 1
    path = tmp_path / "transcript.json"
    path.write_text(broken.to_json())  # by hand: saving would refuse it
    with pytest.raises(ValueError, match=r"transcript\.json: utterances\[2\]: end .* is before"):
        load_turns(path)


def test_eval_refuses_a_truth_with_a_nan_time_as_bad_input(tmp_path, sample_dir, capsys):
    entries = json.loads((sample_dir / "truth.json").read_text())
    entries[3]["end_time"] = float("nan")
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(entries))
    assert main(["eval", str(sample_dir / "truth.json"), str(path)]) == 2
    assert "truth.json: entry [3]: end_time nan is not a finite time" in capsys.readouterr().err


def test_eval_takes_the_folder_a_transcript_was_written_to(
    sample_transcript, sample_dir, tmp_path, capsys
):
    sample_transcript.save(tmp_path / "transcript.json")
    assert main(["eval", str(tmp_path), str(sample_dir / "truth.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["missed_utterances"] == 0


def test_eval_of_a_text_export_says_to_give_the_transcript_json_instead(
    sample_transcript, sample_dir, tmp_path, capsys
):
    # The file people read has no speaker ids (TXT) or cuts turns into cues: not scored.
    export(sample_transcript, tmp_path, ["txt", "vtt", "srt"])
    for name, kind in (("txt", "a TXT"), ("vtt", "a WebVTT"), ("srt", "an SRT")):
        given = tmp_path / f"transcript.{name}"
        assert main(["eval", str(given), str(sample_dir / "truth.json")]) == 2
        assert capsys.readouterr().err == (
            f"trackscribe: {given}: {kind} export of a transcript, which is not scored: give the "
            "transcript.json beside it\n"
        )


def test_a_transcript_and_truth_given_the_wrong_way_round_are_refused(
    sample_transcript, sample_dir, tmp_path, capsys
):
    # scored that way, the start errors and silent words would be measured from the wrong side
    transcript = sample_transcript.save(tmp_path / "transcript.json")
    assert main(["eval", str(sample_dir / "truth.json"), str(transcript)]) == 2
    assert "transcript.json is a trackscribe transcript and" in capsys.readouterr().err


def test_a_truth_naming_none_of_the_transcripts_participants_is_warned_of(
    sample_transcript, tmp_path, capsys
):
    transcript = sample_transcript.save(tmp_path / "transcript.json")
    other = tmp_path / "truth.json"
    other.write_text(
        json.dumps(
            [
                {
                    "speaker": "Zoe",  # no user id or display name of this meeting
                    "start_time": 1.0,
                    "end_time": 3.0,
                    "words": "good morning everyone",
                }
            ]
        )
    )
    assert main(["eval", str(transcript), str(other), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "the truth's speakers (Zoe) are not all participants of the transcript" in err
    assert "are they of the same meeting?" in err and "user-alice as Zoe" in err
    assert json.loads(out)["warnings"] == [err.removeprefix("trackscribe: warning: ").strip()]
    # the truth of this meeting: no warning
    truth = tmp_path / "own.json"
    truth.write_text(
        json.dumps(
            [
                {"speaker": u.speaker, "start_time": u.start, "end_time": u.end, "words": u.text}
                for u in sample_transcript.utterances
            ]
        )
    )
    assert main(["eval", str(transcript), str(truth), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []


def test_another_tools_speaker_labels_are_scored_as_cpwer_pairs_them(sample_dir):
    # A diarisation's spk0, spk1: cpWER pairs them by their words, and so must every figure
    # per speaker, or a perfect transcript reads as every word missed and put on no one.
    truth = load_turns(sample_dir / "truth.json")
    label = {"user-alice": "spk1", "user-bruno": "spk0", "user-chen": "spk2"}
    diarised = [t.model_copy(update={"speaker": label[t.speaker]}) for t in truth]
    result = evaluate(diarised, truth)
    assert result.cpwer == 0 and result.warnings == []  # not taken for another meeting
    assert result.speakers_paired_by_words == {v: k for k, v in label.items()}
    assert all(s.wer == 0 for s in result.per_speaker) and len(result.per_speaker) == 3
    assert result.silent_track_words == 0 and result.missed_utterances == 0
    assert result.start_err_median == result.start_err_p95 == 0


def test_a_truth_labelled_by_display_names_is_matched_to_the_transcripts_user_ids(
    sample_transcript, sample_dir
):
    truth = load_turns(sample_dir / "truth.json")
    by_id = evaluate(sample_transcript, truth)
    shown = sample_transcript.speaker_names()
    named = [t.model_copy(update={"speaker": shown[t.speaker]}) for t in truth]
    assert set(shown.values()) == {"Alice", "Bruno", "Chen", "Dana"}
    by_name = evaluate(sample_transcript, named)
    assert by_name.warnings == [] and by_name.speakers_paired_by_words == {}
    same = {"per_speaker", "speaker_pairs"}
    assert by_name.model_dump(exclude=same) == by_id.model_dump(exclude=same)
    assert [s.wer for s in by_name.per_speaker] == [s.wer for s in by_id.per_speaker]
    # the transcript as scored, which --plot draws beside the truth: on the truth's rows
    assert by_name.speaker_pairs == {uid: shown[uid] for uid in by_id.speaker_pairs}
    said = [
        Turn(speaker=u.speaker, start=u.start, end=u.end, text=u.text)
        for u in sample_transcript.utterances
    ]
    as_scored = relabelled(said, by_name.speaker_pairs)
    assert {t.speaker for t in as_scored} <= {t.speaker for t in named}


def test_a_truth_of_another_meeting_or_a_transcript_that_lost_input_is_warned_of(
    sample_transcript, sample_dir, tmp_path
):
    transcript = read_turns(sample_transcript.save(tmp_path / "transcript.json"))
    truth = read_turns(sample_dir / "truth.json")
    assert evaluate(transcript, truth).warnings == []
    other = truth._replace(meeting="m-other")
    assert evaluate(transcript, other).warnings == [
        f"the transcript is of meeting {sample_transcript.meeting_id} and the truth of m-other"
    ]
    lost = transcript._replace(lost=("bruno.webm: not a readable audio file",))
    assert evaluate(lost, truth).warnings == [
        "the transcript lost input, missed here: bruno.webm: not a readable audio file"
    ]


def swapped(turns: list[Turn], one: str, other: str) -> list[Turn]:
    """``turns`` with the labels of speakers ``one`` and ``other`` swapped."""
    swap = {one: other, other: one}
    return [t.model_copy(update={"speaker": swap.get(t.speaker, t.speaker)}) for t in turns]


def test_figures_by_name_that_cpwer_pairs_otherwise_are_warned_of(
    sample_transcript, sample_dir, capsys, tmp_path
):
    # Two speakers' labels swapped in the truth: cpWER pairs them by their words, and is as
    # good as ever; every figure by name says their words were all missed. A reader must be
    # told which to trust.
    truth = load_turns(sample_dir / "truth.json")
    right = evaluate(sample_transcript, truth)
    result = evaluate(sample_transcript, swapped(truth, "user-alice", "user-chen"))
    assert result.cpwer == right.cpwer and result.tcpwer == right.tcpwer  # cpWER as it was
    assert result.missed_utterances > 0  # the figures by name, which disagree
    assert result.speakers_paired_by_words == {}
    [warning] = result.warnings
    assert warning.startswith(
        "cpWER pairs speakers found by name otherwise, by their words: user-alice as "
        f"user-chen, user-chen as user-alice ({right.errors} errors in all, where "
    )
    assert "are these speakers labelled right in the truth?" in warning
    assert right.warnings == []
    # eval says it on stderr, and in its JSON
    path = tmp_path / "truth.json"
    path.write_text(
        json.dumps(
            [
                {"speaker": t.speaker, "start_time": t.start, "end_time": t.end, "words": t.text}
                for t in swapped(truth, "user-alice", "user-chen")
            ]
        )
    )
    transcript = sample_transcript.save(tmp_path / "transcript.json")
    assert main(["eval", str(transcript), str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["warnings"] == [warning]
    assert err == f"trackscribe: warning: {warning}\n"


def test_a_speaker_with_no_words_that_cpwer_pairs_with_anyone_is_no_disagreement():
    # Nothing scores on either pairing ("Hmm" normalises to no words): cpWER's choice is a
    # tie, and the figures by name are as good.
    truth = [
        Turn(speaker="a", start=0.0, end=1.0, text="hello there"),
        Turn(speaker="b", start=2.0, end=3.0, text="good morning"),
    ]
    result = evaluate([Turn(speaker="b", start=0.0, end=1.0, text="Hmm.")], truth)
    assert result.cpwer == 100 and result.warnings == []


@pytest.mark.parametrize("spelt", [str.upper, str.title], ids=["USER-ALICE", "User-Alice"])
def test_speaker_ids_that_differ_only_in_case_are_found_by_name(
    sample_transcript, sample_dir, spelt
):
    truth = load_turns(sample_dir / "truth.json")
    typed = [t.model_copy(update={"speaker": spelt(t.speaker)}) for t in truth]
    exact, result = evaluate(sample_transcript, truth), evaluate(sample_transcript, typed)
    assert result.warnings == [] and result.speakers_paired_by_words == {}
    assert result.speaker_pairs == {uid: spelt(uid) for uid in exact.speaker_pairs}
    assert [(s.speaker, s.wer, s.words) for s in result.per_speaker] == [
        (spelt(s.speaker), s.wer, s.words) for s in exact.per_speaker
    ]
    same = {"per_speaker", "speaker_pairs"}
    assert result.model_dump(exclude=same) == exact.model_dump(exclude=same)
    # and display names too: "alice" for Alice
    shown = sample_transcript.speaker_names()
    named = [t.model_copy(update={"speaker": shown[t.speaker].lower()}) for t in truth]
    by_name = evaluate(sample_transcript, named)
    assert by_name.warnings == [] and by_name.speakers_paired_by_words == {}
    assert by_name.speaker_pairs == {uid: shown[uid].lower() for uid in exact.speaker_pairs}


def test_names_that_are_one_ignoring_case_are_paired_by_their_words(sample_transcript, sample_dir):
    # "Alice" and "alice" in the truth: which is user-alice would be a guess.
    truth = load_turns(sample_dir / "truth.json")
    mixed = _renamed(truth, {"user-alice": "USER-ALICE", "user-bruno": "user-alice"})
    result = evaluate(sample_transcript, mixed)
    assert result.speakers_paired_by_words  # as cpWER pairs them, with its warning
    assert "are they of the same meeting?" in result.warnings[0]


def test_a_compliance_bundle_is_scored_as_the_transcript_in_it(
    sample_transcript, sample_dir, tmp_path, capsys
):
    # What transcribe --formats bundle writes, and a reviewer is sent: the file, or the
    # folder holding it alone.
    export(sample_transcript, tmp_path / "sent", ["bundle"])
    assert sorted(p.name for p in (tmp_path / "sent").glob("transcript*")) == [
        "transcript.bundle.zip"
    ]
    truth = str(sample_dir / "truth.json")
    expected = evaluate(sample_transcript, read_turns(truth))
    bundle = tmp_path / "sent" / "transcript.bundle.zip"
    for given in (bundle, bundle.parent):
        assert main(["eval", str(given), truth, "--json"]) == 0
        out, err = capsys.readouterr()
        assert Evaluation.model_validate_json(out) == expected and err == ""
    assert read_turns(bundle) == read_turns(sample_transcript.save(tmp_path / "transcript.json"))
    # a zip that is not a bundle of a transcript is named as such
    (tmp_path / "other.zip").write_bytes(bundle.read_bytes()[:200])
    assert main(["eval", str(tmp_path / "other.zip"), truth]) == 2
    assert f"{tmp_path / 'other.zip'}: not a readable zip" in capsys.readouterr().err


def test_the_scorers_versions_are_recorded_with_the_figures(sample_transcript, sample_dir):
    # A judge on other versions of meeteval or the normaliser may differ: what scored it
    # is part of the result.
    result = evaluate(sample_transcript, read_turns(sample_dir / "truth.json"))
    versions = {
        "meeteval": metadata.version("meeteval"),
        "whisper-normalizer": metadata.version("whisper-normalizer"),
    }
    assert result.scorer == versions
    assert json.loads(result.model_dump_json())["scorer"] == versions
    assert str(result).endswith(
        f"\n\nscored with meeteval {versions['meeteval']}, whisper-normalizer "
        f"{versions['whisper-normalizer']}"
    )
