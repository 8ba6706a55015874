"""Score a transcript against labelled truth: the figures ``trackscribe eval`` reports.

Word error rates come from meeteval (cpWER: each speaker's words against the best-matching
true speaker; tcpWER: the same, but a word only counts as right near the time it was said).
Both sides are normalised with Whisper's English text normaliser first, so punctuation,
casing and spellings of numbers do not count as errors. The rest is about turns: how far
each true utterance's start is from where the transcript starts it, which true utterances
have no transcript at all, and how many words were put on participants who never spoke.
"""

import importlib.util
import json
import logging
import math
import re
import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from models import JsonTextError, Transcript, decode_text, import_optional
from stages.export import FORMATS, export_format_of, read_bundle

if TYPE_CHECKING:
    import meeteval

__all__ = [
    "MAX_SPEAKERS",
    "Evaluation",
    "Span",
    "Turn",
    "TurnFile",
    "check_speaker_counts",
    "check_truth",
    "evaluate",
    "load_turns",
    "normalised_seglst",
    "paired_by_name",
    "read_turns",
    "relabel",
    "relabelled",
    "scorer_versions",
    "without_spans",
]

TCPWER_COLLAR = 5.0
"""Seconds a word may be off and still count for tcpWER (as in the CHiME-8 DASR scoring)."""

MAX_SPEAKERS = 20
"""The most speakers meeteval's cpWER takes on either side; it refuses more, as a likely
mistake in the input."""

SCORERS = ("meeteval", "whisper-normalizer")
"""The packages whose versions decide the figures (the scorer, the normaliser): another
version may score the same files otherwise."""


class Turn(BaseModel):
    """One utterance on either side, in seconds from the meeting's origin."""

    speaker: str
    start: float
    end: float
    text: str


class SpeakerScore(BaseModel):
    speaker: str
    wer: float = Field(description="percent")
    words: int = Field(description="words in the truth")


class Evaluation(BaseModel):
    """All figures in percent or seconds; counts are whole numbers."""

    cpwer: float
    tcpwer: float
    tcpwer_collar: float = TCPWER_COLLAR
    errors: int
    reference_words: int
    per_speaker: list[SpeakerScore]
    silent_track_words: int = Field(description="words on participants with no truth at all")
    start_err_median: float | None
    start_err_p95: float | None
    missed_utterances: int
    utterances: int = Field(description="utterances in the truth")
    speakers_paired_by_words: dict[str, str] = Field(
        default_factory=dict,
        description="transcript speaker -> true speaker, as cpWER paired them, when the "
        "truth's speakers are not all the transcript's by name; the figures per speaker "
        "follow it",
    )
    speaker_pairs: dict[str, str] = Field(
        default_factory=dict,
        description="transcript speaker -> the true speaker it was scored as (by name, or as "
        "cpWER paired them); one paired with none is not listed",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what the figures are not to be taken without: files of two meetings, "
        "speakers not found by name, or that cpWER pairs otherwise than by name, input the "
        "transcript lost, times in other units",
    )
    scorer: dict[str, str] = Field(
        default_factory=dict,
        description="package -> the version that scored it (meeteval, whisper-normalizer): "
        "another version may give other figures for the same files",
    )

    def __str__(self) -> str:
        """The table ``trackscribe eval`` prints: what a notebook shows, and ``print`` gives."""
        lines = [
            f"cpWER                  {self.cpwer:6.2f} %   "
            f"({self.errors} errors, {self.reference_words} words)",
            f"tcpWER (collar {self.tcpwer_collar:g} s)   {self.tcpwer:6.2f} %",
            f"words on silent people {self.silent_track_words:6d}",
            f"start error median     {shown_seconds(self.start_err_median)}",
            f"start error p95        {shown_seconds(self.start_err_p95)}",
            f"missed utterances      {self.missed_utterances:6d} of {self.utterances}",
            "",
            "speaker                       WER     words",
        ]
        lines += [f"{s.speaker:28s} {s.wer:6.2f} %  {s.words:5d}" for s in self.per_speaker]
        if self.speakers_paired_by_words:
            pairs = ", ".join(f"{h} as {r}" for h, r in self.speakers_paired_by_words.items())
            lines += ["", f"speakers paired by their words (as cpWER pairs them): {pairs}"]
        if self.scorer:
            scorer = ", ".join(f"{name} {version}" for name, version in self.scorer.items())
            lines += ["", f"scored with {scorer}"]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's display
        printer.text(str(self))


def shown_seconds(value: float | None) -> str:
    """A figure in seconds, or "-" for none (no utterance was found to measure it on)."""
    return "-" if value is None else f"{value:.3f} s"


