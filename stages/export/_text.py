"""The transcript as people and tools read it: subtitles, plain text, meeteval's SegLST.

Subtitles are cut into readable cues at word boundaries. Every renderer shows a speaker by
the name people read (two who would read the same keep their user ids apart), on one line,
with nothing a player would take as markup.
"""

import json
import re
import unicodedata
from collections.abc import Callable
from itertools import pairwise

from models import (
    Transcript,
    Utterance,
    format_clock,
    format_utc,
    one_line,
    script_of,
)

_MAX_CUE_SECONDS = 7.0
_MAX_CUE_CHARS = 84  # what two subtitle lines of 42 characters hold; players wrap the text
_VTT_OPENING = "WEBVTT"
_MEETING = "Meeting "  # how the lines opening each export for reading begin


def to_vtt(transcript: Transcript) -> str:
    """WebVTT; each cue carries its speaker as a voice tag (``<v Alice>``). NOTEs, which
    players do not show but a reviewer reading the file sees, open it: which meeting it is
    and what made it, then, for a partial transcript, the inputs lost; one with no speech
    has a NOTE saying so."""
    blocks = [_VTT_OPENING, "\n".join(["NOTE", *map(_vtt_note, _about(transcript))])]
    if transcript.partial:
        lost = filter(None, map(_vtt_note, transcript.problems()))  # a blank line ends a NOTE
        blocks.append("\n".join([f"NOTE {_PARTIAL}", *lost]))
    name_of = _line_names(transcript, _vtt_escape)
    cues = _cues(transcript)
    if not cues:
        blocks.append(f"NOTE {_NO_SPEECH}")
    for start, end, speaker, text in cues:
        name = name_of(speaker)
        line = _vtt_escape(one_line(text))
        blocks.append(f"{format_clock(start, '.')} --> {format_clock(end, '.')}\n<v {name}>{line}")
    return "\n\n".join(blocks) + "\n"


def to_srt(transcript: Transcript) -> str:
    """SubRip; SRT has no speaker field, so the name leads the text. SRT has no escaping, and
    players read HTML-like tags and ``{\\...}`` overrides in it: see :func:`_srt_inert`. Nor
    has it comments: a partial transcript, or one with no speech (an empty file), is marked
    in the other formats only."""
    blocks = []
    name_of = _line_names(transcript, _srt_inert, leading=True)
    for number, (start, end, speaker, text) in enumerate(_cues(transcript), 1):
        name = name_of(speaker)
        line = _srt_inert(one_line(text))
        blocks.append(
            f"{number}\n{format_clock(start, ',')} --> {format_clock(end, ',')}\n{name}: {line}"
        )
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def to_txt(transcript: Transcript) -> str:
    """One line per utterance: ``[00:01:02] Alice: …``, after lines starting ``#`` that say
    which meeting it is, what time ``[00:00:00]`` is, and what made it (a text file passed on
    alone must still say what it is), and a blank line. A partial transcript then names the
    inputs lost, each on a ``#`` line, and a blank line. One with no speech says so, on a
    ``#`` line: with no lines of speech the file would read as a write that failed."""
    name_of = _line_names(transcript, leading=True)
    lines = [
        f"[{format_clock(u.start)}] {name_of(u.speaker)}: {one_line(u.text)}"
        for u in transcript.utterances
    ] or [f"# {_NO_SPEECH}"]
    if transcript.partial:
        lost = [f"#   {one_line(line)}" for line in transcript.problems()]
        lines = [f"# {_PARTIAL}", *lost, "", *lines]
    about = [f"# {line}" for line in _about(transcript)]
    return "\n".join([*about, "", *lines]) + "\n"


def _about(transcript: Transcript) -> list[str]:
    """Which meeting a file is of, what its times count from, and what made it, on lines of
    their own: what a reviewer handed one export alone needs in order to place it."""
    meeting = f"{_MEETING}{one_line(transcript.meeting_id)}"
    if transcript.provenance.recording_id:
        meeting += f", recording {one_line(transcript.provenance.recording_id)}"
    made = transcript.provenance
    return [
        f"{meeting}; times count from {format_utc(transcript.origin)} (UTC).",
        f"Made by {one_line(made.software)} with the model {one_line(made.model)}.",
    ]


