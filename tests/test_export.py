"""Exports: subtitles with speakers, readable text, and meeteval's SegLST."""

import hashlib
import io
import json
import shutil
import subprocess
import sys
import unicodedata
import zipfile
from datetime import UTC, datetime, timedelta

import pytest

from models import (
    ClockEstimate,
    DroppedSpeech,
    InputFile,
    Provenance,
    Speaker,
    TrackFailure,
    Transcript,
    Utterance,
    Word,
    WriteError,
)
from stages.export import (
    FORMATS,
    BundleError,
    SigningKeyError,
    export,
    packed_as_written,
    read_bundle,
    read_sha256sums,
    recorded,
    recorded_files,
    render,
    to_bundle,
    to_seglst,
    to_srt,
    to_txt,
    to_vtt,
)

from .conftest import BUNDLE_MEMBERS, write_key

ORIGIN = datetime(2026, 11, 20, 10, tzinfo=UTC)
ABOUT = [
    "Meeting m-1; times count from 2026-11-20T10:00:00.000Z (UTC).",
    "Made by test with the model none.",
]
"""What the opening lines of the text and WebVTT exports say of the ``transcript`` fixture."""


def speech_lines(transcript: Transcript) -> str:
    """The text export after its opening lines, which say what the file is."""
    about, rest = to_txt(transcript).split("\n\n", 1)
    assert about.splitlines() == [f"# {line}" for line in ABOUT]
    return rest


def vtt_cues(transcript: Transcript) -> list[str]:
    """The WebVTT export's blocks after its header and the NOTE that says what the file is."""
    header, about, *rest = to_vtt(transcript).split("\n\n")
    assert header == "WEBVTT" and about.splitlines() == ["NOTE", *ABOUT]
    return rest


def utt(speaker: str, start: float, end: float, text: str) -> Utterance:
    words = text.split()
    step = (end - start) / len(words)
    return Utterance(
        speaker=speaker,
        start=start,
        end=end,
        text=text,
        start_time=ORIGIN + timedelta(seconds=start),
        end_time=ORIGIN + timedelta(seconds=end),
        words=[
            Word(word=w, start=start + i * step, end=start + (i + 1) * step, probability=1.0)
            for i, w in enumerate(words)
        ],
    )


@pytest.fixture
def transcript():
    return Transcript(
        meeting_id="m-1",
        origin=ORIGIN,
        speakers=[Speaker(user_id="u-a", display_name="Alice"), Speaker(user_id="u-b")],
        utterances=[utt("u-a", 1.25, 3.5, "Hello <team> & all."), utt("u-b", 62.0, 64.0, "Hi.")],
        provenance=Provenance(software="test", model="none"),
    )


def test_webvtt_has_voice_tags_and_escapes_markup(transcript):
    assert "\n\n".join(vtt_cues(transcript)) == (
        "00:00:01.250 --> 00:00:03.500\n<v Alice>Hello &lt;team&gt; &amp; all.\n\n"
        "00:01:02.000 --> 00:01:04.000\n<v u-b>Hi.\n"
    )


def test_srt_numbers_cues_and_names_the_speaker(transcript):
    assert to_srt(transcript) == (
        "1\n00:00:01,250 --> 00:00:03,500\nAlice: Hello <\u200bteam> & all.\n\n"
        "2\n00:01:02,000 --> 00:01:04,000\nu-b: Hi.\n"
    )


def test_srt_shows_markup_in_a_name_or_the_words_as_text_not_styling(transcript):
    transcript.speakers[0] = Speaker(user_id="u-a", display_name='<font color="#000">CFO</font>')
    said = r"{\an8}<i>moved</i> a --> b, {y:i}2 < 3 a\Nb, < font size=0>, <3 and >:("
    transcript.utterances[1] = utt("u-b", 62.0, 64.0, said)
    srt = to_srt(transcript)
    for markup in ("<font", "</font", "<i>", "</i>", "{", "}", "\\N", "a --> b"):
        assert markup not in srt
    # ffmpeg reads "< font" as a tag too, and drops "<3 and >" as one: no "<" is left bare.
    assert "<" not in srt.replace("<\u200b", "")
    # libass (mpv, VLC, ffmpeg) reads any {...} as an override or a comment, whatever is in it.
    assert srt.replace("\u200b", "") == (
        "1\n00:00:01,250 --> 00:00:03,500\n"
        '"<font color=\\"#000\\">CFO</font>": Hello <team> & all.\n\n'
        "2\n00:01:02,000 --> 00:01:04,000\n"
        "u-b: \u2774\\an8\u2775<i>moved</i> a --> b, \u2774y:i\u27752 < 3 a\\Nb, "
        "< font size=0>, <3 and >:(\n"
    )


def test_plain_text_is_one_line_per_utterance(transcript):
    assert speech_lines(transcript) == (
        "[00:00:01] Alice: Hello <team> & all.\n[00:01:02] u-b: Hi.\n"
    )


def test_a_line_break_in_a_name_or_the_words_cannot_forge_a_cue(transcript):
    transcript.speakers[0] = Speaker(user_id="u-a", display_name="Ann\n\nBee")
    transcript.utterances[1] = utt("u-b", 62.0, 64.0, "Hi.\n\n3\n00:00:00,000 --> 00:09:00,000")
    srt = to_srt(transcript)
    assert srt.count("\n\n") == 1 and "Ann Bee: Hello" in srt  # two cues
    assert srt.endswith("\nu-b: Hi. 3 00:00:00,000 -\u200b-> 00:09:00,000\n")
    assert len(vtt_cues(transcript)) == 2  # two cues, nothing more
    assert len(speech_lines(transcript).splitlines()) == 2


def test_a_control_character_that_separates_words_leaves_them_apart(transcript):
    transcript.utterances[1] = utt("u-b", 62.0, 64.0, "para\x85nel\x1fvote\x07d")
    assert to_txt(transcript).endswith("] u-b: para nel voted\n")


def test_two_speakers_who_would_read_the_same_are_told_apart_by_their_user_ids(transcript):
    # Two people of one name; or "José" typed two ways, which look the same.
    transcript.speakers[1] = Speaker(user_id="u-b", display_name="ALICE")
    assert speech_lines(transcript) == (
        "[00:00:01] Alice (u-a): Hello <team> & all.\n[00:01:02] ALICE (u-b): Hi.\n"
    )
    assert "<v Alice (u-a)>" in to_vtt(transcript) and "\nALICE (u-b): Hi." in to_srt(transcript)
    transcript.speakers = [
        Speaker(user_id="u-a", display_name="Jos\u00e9"),
        Speaker(user_id="u-b", display_name="Jose\u0301"),
    ]
    text = to_txt(transcript)
    assert "Jos\u00e9 (u-a)" in text and "Jose\u0301 (u-b)" in text
    transcript.speakers[1] = Speaker(user_id="u-b", display_name="Bob")
    assert "] Jos\u00e9: " in to_txt(transcript)  # one of a name: nothing added


def test_a_name_chosen_to_read_as_another_speakers_label_is_told_apart_too(transcript):
    # Display names are the participants' own: one may pick what another's label became.
    transcript.speakers = [
        Speaker(user_id="u-a", display_name="Alice"),
        Speaker(user_id="u-b", display_name="Alice (u-a)"),
        Speaker(user_id="u-c", display_name="Alice"),
    ]
    assert transcript.speaker_names() == {
        "u-a": "Alice (u-a)",
        "u-b": "Alice (u-a) (u-b)",
        "u-c": "Alice (u-c)",
    }
    assert speech_lines(transcript) == (
        "[00:00:01] Alice (u-a): Hello <team> & all.\n[00:01:02] Alice (u-a) (u-b): Hi.\n"
    )


def test_names_that_srt_would_write_alike_are_told_apart_there(transcript):
    # SRT writes braces as ❴❵ (libass reads what is in braces as styling): "Sam {CFO}" and
    # someone named "Sam ❴CFO❵" were both "Sam ❴CFO❵" there, one's words on the other.
    transcript.speakers = [
        Speaker(user_id="u-a", display_name="Sam {CFO}"),
        Speaker(user_id="u-b", display_name="Sam \u2774CFO\u2775"),
    ]
    srt = to_srt(transcript)
    assert '\n"Sam \u2774CFO\u2775 (u-a)": Hello' in srt
    assert '\n"Sam \u2774CFO\u2775 (u-b)": Hi.' in srt
    assert "<v Sam {CFO}>" in to_vtt(transcript)  # written as they are: nothing to tell apart
    # Told apart until no two read the same: a third named as one of the two became there.
    third = Speaker(user_id="u-c", display_name="Sam \u2774CFO\u2775 (u-a)")
    transcript.speakers.append(third)
    transcript.utterances.append(utt("u-c", 70.0, 71.0, "Me."))
    labels = [block.splitlines()[2].split(": ")[0] for block in to_srt(transcript).split("\n\n")]
    assert len(set(labels)) == 3