class Span(NamedTuple):
    """A stretch the truth leaves out of scoring (STM's ``ignore_time_segment_in_scoring``)."""

    start: float
    end: float
    speakers: frozenset[str] | None = None
    """The true speakers whose words it leaves out: those of its STM channel, when the file
    has several (one per microphone, each with the gaps between its speaker's turns); None
    for everyone's."""


class TurnFile(NamedTuple):
    """What a file of turns holds."""

    turns: list[Turn]
    participants: list[str] | None
    """Everyone a trackscribe transcript knows of, including those who never spoke; None for
    SegLST and STM, which have only the speakers they have."""
    excluded: list[Span]
    """Stretches left out of scoring."""
    names: Mapping[str, str] | None = None
    """A transcript's user id -> the name people read, for a truth labelled by names."""
    meeting: str | None = None
    """The meeting it is of, where the file says: a transcript's ``meeting_id``, SegLST's
    ``session_id``."""
    lost: tuple[str, ...] = ()
    """A transcript's inputs lost, one line each: words of them are missing for that reason."""
    warnings: tuple[str, ...] = ()
    """What the figures scored against this file are not to be taken without."""


def load_turns(path: Path | str) -> list[Turn]:
    """Turns from a trackscribe transcript, a SegLST file (JSON list) or a NIST STM file.

    Every entry is checked here, where its file and place are known: meeteval's own complaints
    about a bad time name neither, and a NaN time is scored as a meaningless figure.
    """
    return read_turns(path).turns


def read_turns(path: Path | str) -> TurnFile:
    """:func:`load_turns`, with the participants a transcript names and the stretches an STM
    file leaves out of scoring."""
    path = Path(path)
    data = path.read_bytes()
    if data.startswith(_ZIP_STARTS):  # a compliance bundle, whatever its name
        return _of_transcript(_bundled_transcript(data, path))
    text = _decoded(data, path)
    if path.suffix.lower() == ".stm":
        return _read_stm(text, path)
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        if text.lstrip()[:1] in ("[", "{"):
            raise ValueError(f"{path}: not JSON (transcript, SegLST): {exc}") from None
        if export := export_format_of(text):
            raise ValueError(
                f"{path}: {_AN_EXPORT[export]} export of a transcript, which is not scored: "
                "give the transcript.json beside it"
            ) from None
        try:  # STM named otherwise (.txt, no suffix)
            return _read_stm(text, path)
        except ValueError as stm:
            raise ValueError(
                f"{path}: neither JSON (transcript, SegLST): {exc}; nor STM: "
                f"{str(stm).removeprefix(f'{path}: ').removeprefix('not STM: ')}"
            ) from None
    if isinstance(raw, dict) and str(raw.get("schema", "")).startswith("trackscribe.transcript/"):
        # Transcript names the file and the field when it is invalid.
        return _of_transcript(_checked(Transcript.from_json(data, str(path)), str(path)))
    if isinstance(raw, list):
        turns, meeting = _turns(raw, path)
        return TurnFile(turns, None, [], meeting=meeting)
    raise ValueError(f"{path}: not a trackscribe transcript, SegLST or STM file")


_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")
"""How a zip starts (a transcript's JSON, SegLST or STM never does): read as a bundle."""

_TRANSCRIPT = FORMATS["json"][0]

_AN_EXPORT = {"txt": "a TXT", "vtt": "a WebVTT", "srt": "an SRT"}
"""The exports made for reading, as an error names one handed in for scoring: people reach
for the file they read, which has no speaker ids or end times (TXT) or splits turns into
cues."""


def _bundled_transcript(data: bytes, path: Path) -> Transcript:
    """The transcript in the compliance bundle ``data`` (``transcript --formats bundle``), as
    ``verify`` reads it: a bundle is what a reviewer is sent, and scoring it should not need
    it unpacked first. Its sums are ``verify``'s to check, not scoring's."""
    members = read_bundle(data, str(path))  # BundleError, a ValueError, names the file
    if _TRANSCRIPT not in members:
        raise ValueError(f"{path}: holds no {_TRANSCRIPT}: not a trackscribe bundle")
    source = f"{path}:{_TRANSCRIPT}"
    return _checked(Transcript.from_json(members[_TRANSCRIPT], source), source)


def _checked(transcript: Transcript, source: str) -> Transcript:
    """``transcript``, read from ``source``, with every utterance's times fit to score."""
    for i, u in enumerate(transcript.utterances):
        _check_times(source, f"utterances[{i}]", u.start, u.end, names=("start", "end"))
    return transcript


