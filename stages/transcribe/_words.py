"""What of a window's decoding to trust, and how its words become segments.

Whisper passes over speech in a packed window, loops, writes a sentence said twice once, and
writes text over near-silence; these checks find each case from the decoded words and the
window's audio, so that the transcriber decodes again, or drops, what needs it.
"""

import itertools
import zlib
from collections.abc import Sequence
from difflib import SequenceMatcher

import numpy as np

from models import SILENCE_DB, Word, level_db

from ._windows import Decoded, Piece, Window, bare, clip


def split_phrases(piece: Piece, words: Sequence[Word], pause: float) -> list[list[Word]]:
    """A piece's ``words`` (track time) split wherever one ends at least ``pause`` seconds
    before the next begins and the voice-activity detector, when it was asked, heard the
    voice stop there too: Whisper's word times alone put gaps of a second into speech that
    runs on, mostly before a sentence's first word, and such a false pause would cut one
    utterance in two."""
    phrases: list[list[Word]] = []
    for w in words:
        if phrases and (
            w.start - phrases[-1][-1].end < pause or not _voice_stopped(piece, phrases[-1][-1], w)
        ):
            phrases[-1].append(w)
        else:
            phrases.append([w])
    return phrases


def _voice_stopped(piece: Piece, before: Word, after: Word) -> bool:
    """Whether the voice-activity detector heard a pause from word ``before`` to word
    ``after`` (track time; yes when it was not asked). Their own spans count: Whisper often
    stretches the word before a pause over part of it."""
    if piece.pauses is None:
        return True
    return any(a < after.end and b > before.start for a, b in piece.pauses)


_MIN_HEARD = 0.5
"""A piece at least this long (s) that got no word at all means the decoder stopped early."""


def passed_over(window: Window, decoded: Decoded | None) -> bool:
    """Whether the window's decoding passed over speech that only the careful path recovers.

    Either a later piece, long enough to hold a word, got none; or the window is one piece
    that was heard only in part. A talker who runs on for half a minute fills a window alone,
    and the batched pass then often writes one sentence of it with a confidence that looks
    sound; decoded alone again, the piece would be the same call, and the same loss.
    """
    if decoded is None:
        return False
    if len(window.pieces) == 1:
        (piece,) = window.pieces
        return _sparse(piece, [w for w in decoded.words if bare(w.word)])
    heard = window.by_piece(decoded.words)
    return any(p.duration >= _MIN_HEARD and not heard[p] for p in window.pieces[1:])


_SPARSE_PIECE = 2.0
"""Pieces this long (s) or longer are checked for words the window's decoding passed over."""
_SPARSE_RATE = 1.2
"""Fewer words a second than this in such a piece: some were passed over (speech has 2-3)."""
_SPARSE_EDGE = 1.25
"""This long (s) from such a piece's start to its first word, or from its last word to its
end: passed over. (A pause inside a piece is speech's own; at its edges, the piece's padding
is a few tenths.)"""
MORE_WORDS = 3
"""Words a piece decoded alone must add to replace what the window gave it."""


def heard_in_part(window: Window, decoded: Decoded, *, opening: bool) -> list[Piece]:
    """The pieces the window's decoding seems to have heard only in part.

    With ``opening``: also the window's first piece when it got no word while later ones did.
    And both pieces either side of a seam that one word spans far into each: the decoder
    ran one region's end into the next one's start ("Tell me what happened. What else | did
    then", the first region's last words and the second's first lost, the second's first
    words put on the first, minutes earlier).
    """
    if len(window.pieces) < 2:
        return []
    spoken = [w for w in decoded.words if bare(w.word)]
    if not spoken:
        return []
    partial, by_piece = [], window.by_piece(spoken)
    for index, piece in enumerate(window.pieces):
        own = by_piece[piece]
        skipped = index == 0 and opening and not own and piece.duration >= _MIN_HEARD
        if skipped or _sparse(piece, own):
            partial.append(piece)
    for before, after in itertools.pairwise(window.pieces):
        seam = after.window_start
        if any(w.start <= seam - _ACROSS and w.end >= seam + _ACROSS for w in spoken):
            partial += [p for p in (before, after) if p not in partial]
    return partial


