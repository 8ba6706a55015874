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
    pauses: tuple[tuple[float, float], ...] | None = Field(
        default=None,
        description="stretches inside the region where the voice stopped (s, track time), "
        "as the voice-activity detector heard them; None: not known",
    )

    @model_validator(mode="after")
    def _ordered(self) -> "SpeechRegion":
        if self.end <= self.start:
            raise ValueError(f"region ends ({self.end}) before it starts ({self.start})")
        if self.onset is not None and not self.start <= self.onset <= self.end:
            raise ValueError(f"onset {self.onset} is outside the region {self.start}-{self.end}")
        last = self.start
        for a, b in self.pauses or ():
            if not last <= a < b <= self.end:
                raise ValueError(
                    f"pause {a}-{b} is not inside the region {self.start}-{self.end}, "
                    "after the one before it"
                )
            last = b
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

    @property
    def voiced_s(self) -> float:
        """Seconds of the track voiced."""
        return self.frame_s * int(self.voiced.sum())

    def owned(self, own: np.ndarray, blocked: np.ndarray) -> "VoiceActivity":
        """Only ``own`` frames voiced, and ``blocked`` frames walled off."""
        return self.model_copy(update={"voiced": own, "blocked": blocked})


class LeakedSpan(BaseModel):
    """Speech found on a track that is not to be transcribed there: another participant's
    voice leaking into its microphone, or the same user's voice that another of their tracks
    also holds (one person on two devices at once).

    Times are the track's own. ``owner`` indexes the track whose voice it is (of one user's
    several tracks, the one that carried most of the span; for a duplicate, the track that
    keeps it; None: the voice of someone with no track, heard on several);
    ``margin_db`` is how far the span stayed below what counts as the track's own speech (for
    a duplicate: its level against the kept track's; for a voice with no track: its level
    against the track's own voice, NaN where that is not known; negative: below).
    ``noise``: too near the track's noise floor to be its own speech, though no leakage
    measured explains it (``owner`` None): the noise left where another's voice fades out,
    which a voice detector may still call speech.
    """

    model_config = ConfigDict(frozen=True)

    start: float
    end: float
    owner: int | None
    margin_db: float
    duplicate: bool = False
    noise: bool = False


def frame_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open frame ranges where ``mask`` is true."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()
    return list(zip(starts, ends, strict=True))


def bridge_runs(
    runs: list[tuple[int, int]], max_gap: int, blocked: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Join runs (in order) separated by at most ``max_gap`` frames, none of them ``blocked``
    (0: join only touching or overlapping runs)."""
    joined: list[tuple[int, int]] = []
    for a, b in runs:
        gap_blocked = blocked is not None and joined and blocked[joined[-1][1] : a].any()
        if joined and a - joined[-1][1] <= max_gap and not gap_blocked:
            joined[-1] = (joined[-1][0], max(b, joined[-1][1]))
        else:
            joined.append((a, b))
    return joined