def _read_stm(text: str, path: Path) -> TurnFile:
    """STM marks stretches to leave out of scoring with a pseudo-transcript, and names the
    stretches between utterances with a pseudo-speaker (TED-LIUM, NIST's own files). A file
    with several channels (one per microphone) marks them per channel, and a stretch left
    out on one is left out of the words of that channel's speakers only, as NIST's scoring
    (channel by channel) does; others may be speaking then."""
    entries, lines = _stm_entries(text, path)
    every, _ = _turns(entries, path, where=lambda i: f"line {lines[i]}")
    channels = [str(e.get("channel", "")) for e in entries]
    spoken = [
        (t, channel)
        for t, channel in zip(every, channels, strict=True)
        if t.text.strip().lower() != _STM_IGNORE and t.speaker.lower() != _STM_GAP
    ]
    on_channel: dict[str, set[str]] = {}
    for t, channel in spoken:
        on_channel.setdefault(channel, set()).add(t.speaker)
    several = len(set(channels)) > 1
    excluded = [
        # A channel of no one's turns: the line's own speaker (inter_segment_gap: no one's).
        Span(t.start, t.end, frozenset(on_channel.get(channel) or {t.speaker}) if several else None)
        for t, channel in zip(every, channels, strict=True)
        if t.text.strip().lower() == _STM_IGNORE
    ]
    return TurnFile([t for t, _ in spoken], None, excluded, warnings=_sclite_marks(entries, lines))


def _sclite_marks(entries: Sequence[dict], lines: Sequence[int]) -> tuple[str, ...]:
    """A warning for words STM marks for sclite as optional, ``(uh)``, or as alternatives,
    ``{ yeah / yes }``: meeteval has no such marks. Whisper's normaliser drops what is in
    parentheses (an optional word said is then an insertion), and alternatives are scored as
    all their words (one said is an error), as any scorer that normalises the words as they
    stand would score them."""
    marked = [
        line
        for entry, line in zip(entries, lines, strict=True)
        if _STM_OPTIONAL.search(entry["words"]) or _STM_ALTERNATIVES.search(entry["words"])
    ]
    if not marked:
        return ()
    more = f" and {len(marked) - 1} more" if len(marked) > 1 else ""
    return (
        f"the truth marks words as optional, (word), or as alternatives, {{ a / b }} (line "
        f"{marked[0]}{more}): the normaliser drops optional words (one said is an insertion) "
        "and alternatives are scored as all their words, so the figures can be higher than "
        "sclite's",
    )


def _decoded(data: bytes, path: Path) -> str:
    """The text of ``data``, read from ``path`` (:func:`models.decode_text`); bytes that are
    not UTF-8 are bad input, named with the file."""
    try:
        return decode_text(data)
    except JsonTextError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _stm_entries(text: str, path: Path) -> tuple[list[dict], list[int]]:
    """SegLST entries of an STM text and the line number of each, to name a bad line by.

    Read here, not with meeteval's reader: that one reads a channel as a number when the
    begin time is whole (so a line of channel ``A`` beginning at ``0`` is refused, and ``01``
    is channel 1 on one line and ``01`` on the next), and its errors do not say what is wrong.
    """
    lines, entries = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.strip().startswith(";"):  # comments, as NIST writes them
            continue
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            raise ValueError(
                f"{path}: not STM: line {number}: {len(fields)} fields where STM has at "
                "least 5 (file, channel, speaker, begin time, end time, then the words)"
            )
        if fields[0] == "SPEAKER" and "<NA>" in line.split():
            raise ValueError(
                f"{path}: not STM: line {number} is RTTM (who spoke when, without words), "
                "which cannot be scored for words"
            )
        times = []
        for name, value in (("begin time", fields[3]), ("end time", fields[4])):
            try:
                times.append(float(value))
            except ValueError:
                raise ValueError(
                    f"{path}: not STM: line {number}: {name} {value[:40]!r} is not a number"
                ) from None
        words = fields[5] if len(fields) > 5 else ""
        entries.append(
            {
                "session_id": fields[0],
                "channel": fields[1],
                "speaker": fields[2],
                "start_time": times[0],
                "end_time": times[1],
                # An optional label such as <o,f0,male> may come before the words: not words.
                "words": _STM_LABEL.sub("", words),
            }
        )
        lines.append(number)
    return entries, lines


def _check_times(
    path: Path | str, where: str, start: float, end: float, *, names: tuple[str, str]
) -> None:
    """Finite times, the end not before the start: what scoring needs of every entry."""
    for name, value in zip(names, (start, end), strict=True):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {where}: {name} {value} is not a finite time")
    if end < start:
        raise ValueError(f"{path}: {where}: {names[1]} {end} is before {names[0]} {start}")


