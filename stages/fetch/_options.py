"""What the recording-level fetch and the one-file download share: the options and the
public error. A module of their own, so that ``_download`` need not import the package it is
part of (a cycle)."""

from pydantic import BaseModel, ConfigDict, Field

from models import RetryPolicy


class FetchError(Exception):
    """A file could not be fetched; the message names it and says why (never its URL's query)."""


class FetchOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    concurrency: int = Field(default=4, ge=1, description="files downloaded at once")
    timeout: float = Field(default=60.0, gt=0, description="seconds without data before giving up")
    retry: RetryPolicy = RetryPolicy()
    progress: bool | None = Field(
        default=None,
        description="draw a progress bar; None: the caller decides (here, none is drawn; "
        "trackscribe's pipeline draws one where someone watches)",
    )
