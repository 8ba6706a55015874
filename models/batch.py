"""A batch: the meetings to transcribe (JOBS), and how each one went (the summary).

JOBS is JSON Lines or CSV, one meeting per line, each one of:

- ``{"manifest": "meetings/a/manifest.json"}``: local files;
- ``{"recording_id": "…"}``: an uploaded RealtimeKit recording, fetched first;
- ``{"meeting_id": "…", "user_ids": ["alice", "bob"]}``: record those users (all when
  ``user_ids`` is absent or empty), then fetch and transcribe.

An optional ``id`` names the meeting's output folder (default: derived from the line), and an
optional ``names`` maps user ids to display names. In CSV, ``user_ids`` is separated by ``;``
and ``names`` is ``alice=Alice Smith;bob=Bob`` (so a name there cannot hold a ``;``).
Relative manifest paths are relative to the JOBS file's folder (to the current folder for
JOBS that is a pipe, or /dev/stdin).
"""

import csv
import hashlib
import html
import io
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from ._errors import RedactedError, describe, import_optional
from ._json import JsonTextError, decode_text, loads
from ._text import printable
from .files import atomic_write_text
from .manifest import DisplayName, OptionalText
from .recording_files import safe_file_name

if TYPE_CHECKING:
    import pandas  # optional: the ``pandas`` extra

BATCH_SUMMARY = "summary.json"
"""The summary's name in a batch's output folder, beside one folder per meeting."""
DONE_FILE = "done.json"
"""In a meeting's folder of a batch: what the finished run of that meeting was."""
STARTED_FILE = "recording.json"
"""In a meeting's folder of a batch: the recording a run started, for a rerun to wait for."""

__all__ = [
    "BATCH_SUMMARY",
    "DONE_FILE",
    "STARTED_FILE",
    "BatchSummary",
    "Job",
    "JobsError",
    "MeetingResult",
    "SummaryError",
    "load_jobs",
    "refuse_shared",
]

MeetingStatus = Literal["done", "partial", "failed", "pending"]
"""``pending``: not finished by the run that wrote the summary, as far as it knows (yet, or at
all: a run that was stopped or killed leaves its unfinished meetings so, rather than unlisted;
one that finished just as the run stopped may be pending too, its result never having come
back). A re-run, or ``--retry-failed``, does them."""


class JobsError(RedactedError, ValueError):
    """A JOBS file that cannot be used; the message names the file, the line and the field."""


class SummaryError(RedactedError, ValueError):
    """A batch summary that cannot be read back; the message names the file and the field."""