_STM_IGNORE = "ignore_time_segment_in_scoring"
_STM_GAP = "inter_segment_gap"
_STM_LABEL = re.compile(r"^\s*<[^<>\s]*>(\s+|$)")
_STM_OPTIONAL = re.compile(r"(^|\s)\([^()\s]+\)(\s|$)")
_STM_ALTERNATIVES = re.compile(r"\{[^{}]*/[^{}]*\}")


class _Entry(BaseModel):
    """One SegLST entry, as scoring needs it (other keys, such as a word list, are ignored)."""

    model_config = ConfigDict(extra="ignore")

    session_id: str | int | None = None
    speaker: Annotated[StrictStr, StringConstraints(pattern=r"\S")] | StrictInt  # not blank
    start_time: StrictFloat | StrictInt  # not text or true/false, read as a number
    end_time: StrictFloat | StrictInt
    words: StrictStr


_ENTRIES = TypeAdapter(list[_Entry])
_KINDS = {
    "session_id": "text or a whole number",
    "speaker": "text (not blank) or a whole number",
    "start_time": "a number",
    "end_time": "a number",
    "words": "text",
}
"""What each field of an entry must be, for the message that says it is not."""


def _check_turns(role: str, turns: object) -> None:
    """A path or a file's text where turns belong is named as such, not failed on deep
    inside the scoring (``'str' object has no attribute 'text'``)."""
    if isinstance(turns, str | Path):
        raise TypeError(
            f"{role} is a path or text ({str(turns)[:60]!r}): read the file first, with "
            "read_turns() (or load_transcript() for a transcript)"
        )
    if not isinstance(turns, Sequence) or not all(isinstance(t, Turn) for t in turns):
        raise TypeError(
            f"{role} must be what read_turns() gives, a sequence of Turn, or (the hypothesis "
            f"only) a Transcript; not {type(turns).__name__}"
        )


def _of_transcript(transcript: Transcript) -> TurnFile:
    turns = [
        Turn(speaker=u.speaker, start=u.start, end=u.end, text=u.text)
        for u in transcript.utterances
    ]
    return TurnFile(
        turns,
        [s.user_id for s in transcript.speakers],
        [],
        names=transcript.speaker_names(),
        meeting=transcript.meeting_id,
        lost=tuple(transcript.problems()),
    )


def _turns(
    entries: Iterable[dict],
    path: Path,
    *,
    where: Callable[[int], str] = lambda i: f"entry [{i}]",
) -> tuple[list[Turn], str | None]:
    """Turns of one meeting, and which meeting, if the entries say; a bad entry is named by
    its place in the file and its field."""
    try:
        parsed = _ENTRIES.validate_python(list(entries))
    except ValidationError as exc:
        error = exc.errors()[0]
        index, *fields = error["loc"]
        place = where(index) if isinstance(index, int) else f".{index}"
        given = json.dumps(error["input"])
        given = given if len(given) <= 40 else f"{given[:37]}..."
        if fields and fields[0] in _KINDS and error["type"] != "missing":
            # One message for the field, not pydantic's one for a member of its union.
            reason = f"{fields[0]} must be {_KINDS[fields[0]]}, not {given}"
        elif not fields:  # not an object: pydantic's message names a class of ours
            reason = f"must be an object (speaker, start_time, end_time, words), not {given}"
        else:
            place += "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in fields)
            reason = error["msg"]
        raise ValueError(f"{path}: not SegLST: {place}: {reason}") from None
    for i, e in enumerate(parsed):
        _check_times(path, where(i), e.start_time, e.end_time, names=("start_time", "end_time"))
    sessions = sorted({str(e.session_id) for e in parsed if e.session_id is not None})
    if len(sessions) > 1:
        raise ValueError(
            f"{path}: holds {len(sessions)} meetings ({_listed(sessions)}); "
            "score one meeting at a time"
        )
    turns = [
        Turn(speaker=str(e.speaker), start=e.start_time, end=e.end_time, text=e.words)
        for e in parsed
    ]
    return turns, sessions[0] if sessions else None


def normalised_seglst(turns: Sequence[Turn]) -> "meeteval.io.SegLST":
    """Turns as one meeting's SegLST for meeteval, words through Whisper's English normaliser."""
    import meeteval

    normalise = _normaliser()
    return meeteval.io.SegLST(
        [
            {
                "session_id": "meeting",
                "speaker": t.speaker,
                "start_time": t.start,
                "end_time": t.end,
                "words": normalise(t.text),
            }
            for t in turns
        ]
    )


