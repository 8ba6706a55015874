"""RealtimeKit's recording object, as its API and its webhooks send it.

The sources disagree on a few shapes (see ``realtimekit-api.md``), so these models accept
both: ``download_url`` as one string (the generated SDKs) or as a list of layers mapping file
names to pre-signed URLs (the track-recording guide); fields in snake_case (REST) or camelCase
(webhooks). Fields the API adds later are kept, not refused: a new field must not stop a batch.
"""

from collections.abc import Iterator
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic.alias_generators import to_camel

from ._time import UtcDatetime

__all__ = [
    "MAX_USER_IDS",
    "DownloadLayer",
    "Recording",
    "RecordingFile",
    "RecordingStatus",
    "SignedUrl",
    "WebhookEvent",
]

RecordingStatus = Literal["INVOKED", "RECORDING", "PAUSED", "UPLOADING", "UPLOADED", "ERRORED"]
"""The statuses documented today; ``Recording.status`` stays a plain string for new ones."""

MAX_USER_IDS = 100
"""The most participants one track recording may name (the API refuses more)."""


class _ApiModel(BaseModel):
    # A number where text is documented (a session id, say) is read as its digits.
    model_config = ConfigDict(
        extra="allow",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        coerce_numbers_to_str=True,
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The declared fields only. A field the API adds is kept (and can be read), but not
        shown: it may hold a credential (the recording's ``storage_config`` has a bucket's
        user name and access key), and a repr() ends up in logs and tracebacks."""
        extra = self.__pydantic_extra__ or {}
        return ((name, value) for name, value in super().__repr_args__() if name not in extra)


_SIGNED = "a pre-signed URL: its query string is a credential, so it is kept out of repr()"


def _none_if_unreadable(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


def _unwrapped(value: Any) -> Any:
    """A file's entry as the guide shows it, ``{"download_url": URL}``, or the URL alone."""
    return {"download_url": value} if isinstance(value, str) else value


_OrNone = WrapValidator(_none_if_unreadable)
"""One entry of a listing that cannot be read becomes None: it costs its own file, not the
whole recording (and with it every other file, or a webhook's announcement)."""


class SignedUrl(_ApiModel):
    download_url: str = Field(repr=False, description=_SIGNED)


class DownloadLayer(_ApiModel):
    """One layer of a track recording: its files, each with a pre-signed URL (None: listed,
    but with no URL that can be read)."""

    layer_name: str = "default"
    download_urls: dict[str, Annotated[SignedUrl | None, _OrNone, BeforeValidator(_unwrapped)]] = (
        Field(default_factory=dict)
    )


_Layers = list[Annotated[DownloadLayer | None, _OrNone]]
"""``download_url`` as the track-recording guide has it; None: a layer that cannot be read."""


def _one_layer_as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


_Listing = Annotated[str | _Layers | None, BeforeValidator(_one_layer_as_list)]
"""A download URL field in either documented shape (a lone layer taken as a list of one)."""


class RecordingFile(BaseModel):
    """One downloadable file of a recording."""

    model_config = ConfigDict(frozen=True)

    layer: str
    name: str = Field(description="the file name as the API gives it; sanitise before use")
    url: str | None = Field(
        repr=False, description=f"{_SIGNED}; None: the recording lists it with no URL"
    )

    @property
    def key(self) -> tuple[str, str]:
        """Names are unique only within a layer."""
        return (self.layer, self.name)


_Time = Annotated[UtcDatetime | None, _OrNone]
"""A time of the API's. One that cannot be read (no zone, so no way to know which instant it
names) becomes None rather than a guess: each file's start is in its name, so only what
depends on this time is lost, not the recording."""
_Text = Annotated[str | None, _OrNone]
_Number = Annotated[float | None, _OrNone]
"""Fields that say something about a recording but are not needed to find or fetch it: one
that cannot be read becomes None, and the recording (its id, status and files) still is."""


class Reason(_ApiModel):
    reason: str | None = None
    caller: dict[str, object] | None = None


class Recording(_ApiModel):
    """A recording. Times are UTC; ``download_url`` is set once the files are ``UPLOADED``."""

    id: str = Field(validation_alias=AliasChoices("id", "recordingId", "recording_id"))
    status: str = Field(description="a RecordingStatus; kept open for statuses added later")
    meeting_id: _Text = None
    session_id: _Text = None
    invoked_time: _Time = None
    started_time: _Time = None
    stopped_time: _Time = None
    recording_duration: _Number = None
    output_file_name: _Text = None
    file_size: _Number = None
    download_url: _Listing = Field(None, repr=False, description=_SIGNED)
    download_url_expiry: _Time = None
    audio_download_url: _Listing = Field(None, repr=False, description=f"{_SIGNED}; not used here")
    start_reason: Annotated[Reason | None, _OrNone] = None
    stop_reason: Annotated[Reason | None, _OrNone] = None

    @property
    def lists_every_file(self) -> bool:
        """False when ``download_url`` is one string: that names one file, and a track
        recording has one per participant peer, so any others cannot be known from it."""
        return not isinstance(self.download_url, str)

    def files(self) -> list[RecordingFile]:
        """Every file of the recording with its pre-signed URL, in either documented shape.

        A plain-string ``download_url`` is one file, named by ``output_file_name`` or else by
        the last part of the URL's path.
        """
        if self.download_url is None:
            return []
        if isinstance(self.download_url, str):
            name = self.output_file_name or _name_in_url(self.download_url)
            return [RecordingFile(layer="default", name=name, url=self.download_url)]
        return [
            RecordingFile(
                layer=layer.layer_name,
                name=name,
                url=None if signed is None else signed.download_url,
            )
            for layer in self.download_url
            if layer is not None
            for name, signed in layer.download_urls.items()
        ]

    @property
    def unreadable_layers(self) -> int:
        """Layers of ``download_url`` that cannot be read: whatever files they hold cannot be
        listed, let alone fetched."""
        return 0 if isinstance(self.download_url, str | None) else self.download_url.count(None)


def _name_in_url(url: str) -> str:
    path = unquote(urlsplit(url).path)
    return path.rsplit("/", 1)[-1] or "recording.webm"


class WebhookEvent(_ApiModel):
    """A webhook delivery's body; ``recording.statusUpdate`` carries a recording."""

    event: str
    recording: Recording | None = None
    meeting: dict[str, object] | None = None