class Job(BaseModel):
    """One meeting of a batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: OptionalText = Field(default=None, min_length=1)
    manifest: Path | None = None
    recording_id: OptionalText = Field(default=None, min_length=1)
    meeting_id: OptionalText = Field(default=None, min_length=1)
    user_ids: tuple[str, ...] = ()
    names: dict[str, DisplayName] = Field(default_factory=dict)
    """user id -> display name; a blank name is left out (the manifest's, or the id, shows)."""

    @field_validator("manifest", mode="before")
    @classmethod
    def _some_path(cls, path: object) -> object:
        """A blank path would be taken as the jobs file's folder, its ``manifest.json`` a
        meeting no one asked for (or a "no such manifest" that names no line of JOBS)."""
        if isinstance(path, str) and not path.strip():
            raise ValueError("an empty path names no manifest file")
        return path

    @field_validator("names")
    @classmethod
    def _visible_names(cls, names: dict[str, str | None]) -> dict[str, str]:
        return {user: name for user, name in names.items() if name is not None}

    @model_validator(mode="after")
    def _one_source(self) -> "Job":
        given = [k for k in ("manifest", "recording_id", "meeting_id") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of manifest, recording_id, meeting_id"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.user_ids and not self.meeting_id:
            raise ValueError("user_ids only go with meeting_id")
        return self

    _in_older_folder: bool = PrivateAttr(default=False)

    @property
    def folder_name(self) -> str:
        """The meeting's folder under the batch's output: ``id``, or made from the source (a
        meeting job's from its user ids, in whatever order they are given); the older name
        of :attr:`folder_names` for a job the batch found there (:meth:`in_older_folder`)."""
        name, older = self.folder_names
        return older if self._in_older_folder else name

    @property
    def asked_users(self) -> list[str]:
        """The users whose files the job fetches, once each and in an order of their own
        ([]: everyone's): what tells one job's users from another's, however listed."""
        return sorted(set(self.user_ids))

    @property
    def folder_names(self) -> tuple[str, str]:
        """The meeting's folder name, and the one earlier versions gave it: they made a meeting
        job's from its user ids in the order given, so that the same users listed otherwise
        got another folder, and their meeting a second recording. The same for other jobs."""
        return self._folder(self.asked_users), self._folder(self.user_ids)

    def in_older_folder(self) -> "Job":
        """The job, done in the folder an earlier version named for it (the batch found the
        meeting there, and none of the current name)."""
        job = self.model_copy()
        job._in_older_folder = True
        return job

    def _folder(self, users: Sequence[str]) -> str:
        if self.id:
            name = safe_file_name(self.id, keep_letters=True)
            if name.casefold() == BATCH_SUMMARY.casefold():
                raise ValueError(f"{self.id!r} is the name of the batch's own summary file")
            return name
        if self.manifest is not None:
            base = self.manifest.parent.name or "meeting"
            digest = hashlib.sha256(str(self.manifest.resolve()).encode()).hexdigest()[:8]
            return safe_file_name(f"{base}-{digest}")
        if self.recording_id:
            return safe_file_name(f"recording-{self.recording_id}")
        joined = "-".join(users)
        digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
        return safe_file_name(f"meeting-{self.meeting_id}" + (f"-{digest}" if joined else ""))


def load_jobs(path: Path | str) -> list[Job]:
    """Read JOBS (``.csv``: CSV with a header; anything else: JSON Lines)."""
    path = Path(path)
    try:
        data = path.read_bytes()  # not only a regular file: `batch <(make-jobs)` is a pipe
    except OSError as exc:
        raise JobsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        # Read as the manifest is: a spreadsheet's CSV may start with a byte-order mark, and
        # an audio file given by mistake is named as binary data. Line ends as Python's text
        # files read them: a cell or a line may end in CR LF, or CR alone.
        text = decode_text(data).replace("\r\n", "\n").replace("\r", "\n")
    except JsonTextError as exc:
        raise JobsError(f"{path}: {exc}") from None
    rows = _csv_rows(text, path) if path.suffix.lower() == ".csv" else _jsonl_rows(text, path)
    folder = _paths_folder(path)
    jobs: list[Job] = []
    for line, row in rows:
        try:
            job = Job.model_validate(row)
        except ValidationError as exc:
            raise JobsError(f"{path}, line {line}: {describe(exc)}") from None
        if job.manifest is not None:
            job = job.model_copy(update={"manifest": (folder / job.manifest).resolve()})
        try:
            _ = job.folder_name  # an id with nothing usable in it is refused here, by line
        except ValueError as exc:
            raise JobsError(f"{path}, line {line}: id: {exc}") from None
        jobs.append(job)
    refuse_shared(jobs, f"{path}: ")
    if not jobs:
        raise JobsError(f"{path}: no jobs in it")
    return jobs


def _paths_folder(path: Path) -> Path:
    """The folder relative manifest paths in JOBS at ``path`` are found from: the JOBS file's,
    wherever the batch is started from; the current folder for JOBS that is no file in a
    folder. A pipe (``batch <(make-jobs)`` reads /dev/fd/63, a link to /proc/PID/fd/63) or
    /dev/stdin (even when it stands for a file) would have the paths name nothing, and a
    meeting's folder name, made from its manifest's path, change with every run's pid."""
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except OSError:  # gone since it was read: its folder, as it was
        return path.parent
    folder = path.absolute().parent.resolve()
    if not regular or folder in _DESCRIPTOR_FOLDERS or folder.parts[1:2] == ("proc",):
        return Path.cwd()
    return path.parent


_DESCRIPTOR_FOLDERS = (Path("/dev"), Path("/dev/fd"))
"""Where a name stands for an open file (/dev/stdin, macOS's /dev/fd/63), not for a file in
that folder. (A file of /dev/shm is in a folder of its own.)"""


def refuse_shared(jobs: Sequence[Job], where: str = "") -> None:
    """:class:`JobsError` (its message begun with ``where``) for the first two of ``jobs`` that
    would share an output folder (one folder on macOS and Windows: a and A), or record the
    same meeting, which has one recording at a time."""
    seen: dict[str, int] = {}  # folder name -> job number
    recorded: dict[str, int] = {}  # meeting id -> job number
    for number, job in enumerate(jobs, 1):
        try:
            folder = job.folder_name
        except ValueError as exc:
            raise JobsError(f"{where}job {number}: id: {exc}") from None
        if folder.casefold() in seen:
            raise JobsError(
                f"{where}jobs {seen[folder.casefold()]} and {number} would share the output "
                f"folder {folder!r}; give them different ids"
            )
        seen[folder.casefold()] = number
        if job.meeting_id is not None:
            if job.meeting_id in recorded:
                raise JobsError(
                    f"{where}jobs {recorded[job.meeting_id]} and {number} would both record "
                    f"meeting {job.meeting_id}, which has one recording at a time; give it "
                    "one job (with every user id to record)"
                )
            recorded[job.meeting_id] = number


def _jsonl_rows(text: str, path: Path) -> list[tuple[int, object]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rows.append((number, loads(line)))
        except JsonTextError as exc:
            raise JobsError(f"{path}, line {number}: {exc}") from None
    return rows


def _csv_rows(text: str, path: Path) -> list[tuple[int, object]]:
    """Rows with the line each begins on: blank lines are skipped, so the row count is not
    the line number."""
    lines = io.StringIO(text).readlines()  # at line feeds only, as csv reads them
    reader = csv.DictReader(lines, strict=True)
    rows: list[tuple[int, object]] = []
    for first, row in _csv_records(reader, lines, path):
        extra = [v for v in row.pop(None, []) if v.strip()]  # cells past the header's columns
        if extra:
            raise JobsError(
                f"{path}, line {first}: {len(extra)} more cell(s) than the header has columns "
                f"({', '.join(map(repr, extra))}); a value with a comma needs quotes"
            )
        cleaned: dict[str, object] = {k.strip(): v.strip() for k, v in row.items() if k and v}
        broken = next((k for k, v in cleaned.items() if "\n" in str(v)), None)
        if broken is not None:
            # Never meant in a jobs file (a name is shown on one line), and what a quote left
            # open makes of the lines after it.
            raise JobsError(
                f"{path}, line {first}: {broken}: a line break inside a quoted cell (a quote "
                "left open?); a cell of a jobs file is one line"
            )
        if "user_ids" in cleaned:
            users = str(cleaned["user_ids"]).split(";")
            cleaned["user_ids"] = [u.strip() for u in users if u.strip()]
        if "names" in cleaned:
            cleaned["names"] = _csv_names(str(cleaned["names"]), f"{path}, line {first}")
        if cleaned:
            rows.append((first, cleaned))
    return rows


def _csv_records(
    reader: "csv.DictReader[str]", lines: list[str], path: Path
) -> Iterator[tuple[int, dict[str | None, Any]]]:
    """The rows of ``reader`` (over ``lines``) with the line each begins on, after the header.

    Read strictly: leniently, a quote left open takes every line after it into one cell, the
    meetings on them silently never done. A :class:`csv.Error` is a :class:`JobsError` naming
    the line its row begins on."""
    ended = 0  # the last line of the header or row read
    try:
        header = [name.strip() for name in reader.fieldnames or ()]  # reads the header
        twice = next((n for i, n in enumerate(header) if n and n in header[:i]), None)
        if twice is not None:  # csv keeps the last of the two, as json did a repeated key
            raise JobsError(
                f"{path}, line {reader.line_num}: the column {twice!r} is given more than "
                "once; only one can count, and which was meant cannot be told"
            )
        ended = reader.line_num
        for row in reader:
            yield _first_line(lines, ended, reader.line_num), row
            ended = reader.line_num
    except csv.Error as exc:
        now = reader.reader.line_num  # the line read when it failed
        first = _first_line(lines, ended, now)
        raise JobsError(f"{path}, line {first}: {_csv_problem(exc, now)}") from None


def _first_line(lines: list[str], ended: int, last: int) -> int:
    """The line a row read up to line ``last`` begins on, after blank lines past ``ended``."""
    first = ended + 1
    while first < last and not lines[first - 1].strip():
        first += 1
    return first


def _csv_problem(exc: csv.Error, line: int) -> str:
    """What a CSV error means for whoever wrote the file (csv says it in its own terms)."""
    message = str(exc)
    if message.startswith("unexpected end of data"):
        return "a quoted cell is not closed by the end of the file (a quote left open?)"
    if message.startswith("field larger than field limit"):
        return f"a cell of more than {csv.field_size_limit():,} characters (a quote left open?)"
    if "expected after" in message:
        return (
            f"a quoted cell goes on after its closing quote, on line {line} (a quote inside "
            'a quoted cell is written twice, "", and one left open ends at the next quote)'
        )
    return message


def _csv_names(cell: str, where: str) -> dict[str, str]:
    """A CSV cell of display names, ``alice=Alice Smith;bob=Bob``: a cell holds no mapping."""
    names = {}
    for pair in filter(str.strip, cell.split(";")):
        user_id, equals, name = pair.partition("=")
        if not equals or not user_id.strip() or not name.strip():
            raise JobsError(
                f"{where}: names: {pair.strip()!r} is not USER_ID=NAME "
                "(pairs separated by ';', as in alice=Alice Smith;bob=Bob)"
            )
        names[user_id.strip()] = name.strip()
    return names


class MeetingResult(BaseModel):
    """How one meeting of a batch went."""

    job: str = Field(description="the meeting's folder name")
    status: MeetingStatus
    folder: str
    duration_s: float | None = Field(default=None, description="meeting length")
    wall_s: float | None = Field(default=None, description="time spent on it in this run")
    realtime_factor: float | None = Field(default=None, description="meeting s per wall s")
    reused: bool = Field(default=False, description="already done by an earlier run")
    reason: str | None = Field(default=None, description="why it failed, or what was lost")
    signed_by: str | None = Field(
        default=None, description="the fingerprint of the key its bundle is signed with"
    )


class BatchSummary(BaseModel):
    """Every meeting's result, in the order of JOBS; saved as ``OUT/summary.json``
    (:data:`BATCH_SUMMARY`)."""

    meetings: list[MeetingResult]

    @property
    def failed(self) -> list[MeetingResult]:
        return [m for m in self.meetings if m.status == "failed"]

    @property
    def pending(self) -> list[MeetingResult]:
        """Meetings the run that wrote this summary did not finish: it was stopped, or is still
        going."""
        return [m for m in self.meetings if m.status == "pending"]

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "BatchSummary":
        """Read a saved summary; :class:`SummaryError` if it is not one (damaged, or another
        file of that name), :class:`OSError` if it cannot be read."""
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except ValidationError as exc:
            raise SummaryError(f"{path}: not a batch summary: {describe(exc)}") from None

    def to_dataframe(self) -> "pandas.DataFrame":
        """The summary as a pandas DataFrame (``pip install 'trackscribe[pandas]'``)."""
        pd = import_optional("pandas", "pandas")
        rows = [m.model_dump() for m in self.meetings]
        return pd.DataFrame(rows, columns=list(MeetingResult.model_fields))  # also with none

    def __str__(self) -> str:
        """The table ``trackscribe batch`` prints: one row per meeting, a long reason cut
        short (the whole of it is in ``reason``)."""
        rows = [("meeting", "status", "length s", "wall s", "x real time", "reason")]
        for m in self.meetings:
            reason = printable(m.reason or "")
            if len(reason) > _REASON_WIDTH:
                reason = reason[: _REASON_WIDTH - 1] + "…"
            rows.append(
                (
                    printable(m.job),
                    m.status + (" (earlier run)" if m.reused else ""),
                    "" if m.duration_s is None else f"{m.duration_s:.1f}",
                    "" if m.wall_s is None else f"{m.wall_s:.1f}",
                    "" if m.realtime_factor is None else f"{m.realtime_factor:.1f}",
                    reason,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        )

    def _repr_html_(self) -> str:
        head = "".join(
            f"<th>{h}</th>"
            for h in ("meeting", "status", "length", "wall s", "x real time", "reason")
        )
        rows = "".join(
            "<tr>"
            f"<td>{html.escape(m.job)}</td><td>{m.status}{' (earlier run)' if m.reused else ''}"
            f"</td><td>{_minutes(m.duration_s)}</td><td>{_number(m.wall_s)}</td>"
            f"<td>{_number(m.realtime_factor)}</td><td>{html.escape(m.reason or '')}</td></tr>"
            for m in self.meetings
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


_REASON_WIDTH = 80
"""The table shows this much of a reason; ``trackscribe batch`` prints the whole of it after
the table, on stderr."""


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f} min"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"