def test_names_that_differ_only_in_what_an_export_does_not_show_are_told_apart(transcript):
    transcript.speakers = [
        Speaker(user_id="u-a", display_name="Alice  Smith"),
        Speaker(user_id="u-b", display_name="Alice Smith\u202e"),
    ]
    assert speech_lines(transcript) == (
        "[00:00:01] Alice Smith (u-a): Hello <team> & all.\n[00:01:02] Alice Smith (u-b): Hi.\n"
    )
    # A name of nothing that shows is no name: the user id stands in.
    transcript.speakers = [Speaker(user_id="u-a", display_name="\u202e"), Speaker(user_id="u-b")]
    assert speech_lines(transcript).startswith("[00:00:01] u-a: Hello")


def test_a_name_that_mixes_scripts_is_shown_with_its_user_id(transcript):
    # "Аlice" with a Cyrillic А reads as Alice, whose words hers were taken for.
    transcript.speakers[1] = Speaker(user_id="u-b", display_name="\u0410lice")
    assert speech_lines(transcript) == (
        "[00:00:01] Alice: Hello <team> & all.\n[00:01:02] \u0410lice (u-b): Hi.\n"
    )
    assert "<v \u0410lice (u-b)>" in to_vtt(transcript)
    # So with no Alice there to pass for, and for letters no table of look-alikes holds
    # (Armenian օ, Lisu ꓮ).
    for name in ("Ch\u0435n", "B\u0585b", "\ua4eelice", "\u0391\u03bb\u03b5x Smith"):
        transcript.speakers[1] = Speaker(user_id="u-b", display_name=name)
        assert speech_lines(transcript).endswith(f"] {name} (u-b): Hi.\n")
    # One script throughout, or Han with kana or Hangul (as Japanese and Korean are
    # written), and modifier letters, are no mix: written as they are.
    for name in (
        "\u0410\u043b\u0435\u043a\u0441\u0435\u0439",
        "田中さくら",
        "佐々木ユーリ",
        "Kaʻiulani",
        "李 Li",
    ):
        transcript.speakers[1] = Speaker(user_id="u-b", display_name=name)
        assert transcript.speaker_names()["u-b"] == name


def test_a_user_id_of_mixed_scripts_standing_in_for_a_name_is_spelt_out_beside_anyone(
    transcript,
):
    # Alone, it is written as it is: spelt out, "team-Мария" reads as "team-\u041c\u0430...",
    # which tells a reader nothing, and there is no one beside it to pass for.
    mixed = "team-\u041c\u0430\u0440\u0438\u044f"
    alone = transcript.model_copy(
        update={
            "speakers": [Speaker(user_id=mixed)],
            "utterances": [transcript.utterances[1].model_copy(update={"speaker": mixed})],
        }
    )
    assert speech_lines(alone).endswith(f"] {mixed}: Hi.\n")
    # Beside anyone it is spelt out: the look-alikes that name_key folds are not all there
    # are (Armenian o), and a Cyrillic "Bob" beside a Bob must not keep reading as Bob
    # while the real one gains a user id.
    for impostor, spelt in (("\u0412\u043eb", "\\u0412\\u043eb"), ("B\u0585b", "B\\u0585b")):
        beside = two_speakers(transcript, ["u-bob", impostor], None)
        beside.speakers[0] = Speaker(user_id="u-bob", display_name="Bob")
        assert speech_lines(beside) == (
            f"[00:00:01] Bob: Hello <team> & all.\n[00:01:02] {spelt}: Hi.\n"
        )
    transcript = two_speakers(transcript, ["team-Map\u0438\u044f", mixed], None)
    assert speech_lines(transcript) == (
        "[00:00:01] team-Map\\u0438\\u044f: Hello <team> & all.\n"
        "[00:01:02] team-\\u041c\\u0430\\u0440\\u0438\\u044f: Hi.\n"
    )


@pytest.mark.parametrize(
    ("real", "look_alike"),
    [
        ("Joe", "\u0408\u043e\u0435"),
        ("Anna", "\u0391\u039d\u039d\u0391"),
        ("Joë", "\u0408\u043e\u0451"),
    ],
    ids=["Cyrillic", "Greek", "Cyrillic with a diaeresis"],
)
def test_a_name_in_letters_drawn_as_another_scripts_is_told_apart(transcript, real, look_alike):
    # Cyrillic "Јое" is one script throughout, and drawn as Joe: each is shown with its id.
    transcript.speakers = [
        Speaker(user_id="u-a", display_name=real),
        Speaker(user_id="u-b", display_name=look_alike),
    ]
    assert speech_lines(transcript) == (
        f"[00:00:01] {real} (u-a): Hello <team> & all.\n[00:01:02] {look_alike} (u-b): Hi.\n"
    )


@pytest.mark.parametrize(
    "unseen",
    ["\u200b", "\u00ad", "\u2060", "\ufeff", "\u200e", "\u034f", "\ufe0f", "\u3164", "\u2800"],
    ids=[
        "zero-width space",
        "soft hyphen",
        "word joiner",
        "BOM",
        "LRM",
        "grapheme joiner",
        "variation selector",
        "Hangul filler",
        "braille blank",
    ],
)
def test_names_that_differ_only_by_a_character_that_is_not_drawn_are_told_apart(transcript, unseen):
    # Exports keep such characters (some matter to how a script is written), so "Alice" and
    # "Al\u200bice" both read Alice: each is shown with its user id, as two Alices are.
    transcript.speakers[1] = Speaker(user_id="u-b", display_name=f"Al{unseen}ice")
    assert speech_lines(transcript) == (
        f"[00:00:01] Alice (u-a): Hello <team> & all.\n[00:01:02] Al{unseen}ice (u-b): Hi.\n"
    )
    # A name of nothing but such characters is no name: the user id stands in.
    transcript.speakers[1] = Speaker(user_id="u-b", display_name=unseen * 2)
    assert vtt_cues(transcript)[1] == "00:01:02.000 --> 00:01:04.000\n<v u-b>Hi.\n"


def test_speakers_whose_user_ids_too_read_the_same_have_them_spelt_out(transcript):
    # No display names, and ids apart by a zero-width space: both read "u-a".
    transcript = transcript.model_copy(
        update={
            "speakers": [Speaker(user_id="u-a"), Speaker(user_id="u-\u200ba")],
            "utterances": [transcript.utterances[0], utt("u-\u200ba", 62.0, 64.0, "Hi.")],
        }
    )
    assert (
        speech_lines(transcript)
        == "[00:00:01] u-a: Hello <team> & all.\n[00:01:02] u-\\u200ba: Hi.\n"
    )


@pytest.mark.parametrize(
    ("ids", "named", "read"),
    [
        # A trailing space, a tab, a control character: each was dropped where the ids were
        # written, so two people read as one.
        (
            ["alice@x.com", "alice@x.com "],
            "Alice",
            ["Alice (alice@x.com)", "Alice (alice@x.com\\u0020)"],
        ),
        (["bob\t", "bob"], None, ["bob\\t", "bob"]),
        (["u-1\x01", "u-1"], None, ["u-1\\u0001", "u-1"]),
        (["a  b", "a b"], None, ["a \\u0020b", "a b"]),
    ],
)
def test_user_ids_that_read_the_same_are_spelt_out_with_what_does_not_show(
    transcript, ids, named, read
):
    transcript = two_speakers(transcript, ids, named)
    assert [line.split("] ")[1] for line in speech_lines(transcript).splitlines()] == [
        f"{label}: {said}" for label, said in zip(read, ["Hello <team> & all.", "Hi."], strict=True)
    ]


def test_speakers_who_read_the_same_even_spelt_out_are_told_apart_by_their_place(transcript):
    # Spelt out, "Bob" and "bob" still read the same, as two Alices do: their place is added.
    transcript = two_speakers(transcript, ["Bob", "bob"], None)
    assert transcript.speaker_names() == {"Bob": "Bob (speaker 1)", "bob": "bob (speaker 2)"}
    named = two_speakers(transcript, ["Bob", "bob"], "Al")
    assert named.speaker_names() == {"Bob": "Al (Bob) (speaker 1)", "bob": "Al (bob) (speaker 2)"}
    assert "\nbob (speaker 2): Hi." in to_srt(transcript)