def export_format_of(text: str) -> str | None:
    """Which of the exports made for reading (``txt``, ``vtt``, ``srt``) ``text`` is, told by
    how each opens, if one: a tool handed one in place of the transcript (``eval``) can say
    so, instead of failing to read it as something else. Known here, where they are written,
    so that the two never part."""
    if text.startswith(f"# {_MEETING}"):  # to_txt's first line
        return "txt"
    if text.startswith(_VTT_OPENING):
        return "vtt"
    first = text.split("\n", 2)
    if len(first) > 1 and first[0].strip() == "1" and " --> " in first[1]:
        return "srt"
    return None


def _vtt_note(line: str) -> str:
    """A line of a NOTE: a NOTE ends at a blank line and may not hold "-->"."""
    return re.sub(r"-+>", "->", one_line(line))


_NO_SPEECH = "No speech was transcribed."
_PARTIAL = "Partial transcript: these inputs were lost, in whole or in part, or are damaged:"


def _line_names(
    transcript: Transcript, shown: Callable[[str], str] = str, *, leading: bool = False
) -> Callable[[str], str]:
    """Each speaker's name as one line of text as the format ``shown`` writes it, worked out
    once per export, not per cue, told apart as written there (see
    :meth:`Transcript.speaker_names`). ``leading``: the name leads the text (TXT, SRT), see
    :func:`_leading`."""

    def written(text: str) -> str:
        return shown(one_line(text))

    led = _leading if leading else str
    names = {user_id: led(name) for user_id, name in transcript.speaker_names(written).items()}
    return lambda user_id: names[user_id] if user_id in names else led(written(user_id))


def _leading(name: str) -> str:
    """A name as it leads a line of text (``Alice: …``). One with more than letters, digits
    and the punctuation of names in it is quoted (``"…"``): a participant named ``Alice: I
    approve. [00:00:22] Chen`` made the words after it read as Alice's, and a look-alike colon
    does as well, as does a mark of another script written on a letter (see
    :func:`_mark_astray`). One with letters written right to left is isolated (FSI … PDI): else the
    words after it were shown in another order (``דנה: 10 20 30`` as ``30 20 10 :הנד``)."""
    if _mark_astray(name) or not all(c in _NAME_PUNCTUATION or _name_letter(c) for c in name):
        name = json.dumps(name, ensure_ascii=False)
    if any(unicodedata.bidirectional(c) in ("R", "AL") for c in name):
        name = f"\u2068{name}\u2069"
    return name


def _name_letter(c: str) -> bool:
    """Letters, marks and digits; symbols (emoji); characters that are not drawn (a zero-width
    joiner in an emoji or a Persian name). Not those drawn as a colon: see :func:`_colon_like`."""
    return unicodedata.category(c) in _NAME_CATEGORIES and not _colon_like(c)


def _colon_like(c: str) -> bool:
    """Whether ``c`` may be drawn as a colon: its name says COLON (ː and 𐞁 are letters) or
    VISARGA (the Indic sign ः, two dots stacked, is a mark) or names a visarga otherwise
    (Tibetan ཿ, Khmer ះ, Balinese ᬄ, Javanese ꦃ, Sundanese ᮂ), or it is Lisu's tone letter ꓽ
    or a braille pattern (⠅ stacks two dots too; no one's name is written in braille). Judged
    by name, not by a list of the look-alikes found so far, so that those of a script Unicode
    adds later are caught as well; a mark that is none of these, written on a letter of
    another script, quotes a name too (:func:`_mark_astray`)."""
    name = unicodedata.name(c, "")
    return c == "\ua4fd" or any(word in name for word in _COLON_WORDS)


_COLON_WORDS = (
    "COLON",
    "VISARGA",
    "BRAILLE PATTERN DOTS",
    # Visargas by their own scripts' names: RNAM BCAD (Tibetan), REAHMUK (Khmer), BISAH
    # (Balinese), WIGNYAN (Javanese), PANGWISAD (Sundanese).
    "RNAM BCAD",
    "REAHMUK",
    "BISAH",
    "WIGNYAN",
    "PANGWISAD",
)


def _mark_astray(name: str) -> bool:
    """Whether a mark in ``name`` is of another script than the letter it is written on
    (:func:`script_of`), or is written on no letter. A script writes its own marks on its own
    letters; one of another script's, after a Latin letter, is there to be drawn as what it
    looks like, and a sign of two dots stacked reads as a colon whatever its name says."""
    letter = ""
    for c in name:
        if not unicodedata.category(c).startswith("M"):
            letter = script_of(c)
        elif script_of(c) not in ("", letter):
            return True
    return False


