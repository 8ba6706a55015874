"""The transcript (``trackscribe.transcript/1``): who said what, and when, on one clock."""

import html
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from difflib import SequenceMatcher
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    model_validator,
)

from ._errors import RedactedError, describe, import_optional, problems_now
from ._json import JsonTextError, NotText, decode_text, loads
from ._text import mixes_scripts, name_key, one_line, spelt_out
from ._time import UtcDatetime, format_clock, format_utc
from .files import atomic_write_text, read_regular_file
from .manifest import DisplayName, UserId

if TYPE_CHECKING:
    import pandas  # optional: the ``pandas`` extra

TRANSCRIPT_SCHEMA: Final = "trackscribe.transcript/1"


class _Finite(BaseModel):
    # Python's json reads NaN and Infinity; a time that is one is refused where it is read,
    # with its field named, rather than failing somewhere in an export or a report.
    # A notebook that changes a transcript in place gets the same checks as one read: a time
    # set to text or NaN is refused there, not written out to fail when read back.
    model_config = ConfigDict(allow_inf_nan=False, validate_assignment=True)


class Word(_Finite):
    """One recognised word. Times are seconds on whichever clock its container uses."""

    model_config = ConfigDict(frozen=True)

    word: str
    start: float
    end: float
    probability: float = Field(ge=0, le=1)


class Segment(_Finite):
    """What the model said about one speech region, in seconds of *track* time."""

    model_config = ConfigDict(frozen=True)

    start: float
    end: float
    text: str
    words: list[Word]
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    dropped: str | None = Field(
        default=None,
        description="why the transcript leaves this text out (the audio under it is too "
        "quiet to hold it), for its provenance to say",
    )


_SENTENCE_ENDS = tuple(".?!。？！…")


def ends_sentence(text: str) -> bool:
    """Whether recognised text ends a sentence (a closing quote or bracket after the mark
    counts): what tells a pause between sentences from a sentence cut off."""
    return text.rstrip().rstrip("\"')”’").endswith(_SENTENCE_ENDS)


class Speaker(_Finite):
    user_id: UserId
    display_name: DisplayName = None


class Utterance(_Finite):
    """A turn of one speaker. ``start``/``end`` are seconds from the transcript's origin.

    ``text`` is what the utterance says, and ``words`` follow it: a text edited by a person (a
    name the model misheard, a redaction) is not contradicted by the model's words, which
    would bring a redacted word back in the JSON and cut subtitles by words no longer said.
    See :meth:`words_as_said`.
    """

    speaker: str = Field(description="user_id")
    start: float
    end: float
    start_time: UtcDatetime
    end_time: UtcDatetime
    text: str
    words: list[Word] = Field(default_factory=list)
    overlaps: list[str] = Field(default_factory=list, description="speakers talking meanwhile")

    def words_as_said(self) -> list[Word]:
        """``words`` as the text now says them. Words the text still has keep their times and
        probabilities; words it took out are gone; words it put in take the time of those
        they replace (or the instant where they were put in), shared out evenly, with
        probability 1: a person wrote them. Words that differ from the text in spacing alone
        are as said: an early transcript kept each word's leading space, and text without
        spaces between words (Chinese, Japanese) is not a text edited. Without words (none
        were timed), none."""
        return _following(self.text, self.words)

    @model_validator(mode="after")
    def _words_follow_the_text(self) -> "Utterance":
        # Made, read or set (text or words): a notebook sees the words it will save. A copy
        # made with ``model_copy(update=...)``, or a list changed in place, is not validated:
        # the JSON follows the text all the same (see the serializer below).
        if (said := self.words_as_said()) is not self.words:
            self.__dict__["words"] = said  # not setattr: that would validate again
        return self

    @field_serializer("words", mode="wrap")
    def _words_written(
        self, words: list[Word], write: SerializerFunctionWrapHandler
    ) -> list[dict[str, Any]]:
        return write(_following(self.text, words))  # what to leave out of them still applies


_ALIGNED_AT_MOST = 1_000_000
"""Word pairs (old words times new, of the stretch between what the edit left alike at both
ends) compared at most to tell which words a text edit kept: matching is quadratic at worst,
and a stretch rewritten at that size keeps little."""