def two_speakers(transcript: Transcript, ids: list[str], named: str | None) -> Transcript:
    """``transcript`` with its two speakers' user ids ``ids``, both with the display name
    ``named``."""
    a, b = transcript.utterances
    return transcript.model_copy(
        update={
            "speakers": [Speaker(user_id=user_id, display_name=named) for user_id in ids],
            "utterances": [
                a.model_copy(update={"speaker": ids[0]}),
                b.model_copy(update={"speaker": ids[1]}),
            ],
        }
    )


def test_a_name_cannot_put_words_in_another_speakers_mouth(transcript):
    # Display names are the participants' own. Written as it is, this one made a line that
    # reads as Alice approving, then Bob speaking; quoted, it reads as one name.
    forged = "Alice: I approve the wire transfer. [00:00:22] Bob"
    for colon in (":", "\uff1a", "\ua789", "\u02d0"):  # and colons that only look like one
        transcript.speakers[1] = Speaker(user_id="u-b", display_name=forged.replace(":", colon))
        quoted = json.dumps(forged.replace(":", colon), ensure_ascii=False)
        assert speech_lines(transcript).endswith(f"\n[00:01:02] {quoted}: Hi.\n")
        assert to_srt(transcript).endswith(f"\n{quoted}: Hi.\n")
    # Names as people have them are written as they are.
    for name in ("Dr. Seán O\u2019Neil-Smith, CFO (Finance) & Co", "Zoë 🎉", "李小龍", "Anne_2"):
        transcript.speakers[1] = Speaker(user_id="u-b", display_name=name)
        assert speech_lines(transcript).endswith(f"\n[00:01:02] {name}: Hi.\n")


_COLONS = [
    chr(i)
    for i in range(sys.maxunicode + 1)
    if any(word in unicodedata.name(chr(i), "") for word in ("COLON", "VISARGA"))
]