_NAME_CATEGORIES = frozenset(
    ("Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "So", "Cf")
)
_NAME_PUNCTUATION = frozenset(" .,'\u2019-\u2010()&_@/+#\\")
"""What a name may hold, besides :func:`_name_letter`, and be written unquoted."""


def to_seglst(transcript: Transcript) -> str:
    """meeteval's SegLST: one entry per utterance, speaker by ``user_id``, seconds from origin."""
    return (
        json.dumps(
            [
                {
                    "session_id": transcript.meeting_id,
                    "speaker": u.speaker,
                    "start_time": u.start,
                    "end_time": u.end,
                    "words": u.text,
                }
                for u in transcript.utterances
            ],
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )


TEXT_FORMATS: dict[str, tuple[str, Callable[[Transcript], str]]] = {
    "json": ("transcript.json", Transcript.to_json),
    "vtt": ("transcript.vtt", to_vtt),
    "srt": ("transcript.srt", to_srt),
    "txt": ("transcript.txt", to_txt),
    "seglst": ("transcript.seglst.json", to_seglst),
}
"""Format name -> (file name, renderer), for each format that is one text file."""


def _cues(transcript: Transcript) -> list[tuple[float, float, str, str]]:
    """Utterances cut into subtitle-sized cues at word boundaries, in time order. Each cue
    ends at least a millisecond after it starts (WebVTT requires it), and one without text
    is left out: there is nothing to show."""
    cues = []
    for u in transcript.utterances:
        for start, end, text in _split_utterance(u):
            if one_line(text):  # as it is shown: control characters alone show nothing
                start = max(0.0, round(start, 3))
                cues.append((start, max(round(end, 3), start + 0.001), u.speaker, text))
    # A long utterance's later cues can start after other speakers' turns; players and the
    # WebVTT rules want cues in start order. Cues that start together stay in the
    # transcript's order, as TXT and JSON have them.
    return sorted(cues, key=lambda cue: cue[0])


def _split_utterance(u: Utterance) -> list[tuple[float, float, str]]:
    """A long utterance cut at word boundaries, of its words as its text says them (edited
    since, a redaction, say: see :meth:`Utterance.words_as_said`). One without timed words
    stays whole, and so does one whose words' times go back (edited by hand): they cannot
    say when each piece is shown."""
    short = u.end - u.start <= _MAX_CUE_SECONDS and len(u.text) <= _MAX_CUE_CHARS
    words = u.words_as_said()
    shown = [w.word.strip() for w in words]  # an early transcript's words lead with a space
    if (
        short
        or u.text.split() != shown  # text without spaces between its words: kept whole
        or any(later.start < word.start for word, later in pairwise(words))
    ):
        return [(u.start, u.end, u.text)]
    pieces: list[list[int]] = [[]]  # indices into words
    for i, word in enumerate(words):
        current = pieces[-1]
        text = " ".join(shown[k] for k in [*current, i])
        if current and (
            word.end - words[current[0]].start > _MAX_CUE_SECONDS or len(text) > _MAX_CUE_CHARS
        ):
            pieces.append([i])
        else:
            current.append(i)
    out = []
    for n, piece in enumerate(pieces):
        start = u.start if n == 0 else words[piece[0]].start
        end = u.end if n == len(pieces) - 1 else words[pieces[n + 1][0]].start
        out.append((start, end, " ".join(shown[k] for k in piece)))
    return out


_SRT_MARKUP = re.compile(r"<|\\(?=[Nnh])|-(?=->)")
_SRT_BRACES = str.maketrans("{}", "\u2774\u2775")  # ❴❵: in common fonts, as full-width ones are not


def _srt_inert(text: str) -> str:
    """Text that SRT players show as it is. They take ``<font color=...>`` and ``<i>`` as
    styling, a ``-->`` as part of a timing line, and those built on libass (mpv, VLC,
    ffmpeg) ``\\N`` as a line break and anything in braces as an ASS override or a comment:
    ``{\\alpha&HFF&}`` in a display name would hide what is said. A zero-width space after
    every ``<`` (ffmpeg reads ``< font size=0>`` as a tag too, and drops ``<3 and >`` as one),
    the backslash of an escape and the first ``-`` of an arrow leaves them plain text; braces,
    which libass reads whatever follows, become ornamental ones (❴❵)."""
    return _SRT_MARKUP.sub(lambda m: m.group(0) + "\u200b", text).translate(_SRT_BRACES)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