def _following(text: str, words: list[Word]) -> list[Word]:
    """``words`` made to follow ``text`` (see :meth:`Utterance.words_as_said`); ``words``
    itself when they already do."""
    said = text.split()
    heard = [w.word for w in words]
    if not words or said == heard or "".join(said) == "".join("".join(heard).split()):
        return words
    # What an edit left alike at both ends (all of a long utterance but a redacted word) is
    # kept as it is; only the stretch between is matched.
    head = 0
    while head < min(len(said), len(heard)) and said[head] == heard[head]:
        head += 1
    tail = 0
    while tail < min(len(said), len(heard)) - head and said[-1 - tail] == heard[-1 - tail]:
        tail += 1
    old, new = heard[head : len(heard) - tail], said[head : len(said) - tail]
    blocks: Sequence[tuple[str, int, int, int, int]] = [("replace", 0, len(old), 0, len(new))]
    if len(old) * len(new) <= _ALIGNED_AT_MOST:
        blocks = SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes()
    out = words[:head]
    for tag, i1, i2, j1, j2 in blocks:
        i1, i2, j1, j2 = i1 + head, i2 + head, j1 + head, j2 + head
        if tag == "equal":
            out.extend(words[i1:i2])
        elif j2 > j1:  # replaced, or put in where there was nothing (taken out: nothing)
            if i2 > i1:
                since, until = words[i1].start, words[i2 - 1].end
            else:
                since = until = words[i1].start if i1 < len(words) else words[-1].end
            step = max(0.0, until - since) / (j2 - j1)
            out.extend(
                Word(
                    word=word,
                    start=round(since + k * step, 3),
                    end=round(since + (k + 1) * step, 3),
                    probability=1.0,
                )
                for k, word in enumerate(said[j1:j2])
            )
    return out + words[len(words) - tail :]


class InputFile(_Finite):
    """A file the transcript was made from, so a reviewer can prove which bytes were used."""

    path: str
    user_id: str
    sha256: str
    size: int
    started_time: UtcDatetime
    decoded_seconds: float | None = None
    first_packet_time: float | None = Field(default=None, description="container time, s")
    gap_seconds: float = Field(default=0.0, description="silence written for timestamp gaps")
    gaps: list[tuple[float, float]] = Field(
        default_factory=list,
        description="each timestamp gap (audio the file lacks, a network drop): where, in track "
        "time (s), and how long; words either side of one were not said together",
    )
    dropped_seconds: float = Field(
        default=0.0, description="audio dropped where timestamps went back over earlier audio"
    )
    channels_opposite: bool = Field(
        default=False,
        description="its two channels were one signal in opposite phase (they cancel when "
        "averaged, as players and most tools mix them): half their difference was transcribed",
    )
    problem: str | None = Field(default=None, description="e.g. where a truncated file broke off")


class TrackFailure(_Finite):
    """A track that contributed nothing, and why."""

    path: str
    user_id: str
    reason: str
    fetch_again: bool | None = Field(
        default=None,
        description="its download failed for a reason that may pass: fetching again may get "
        "the file (False: no fetch again changes it, or it was never a download's to fail; "
        "None: written before trackscribe said, so a reader tells it as that version did, "
        "from whether the file is on disk)",
    )

    def describe(self) -> str:
        """The reason, led by the file unless it names the file already."""
        return self.reason if Path(self.path).name in self.reason else f"{self.path}: {self.reason}"


class DroppedSpeech(_Finite):
    """Speech found on a track and kept from the model (leakage, a duplicate), or whose text
    the transcript leaves out (near-silence), so a reviewer can check the call.

    Times are seconds from the transcript's origin.
    """

    path: str
    user_id: str
    start: float
    end: float
    reason: str
    attributed_to: str | None = Field(default=None, description="whose voice it was judged")


class ClockEstimate(_Finite):
    """How far off a track's start time was measured to be, from the leakage between tracks."""

    path: str
    user_id: str
    correction_s: float = Field(description="added to the track's start on the meeting clock")
    pairs: int = Field(description="other tracks it was measured against")
    correlation: float = Field(description="how well leaked copies matched (0-1)")
    applied: bool
    drift_ppm: float | None = Field(
        None,
        description="how fast the track's clock ran against the others' (parts per million; "
        "positive: fast); None: not measured",
    )
    drift_applied: bool = Field(
        False, description="track times were divided by 1 + drift on the meeting clock"
    )
    echo_s: float = Field(
        0.0,
        description="how much later than their sources the others' voices reached this track "
        "beyond what its clock explains: back through the participant's speakers (s)",
    )
    echo_applied: bool = Field(
        False, description="leakage into this track was looked for that much later"
    )
    unmeasured: str | None = Field(
        None,
        description="why this track's clock was not measured though the others' were: its "
        "voice, which their microphones carry, matched theirs at no lag searched",
    )