@pytest.mark.parametrize(
    "colon",
    # And the visargas named otherwise: Tibetan, Khmer, Balinese, Javanese, Sundanese.
    [*_COLONS, "\ua4fd", "\u2805", "\u2806", "\u2828", "\u2830", *"\u0f7f\u17c7\u1b04\ua983\u1b82"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_no_character_drawn_as_a_colon_leaves_a_name_unquoted(transcript, colon):
    # Lisu's ꓽ, Devanagari's visarga ः and a modifier letter 𐞁 are letters or marks, and braille
    # stacks two dots: written bare, they made this one name read as Alice approving the budget.
    name = f"Alice{colon} I approve the budget. Dana"
    transcript.speakers[1] = Speaker(user_id="u-b", display_name=name)
    shown = transcript.speaker_names()["u-b"]  # a letter of another script adds the user id
    quoted = json.dumps(shown, ensure_ascii=False)
    unisolated = str.maketrans("", "", "\u2068\u2069")  # Syriac's ܃ is written right to left
    assert speech_lines(transcript).translate(unisolated).endswith(f"] {quoted}: Hi.\n")
    assert to_srt(transcript).translate(unisolated).endswith(f"\n{quoted}: Hi.\n")


@pytest.mark.parametrize(
    "letter_and_sign",
    ["\u0f40\u0f7f", "\u1780\u17c7", "\u1b13\u1b04", "\ua98f\ua983", "\u1b8a\u1b82"],
    ids=["Tibetan", "Khmer", "Balinese", "Javanese", "Sundanese"],
)
def test_a_visarga_on_its_own_scripts_letter_quotes_the_name(transcript, letter_and_sign):
    # KA with its own script's visarga (ཀཿ): one script throughout, yet drawn as a colon.
    name = f"{letter_and_sign} I approve the budget. Dana"
    transcript.speakers[1] = Speaker(user_id="u-b", display_name=name)
    quoted = json.dumps(f"{name} (u-b)", ensure_ascii=False)  # a name of two scripts
    assert speech_lines(transcript).endswith(f"] {quoted}: Hi.\n")
    assert to_srt(transcript).endswith(f"\n{quoted}: Hi.\n")


def test_a_mark_of_another_script_than_its_letter_quotes_the_name(transcript):
    # A mark no list of names here catches (Tibetan ཾ stands in for a colon-like sign Unicode
    # adds later) is of no letter's script in a Latin name: there only to pass for what it
    # looks like. Quoted, and the name shown with its user id, wherever it is written.
    name = "Alice\u0f7e I approve the budget. Dana"
    transcript.speakers[1] = Speaker(user_id="u-b", display_name=name)
    assert transcript.speaker_names()["u-b"] == f"{name} (u-b)"  # a mark's script counts
    quoted = json.dumps(f"{name} (u-b)", ensure_ascii=False)
    assert speech_lines(transcript).endswith(f"] {quoted}: Hi.\n")
    assert to_srt(transcript).endswith(f"\n{quoted}: Hi.\n")
    # A script's marks on its own letters, and those written with any (a combining acute,
    # the variation selector of an emoji), are names as people have them: written as they are.
    for name in ("\u0f40\u0f7e", "अंकित", "Zoe\u0301 \u2764\ufe0f", "\u17a2\u17c6"):
        transcript.speakers[1] = Speaker(user_id="u-b", display_name=name)
        assert speech_lines(transcript).endswith(f"] {name}: Hi.\n")


def test_a_right_to_left_name_keeps_what_follows_it_in_the_order_said(transcript):
    # Without the isolates, "דנה: 10 20 30" is shown as "30 20 10 :הנד".
    transcript.speakers[1] = Speaker(user_id="u-b", display_name="דנה")
    transcript.utterances[1] = utt("u-b", 62.0, 64.0, "10 20 30")
    assert speech_lines(transcript).endswith("\n[00:01:02] \u2068דנה\u2069: 10 20 30\n")
    assert to_srt(transcript).endswith("\n\u2068דנה\u2069: 10 20 30\n")
    assert speech_lines(transcript).startswith("[00:00:01] Alice: ")  # left to right: as it is


def test_cues_that_start_together_keep_the_transcripts_order(transcript):
    transcript.utterances = [
        utt("u-a", 5.0, 9.0, "The longer one."),
        utt("u-b", 5.0, 6.0, "Short."),
    ]
    srt = to_srt(transcript)
    assert srt.index("Alice: The longer one.") < srt.index("u-b: Short.")
    assert [c.splitlines()[1] for c in vtt_cues(transcript)] == [
        "<v Alice>The longer one.",
        "<v u-b>Short.",
    ]


def test_a_name_cannot_reorder_or_hide_what_follows_it(transcript):
    # A right-to-left override shows the words after the name backwards; escapes move cursors.
    transcript.speakers[0] = Speaker(user_id="u-a", display_name="Bruno\u202e\x1b[2J\x00")
    for text in (to_txt(transcript), to_vtt(transcript), to_srt(transcript)):
        assert "Bruno[2J" in text
        assert not any(c in text for c in "\u202e\x1b\x00")


@pytest.fixture
def partial(transcript):
    """A transcript whose one track failed and another broke off; the names are hostile."""
    transcript.provenance.failures = [
        TrackFailure(path="c.webm", user_id="u-c", reason="c.webm: not a readable audio file")
    ]
    transcript.provenance.inputs = [
        InputFile(
            path="b\n\nx ---> y.webm",
            user_id="u-b",
            sha256="0" * 64,
            size=1,
            started_time=ORIGIN,
            problem="the file ends at 64.00 s but its header says 90.00 s (truncated)",
        )
    ]
    return transcript


def test_a_partial_transcript_says_so_in_webvtt_where_players_do_not_show_it(partial):
    note, *cues = vtt_cues(partial)
    assert note.splitlines() == [
        "NOTE Partial transcript: these inputs were lost, in whole or in part, or are damaged:",
        "c.webm: not a readable audio file",
        "b x -> y.webm: the file ends at 64.00 s but its header says 90.00 s (truncated)",
    ]
    assert len(cues) == 2 and all(" --> " in cue for cue in cues)


def test_a_blank_reason_cannot_end_the_webvtt_note_early(partial):
    # A blank line ends a NOTE: the next reason was then read as a cue without a timing, and
    # ffmpeg read no cue of the file at all. (Only a transcript edited by hand has one.)
    partial.provenance.failures.insert(0, TrackFailure(path="", user_id="u-c", reason=" "))
    note, *cues = vtt_cues(partial)
    assert len(note.splitlines()) == 3 and "" not in note.splitlines()
    assert len(cues) == 2 and all(" --> " in cue for cue in cues)


def test_a_partial_transcript_says_so_at_the_top_of_the_text(partial):
    lines = speech_lines(partial).splitlines()
    assert lines[0].startswith("# Partial transcript")
    assert lines[1:3] == [
        "#   c.webm: not a readable audio file",
        "#   b x ---> y.webm: the file ends at 64.00 s but its header says 90.00 s (truncated)",
    ]
    assert lines[3:] == ["", "[00:00:01] Alice: Hello <team> & all.", "[00:01:02] u-b: Hi."]


def test_text_and_webvtt_say_which_meeting_they_are_of_and_what_made_them(transcript):
    # A reviewer handed transcript.txt alone must be able to place it: [00:01:02] from when?
    transcript.provenance.recording_id = "rec-9"
    transcript.provenance.software = "trackscribe 9.9 (code abc)"
    about = [
        "Meeting m-1, recording rec-9; times count from 2026-11-20T10:00:00.000Z (UTC).",
        "Made by trackscribe 9.9 (code abc) with the model none.",
    ]
    assert to_txt(transcript).split("\n\n")[0].splitlines() == [f"# {line}" for line in about]
    assert to_vtt(transcript).split("\n\n")[1].splitlines() == ["NOTE", *about]
    # The meeting id is the API's or the manifest's: it can neither add a line nor end a NOTE.
    transcript.meeting_id = "m-1\n\n00:00:00.000 --> 00:09:00.000\n<v CEO>I resign."
    vtt = to_vtt(transcript)
    assert len(vtt.split("\n\n")) == 4 and "-->" not in vtt.split("\n\n")[1]
    first, second, blank, *_ = to_txt(transcript).splitlines()
    assert first.startswith("# Meeting m-1 00:00:00.000 --> 00:09:00.000 <v CEO>I resign., ")
    assert second.startswith("# Made by") and blank == ""


def test_a_whole_transcript_has_no_partial_note(transcript):
    assert "NOTE" not in "".join(vtt_cues(transcript)) and "#" not in speech_lines(transcript)


def test_seglst_is_what_meeteval_reads(transcript):
    assert json.loads(to_seglst(transcript)) == [
        {
            "session_id": "m-1",
            "speaker": "u-a",
            "start_time": 1.25,
            "end_time": 3.5,
            "words": "Hello <team> & all.",
        },
        {
            "session_id": "m-1",
            "speaker": "u-b",
            "start_time": 62.0,
            "end_time": 64.0,
            "words": "Hi.",
        },
    ]


def test_long_utterances_become_several_readable_cues(transcript):
    text = " ".join(f"word{i}" for i in range(40))
    transcript.utterances = [utt("u-a", 0.0, 20.0, text)]
    cues = vtt_cues(transcript)
    assert len(cues) >= 3
    lines = [c.split("\n")[1].removeprefix("<v Alice>") for c in cues]
    assert " ".join(lines) == text
    assert all(len(line) <= 84 for line in lines)


def test_a_long_utterance_whose_text_was_edited_shows_the_text_not_the_old_words(transcript):
    # A reviewer redacts the text and exports again: the subtitles must not bring it back.
    said = utt("u-a", 0.0, 20.0, " ".join(f"word{i}" for i in range(40)))
    transcript.utterances = [said.model_copy(update={"text": "[REDACTED]"})]
    for text in (to_vtt(transcript), to_srt(transcript)):
        assert "[REDACTED]" in text and "word" not in text


def test_a_word_redacted_in_the_text_is_gone_from_the_json_and_the_subtitles_still_cut(
    transcript,
):
    said = utt("u-a", 0.0, 20.0, " ".join(f"word{i}" for i in range(40)))
    transcript.utterances = [said]
    said.text = said.text.replace("word17", "[redacted]")  # as a notebook edits it
    data = json.loads(render(transcript, "json"))
    assert "word17" not in json.dumps(data)
    kept = {w.word: w for w in said.words}
    redacted = kept.pop("[redacted]")
    assert (redacted.start, redacted.end) == (8.5, 9.0)  # where word17 was said
    assert all(kept[w.word] == w for w in utt("u-a", 0.0, 20.0, said.text).words if w.word in kept)
    cues = vtt_cues(transcript)
    assert len(cues) >= 3 and "[redacted]" in "".join(cues) and "word17" not in "".join(cues)


def test_a_copy_with_edited_text_writes_words_that_follow_it(transcript):
    # model_copy(update=...) validates nothing: the words are made to follow as written.
    said = utt("u-a", 1.0, 4.0, "we meet on Monday")
    transcript.utterances = [said.model_copy(update={"text": "we meet on Tuesday, early"})]
    words = json.loads(render(transcript, "json"))["utterances"][0]["words"]
    assert [w["word"] for w in words] == ["we", "meet", "on", "Tuesday,", "early"]
    assert words[:3] == [w.model_dump() for w in said.words[:3]]
    assert (words[3]["start"], words[4]["end"]) == (said.words[3].start, said.words[3].end)
    assert words[3]["probability"] == words[4]["probability"] == 1.0  # a person wrote them


def test_a_transcript_edited_by_hand_reads_back_with_words_that_follow_its_text(
    transcript, tmp_path
):
    path = tmp_path / "transcript.json"
    data = json.loads(render(transcript, "json"))
    data["utterances"][0]["text"] = "Hello all."  # two words taken out
    path.write_text(json.dumps(data), encoding="utf-8")
    words = Transcript.load(path).utterances[0].words
    assert [w.word for w in words] == ["Hello", "all."]
    assert words == [w for w in transcript.utterances[0].words if w.word in ("Hello", "all.")]


def test_words_that_differ_from_the_text_in_spacing_alone_are_kept_as_they_are(transcript):
    # An early transcript kept each word's leading space; Chinese text has no spaces between
    # its words. Neither is a text edited: the model's times and probabilities stand.
    said = utt("u-a", 1.0, 3.0, "Hello, world.")
    spaced = [w.model_copy(update={"word": f" {w.word}", "probability": 0.62}) for w in said.words]
    chinese = utt("u-b", 4.0, 6.0, "你好 世界")
    for text, words in (("Hello, world.", spaced), ("你好世界", chinese.words)):
        loaded = Utterance.model_validate({**said.model_dump(), "text": text, "words": words})
        assert loaded.words == words
        assert loaded.model_dump()["words"] == [w.model_dump() for w in words]


def test_a_rewrite_of_a_very_long_utterance_spreads_its_words_over_the_time_said(transcript):
    said = utt("u-a", 0.0, 600.0, " ".join(f"word{i}" for i in range(2000)))
    said.text = " ".join(f"new{i}" for i in range(1500))
    assert [w.word for w in said.words] == said.text.split()
    assert said.words[0].start == 0.0 and said.words[-1].end == 600.0


def test_one_word_redacted_in_a_very_long_utterance_leaves_the_others_their_times(transcript):
    said = utt("u-a", 0.0, 1200.0, " ".join(f"word{i}" for i in range(3000)))
    before = list(said.words)
    said.text = said.text.replace("word1500 ", "[redacted] ")
    assert [w for w in said.words if w.word != "[redacted]"] == before[:1500] + before[1501:]


def test_an_early_transcripts_long_utterance_is_still_cut_into_cues(transcript):
    # Its words kept their leading spaces: the same words as the text, cut as any.
    said = utt("u-a", 0.0, 20.0, " ".join(f"word{i}" for i in range(40)))
    spaced = [w.model_copy(update={"word": f" {w.word}"}) for w in said.words]
    transcript.utterances = [said.model_copy(update={"words": spaced})]
    cues = vtt_cues(transcript)
    assert len(cues) >= 3
    lines = [c.split("\n")[1].removeprefix("<v Alice>") for c in cues]
    assert " ".join(lines) == said.text


def test_what_a_dump_leaves_out_of_the_words_is_still_left_out(transcript):
    transcript.utterances[0].text = "Hello all."  # edited: the words written follow it
    dumped = transcript.model_dump(
        exclude={"utterances": {"__all__": {"words": {"__all__": {"probability"}}}}}
    )
    assert dumped["utterances"][0]["words"] == [
        {"word": w.word, "start": w.start, "end": w.end} for w in transcript.utterances[0].words
    ]


def test_a_long_utterance_whose_word_times_go_back_is_shown_whole(transcript):
    # Edited by hand, the second word's time moved to the end: cut by those times, the words
    # of 2-11 s were shown for half a second after the rest.
    said = utt("u-a", 0.0, 12.0, " ".join(f"word{i}" for i in range(12)))
    words = list(said.words)
    words[1] = words[1].model_copy(update={"start": 11.5, "end": 11.9})
    transcript.utterances = [said.model_copy(update={"words": words})]
    assert vtt_cues(transcript) == [f"00:00:00.000 --> 00:00:12.000\n<v Alice>{said.text}\n"]


def test_an_utterance_of_nothing_that_shows_gives_no_cue(transcript):
    # Control characters alone are taken out of what is shown: the cue was an empty voice tag.
    transcript.utterances[1] = utt("u-b", 62.0, 64.0, "\x01\x07")
    assert len(vtt_cues(transcript)) == 1 and to_srt(transcript).count(" --> ") == 1


def test_export_writes_each_format_whole_and_a_record_of_them(transcript, tmp_path):
    written = export(transcript, tmp_path / "out", FORMATS)
    names = sorted(p.name for p in written.values())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".trackscribe-exports", *names]
    record = (tmp_path / "out" / ".trackscribe-exports").read_text().splitlines()
    sums = [line for line in record if not line.startswith("#")]  # as sha256sum -c reads it
    assert [line.split("  ")[1] for line in sums] == names
    for digest, name in (line.split("  ") for line in sums):
        assert digest == hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest()
    assert Transcript.load(written["json"]) == transcript
    with pytest.raises(ValueError, match="unknown format"):
        export(transcript, tmp_path, ["docx"])
    with pytest.raises(ValueError, match="no format"):
        export(transcript, tmp_path, [])


def test_a_notebook_exports_from_the_public_api_with_one_format_named_or_all_of_them(
    transcript, tmp_path
):
    from pipeline import export as public_export

    assert list(public_export(transcript, str(tmp_path / "one"), "vtt")) == ["vtt"]
    assert set(public_export(transcript, tmp_path / "all")) == set(FORMATS) - {"bundle"}
    # or from the transcript's file, as a notebook that did not keep the object has it
    saved = tmp_path / "all" / "transcript.json"
    assert (
        public_export(str(saved), tmp_path / "again", "txt")["txt"].read_text()
        == (tmp_path / "all" / "transcript.txt").read_text()
    )
    with pytest.raises(TypeError, match="transcript must be a Transcript, or the path of a"):
        public_export(42, tmp_path / "none", "txt")


def test_cues_of_a_long_utterance_and_an_overlapping_reply_are_in_time_order(transcript):
    long_text = " ".join(f"word{i}" for i in range(40))
    transcript.utterances = [utt("u-a", 0.0, 20.0, long_text), utt("u-b", 5.0, 6.0, "Right.")]
    cues = [c.split("\n")[0] for c in vtt_cues(transcript)]
    starts = [c.split(" --> ")[0] for c in cues]
    assert starts == sorted(starts) and "00:00:05.000" in starts
    for cue in cues:
        start, end = (_seconds(t) for t in cue.split(" --> "))
        assert 0 < end - start <= 7.0


def _seconds(clock: str) -> float:
    h, m, s = clock.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    transcript, tmp_path, monkeypatch
):
    import os

    out = tmp_path / "out"
    export(transcript, out, ["txt"])
    before = (out / "transcript.txt").read_text()
    transcript.utterances = transcript.utterances[:1]

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        export(transcript, out, ["txt"])
    assert (out / "transcript.txt").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == [".trackscribe-exports", "transcript.txt"]