def _sparse(piece: Piece, own: Sequence[Word]) -> bool:
    """Whether a piece long enough to judge got too few of its words (``own``, spoken ones,
    window time), or none near one of its edges; a piece with no word at all is not judged
    here."""
    if not own or piece.duration < _SPARSE_PIECE:
        return False
    lead = own[0].start - piece.window_start
    trail = piece.window_start + piece.duration - own[-1].end
    return len(own) < _SPARSE_RATE * piece.duration or max(lead, trail) >= _SPARSE_EDGE


_ACROSS = 0.6
"""Seconds a word must reach into the pieces on both sides of a seam to have run the two
together: a word whose time crosses a seam is common, Whisper timing a piece's last word a
few tenths into the next piece's padding (31 in nine meetings, at most 0.55 s on its
shorter side), but not one that is long in both."""


_SAID_AGAIN = 0.8
"""Word-sequence similarity (difflib's ratio) at which a piece says again what one before it
in the window said..."""
_SAID_AS_LONG = 0.25
"""...and how much longer or shorter (a share of the longer) it may be: said again, a
sentence takes about as long. Text a loop spreads over later audio need not."""


def unrepeated_text(window: Window, decoded: Decoded) -> str:
    """The window's text, less each piece that says again what an earlier piece said.

    A window packs one participant's speech, so a sentence they say in two turns is in it
    twice, and its text compresses like a model stuck in a loop. Judged on the whole text, a
    window of a meeting in which people repeat themselves is decoded a second time, at two or
    three times the cost, for nothing (measured: 5 of B7's 20 windows). A loop that repeats
    inside one piece, runs on past the last, or spreads over pieces of different lengths is
    still caught; one that gives pieces of about one length the same words would not be.
    """
    by_piece = window.by_piece(decoded.words)
    earlier: list[tuple[float, list[str]]] = []
    dropped: set[Piece] = set()
    for piece in window.pieces:
        said = [b for w in by_piece[piece] if (b := bare(w.word))]
        if said and any(
            abs(piece.duration - length) <= _SAID_AS_LONG * max(piece.duration, length)
            and SequenceMatcher(None, said, before, autojunk=False).ratio() >= _SAID_AGAIN
            for length, before in earlier
        ):
            dropped.add(piece)
        else:
            earlier.append((piece.duration, said))
    if not dropped:
        return decoded.text
    left_out = {id(w) for piece in dropped for w in by_piece[piece]}
    return " ".join(w.word for w in decoded.words if id(w) not in left_out)


def carried(alone: Sequence[Word], following: Sequence[Word]) -> int:
    """How many words opening ``following`` (the next piece, as the window heard it) are the
    last words of ``alone`` (a piece decoded on its own): words the window timed a piece late.
    Two at least, so that one common word is not taken for it."""
    tail, head = [bare(w.word) for w in alone], [bare(w.word) for w in following]
    for count in range(min(len(tail), len(head)), 1, -1):
        if tail[-count:] == head[:count]:
            return count
    return 0


def spoken(words: Sequence[Word]) -> int:
    return sum(1 for w in words if bare(w.word))


_ONSET_REACH = 1.0
"""Seconds a region's first word may lie after its voiced onset and still be anchored to it."""


def anchor(piece: Piece, first: Word) -> float:
    """Where the speech of a segment begins, in track time.

    Whisper's word times are good to a few tenths of a second, and in a packed window it tends
    to pull a region's first word to the region's (padded) start, before the voice begins.
    The voiced onset VAD found is steadier, unless the first word is far after it (the onset
    was a cough, say).
    """
    return piece.onset if first.start - piece.onset <= _ONSET_REACH else first.start


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


_LEVEL_SPAN = 0.2
"""Seconds a segment's level is measured over at the least: Whisper gives some words no
length at all (start == end, mostly the first word after a pause), and a one-word segment of
such a word is still a word said over audio that holds it."""


def span_level_db(samples: np.ndarray, start: float, end: float) -> float:
    """RMS level (dBFS) of ``samples`` between two times (s) into them, over ``_LEVEL_SPAN``
    around their middle when they are closer than that."""
    if end - start < _LEVEL_SPAN:
        middle = (start + end) / 2
        start, end = middle - _LEVEL_SPAN / 2, middle + _LEVEL_SPAN / 2
    part = clip(samples, start, end)
    return float(level_db(part)) if part.size else SILENCE_DB
