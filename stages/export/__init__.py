"""Write a transcript in the formats people and tools read.

``json`` is the contract (``trackscribe.transcript/1``); ``vtt`` (WebVTT with voice tags) and
``srt`` are subtitles, cut into readable cues at word boundaries; ``txt`` is for reading;
``seglst`` is meeteval's segment list, for scoring. Every file is written to a temporary name
and renamed, all of them together: an interrupted export leaves no half file, and one that
fails (a full disk, a folder in the way) leaves the files as they were. A hidden record in the
folder names the files trackscribe wrote there with their SHA-256, so that an export that owns
the folder (the command line's ``-o``, a batch's meeting folder) can remove an earlier run's
files in formats not written this time, which beside the new transcript would show a
reviewer a different one, without touching a file that is not, byte for byte, what
trackscribe wrote; and so that a reviewer can check later that each file is still what was
written (:func:`recorded`).
"""

import errno
import hashlib
import json
import logging
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from models import Transcript, Utterance, Word, atomic_write_files, format_clock, one_line

__all__ = [
    "FORMATS",
    "RECORD_FILE",
    "export",
    "recorded",
    "to_seglst",
    "to_srt",
    "to_txt",
    "to_vtt",
    "withdraw",
]

log = logging.getLogger(f"trackscribe.{__name__}")

_MAX_CUE_SECONDS = 7.0
_MAX_CUE_CHARS = 84  # two subtitle lines of 42 characters


def to_vtt(transcript: Transcript) -> str:
    """WebVTT; each cue carries its speaker as a voice tag (``<v Alice>``). A partial
    transcript opens with a NOTE naming the inputs lost, which players do not show but a
    reviewer reading the file sees."""
    blocks = ["WEBVTT"]
    if transcript.partial:
        # A NOTE ends at a blank line and may not hold "-->": one line per input, defused.
        lost = (re.sub(r"-+>", "->", one_line(line)) for line in transcript.problems())
        blocks.append("\n".join([f"NOTE {_PARTIAL}", *lost]))
    name_of = _line_names(transcript)
    for start, end, speaker, text in _cues(transcript):
        name = _vtt_escape(name_of(speaker))
        line = _vtt_escape(one_line(text))
        blocks.append(f"{format_clock(start, '.')} --> {format_clock(end, '.')}\n<v {name}>{line}")
    return "\n\n".join(blocks) + "\n"


def to_srt(transcript: Transcript) -> str:
    """SubRip; SRT has no speaker field, so the name leads the text. SRT has no escaping, and
    players read HTML-like tags and ``{\\...}`` overrides in it: see :func:`_srt_inert`. Nor
    has it comments: a partial transcript is marked in the other formats only."""
    blocks = []
    name_of = _line_names(transcript)
    for number, (start, end, speaker, text) in enumerate(_cues(transcript), 1):
        name = _srt_inert(name_of(speaker))
        line = _srt_inert(one_line(text))
        blocks.append(
            f"{number}\n{format_clock(start, ',')} --> {format_clock(end, ',')}\n{name}: {line}"
        )
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def to_txt(transcript: Transcript) -> str:
    """One line per utterance: ``[00:01:02] Alice: …``. A partial transcript opens with the
    inputs lost, each on a line starting ``#``, and a blank line."""
    name_of = _line_names(transcript)
    lines = [
        f"[{format_clock(u.start)}] {name_of(u.speaker)}: {one_line(u.text)}"
        for u in transcript.utterances
    ]
    if transcript.partial:
        lost = [f"#   {one_line(line)}" for line in transcript.problems()]
        lines = [f"# {_PARTIAL}", *lost, "", *lines]
    return "\n".join(lines) + ("\n" if lines else "")


_PARTIAL = "Partial transcript: these inputs were lost, in whole or in part, or are damaged:"


def _line_names(transcript: Transcript) -> Callable[[str], str]:
    """Each speaker's name as one line of text, worked out once per export, not per cue."""
    names = {uid: one_line(name) for uid, name in transcript.speaker_names().items()}
    return lambda uid: names[uid] if uid in names else one_line(uid)


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