class Provenance(_Finite):
    software: str
    model: str
    recording_id: str | None = Field(
        default=None, description="the RealtimeKit recording the tracks came from, if known"
    )
    model_files: dict[str, str] = Field(
        default_factory=dict, description="file name -> SHA-256 of the model's files"
    )
    runtime: str | None = Field(
        default=None, description="the decoder and the libraries whose versions can change results"
    )
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputFile] = Field(default_factory=list)
    failures: list[TrackFailure] = Field(default_factory=list)
    dropped: list[DroppedSpeech] = Field(default_factory=list)
    clock: list[ClockEstimate] = Field(default_factory=list)

    def __repr_args__(self) -> Iterator[tuple[str, object]]:
        """What was used and what became of the input, counted: the lists in full run to
        thousands of lines for an hour's meeting, far too much for a notebook's echo or a log."""
        yield "software", self.software
        yield "model", self.model
        yield "recording_id", self.recording_id
        yield "inputs", len(self.inputs)
        yield "failures", len(self.failures)
        yield "dropped", len(self.dropped)
        yield "clock", len(self.clock)


_COLUMN_TYPES = {
    "speaker": "str",
    "name": "str",
    "start": "float64",
    "end": "float64",
    "start_time": "datetime64[us, UTC]",
    "end_time": "datetime64[us, UTC]",
    "text": "str",
    "words": "int64",
    "overlaps": "str",
}
"""Set, not inferred: a meeting with no speech would get columns of objects, which break
``.dt`` and, concatenated with other meetings, their times."""


_MILLISECOND = 0.0011
"""Seconds: times are written to the millisecond; a little more, for floating point."""


class TranscriptError(RedactedError, ValueError):
    """A transcript file that cannot be read; the message names the file and the field."""