def test_a_folder_in_the_way_of_one_format_leaves_every_file_as_it_was(transcript, tmp_path):
    out = tmp_path / "out"
    export(transcript, out, ["json", "txt"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "transcript.srt").mkdir()  # someone's folder where the subtitles would go
    transcript.utterances = transcript.utterances[:1]

    with pytest.raises(WriteError, match=r"transcript\.srt: a folder is in the way"):
        export(transcript, out, ["json", "srt", "txt"])

    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # not a newer json beside an older txt


def test_a_file_that_refuses_its_rename_puts_back_the_ones_already_renamed(
    transcript, tmp_path, monkeypatch
):
    # as an immutable file, or a subtitle file another program holds open on Windows, refuses
    import os

    out = tmp_path / "out"
    export(transcript, out, ["json", "vtt", "txt"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    transcript.utterances = transcript.utterances[:1]
    rename = os.replace

    def refuse_the_subtitles(src, dst):
        if os.path.basename(dst) == "transcript.vtt":
            raise PermissionError(1, "Operation not permitted")
        rename(src, dst)

    monkeypatch.setattr(os, "replace", refuse_the_subtitles)
    with pytest.raises(WriteError, match=r"transcript\.vtt: cannot write: Operation not permitted"):
        export(transcript, out, ["json", "srt", "vtt", "txt"])

    # The json went first and was put back; the srt, new with this export, is gone again.
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize(
    ("interrupted", "left"), [("transcript.vtt", "old"), (".trackscribe-exports", "new")]
)
def test_a_ctrl_c_just_after_a_rename_leaves_one_export_whole(
    transcript, tmp_path, monkeypatch, interrupted, left
):
    # Python acts on Ctrl-C between two steps: here, after the rename, before its next line.
    import os

    out = tmp_path / "out"
    export(transcript, out, ["json", "vtt", "txt"])
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    transcript.utterances = transcript.utterances[:1]
    new = {
        name: FORMATS[kind][1](transcript).encode()
        for kind, (name, _) in FORMATS.items()
        if kind in ("json", "vtt", "txt")
    }
    rename, pressed = os.replace, []

    def rename_then_interrupt(src, dst):
        rename(src, dst)
        if os.path.basename(dst) == interrupted and not pressed:
            pressed.append(dst)
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", rename_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        export(transcript, out, ["json", "vtt", "txt"])

    files = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    expected = {n: d for n, d in old.items() if not n.startswith(".")} if left == "old" else new
    assert files == expected
    assert [p.name for p in out.iterdir() if p.name.endswith(".part")] == []


def test_a_file_where_a_folder_should_be_is_named_not_called_file_exists(
    transcript, tmp_path, caplog
):
    blocked = tmp_path / "notes"
    blocked.write_text("mine")
    with pytest.raises(WriteError, match=rf"cannot write: {blocked} is not a folder"):
        export(transcript, blocked / "out", ["json"])
    assert blocked.read_text() == "mine"
    assert caplog.text == ""  # the error says it all: no warning about a record beforehand


def test_written_files_have_ordinary_permissions(transcript, tmp_path):
    import os

    written = export(transcript, tmp_path, ["json"])
    mask = os.umask(0o022)
    os.umask(mask)
    assert written["json"].stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_blank_display_name_shows_the_user_id_instead(transcript):
    blank = transcript.model_copy(
        update={"speakers": [Speaker(user_id="u-a", display_name="  "), Speaker(user_id="u-b")]}
    )
    assert "<v u-a>Hello" in to_vtt(blank)
    assert "u-a: Hello" in to_srt(blank)


def test_a_meeting_with_no_speech_says_so_rather_than_leaving_empty_files(transcript):
    # An empty file reads as a write that failed; SRT has no comments, so it alone is empty.
    silent = transcript.model_copy(update={"utterances": []})
    assert speech_lines(silent) == "# No speech was transcribed.\n"
    assert vtt_cues(silent) == ["NOTE No speech was transcribed.\n"]
    assert to_srt(silent) == ""
    # Typed as a meeting with speech is, so that .dt and concatenation with others work.
    empty, full = silent.to_dataframe(), transcript.to_dataframe()
    assert empty.empty and empty.dtypes.equals(full.dtypes)
    assert str(empty["start_time"].dtype) == "datetime64[us, UTC]"


def test_every_cue_ends_after_it_starts_and_none_is_empty(transcript):
    instant = utt("u-b", 70.0, 70.0, "Oh.")
    silent = instant.model_copy(update={"start": 80.0, "end": 81.0, "text": " ", "words": []})
    odd = transcript.model_copy(update={"utterances": [*transcript.utterances, instant, silent]})
    assert "00:01:10.000 --> 00:01:10.001\n<v u-b>Oh." in to_vtt(odd)
    assert "00:01:10,000 --> 00:01:10,001\nu-b: Oh." in to_srt(odd)
    assert "00:01:20" not in to_vtt(odd) + to_srt(odd)


def test_replacing_removes_what_an_earlier_run_wrote_in_other_formats(transcript, tmp_path, caplog):
    out = tmp_path / "out"
    export(transcript, out, ["json", "srt", "txt"], replace=True)
    (out / "notes.txt").write_text("the reviewer's own file")
    transcript.utterances = transcript.utterances[:1]

    with caplog.at_level("WARNING", logger="trackscribe.stages.export"):
        export(transcript, out, ["json", "vtt"], replace=True)

    assert sorted(p.name for p in out.iterdir()) == [
        ".trackscribe-exports",
        "notes.txt",
        "transcript.json",
        "transcript.vtt",
    ]
    assert Transcript.load(out / "transcript.json") == transcript
    assert "removed" in caplog.text and "transcript.srt: an earlier run wrote it" in caplog.text


def test_replacing_leaves_alone_a_file_of_our_name_that_trackscribe_did_not_write(
    transcript, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "transcript.txt").write_text("minutes typed by hand")
    export(transcript, out, ["json"], replace=True)
    assert (out / "transcript.txt").read_text() == "minutes typed by hand"


def test_replacing_keeps_a_file_changed_since_trackscribe_wrote_it_and_says_so(
    transcript, tmp_path, caplog
):
    out = tmp_path / "out"
    export(transcript, out, ["json", "srt", "txt"], replace=True)
    (out / "transcript.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nAlice: corrected\n")
    export(transcript, out, ["vtt"])  # a notebook adding subtitles in between
    (out / "transcript.txt").write_bytes((out / "transcript.txt").read_bytes())  # copied back
    with caplog.at_level("WARNING", logger="trackscribe.stages.export"):
        export(transcript, out, ["json"], replace=True)
    assert "corrected" in (out / "transcript.srt").read_text()
    assert "kept" in caplog.text and "transcript.srt: it has changed" in caplog.text
    assert not (out / "transcript.txt").exists()  # the same bytes: still what trackscribe wrote
    assert not (out / "transcript.vtt").exists()


def test_replacing_never_touches_what_a_record_names_beyond_our_formats(transcript, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    notes = out / "notes.txt"
    notes.write_text("the reviewer's own file")
    digest = hashlib.sha256(notes.read_bytes()).hexdigest()
    (out / ".trackscribe-exports").write_text(f"{digest}  notes.txt\n{digest}  ../notes.txt\n")
    export(transcript, out, ["json"], replace=True)
    assert notes.read_text() == "the reviewer's own file"


def test_exporting_more_formats_keeps_the_earlier_ones_unless_told_to_replace(transcript, tmp_path):
    out = tmp_path / "out"
    export(transcript, out, ["json", "srt"])
    export(transcript, out, ["vtt"])  # a notebook adding subtitles
    assert {p.name for p in out.iterdir()} >= {"transcript.json", "transcript.srt"}
    export(transcript, out, ["vtt"], replace=True)
    assert sorted(p.name for p in out.iterdir()) == [".trackscribe-exports", "transcript.vtt"]


def test_an_old_file_that_cannot_be_removed_is_named_and_the_new_ones_are_kept(
    transcript, tmp_path, caplog, monkeypatch
):
    from pathlib import Path

    out = tmp_path / "out"
    export(transcript, out, ["json", "srt"], replace=True)
    transcript.utterances = transcript.utterances[:1]
    unlink = Path.unlink

    def refuse_srt(self, missing_ok=False):
        if self.name == "transcript.srt":
            raise PermissionError(13, "Permission denied", str(self))
        return unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse_srt)
    with caplog.at_level("WARNING", logger="trackscribe.stages.export"):
        export(transcript, out, ["json"], replace=True)

    assert Transcript.load(out / "transcript.json") == transcript
    assert "transcript.srt is from an earlier run and could not be removed" in caplog.text
    # Still named in the record, so the next run removes it.
    assert "transcript.srt" in (out / ".trackscribe-exports").read_text()
    monkeypatch.undo()
    export(transcript, out, ["json"], replace=True)
    assert not (out / "transcript.srt").exists()


def test_a_folder_where_the_record_goes_costs_only_the_record(transcript, tmp_path, caplog):
    out = tmp_path / "out"
    (out / ".trackscribe-exports").mkdir(parents=True)
    with caplog.at_level("WARNING", logger="trackscribe.stages.export"):
        export(transcript, out, ["json", "srt"], replace=True)
        export(transcript, out, ["json"], replace=True)
    assert Transcript.load(out / "transcript.json") == transcript
    assert (out / "transcript.srt").exists()  # nothing recorded, so nothing removed
    assert "is not a file" in caplog.text


def test_a_time_shows_the_same_second_in_the_text_and_in_a_notebook(transcript):
    transcript.utterances[1] = utt("u-b", 62.9996, 64.0, "Hi.")  # 01:03.000 to the millisecond
    assert "[00:01:03] u-b: Hi." in to_txt(transcript)
    assert "<td>00:01:03</td>" in transcript._repr_html_()
    assert "00:01:03.000 --> " in to_vtt(transcript)


def test_a_bundle_holds_every_format_and_sums_that_sha256sum_checks(partial, tmp_path):
    """What a reviewer is sent: one zip, checkable where trackscribe is not installed."""
    path = export(partial, tmp_path / "out", "bundle")["bundle"]
    assert path.name == "transcript.bundle.zip"
    with zipfile.ZipFile(path) as bundle:
        assert bundle.namelist() == BUNDLE_MEMBERS
        for name in ("json", "vtt", "srt", "txt", "seglst"):
            assert bundle.read(FORMATS[name][0]) == render(partial, name)
        bundle.extractall(tmp_path / "unpacked")
    checked = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"],
        cwd=tmp_path / "unpacked",
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": OK") == len(BUNDLE_MEMBERS) - 1
    (tmp_path / "unpacked" / "transcript.txt").write_text("[00:00:01] Alice: I never said that.\n")
    checked = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path / "unpacked", capture_output=True, text=True
    )
    assert checked.returncode == 1
    assert "transcript.txt: FAILED" in checked.stdout


def test_the_same_transcript_makes_the_same_bundle_dated_at_the_meeting(transcript):
    assert to_bundle(transcript) == to_bundle(transcript.model_copy(deep=True))
    with zipfile.ZipFile(io.BytesIO(to_bundle(transcript))) as bundle:
        assert {member.date_time for member in bundle.infolist()} == {(2026, 11, 20, 10, 0, 0)}
        assert bundle.comment.startswith(b"trackscribe.bundle/1")
    changed = transcript.model_copy(deep=True)
    changed.utterances[0].text = "Hello."
    assert to_bundle(changed) != to_bundle(transcript)


def test_the_bundle_is_not_written_unless_asked_for(transcript, tmp_path):
    assert "bundle" not in export(transcript, tmp_path)
    assert not (tmp_path / "transcript.bundle.zip").exists()


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    ("formats", "replace"),
    [
        (["json", "bundle"], False),  # the bundle written over, unsigned
        (["json", "bundle"], True),
        (["json"], True),  # the bundle removed, as an earlier run's file in another format
    ],
)
def test_an_export_with_no_signer_refuses_to_lose_a_signed_bundle_and_writes_nothing(
    transcript, tmp_path, formats, replace
):
    from pipeline.signing import SigningKey  # the key; stages import no pipeline

    out = tmp_path / "out"
    signer = SigningKey(write_key(tmp_path, "signer")[0]).sign
    export(transcript, out, ["json", "vtt", "bundle"], replace=True, signer=signer)
    before = _files(out)
    transcript.utterances = transcript.utterances[:1]  # a re-export of another transcript

    with pytest.raises(SigningKeyError) as refused:
        export(transcript, out, formats, replace=replace)

    bundle = out / "transcript.bundle.zip"
    assert str(refused.value) == (
        f"{bundle}: signed; with no signing key it would be written again unsigned, or "
        "removed: give the key (--sign-key), or remove the bundle first to do without"
    )
    assert _files(out) == before  # nothing written: not the JSON either
    export(transcript, out, ["txt"])  # beside it, replacing nothing: no key needed
    with zipfile.ZipFile(bundle) as kept:
        assert "SHA256SUMS.sig" in kept.namelist()