def check_scoring_libraries() -> None:
    """ModuleNotFoundError now, naming the package, if scoring cannot be done: for a caller
    about to spend minutes on work it would then score (bench). Found, not imported: the
    approaches bench then starts should not inherit what importing them sets up."""
    for name in ("meeteval", "whisper_normalizer"):
        if importlib.util.find_spec(name) is None:
            import_optional(name, "eval")  # raises, saying how to install it


@cache
def _normaliser() -> Callable[[str], str]:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def evaluate(
    hypothesis: Transcript | TurnFile | Sequence[Turn],
    truth: TurnFile | Sequence[Turn],
    *,
    participants: Sequence[str] = (),
    excluded: Sequence[Span | tuple[float, float]] = (),
) -> Evaluation:
    """Score ``hypothesis`` against ``truth``.

    Either may be what :func:`read_turns` gave, and the hypothesis a :class:`Transcript`.
    ``participants`` lists every speaker of the meeting, including those who never spoke (a
    transcript knows them, and gives them when none are); words on any speaker without truth
    count as ``silent_track_words``. ``excluded`` are stretches the truth leaves out of
    scoring (an STM file's, when none are given): the hypothesis's words there are left out
    too (:func:`without_spans`), as NIST's scoring does.

    Speakers are matched by name: the transcript's user ids, else (a truth labelled by display
    names) the names it shows. A truth whose speakers are not all found so (another tool's
    labels, ``spk0``) is matched as cpWER matches it, by the words, and a warning says how;
    every figure per speaker then follows that pairing.
    """
    check_scoring_libraries()
    import meeteval

    if isinstance(truth, Transcript):
        raise TypeError("truth is a Transcript: give the transcript first, then the truth")
    names: Mapping[str, str] = {}
    warnings: list[str] = []
    if isinstance(hypothesis, Transcript):
        hypothesis = _of_transcript(hypothesis)
    if isinstance(hypothesis, TurnFile):
        participants = participants or hypothesis.participants or ()
        names = hypothesis.names or {}
        warnings += [f"the transcript lost input, missed here: {line}" for line in hypothesis.lost]
        meeting = hypothesis.meeting
        hypothesis = hypothesis.turns
        of_truth = truth.meeting if isinstance(truth, TurnFile) else None
        if meeting and of_truth and meeting != of_truth:
            warnings.append(f"the transcript is of meeting {meeting} and the truth of {of_truth}")
    if isinstance(truth, TurnFile):
        excluded = excluded or truth.excluded
        warnings += truth.warnings
        truth = truth.turns
    _check_turns("hypothesis", hypothesis)
    _check_turns("truth", truth)
    spans = [Span(*span) for span in excluded]

    spoken = check_truth(truth)
    true_speakers = {t.speaker for t in spoken}
    # Speakers are paired on what everyone's spans leave; each span is then applied once,
    # to the words as said (cut twice, a shortened turn's words would be spread again).
    scored = without_spans(hypothesis, [s for s in spans if s.speakers is None])
    check_speaker_counts(truth, scored)
    labels = list(dict.fromkeys([*participants, *(t.speaker for t in scored)]))
    ref = normalised_seglst(truth)
    pairs = paired_by_name(labels, true_speakers, names)
    by_words = pairs is None
    if pairs is None:
        pairs = _paired_by_words(ref, scored)
        if names or participants:  # a transcript's: its speakers are the meeting's people
            warnings.append(_pairing_warning(true_speakers, labels, pairs))
    hypothesis = without_spans(relabelled(hypothesis, pairs), spans)
    silent = {relabel(label, pairs) for label in labels} - true_speakers
    if not hypothesis:  # nothing transcribed: every true word is missed, which meeteval
        # scores only if the hypothesis has some entry, so it gets one without words
        hypothesis = [Turn(speaker=truth[0].speaker, start=0.0, end=0.0, text="")]
    hyp = normalised_seglst(hypothesis)
    with quiet_meeteval():
        cp = meeteval.wer.cpwer(ref, hyp)["meeting"]
        tcp = meeteval.wer.tcpwer(ref, hyp, collar=TCPWER_COLLAR)["meeting"]
        per_speaker = _per_speaker(ref, hyp)
    if not by_words:
        # Figures by name beside a cpWER that pairs otherwise: the reader must know which
        # to trust (two speakers' labels swapped in the truth, say).
        said_as = {relabel(label, pairs): label for label in labels}
        warnings += _paired_otherwise(ref, hyp, cp.assignment, cp.errors, said_as)
    said = [entry["words"].split() for entry in hyp]  # each turn's words, as scored
    silent_words = sum(
        len(words) for t, words in zip(hypothesis, said, strict=True) if t.speaker in silent
    )
    # A turn of nothing that scores ("Hmm.", "Uh,"; on leaked or noisy audio, say) does not
    # find the utterance it overlaps.
    heard = [t for t, words in zip(hypothesis, said, strict=True) if words]
    errors, missed = _start_errors(heard, spoken)
    warnings += _units_warning(hypothesis, spoken)
    return Evaluation(
        cpwer=round(100 * cp.error_rate, 2),
        tcpwer=round(100 * tcp.error_rate, 2),
        errors=cp.errors,
        reference_words=cp.length,
        per_speaker=per_speaker,
        silent_track_words=silent_words,
        start_err_median=round(statistics.median(errors), 3) if errors else None,
        start_err_p95=round(_percentile(errors, 95), 3) if errors else None,
        missed_utterances=missed,
        utterances=len(spoken),
        speakers_paired_by_words=pairs if by_words else {},
        speaker_pairs=pairs,
        warnings=warnings,
        scorer=scorer_versions(),
    )