class Transcript(_Finite):
    """The merged result of one meeting."""

    schema_: Literal["trackscribe.transcript/1"] = Field(default=TRANSCRIPT_SCHEMA, alias="schema")
    meeting_id: str
    origin: UtcDatetime = Field(
        description="time zero: the earliest track start (of the tracks placed on one clock)"
    )
    speakers: list[Speaker]
    utterances: list[Utterance]
    provenance: Provenance

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> "Transcript":
        # A transcript edited by hand, or by a notebook, is read by reviewers and exports
        # that take these for granted: every time on one clock from the origin, in order,
        # and every speaker named once.
        known: set[str] = set()
        for i, speaker in enumerate(self.speakers):
            if speaker.user_id in known:
                raise ValueError(f"speakers[{i}].user_id: {speaker.user_id!r} is listed twice")
            known.add(speaker.user_id)
        previous = None
        for i, utterance in enumerate(self.utterances):
            where = f"utterances[{i}]"
            if utterance.start < -_MILLISECOND:
                raise ValueError(f"{where}.start: {utterance.start} is before the origin (time 0)")
            if utterance.end < utterance.start:
                raise ValueError(f"{where}: end {utterance.end} is before start {utterance.start}")
            if previous is not None and utterance.start < previous.start:
                raise ValueError(
                    f"{where}: starts at {utterance.start}, before utterances[{i - 1}] "
                    f"({previous.start}): utterances are in order of start"
                )
            for field, seconds in (("start", utterance.start), ("end", utterance.end)):
                stated = getattr(utterance, f"{field}_time")
                if abs((stated - self.origin).total_seconds() - seconds) > _MILLISECOND:
                    raise ValueError(
                        f"{where}.{field}_time: {format_utc(stated)} is not the origin "
                        f"({format_utc(self.origin)}) plus its {field} ({seconds} s)"
                    )
            if utterance.speaker not in known:
                raise ValueError(
                    f"{where}.speaker: {utterance.speaker!r} is not one of the speakers"
                )
            for other in utterance.overlaps:
                if other not in known:
                    raise ValueError(f"{where}.overlaps: {other!r} is not one of the speakers")
            previous = utterance
        return self

    def check(self) -> None:
        """Raise :class:`TranscriptError` if the transcript, as it now is, would not load.

        Setting a field is checked as it is made; changing a list in place (appending an
        utterance) is not, so saving and exporting check again: nothing is written that
        could not be read back."""
        if (problem := problems_now(self)) is not None:
            which = self.meeting_id.encode("utf-8", "backslashreplace").decode()
            raise TranscriptError(f"transcript of meeting {which}: {problem}")

    @property
    def partial(self) -> bool:
        """True when some input was lost: a track failed, or a file broke off part-way."""
        return bool(self.provenance.failures) or any(i.problem for i in self.provenance.inputs)

    def problems(self) -> list[str]:
        """One line per input that was lost in whole or in part, naming the file and why."""
        lines = [f.describe() for f in self.provenance.failures]
        lines += [f"{i.path}: {i.problem}" for i in self.provenance.inputs if i.problem]
        return lines

    def speaker_name(self, user_id: str) -> str:
        """The name people read for a speaker (see :meth:`speaker_names`); the user id for
        one the transcript does not list."""
        return self.speaker_names().get(user_id, user_id)

    def speaker_names(self, shown: Callable[[str], str] = one_line) -> dict[str, str]:
        """User id -> the name people read: the display name, else the user id. Where two
        speakers would read the same (two Alices; "José" typed two ways), each display name
        has the user id after it, so that no export puts one person's words on the other.
        That is checked again until no two read the same: a name chosen to read as another's
        label ("Alice (u1)") gets its own user id too. Two whose user ids read the same as
        well (apart by a character that does not show, or by a trailing space) get them spelt
        out (``\\u200b``, ``\\u0020``: :func:`spelt_out`), and two that still read the same
        (``Bob`` and ``bob``) their place in :attr:`speakers` (``(speaker 2)``). A display
        name whose letters mix scripts ("Аlice" with a Cyrillic А) has its user id from the
        start, beside an Alice or not (:func:`mixes_scripts`); names are compared by
        :func:`name_key`, which takes Cyrillic "Јое" for Joe.

        ``shown``: text as a format writes it (on one line, by default; SRT also writes
        braces as ❴❵): names are told apart as they are written there."""
        forms = {
            s.user_id: _label_forms(s, place, shown) for place, s in enumerate(self.speakers, 1)
        }
        alone = len(self.speakers) == 1
        level = {s.user_id: _first_form(s, alone) for s in self.speakers}
        labels = {user_id: form[level[user_id]] for user_id, form in forms.items()}
        # Form by form, only those below it are raised: "Alice (u1)", the label u1 was given,
        # stays hers, and the one who chose it as a name is the one told apart. Each round
        # raises someone, so it ends; the last forms differ by place, so no two end alike.
        for up_to in range(1, len(_FORMS)):
            while clashing := [u for u in _reading_alike(labels) if level[u] < up_to]:
                for user_id in clashing:
                    level[user_id] = up_to
                    labels[user_id] = forms[user_id][up_to]
        return labels

    def __repr_args__(self) -> Iterator[tuple[str, object]]:
        """The meeting and how much it holds, not every word of it: ``repr`` (a notebook's
        echo, a debugger, a log line) of the whole model runs to megabytes for an hour's
        meeting. ``to_json``, ``to_dataframe`` and the notebook's table show it all."""
        yield "meeting_id", self.meeting_id
        yield "origin", format_utc(self.origin)
        yield "speakers", len(self.speakers)
        yield "utterances", len(self.utterances)
        yield "lost_inputs", len(self.problems())
        yield "provenance", self.provenance

    def to_json(self) -> str:
        """The contract's JSON (``trackscribe.transcript/1``), as ``transcript.json`` holds it."""
        return self.model_dump_json(by_alias=True, indent=2) + "\n"

    def to_dataframe(self) -> "pandas.DataFrame":
        """One row per utterance: speaker, name, start/end (s and UTC), text, overlaps.

        Needs pandas (``pip install 'trackscribe[pandas]'``).
        """
        pd = import_optional("pandas", "pandas")
        names = self.speaker_names()
        return pd.DataFrame(
            [
                {
                    "speaker": u.speaker,
                    "name": names.get(u.speaker, u.speaker),
                    "start": u.start,
                    "end": u.end,
                    "start_time": u.start_time,
                    "end_time": u.end_time,
                    "text": u.text,
                    "words": len(u.words),
                    "overlaps": ", ".join(u.overlaps),
                }
                for u in self.utterances
            ],
            columns=[
                "speaker",
                "name",
                "start",
                "end",
                "start_time",
                "end_time",
                "text",
                "words",
                "overlaps",
            ],
        ).astype(_COLUMN_TYPES)

    def _repr_html_(self) -> str:
        """How a notebook shows a transcript: who said what, when, and what was lost."""
        names = self.speaker_names()
        rows = "".join(
            f"<tr><td>{format_clock(u.start)}</td>"
            f"<td>{html.escape(names.get(u.speaker, u.speaker))}"
            f"</td><td>{html.escape(u.text)}</td></tr>"
            for u in self.utterances
        )
        lost = "".join(f"<li>{html.escape(p)}</li>" for p in self.problems())
        return (
            f"<p><b>Meeting {html.escape(self.meeting_id)}</b>: {len(self.speakers)} speakers, "
            f"{len(self.utterances)} utterances, from {format_utc(self.origin)}</p>"
            + (f"<p>Lost input:</p><ul>{lost}</ul>" if lost else "")
            + "<table><thead><tr><th>time</th><th>speaker</th><th>text</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )

    def save(self, path: Path | str) -> Path:
        """Write ``transcript.json`` atomically (never half-written), once it is checked
        (:meth:`check`)."""
        self.check()
        path = Path(path)
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: Path | str) -> "Transcript":
        """Read and validate a saved ``transcript.json``; errors (:class:`TranscriptError`)
        name the file and the offending field."""
        path = Path(path)
        return cls.from_json(cls.read_bytes(path), str(path))

    @staticmethod
    def read_bytes(path: Path | str) -> bytes:
        """The bytes of the ``transcript.json`` at ``path``, for :meth:`from_json`; errors
        (:class:`TranscriptError`) name the file."""
        path = Path(path)
        try:
            return read_regular_file(path)
        except FileNotFoundError:
            raise TranscriptError(f"{path}: no such transcript file") from None
        except OSError as exc:
            raise TranscriptError(f"{path}: cannot read: {exc}") from None

    @classmethod
    def from_json(cls, data: bytes, source: str) -> "Transcript":
        """The transcript in ``data``, the bytes of a ``transcript.json`` read from ``source``
        (which errors name)."""
        try:
            return cls.model_validate(loads(decode_text(data)))
        except NotText as exc:
            raise TranscriptError(f"{source}: not a transcript: {exc}") from None
        except ValidationError as exc:
            raise TranscriptError(f"{source}: {describe(exc)}") from None
        except JsonTextError as exc:
            raise TranscriptError(f"{source}: {exc}") from None