def test_an_export_with_no_signer_may_replace_an_unsigned_bundle(transcript, tmp_path):
    out = tmp_path / "out"
    export(transcript, out, ["json", "bundle"])
    export(transcript, out, ["json", "bundle"], replace=True)
    export(transcript, out, ["json"], replace=True)
    assert not (out / "transcript.bundle.zip").exists()


@pytest.fixture
def report(partial) -> list[str]:
    """The provenance a reviewer reads in the bundle of a partial transcript."""
    partial.provenance.dropped = [
        DroppedSpeech(
            path="a.webm", user_id="u-a", start=12.3, end=13.1, reason="leaked", attributed_to="u-b"
        )
    ]
    partial.provenance.clock = [
        ClockEstimate(
            path="a.webm",
            user_id="u-a",
            correction_s=-0.042,
            pairs=3,
            correlation=0.91,
            applied=True,
            drift_ppm=12.5,
            echo_s=0.18,
            echo_applied=True,
        )
    ]
    partial.provenance.parameters = {"vad": {"padding": 0.2}, "beam_size": 5}
    return _bundled_report(partial)


def _bundled_report(transcript) -> list[str]:
    """The lines of the provenance.txt in the transcript's bundle."""
    with zipfile.ZipFile(io.BytesIO(to_bundle(transcript))) as bundle:
        return bundle.read("provenance.txt").decode("utf-8").splitlines()


