"""The manifest (``trackscribe.manifest/1``): the files that make up a meeting, and their starts."""

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from ._errors import RedactedError, describe, problems_now
from ._json import LONE_SURROGATE, JsonTextError, NotText, decode_text, is_text, loads
from ._text import shows_nothing
from ._time import UtcDatetime, format_utc
from .files import read_regular_file
from .http import redact_urls
from .recording_files import time_from_file_name

MANIFEST_SCHEMA: Final = "trackscribe.manifest/1"

MANIFEST_FILE = "manifest.json"
"""What a meeting's manifest is called in its folder (fetch writes it there)."""

_MAX_START_SPREAD = timedelta(days=1)
"""How far a track's start may lie from the others' (a recording runs for hours, not days)."""

_LATEST_START = datetime(9999, 12, 1, tzinfo=UTC)
"""The latest a track may start: a month before the last time Python can hold. A meeting's
times run on past a track's start, by the length of its audio (decoding stops at a day, the
longest RealtimeKit recording) and by clock corrections of seconds; a start later than this
would have them fall past year 9999 and fail the run at its very end, after the whole
transcription. A month is many times what they need, and no real clock reads December 9999."""


def outlying_starts(starts: Sequence[datetime]) -> tuple[datetime, list[int]]:
    """The middle one of ``starts`` and the indexes of those more than a day
    (``_MAX_START_SPREAD``) from it: one file's clock off by months (a device clock reset, a
    bad name) would put a meeting on a timeline months long.

    The middle start (the earlier of the two middle ones) is the reference, not the earliest,
    so that one start years too early is the one named, not every other track.
    """
    middle = sorted(starts)[(len(starts) - 1) // 2]
    return middle, [i for i, start in enumerate(starts) if abs(start - middle) > _MAX_START_SPREAD]


def _unicode(value: str | None) -> str | None:
    if value is not None and not is_text(value):
        raise ValueError(LONE_SURROGATE)  # built in Python: JSON text is refused as it is read
    return value


OptionalText = Annotated[str | None, AfterValidator(_unicode)]
"""Optional text that can be written out. (Plain ``str`` fields refuse a lone surrogate
already; a ``str | None`` one does not.)"""


def _visible_or_none(name: str | None) -> str | None:
    return None if name is None or shows_nothing(name) else name.strip()


DisplayName = Annotated[str | None, AfterValidator(_unicode), AfterValidator(_visible_or_none)]
"""A name shown to people, without surrounding blanks; one of which nothing shows (blank, or
only a zero-width space) is no name, so that the user id is shown instead of an empty voice
tag or label."""


def _shows_something(value: str) -> str:
    if shows_nothing(value):
        raise ValueError(f"{value!r} holds nothing that shows; a user id names the speaker")
    return value


UserId = Annotated[str, Field(min_length=1), AfterValidator(_shows_something)]
"""A participant's id: the speaker's label where no display name is given, so a blank one
would label their words with nothing."""


class ManifestError(RedactedError, ValueError):
    """A manifest that cannot be used; the message names the file and the field."""


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")  # not a drive letter: C://
"""A path that is a URL (``https://…``, ``s3://…``): no file of the manifest's folder."""


class Track(BaseModel):
    """One participant file. A user who leaves and rejoins has several, all one speaker."""

    # Unknown fields are refused: a misspelled "sha_256" must not turn verification off.
    # A path refused is not repeated in pydantic's own message: it may be a pre-signed URL.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    user_id: UserId
    display_name: DisplayName = None
    peer_id: OptionalText = None
    path: str = Field(min_length=1, description="relative to the manifest's folder")
    started_time: UtcDatetime = Field(
        description="when the file begins; if absent, the time in a RealtimeKit file name"
    )
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    size: StrictInt | None = Field(default=None, ge=0)  # not true, 1.0 or "434552"

    @model_validator(mode="before")
    @classmethod
    def _time_from_name(cls, data: object) -> object:
        # A manifest written by hand for files fetched from RealtimeKit need not repeat the
        # time the file name already carries; a time given explicitly always wins.
        if isinstance(data, dict) and data.get("started_time") is None and data.get("path"):
            named = time_from_file_name(str(data["path"]))
            if named is not None:
                return {**data, "started_time": named}
        return data

    @field_validator("started_time")
    @classmethod
    def _not_at_the_end_of_time(cls, value: datetime) -> datetime:
        # Refused even where the track would be left out as far from the others: then no
        # use of any start (placing, reporting, a later feature) need guard against it.
        if value >= _LATEST_START:
            raise ValueError(
                f"{format_utc(value)} is too late: the meeting's times after it would pass the "
                f"end of year 9999, where times end (a start must be before "
                f"{format_utc(_LATEST_START)}; a clock gone wrong?)"
            )
        return value

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        # Manifests travel between machines and may come from an API: a path must not
        # reach outside the manifest's own folder.
        if _URL.match(value):
            # An API's download_url pasted in: its query string is a credential, and was
            # echoed into errors and the transcript's failures as a file not found.
            raise ValueError(
                f"{redact_urls(value)!r} is a URL, not a file in the manifest's folder: "
                "download the files first (trackscribe fetch writes them and their manifest)"
            )
        parts = Path(value).parts
        if Path(value).is_absolute() or ".." in parts:
            raise ValueError("must be a relative path inside the manifest's folder")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise ValueError(f"{redact_urls(value)!r} holds a control character")
        return value

    @field_validator("sha256")
    @classmethod
    def _lower_hex(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @property
    def label(self) -> str:
        """How people call this participant: the display name when there is one."""
        return self.display_name or self.user_id


def _start_of(track: Track, index: int) -> str:
    """Where a track's start came from, and what it is, for a message."""
    start = format_utc(track.started_time)
    if time_from_file_name(track.path) == track.started_time:  # given or not: the name has it
        return f"tracks[{index}]'s start {start}, the time in its file name,"
    return f"tracks[{index}].started_time {start}"


class Manifest(BaseModel):
    """A meeting's tracks. ``root`` is the folder track paths are relative to (not serialised).

    ``root`` is made absolute as it is set (by default, the current folder then): a notebook
    that changes folder after loading a manifest must not have it read another meeting's
    files of the same names.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    schema_: Literal["trackscribe.manifest/1"] = Field(default=MANIFEST_SCHEMA, alias="schema")
    meeting_id: str = Field(min_length=1)
    recording_id: OptionalText = None
    tracks: list[Track] = Field(min_length=1)
    root: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("root")
    @classmethod
    def _absolute(cls, root: Path) -> Path:
        return root.absolute()

    @field_validator("tracks")
    @classmethod
    def _one_meeting(cls, tracks: list[Track]) -> list[Track]:
        # A file listed twice would have every word it holds said twice.
        listed: dict[tuple[str, ...], int] = {}
        for i, track in enumerate(tracks):
            first = listed.setdefault(Path(track.path).parts, i)
            if first != i:
                raise ValueError(f"tracks[{i}] is the same file as tracks[{first}]: {track.path}")
        middle, far = outlying_starts([t.started_time for t in tracks])
        if 2 * len(far) >= len(tracks):  # two tracks a year apart: either clock may be wrong
            i = far[0]
            raise ValueError(
                f"{_start_of(tracks[i], i)} is more than a day from the middle track's "
                f"({format_utc(middle)}), and no fewer tracks start that far from it than near "
                "it, so which starts are wrong cannot be told: one meeting's tracks start "
                "within a day of each other"
            )
        return tracks

    def unplaced_tracks(self) -> dict[int, str]:
        """Tracks (by index) whose start is more than a day from the middle track's, each with why.

        Such a start is a clock gone wrong, not a meeting: placing the track would stretch
        the meeting over months. It is left out, and only it, as fetch leaves out a file whose
        name puts it as far off; the meeting's clock is set by the other tracks. (They are the
        most: a manifest with no fewer tracks far from the middle start than near it is
        refused when it is read, where fetch, which must write one, leaves out the later of
        two files.)
        """
        middle, far = outlying_starts([t.started_time for t in self.tracks])
        return {
            i: (
                f"{self.tracks[i].path}: {_start_of(self.tracks[i], i)} is more than a day "
                f"from the middle track's ({format_utc(middle)}); left out of the meeting"
            )
            for i in far
        }

    def check(self) -> None:
        """Raise :class:`ManifestError` if the manifest, as it now is, would not load.

        Its tracks can be changed in place (cleared, or one appended twice), which no validator
        sees; a run checks again before it starts."""
        if (problem := problems_now(self, root=self.root)) is not None:
            raise ManifestError(f"manifest of meeting {self.meeting_id}: {problem}")

    def track_path(self, track: Track) -> Path:
        """Where a track's file is on this machine."""
        return self.root / track.path

    @staticmethod
    def file_at(path: Path | str) -> Path:
        """The manifest file ``path`` names: itself, or the one in the folder ``path`` (as
        fetch writes it)."""
        path = Path(path)
        return path / MANIFEST_FILE if path.is_dir() else path

    @classmethod
    def load(cls, path: Path | str) -> "Manifest":
        """Read and validate ``manifest.json`` (or the one in the folder ``path``, as fetch
        writes it); errors name the file and the offending field."""
        path = cls.file_at(path)
        try:
            raw = loads(decode_text(read_regular_file(path)))
        except FileNotFoundError:
            raise ManifestError(f"{path}: no such manifest file") from None
        except NotText:
            raise ManifestError(
                f"{path}: not a manifest: binary data, not JSON text (an audio file? give "
                "the manifest.json that lists the tracks, or the folder holding it)"
            ) from None
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read: {exc}") from None
        except JsonTextError as exc:
            raise ManifestError(f"{path}: {exc}") from None
        return cls.parse(raw, source=str(path), root=path.parent)

    @classmethod
    def parse(
        cls, raw: object, *, source: str = "manifest", root: Path | None = None
    ) -> "Manifest":
        """Validate an already-parsed manifest, reporting problems as :class:`ManifestError`."""
        try:
            manifest = cls.model_validate(raw)
        except ValidationError as exc:
            raise ManifestError(f"{source}: {describe(exc)}") from None
        if root is not None:
            manifest.root = root
        return manifest

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n"