def _reading_alike(labels: dict[str, str]) -> list[str]:
    """The keys of ``labels`` whose label reads the same as another's."""
    readings = Counter(name_key(label) for label in labels.values())
    return [key for key, label in labels.items() if readings[name_key(label)] > 1]


_FORMS = ("name", "name (user id)", "name (user id spelt out)", "... (speaker N)")
"""The labels a speaker may be shown by, each telling more apart than the one before."""


def _label_forms(speaker: Speaker, place: int, shown: Callable[[str], str]) -> list[str]:
    """A speaker's labels in the order of :data:`_FORMS`, as ``shown`` writes them; one
    without a display name is shown by the user id alone, spelt out from the second: told
    apart from a name it reads as, it must not go on reading as it while the other speaker
    gains a user id."""
    name, user_id, spelt = (
        shown(t) for t in (_shown_name(speaker), speaker.user_id, spelt_out(speaker.user_id))
    )
    named = speaker.display_name is not None
    with_id = f"{name} ({user_id})" if named else spelt  # an id told apart is spelt out
    with_spelt = f"{name} ({spelt})" if named else spelt
    return [name, with_id, with_spelt, f"{with_spelt} (speaker {place})"]


def _first_form(speaker: Speaker, alone: bool) -> int:
    """The first of :data:`_FORMS` a speaker is shown by: one whose display name mixes
    scripts (:func:`mixes_scripts`) with its user id from the start; anyone else by the name,
    until it reads as another's. A user id standing in for the name is shown as it is when
    it is the only speaker (spelt out, ``team-\\u041c\\u0430…`` reads as no one); beside
    others, one that mixes scripts is spelt out from the start, as :func:`name_key` does not
    know every letter drawn as another's (Armenian "Bօb" passes for Bob)."""
    name = speaker.display_name
    if name is None:
        return 0 if alone or not mixes_scripts(speaker.user_id) else 1
    return 1 if mixes_scripts(name) else 0


def _shown_name(speaker: Speaker) -> str:
    """The display name, or the user id where there is none (a name of which nothing shows
    is none already: :data:`DisplayName`)."""
    return speaker.display_name or speaker.user_id