def test_the_provenance_report_opens_with_what_was_lost(report):
    assert report[3] == "PARTIAL: 2 inputs lost, in whole or in part:"
    assert report[4] == "  c.webm: not a readable audio file"
    assert report[5].startswith("  b x ---> y.webm: the file ends at 64.00 s")


def test_the_provenance_report_names_each_input_by_its_bytes_and_start(report):
    at = report.index("  b x ---> y.webm")
    assert report[at + 1 : at + 5] == [
        "    speaker   u-b",
        "    bytes     1",
        f"    SHA-256   {'0' * 64}",
        "    starts    2026-11-20T10:00:00.000Z (+0.000 s)",
    ]
    assert report[at + 5].startswith("    PROBLEM   the file ends at 64.00 s")
    assert "  c.webm (u-c): not a readable audio file" in report  # the file named once


def test_the_provenance_report_says_where_each_gap_in_a_file_lies(partial):
    # Only the total was told: a reviewer could not see that the words either side of one
    # were not said together (a network drop mid-sentence).
    gaps = [(30.0 + i, 0.5) for i in range(12)]
    partial.provenance.inputs[0] = partial.provenance.inputs[0].model_copy(
        update={"gap_seconds": 6.0, "gaps": gaps}
    )
    lines = _bundled_report(partial)
    at = lines.index("    gaps      6.000 s of silence written for them")
    assert lines[at + 1 : at + 3] == [
        "      at 30.000 s into the file: 0.500 s missing",
        "      at 31.000 s into the file: 0.500 s missing",
    ]
    assert lines[at + 11] == "      and 2 more (transcript.json)"


def test_the_provenance_report_names_a_lost_tracks_file_once(partial):
    partial.provenance.failures = [
        TrackFailure(path="tracks/a.webm", user_id="u-a", reason="tracks/a.webm: file not found"),
        TrackFailure(path="tracks/b.webm", user_id="u-b", reason="b.webm: no start time"),
        TrackFailure(path="tracks/c.webm", user_id="u-c", reason="cut short by c.webm's end"),
        TrackFailure(path="", user_id="u-d", reason="u-d's file was never listed"),
    ]
    lines = _bundled_report(partial)
    lost = lines.index("tracks lost (4)")
    assert lines[lost + 1 : lost + 5] == [
        "  tracks/a.webm (u-a): file not found",
        "  tracks/b.webm (u-b): no start time",
        "  tracks/c.webm (u-c): cut short by c.webm's end",
        "  (no file) (u-d): u-d's file was never listed",
    ]


def test_the_provenance_report_says_what_speech_was_kept_from_the_model_and_why(report):
    assert "  00:00:12.300-00:00:13.100  a.webm (u-a): leaked; judged u-b's voice" in report
    assert (
        "  a.webm (u-a): -0.042 s from 3 other tracks (correlation 0.91), applied; "
        "drift +12.5 ppm, not applied; others heard 0.180 s late (echo), applied"
    ) in report
    assert "  beam_size = 5" in report
    assert "  vad.padding = 0.2" in report


def test_no_name_or_reason_can_forge_a_line_of_the_report(partial):
    partial.provenance.failures[
        0
    ].reason = "fine\nspeech kept from the model, or its text left out (0)"
    partial.speakers[0].user_id = "u-a\n  u-z  Mallory: 9 utterances"
    partial.speakers[1].display_name = "Bob: 1 utterances\n\ntracks lost (0)\u202e"
    partial.provenance.parameters = {"language": "en\u2028clock estimates (0)"}
    text = to_bundle(partial)
    with zipfile.ZipFile(io.BytesIO(text)) as bundle:
        lines = bundle.read("provenance.txt").decode("utf-8").splitlines()
    assert lines.count("speech kept from the model, or its text left out (0)") == 1
    assert lines.count("clock estimates (0)") == 1
    assert lines.count("tracks lost (1)") == 1
    assert not any(line.startswith(("  u-z", "tracks lost (0)")) for line in lines)
    assert not any("\u202e" in line for line in lines)