def scorer_versions() -> dict[str, str]:
    """Package -> its version here, of each of :data:`SCORERS`: what a result must say it
    was scored with, since a judge with other versions may differ."""
    return dict(_versions())


@cache
def _versions() -> tuple[tuple[str, str], ...]:
    found = []
    for name in SCORERS:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:  # imported from a checkout, not installed
            found.append((name, "unknown"))
    return tuple(found)


def check_truth(truth: Sequence[Turn]) -> list[Turn]:
    """The true utterances that have words (not a line without any), refusing, as bad input,
    a truth with none or with more speakers than can be scored: for a caller about to spend
    minutes on work it would then score (bench), before that work."""
    normalise = _normaliser()
    spoken = [t for t in truth if normalise(t.text).split()]
    if not spoken:
        raise ValueError("the truth has no words to score against")
    check_speaker_counts(truth)
    return spoken


def paired_by_name(
    labels: Sequence[str], true_speakers: set[str], names: Mapping[str, str]
) -> dict[str, str] | None:
    """Transcript speaker -> true speaker, when every true speaker is found by name: a user
    id, else the name the transcript shows for one; as written, else in capitals or small
    letters alike (a truth typed by hand, ``Alice`` for ``alice``), where no two names on
    either side are then one. None when they are not."""
    if true_speakers <= set(labels):
        return {label: label for label in labels if label in true_speakers}
    by_name = {uid: name for uid, name in names.items() if name in true_speakers}
    if true_speakers <= set(by_name.values()):
        return by_name
    ids = {label: label for label in labels}
    return _paired_ignoring_case(ids, true_speakers) or _paired_ignoring_case(names, true_speakers)


def _paired_ignoring_case(
    shown: Mapping[str, str], true_speakers: set[str]
) -> dict[str, str] | None:
    """Transcript speaker -> true speaker, each found by the name ``shown`` for it (its user
    id or display name) in capitals or small letters alike; None when one is not found, or
    a name the truth needs is two on either side (``Alice`` and ``alice``): which is which
    would be a guess, which cpWER's pairing by the words makes better."""
    truth: dict[str, list[str]] = {}
    for speaker in true_speakers:
        truth.setdefault(speaker.casefold(), []).append(speaker)
    found: dict[str, list[str]] = {}
    for label, name in shown.items():
        if name.casefold() in truth:
            found.setdefault(name.casefold(), []).append(label)
    if set(found) != set(truth) or any(len(v) > 1 for v in (*truth.values(), *found.values())):
        return None
    return {found[key][0]: truth[key][0] for key in truth}


def _paired_by_words(ref: "meeteval.io.SegLST", hypothesis: Sequence[Turn]) -> dict[str, str]:
    """Transcript speaker -> true speaker, as cpWER pairs them: the pairing with the fewest
    errors over all words."""
    import meeteval

    if not hypothesis:
        return {}
    with quiet_meeteval():
        cp = meeteval.wer.cpwer(ref, normalised_seglst(hypothesis))["meeting"]
    return {h: r for r, h in cp.assignment if r is not None and h is not None}


