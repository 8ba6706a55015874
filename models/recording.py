"""RealtimeKit's recording object, as its API and its webhooks send it.

The sources disagree on a few shapes (see ``realtimekit-api.md``), so these models accept
both: ``download_url`` as one string (the generated SDKs) or as a list of layers mapping file
names to pre-signed URLs (the track-recording guide); fields in snake_case (REST) or camelCase
(webhooks). Fields the API adds later are kept, not refused: a new field must not stop a batch.
"""

from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
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
    model_config = ConfigDict(
        extra="allow", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


_SIGNED = "a pre-signed URL: its query string is a credential, so it is kept out of repr()"


class SignedUrl(_ApiModel):
    download_url: str = Field(repr=False, description=_SIGNED)


class DownloadLayer(_ApiModel):
    """One layer of a track recording: its files, each with a pre-signed URL."""

    layer_name: str = "default"
    download_urls: dict[str, SignedUrl] = Field(default_factory=dict)


class RecordingFile(BaseModel):
    """One downloadable file of a recording."""

    model_config = ConfigDict(frozen=True)

    layer: str
    name: str = Field(description="the file name as the API gives it; sanitise before use")
    url: str = Field(repr=False, description=_SIGNED)

    @property
    def key(self) -> tuple[str, str]:
        """Names are unique only within a layer."""
        return (self.layer, self.name)


class Reason(_ApiModel):
    reason: str | None = None
    caller: dict[str, object] | None = None


class Recording(_ApiModel):
    """A recording. Times are UTC; ``download_url`` is set once the files are ``UPLOADED``."""

    id: str = Field(validation_alias=AliasChoices("id", "recordingId", "recording_id"))
    status: str = Field(description="a RecordingStatus; kept open for statuses added later")
    meeting_id: str | None = None
    session_id: str | None = None
    invoked_time: UtcDatetime | None = None
    started_time: UtcDatetime | None = None
    stopped_time: UtcDatetime | None = None
    recording_duration: float | None = None
    output_file_name: str | None = None
    file_size: float | None = None
    download_url: str | list[DownloadLayer] | None = Field(None, repr=False, description=_SIGNED)
    download_url_expiry: UtcDatetime | None = None
    audio_download_url: str | None = Field(None, repr=False, description=_SIGNED)
    start_reason: Reason | None = None
    stop_reason: Reason | None = None

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
            RecordingFile(layer=layer.layer_name, name=name, url=signed.download_url)
            for layer in self.download_url
            for name, signed in layer.download_urls.items()
        ]


def _name_in_url(url: str) -> str:
    path = unquote(urlsplit(url).path)
    return path.rsplit("/", 1)[-1] or "recording.webm"


class WebhookEvent(_ApiModel):
    """A webhook delivery's body; ``recording.statusUpdate`` carries a recording."""

    event: str
    recording: Recording | None = None
    meeting: dict[str, object] | None = None
