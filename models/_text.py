"""Text as people see it: on one line, and without what does not show.

Here, not in ``transcript``, because a manifest's display names are judged by it too (a
name of nothing that shows is no name), and ``transcript`` imports ``manifest``.
"""

import json
import re
import unicodedata


def one_line(text: str) -> str:
    """Text as the exports show it, on one line: a line break (a display name typed with one)
    would end a subtitle cue early, or start what a player reads as the next cue. Control
    characters go too, and the bidirectional overrides and isolates that would show the
    words after a name in another order than they were said."""
    return " ".join(_UNSHOWN.sub("", text).split())


_UNSHOWN = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u202a-\u202e\u2066-\u2069]")
"""Not the controls that ``str.split`` takes as spaces (``\x1c``-``\x1f``, ``\x85``): gone,
they would join the words either side into one."""


def _without_invisible(text: str) -> str:
    """``text`` without the characters that are drawn as nothing: format characters
    (category Cf: a zero-width space, a soft hyphen, a word joiner, a byte-order mark, a
    left-to-right mark) and Unicode's other default-ignorable ones (variation selectors, the
    Hangul fillers, the combining grapheme joiner), and the blank braille pattern. Exports
    keep them, since some matter to how a script is written (a zero-width joiner in an emoji
    or in Persian, a variation selector in an emoji), but "Alice" and "Alice" with a
    zero-width space read the same, so a name is judged without them."""
    return "".join(c for c in text if not _NOT_DRAWN.match(c) and unicodedata.category(c) != "Cf")


_NOT_DRAWN = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\ufe00-\ufe0f\uffa0"
    "\U000e0100-\U000e01ef]"
)
"""Default-ignorable code points that are not format characters, and U+2800, a blank."""


def shows_nothing(name: str) -> bool:
    """Whether a name would show as nothing at all in an export: blank, or made only of
    characters that are not drawn. Such a name is no name: the user id stands in, rather
    than a voice tag or label that names no one."""
    return not one_line(_without_invisible(name))


def name_key(name: str) -> str:
    """What two names are compared by: as they look, not as they are encoded (composed or
    not, with characters that do not show or without), in capitals or small letters alike,
    and with the Cyrillic and Greek letters that are drawn as Latin ones taken as those:
    Cyrillic "Јое" and Greek "ΑΝΝΑ" read as Joe and Anna."""
    text = one_line(unicodedata.normalize("NFKD", _without_invisible(name)))
    return unicodedata.normalize("NFKD", text.casefold()).translate(_AS_LATIN)


_AS_LATIN = str.maketrans(
    "авекмнорстухѕіјһԁԛԝӏү"  # Cyrillic
    "αβεζηικμνορτυχϳ",  # Greek
    "abekmhopctyxsijhdqwlyabezhikmnoptyxj",
)
"""Cyrillic and Greek letters (casefolded, and decomposed: ё is е and a diaeresis) whose
capital or small letter is drawn as a Latin one, by Unicode's table of confusables. Only
these: the standard library has no such table, and Unicode's whole one is thousands of
entries (a package to bring it is a dependency for this one use). A name mixing scripts is
shown with its user id whatever it looks like: see :func:`mixes_scripts`."""


def mixes_scripts(name: str) -> bool:
    """Whether a name's letters, and the marks written on them, are of more than one script:
    "Аlice" with a Cyrillic А passes for Alice, beside her or not, and no table of look-alikes
    holds them all; nor is "Aliceཿ" with a Tibetan sign (a mark, drawn as a colon) one script.
    Han, kana, Hangul and Bopomofo are written together, and with Latin, so those mixes are
    not counted; nor are modifier letters (Hawaiian ʻ, Japanese 々 and ー), nor marks written
    with any script (:func:`script_of`)."""
    scripts = {
        script_of(c)
        for c in unicodedata.normalize("NFKC", name)
        if unicodedata.category(c) in _OF_A_SCRIPT
    } - {""}
    return len(scripts) > 1 and not scripts <= _WRITTEN_TOGETHER


_OF_A_SCRIPT = frozenset(("Lu", "Ll", "Lt", "Lo", "Mn", "Mc", "Me"))
"""Letters (not modifier letters) and marks: what :func:`mixes_scripts` takes the scripts of."""


def script_of(c: str) -> str:
    """The script of a letter or mark: the first word of its Unicode name (LATIN, CYRILLIC,
    TIBETAN, CJK), since the standard library has no Script property, and the word is one
    script's throughout. "" for a mark written with any script: those named COMBINING (an
    acute, a diaeresis) and the variation selectors (as in an emoji's ❤️)."""
    name = unicodedata.name(c, "")
    return "" if name.startswith(_ANY_SCRIPT) else name.split(" ")[0]


_ANY_SCRIPT = ("COMBINING ", "VARIATION SELECTOR")


_WRITTEN_TOGETHER = frozenset(("LATIN", "CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO"))


def spelt_out(text: str) -> str:
    """``text`` with what does not show, or shows as something else, escaped as JSON writes
    it (``\\t``, ``\\u0001``, ``\\u200b``, ``\\u0410`` for a Cyrillic А), and a space
    that a line would lose or merge with the next (at either end, or after another) as
    ``\\u0020``: two user ids that read the same, ``alice@x.com`` and ``alice@x.com `` or
    ``bob`` and ``bob<TAB>``, are told apart by how they are spelt."""
    escaped = json.dumps(text)[1:-1].replace("\x7f", "\\u007f")
    return re.sub(r"^ | $|(?<= ) ", r"\\u0020", escaped)


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
"""Control characters but the tab."""
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` with its control characters written out (``\\x1b``), so that a name an API
    or a file gave cannot move the terminal's cursor or write a line of its own; with
    ``lines``, the line breaks of a message made of several lines are kept."""
    return (_CONTROL_BUT_NEWLINE if lines else _CONTROL).sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]