def _paired_otherwise(
    ref: "meeteval.io.SegLST",
    hyp: "meeteval.io.SegLST",
    assignment: Iterable[tuple[str | None, str | None]],
    best: int,
    said_as: Mapping[str, str],
) -> list[str]:
    """A warning when cpWER's ``assignment`` (true speaker, transcript speaker as scored)
    pairs speakers found by name otherwise, and with fewer errors than by name (``best``,
    cpWER's own count): cpWER and tcpWER then
    count their words so, while the figures per speaker, start errors, missed utterances
    and silent words take them by name, and the two disagree without it. ``said_as`` gives
    each speaker as scored the transcript's own label. A tie (a speaker with no words on
    either) is not warned of: the figures by name are then as good."""
    moved = {h: r for r, h in assignment if r is not None and h is not None and r != h}
    if not moved:
        return []
    words_ref, words_hyp = _words_by_speaker(ref), _words_by_speaker(hyp)
    named = _errors(words_ref, words_hyp, {r: r for r in words_ref if r in words_hyp})
    if named <= best:
        return []
    pairs = {said_as.get(h, h): r for h, r in sorted(moved.items())}
    return [
        f"cpWER pairs speakers found by name otherwise, by their words: {_pairs_said(pairs)} "
        f"({best} errors in all, where {named} by name). cpWER and tcpWER count their words "
        "so; the WER per speaker, start errors, missed utterances and words on silent people "
        "take each by name, and disagree with them: are these speakers labelled right in "
        "the truth?"
    ]


def _words_by_speaker(seglst: "meeteval.io.SegLST") -> dict[str, list[str]]:
    """Each speaker's words, their turns in order of start, as cpWER concatenates them."""
    return {
        speaker: " ".join(s["words"] for s in sorted(turns, key=_start)).split()
        for speaker, turns in seglst.groupby("speaker").items()
    }


def _errors(
    words_ref: Mapping[str, list[str]],
    words_hyp: Mapping[str, list[str]],
    pairs: Mapping[str, str],
) -> int:
    """Word errors of the pairing ``pairs`` (true speaker -> transcript speaker): each true
    speaker's words against those of the one paired with it (none: all missed), and the
    words of a transcript speaker paired with none inserted."""
    import meeteval

    errors = sum(
        meeteval.wer.siso_word_error_rate(
            " ".join(words), " ".join(words_hyp.get(pairs.get(r, ""), []))
        ).errors
        for r, words in words_ref.items()
    )
    paired = set(pairs.values())
    return errors + sum(len(words) for h, words in words_hyp.items() if h not in paired)


def _pairing_warning(true_speakers: set[str], labels: Sequence[str], pairs: dict[str, str]) -> str:
    """Said of a transcript, whose speakers are the meeting's participants by user id and
    display name: a truth that names others is most likely of another meeting."""
    unpaired = sorted(true_speakers - set(pairs.values()))
    return (
        f"the truth's speakers ({_listed(true_speakers)}) are not all participants of the "
        f"transcript ({_listed(labels) or 'none'}), by user id or display name: are they of "
        f"the same meeting? Each figure per speaker takes the transcript's speakers as "
        f"cpWER pairs them, by their words: {_pairs_said(pairs)}"
        + (f"; {_listed(unpaired)} with none" if unpaired else "")
    )


def _pairs_said(pairs: Mapping[str, str]) -> str:
    """``spk0 as Alice, spk1 as Bob`` for a warning."""
    return _listed((f"{h} as {r}" for h, r in pairs.items()), 20) or "none"


def relabel(label: str, pairs: Mapping[str, str]) -> str:
    """A transcript speaker under the true speaker's name it is paired with; one paired with
    none keeps its own, unless that is a true speaker's (another's words would be scored
    as theirs)."""
    if label in pairs:
        return pairs[label]
    return f"{label} (unpaired)" if label in pairs.values() else label


def relabelled(turns: Sequence[Turn], pairs: Mapping[str, str]) -> list[Turn]:
    """``turns`` under the true speakers' names they are paired with (see :func:`relabel`):
    with :attr:`Evaluation.speaker_pairs`, the transcript as it was scored, to draw it beside
    the truth."""
    return [t.model_copy(update={"speaker": relabel(t.speaker, pairs)}) for t in turns]


def without_spans(turns: Sequence[Turn], spans: Sequence[Span | tuple[float, float]]) -> list[Turn]:
    """``turns`` without their words inside ``spans`` (a span of some speakers only, their
    turns only). A turn's words are taken as spread evenly over it (as meeteval times the
    words of a segment), each placed at its middle."""
    if not spans:
        return list(turns)
    every = [Span(*span) for span in spans]
    kept = []
    for turn in turns:
        mine = [s for s in every if s.speakers is None or turn.speaker in s.speakers]
        words = turn.text.split()
        step = (turn.end - turn.start) / max(len(words), 1)
        left = [
            word
            for i, word in enumerate(words)
            if not any(s.start <= turn.start + (i + 0.5) * step <= s.end for s in mine)
        ]
        if len(left) == len(words):
            kept.append(turn)
        elif left:
            kept.append(turn.model_copy(update={"text": " ".join(left)}))
    return kept


