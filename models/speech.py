"""What voice activity detection finds in a track, on that track's own clock."""

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class SpeechRegion(BaseModel):
    """A stretch of one track that carries speech, in seconds of track time."""

    model_config = ConfigDict(frozen=True)

    start: float = Field(ge=0)
    end: float
    onset: float | None = Field(
        default=None, description="first voiced moment (start is padded before it); s"
    )
    level_db: float | None = Field(
        default=None, description="speech level (dBFS, RMS over voiced frames)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> "SpeechRegion":
        if self.end <= self.start:
            raise ValueError(f"region ends ({self.end}) before it starts ({self.start})")
        if self.onset is not None and not self.start <= self.onset <= self.end:
            raise ValueError(f"onset {self.onset} is outside the region {self.start}-{self.end}")
        return self

    @property
    def duration(self) -> float:
        return self.end - self.start


class VoiceActivity(BaseModel):
    """Frame by frame, whether a track carries speech and how loud it is, on its own clock.

    What deciding across tracks works on: levels of every track, frame for frame, on one clock.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    frame_s: float = Field(gt=0)
    voiced: np.ndarray = Field(description="bool per frame")
    level_db: np.ndarray = Field(description="dBFS RMS per frame")
    duration: float = Field(ge=0, description="of the track, s")
    blocked: np.ndarray | None = Field(
        default=None, description="bool per frame: someone else's voice; regions stop at it"
    )

    def owned(self, own: np.ndarray, blocked: np.ndarray) -> "VoiceActivity":
        """Only ``own`` frames voiced, and ``blocked`` frames walled off."""
        return self.model_copy(update={"voiced": own, "blocked": blocked})


class LeakedSpan(BaseModel):
    """Speech found on a track that is another participant's voice leaking into its microphone.

    Times are the track's own. ``owner`` indexes the track whose voice it is; ``margin_db`` is
    how far the span stayed below what counts as the track's own speech (negative: below).
    """

    model_config = ConfigDict(frozen=True)

    start: float
    end: float
    owner: int
    margin_db: float
