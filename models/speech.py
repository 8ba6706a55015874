"""What voice activity detection finds in a track, on that track's own clock."""

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