def check_speaker_counts(truth: Sequence[Turn], transcript: Sequence[Turn] = ()) -> None:
    """Refuse, as bad input, what meeteval's cpWER would refuse deep inside: more than
    :data:`MAX_SPEAKERS` speakers with turns on either side."""
    counts = (("truth", truth), ("transcript", transcript))
    over = [
        f"the {side} has {count}"
        for side, turns in counts
        if (count := len({t.speaker for t in turns})) > MAX_SPEAKERS
    ]
    if over:
        raise ValueError(
            f"cpWER is scored with meeteval, which takes at most {MAX_SPEAKERS} speakers on "
            f"either side: {' and '.join(over)}"
        )


def _units_warning(hypothesis: Sequence[Turn], truth: Sequence[Turn]) -> list[str]:
    """A warning when one side's times are about a thousand times the other's: milliseconds
    on one side, most likely, which would be scored as if every word were said at another
    time. (A transcript that stops early, or a truth of the first minutes only, is not.)"""
    ends = max((t.end for t in hypothesis), default=0.0), max(t.end for t in truth)
    if min(ends) > 0 and _UNITS_RATIOS[0] < max(ends) / min(ends) < _UNITS_RATIOS[1]:
        return [
            f"the truth runs to {ends[1]:g} s and the transcript to {ends[0]:g} s: are both "
            "in seconds?"
        ]
    return []


_UNITS_RATIOS = (500.0, 2000.0)
"""How many times longer one side runs than the other when it is in milliseconds and the
other in seconds, with room for either to stop early by half: a transcript of the first
second of a five-minute truth is not a units mistake."""


def _listed(names: Iterable[str], most: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def quiet_meeteval() -> AbstractContextManager[None]:
    """meeteval's warnings that are noise here (its loggers are "preprocess" and
    "error_rate"). It warns when *utterances* are longer than the collar, taking them for
    words: with utterance-level truth that is expected, not a units mistake. And it warns of
    a speaker's utterances that overlap ("Self-overlap detected ... 0.00 %"), as segments of
    a whole track may by hundredths of a second, naming neither whose nor anything to do."""
    return _quiet("preprocess", "error_rate")


@contextmanager
def _quiet(*logger_names: str) -> Iterator[None]:
    """Also keeps meeteval's calls of the root logger itself (``logging.warning(...)``, as on
    a transcript with no turns) from configuring logging for the whole process: with no
    handler on the root, such a call installs one, and a notebook or a program calling
    :func:`evaluate` would print every library's warnings from then on."""
    loggers = [logging.getLogger(name) for name in logger_names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    root = logging.getLogger()
    stand_in = logging.NullHandler() if not root.handlers else None
    if stand_in is not None:
        root.addHandler(stand_in)
    try:
        yield
    finally:
        if stand_in is not None:
            root.removeHandler(stand_in)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _per_speaker(ref: "meeteval.io.SegLST", hyp: "meeteval.io.SegLST") -> list[SpeakerScore]:
    """Each true speaker's WER against the words the transcript put on that same speaker."""
    import meeteval

    scores = []
    ref_by, hyp_by = ref.groupby("speaker"), hyp.groupby("speaker")
    for speaker in sorted(ref_by):
        words_ref = " ".join(s["words"] for s in sorted(ref_by[speaker], key=_start))
        words_hyp = " ".join(s["words"] for s in sorted(hyp_by.get(speaker, []), key=_start))
        rate = meeteval.wer.siso_word_error_rate(words_ref, words_hyp)
        if rate.length == 0:
            continue  # a speaker with only empty truth lines has no rate
        scores.append(
            SpeakerScore(speaker=speaker, wer=round(100 * rate.error_rate, 2), words=rate.length)
        )
    return scores


def _start(segment: dict) -> float:
    return segment["start_time"]


def _start_errors(hypothesis: Sequence[Turn], truth: Sequence[Turn]) -> tuple[list[float], int]:
    """For each true utterance, how far from its start the nearest start is of the same
    speaker's utterances that overlap it; a true utterance none of its speaker's overlaps is
    missed. Nearest, not the one that overlaps most: a turn the transcript splits at a pause
    was still started on time. A true utterance of no length (a label put on a moment) is
    met by an utterance that holds it."""
    errors, missed = [], 0
    for turn in truth:
        starts = [
            candidate.start
            for candidate in hypothesis
            if candidate.speaker == turn.speaker
            and (
                min(candidate.end, turn.end) > max(candidate.start, turn.start)
                or (turn.start == turn.end and candidate.start <= turn.start <= candidate.end)
            )
        ]
        if starts:
            errors.append(min(abs(start - turn.start) for start in starts))
        else:
            missed += 1
    return errors, missed


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without needing numpy here."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