def test_reading_a_bundle_refuses_what_is_not_one_naming_it(transcript):
    with pytest.raises(BundleError, match=r"^b\.zip: not a readable zip"):
        read_bundle(b"PK\x03\x04 not really", "b.zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as twice, pytest.warns(UserWarning, match="Duplicate"):
        twice.writestr("transcript.txt", "one")
        twice.writestr("transcript.txt", "the other")
    with pytest.raises(BundleError, match=r"^b\.zip: holds transcript\.txt more than once"):
        read_bundle(buffer.getvalue(), "b.zip")
    bzip2 = io.BytesIO()
    with zipfile.ZipFile(bzip2, "w", zipfile.ZIP_BZIP2) as other:
        other.writestr("transcript.json", "{}")
    with pytest.raises(BundleError, match=r"transcript\.json is encrypted, or compressed other"):
        read_bundle(bzip2.getvalue(), "b.zip")
    assert list(read_bundle(to_bundle(transcript), "b.zip")) == BUNDLE_MEMBERS


def test_reading_a_damaged_bundle_says_so_naming_it_whatever_the_damage(transcript):
    whole = to_bundle(transcript)
    written = read_bundle(whole, "b.zip")
    flips = range(0, len(whole), 7)  # every seventh byte flipped in turn
    refused = 0
    for at in flips:
        damaged = whole[:at] + bytes([whole[at] ^ 0xFF]) + whole[at + 1 :]
        try:
            members = read_bundle(damaged, "b.zip")
        except BundleError as exc:
            assert str(exc).startswith("b.zip: ")
            refused += 1
        else:
            # Bytes a zip reader skips (a date, a comment, a count) read as the members
            # written; anything else read is not taken for the bundle that was written.
            assert members == written or not packed_as_written(
                damaged, members, transcript.origin
            ), at
    assert refused > len(flips) / 2


def test_only_a_zip_laid_out_as_trackscribe_writes_it_passes_for_its_members(transcript):
    """Zip tools differ in which records they believe, and show comments, extra fields and
    bytes that Python's reading skips: only the zip trackscribe lays out shows them all the
    members that were checked."""
    whole = to_bundle(transcript)
    members = read_bundle(whole, "b.zip")
    assert packed_as_written(whole, members, transcript.origin)
    end = whole.rindex(b"PK\x05\x06")
    said = b"VERIFIED OK by trackscribe"
    commented = whole[: end + 20] + len(said).to_bytes(2, "little") + said
    assert read_bundle(commented, "b.zip") == members
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as noted:
        for name, data in members.items():
            member = zipfile.ZipInfo(name, date_time=(2026, 11, 20, 10, 0, 0))
            member.create_system, member.external_attr = 3, 0o100644 << 16
            member.comment = b"APPROVED by legal" if name == "transcript.txt" else b""
            noted.writestr(member, data)
        noted.comment = whole[end + 22 :]
    for altered in (
        commented,
        b"#!/bin/sh\n" + whole,
        whole + b"trailing",
        buffer.getvalue(),
    ):
        assert read_bundle(altered, "b.zip") == members
        assert not packed_as_written(altered, members, transcript.origin)
    assert not packed_as_written(whole, members, transcript.origin + timedelta(days=1))


def test_a_bundle_is_the_same_bytes_wherever_it_is_made(transcript):
    """Stored, not compressed: no zlib version changes a byte, so a bundle checked on another
    machine is the one written. Its SHA-256 is pinned: a change to what a bundle holds or how
    it is laid out (ours, or Python's) shows here first."""
    data = to_bundle(transcript)
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        assert {m.compress_type for m in bundle.infolist()} == {zipfile.ZIP_STORED}
    assert hashlib.sha256(data).hexdigest() == (
        "78ac4bf546c5c1e92b36dd18ea9b43475334ad54729a74c23f0db6f44cef6662"
    )


def test_reading_a_bundle_refuses_one_that_is_or_would_unpack_to_more_than_1_gib(monkeypatch):
    import stages.export._bundle as bundle_module

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("transcript.json", b"\0" * 4096)
    packed = buffer.getvalue()
    monkeypatch.setattr(bundle_module, "MAX_EXPORT_BYTES", 4095)
    with pytest.raises(BundleError, match="would unpack to more than"):
        read_bundle(packed, "bomb.zip")
    monkeypatch.setattr(bundle_module, "MAX_EXPORT_BYTES", len(packed) - 1)
    with pytest.raises(BundleError, match=r"^bomb\.zip: more than"):
        read_bundle(packed, "bomb.zip")


def test_a_transcript_exported_by_path_into_its_own_folder_stays_and_stays_recorded(
    transcript, tmp_path
):
    # Owning the folder (replace), the export took the transcript it was reading for an
    # earlier run's file in a format not asked for, and removed it.
    folder = tmp_path / "meeting"
    export(transcript, folder, "json", replace=True)
    source = folder / "transcript.json"
    before = source.read_bytes()
    written = export(source, folder, "vtt", replace=True)
    assert sorted(written) == ["json", "vtt"]
    assert source.read_bytes() == before
    assert sorted(recorded(folder)) == ["transcript.json", "transcript.vtt"]


def test_a_run_stopped_while_removing_an_earlier_runs_formats_leaves_them_for_the_next(
    transcript, tmp_path, monkeypatch
):
    # The record was written without them before they were removed: stopped in between,
    # the file stayed, named nowhere, and no later run removed it.
    from pathlib import Path

    out = tmp_path / "out"
    export(transcript, out, ["json", "vtt", "srt"], replace=True)
    unlink = Path.unlink

    def stopped_at_the_srt(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == "transcript.srt":
            raise KeyboardInterrupt
        unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", stopped_at_the_srt)
    with pytest.raises(KeyboardInterrupt):
        export(transcript, out, ["json"], replace=True)
    monkeypatch.setattr(Path, "unlink", unlink)
    assert "transcript.srt" in recorded(out)
    export(transcript, out, ["json"], replace=True)
    assert sorted(p.name for p in out.iterdir()) == [".trackscribe-exports", "transcript.json"]
    assert sorted(recorded(out)) == ["transcript.json"]


def test_hidden_copies_a_killed_export_left_are_removed_by_the_next_once_abandoned(
    transcript, tmp_path, monkeypatch
):
    # A run killed while writing leaves .NAME.XXXXXXXX.part files: copies of old exports in
    # a folder handed to reviewers, which only a batch removed.
    import time

    out = tmp_path / "out"
    export(transcript, out, ["json", "vtt"], replace=True)
    left = [out / ".transcript.vtt.k1ll3d00.part", out / ".transcript.json.k1ll3d01.part"]
    theirs = out / ".notes.txt.abcdefgh.part"  # not a file of trackscribe's
    for path in [*left, theirs]:
        path.write_text("an old copy")
    export(transcript, out, ["json", "vtt"], replace=True)
    assert all(path.exists() for path in left)  # made a moment ago: maybe another's writing
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    export(transcript, out, ["json", "vtt"], replace=True)
    assert not any(path.exists() for path in left) and theirs.exists()


def test_a_transcript_linked_into_a_folder_stays_a_link_when_exported_there(transcript, tmp_path):
    # Exported into its own folder, the transcript is written again: through a link, that
    # put a copy in the link's place, and the folder no longer showed the file it named.
    kept = tmp_path / "kept"
    export(transcript, kept, "json")
    review = tmp_path / "review"
    review.mkdir()
    link = review / "transcript.json"
    link.symlink_to(kept / "transcript.json")
    export(link, review, "txt", replace=True)
    assert link.is_symlink() and (review / "transcript.txt").is_file()


def test_the_record_says_which_transcript_each_file_was_rendered_from(transcript, tmp_path):
    """What the record says of a file, that trackscribe wrote it, does not say which
    transcript it shows: a file an earlier export left beside a later transcript would pass
    for the later one's wherever it cannot be rendered again alike (another version's)."""
    out = tmp_path / "out"
    export(transcript, out, ["json", "srt", "vtt"])
    first = hashlib.sha256((out / "transcript.json").read_bytes()).hexdigest()
    later = transcript.model_copy(deep=True)
    later.utterances = later.utterances[:1]
    export(later, out, ["txt"])  # no json among them: what it would render to is named
    files = recorded_files(out)
    assert {name: entry.source for name, entry in files.items()} == {
        "transcript.json": first,
        "transcript.srt": first,
        "transcript.vtt": first,
        "transcript.txt": hashlib.sha256(render(later, "json")).hexdigest(),
    }
    text = (out / ".trackscribe-exports").read_text()
    assert f"# from {first}  transcript.srt\n" in text
    # What earlier versions, and sha256sum -c, read of it is what they read before.
    assert read_sha256sums(text, set(files)) == recorded(out)
    if shutil.which("sha256sum"):  # its lines starting "#" are comments to it
        command = ["sha256sum", "-c", "--strict", ".trackscribe-exports"]
        checked = subprocess.run(command, cwd=out, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_exported_from_a_transcript_file_the_record_names_that_file(transcript, tmp_path):
    # Saved by an editor that lays JSON out its own way (or by an earlier version): the
    # exports show that file, not the JSON this version would write for it.
    out = tmp_path / "out"
    out.mkdir()
    saved = out / "transcript.json"
    saved.write_text(json.dumps(json.loads(transcript.to_json()), indent=4))
    export(saved, out, ["srt"])
    as_read = hashlib.sha256(saved.read_bytes()).hexdigest()
    assert recorded_files(out)["transcript.srt"].source == as_read
    # Written with them, the JSON is what they show: that file, as written now.
    review = tmp_path / "review"
    export(saved, review, ["json", "txt"])
    written = hashlib.sha256((review / "transcript.json").read_bytes()).hexdigest()
    assert recorded_files(review)["transcript.txt"].source == written


def test_a_record_an_earlier_version_wrote_is_read_and_kept(transcript, tmp_path):
    out = tmp_path / "out"
    export(transcript, out, ["json", "srt"])
    record = (out / ".trackscribe-exports").read_text().splitlines(keepends=True)
    (out / ".trackscribe-exports").write_text("".join(x for x in record if x[0] != "#"))
    assert {entry.source for entry in recorded_files(out).values()} == {None}
    export(transcript, out, ["txt"])
    files = recorded_files(out)
    assert files["transcript.srt"].source is None  # still not known
    assert files["transcript.txt"].source is not None
    export(transcript, out, ["txt"], replace=True)
    assert not (out / "transcript.srt").exists()


def test_a_record_written_before_the_earlier_runs_files_are_removed_says_they_are(
    transcript, tmp_path, monkeypatch
):
    """Stopped (Ctrl-C, or a disk full on the record's own write) after the removal and
    before the record is written again, the record named files that were gone, and nothing
    told them from files lost since."""
    from pathlib import Path

    out = tmp_path / "out"
    export(transcript, out, ["json", "vtt", "srt"], replace=True)
    unlink = Path.unlink

    def stopped_after_the_srt(self: Path, *args: object, **kwargs: object) -> None:
        unlink(self, *args, **kwargs)
        if self.name == "transcript.srt":
            raise KeyboardInterrupt

    monkeypatch.setattr(Path, "unlink", stopped_after_the_srt)
    with pytest.raises(KeyboardInterrupt):
        export(transcript, out, ["json", "txt"], replace=True)
    monkeypatch.setattr(Path, "unlink", unlink)
    files = recorded_files(out)
    assert {name for name, entry in files.items() if entry.removing} == {
        "transcript.srt",
        "transcript.vtt",
    }
    assert "# removing  transcript.srt\n" in (out / ".trackscribe-exports").read_text()
    export(transcript, out, ["json", "txt"])  # without replace: still being removed
    assert recorded_files(out)["transcript.vtt"].removing
    export(transcript, out, ["json", "txt", "vtt"])  # written again: no longer
    assert not recorded_files(out)["transcript.vtt"].removing