FORMATS: dict[str, tuple[str, Callable[[Transcript], str]]] = {
    "json": ("transcript.json", Transcript.to_json),
    "vtt": ("transcript.vtt", to_vtt),
    "srt": ("transcript.srt", to_srt),
    "txt": ("transcript.txt", to_txt),
    "seglst": ("transcript.seglst.json", to_seglst),
}
"""Format name -> (file name, renderer)."""


def export(
    transcript: Transcript,
    out_dir: Path | str,
    formats: Iterable[str] | str = tuple(FORMATS),
    *,
    replace: bool = False,
) -> dict[str, Path]:
    """Write each format into ``out_dir`` (one name, or several; default all of them);
    returns the path written per format.

    The formats asked for are always written over. With ``replace`` the folder holds this
    transcript alone: files of other formats that an earlier export wrote there are then
    removed, each only if its bytes are still those the folder's record says trackscribe
    wrote: one changed since is kept, with a warning, and one trackscribe did not write is
    never touched. Without it, nothing is removed, and the record goes on naming what earlier
    exports wrote.
    """
    formats = [formats] if isinstance(formats, str) else list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}")
    if not formats:
        raise ValueError(f"no format to write; known: {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    written = {name: out_dir / FORMATS[name][0] for name in formats}
    # Render everything before writing anything, and replace the files together: a renderer
    # or a write that fails leaves the folder as it was, never half this run's files.
    files = {written[name]: FORMATS[name][1](transcript).encode("utf-8") for name in formats}
    record_path = out_dir / RECORD_FILE
    earlier = _read_record(record_path)
    ours = {path.name: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    stale = {name: digest for name, digest in earlier.items() if name not in ours}
    if not replace:
        ours |= stale  # as they were written: still ours only while their bytes are the same
    recordable = _recordable(record_path)
    if recordable:
        files[record_path] = _record_bytes(ours)
    atomic_write_files(files)
    left: dict[str, str] = {}
    if replace and recordable:
        removed, left = _remove_stale(out_dir, stale)
        for path in removed:
            log.warning("removed %s: an earlier run wrote it, and this one did not", path)
    if left:  # named again, for the next run to remove
        atomic_write_files({record_path: _record_bytes(ours | left)})
    return written


def withdraw(out_dir: Path) -> list[Path]:
    """Remove the files earlier exports wrote in ``out_dir``, each only if its bytes are still
    those recorded (as :func:`export` with ``replace`` does): for a folder whose transcript
    no longer stands for its inputs. Returns the files removed, for the caller to say why;
    the record names what could not be removed, if any."""
    out_dir = Path(out_dir)
    record_path = out_dir / RECORD_FILE
    earlier = _read_record(record_path)
    if not earlier or not _recordable(record_path):
        return []
    removed, left = _remove_stale(out_dir, earlier)
    if left:
        atomic_write_files({record_path: _record_bytes(left)})
    else:
        record_path.unlink(missing_ok=True)
    return removed


def recorded(out_dir: Path) -> dict[str, str] | None:
    """File name -> SHA-256 of each file that trackscribe's exports wrote in ``out_dir``, as
    the folder's record says: what a reviewer checks the files against later. None for a
    folder with no record. A record that is there and cannot be read (or is not a plain
    file) raises :class:`OSError`: to a reviewer, that is not the same as no record."""
    path = Path(out_dir) / RECORD_FILE
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        text = path.read_bytes().decode("utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except UnicodeDecodeError as exc:
        raise OSError(errno.EILSEQ, f"not UTF-8 text ({exc.reason})", str(path)) from None
    return _parse_record(text)


RECORD_FILE = ".trackscribe-exports"
"""Which files trackscribe's exports wrote in a folder, and their SHA-256: one
``<sha256>  <name>`` line each, as ``sha256sum`` writes them."""

_OUR_NAMES = frozenset(name for name, _ in FORMATS.values())


def _read_record(path: Path) -> dict[str, str]:
    """File name -> SHA-256 from a folder's record. Nothing for a folder without one."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (FileNotFoundError, NotADirectoryError):  # none yet (no folder: writing says so)
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s cannot be read (%s): earlier runs' files here are left alone", path, exc)
        return {}
    return _parse_record(text)


def _parse_record(text: str) -> dict[str, str]:
    """Only names of our formats count: the record is a file anyone can edit."""
    record = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if name in _OUR_NAMES and re.fullmatch(r"[0-9a-f]{64}", digest):
            record[name] = digest
    return record


def _recordable(path: Path) -> bool:
    try:
        if stat.S_ISREG(path.lstat().st_mode):
            return True
    except (FileNotFoundError, NotADirectoryError):  # no record yet (or no folder: said below)
        return True
    log.warning("%s is not a file: which files trackscribe writes here is not recorded", path)
    return False


def _record_bytes(record: dict[str, str]) -> bytes:
    return "".join(f"{record[name]}  {name}\n" for name in sorted(record)).encode("utf-8")


def _remove_stale(out_dir: Path, stale: dict[str, str]) -> tuple[list[Path], dict[str, str]]:
    """Remove each of ``stale`` (name -> the SHA-256 trackscribe wrote) that is still a
    regular file with those bytes; return those removed and those that could not be. One that
    cannot be is named in a warning: the new files are whole, and failing the run for an old
    file would lose them."""
    removed: list[Path] = []
    left = {}
    for name, digest in stale.items():
        path = out_dir / name
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                continue  # a link or a folder in its place: not what trackscribe wrote
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                log.warning("kept %s: it has changed since an earlier run wrote it", path)
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("%s is from an earlier run and could not be removed: %s", path, exc)
            left[name] = digest
        else:
            removed.append(path)
    return removed, left


def _cues(transcript: Transcript) -> list[tuple[float, float, str, str]]:
    """Utterances cut into subtitle-sized cues at word boundaries, in time order. Each cue
    ends at least a millisecond after it starts (WebVTT requires it), and one without text
    is left out: there is nothing to show."""
    cues = []
    for u in transcript.utterances:
        for start, end, text in _split_utterance(u):
            if text.strip():
                start = max(0.0, round(start, 3))
                cues.append((start, max(round(end, 3), start + 0.001), u.speaker, text))
    # A long utterance's later cues can start after other speakers' turns; players and the
    # WebVTT rules want cues in start order.
    return sorted(cues, key=lambda cue: (cue[0], cue[1]))


def _split_utterance(u: Utterance) -> list[tuple[float, float, str]]:
    """A long utterance cut at word boundaries; one whose text is not its words (edited since,
    a redaction, say) stays whole: the text is what it says."""
    short = u.end - u.start <= _MAX_CUE_SECONDS and len(u.text) <= _MAX_CUE_CHARS
    if short or u.text.split() != [w.word for w in u.words]:
        return [(u.start, u.end, u.text)]
    pieces: list[list[Word]] = [[]]
    for word in u.words:
        current = pieces[-1]
        text = " ".join(w.word for w in [*current, word])
        if current and (
            word.end - current[0].start > _MAX_CUE_SECONDS or len(text) > _MAX_CUE_CHARS
        ):
            pieces.append([word])
        else:
            current.append(word)
    out = []
    for i, words in enumerate(pieces):
        start = u.start if i == 0 else words[0].start
        end = u.end if i == len(pieces) - 1 else pieces[i + 1][0].start
        out.append((start, end, " ".join(w.word for w in words)))
    return out


_SRT_MARKUP = re.compile(r"<(?=[A-Za-z/!])|\{|-(?=->)")


def _srt_inert(text: str) -> str:
    """Text that SRT players show as it is. They take ``<font color=...>``, ``<i>``,
    ``{\\an8}`` and ``{y:i}`` as styling (a display name could hide or move what is said) and
    a ``-->`` as part of a timing line; a zero-width space after each ``<`` of a tag, each
    ``{`` and the first ``-`` of an arrow leaves them plain text, and in most players looks
    the same."""
    return _SRT_MARKUP.sub(lambda m: m.group(0) + "\u200b", text)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
