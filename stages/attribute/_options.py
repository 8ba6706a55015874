"""The settings of attribution, each with why it has the default it has."""

from pydantic import BaseModel, ConfigDict, Field


class AttributionOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    margin_db: float = Field(
        6.0, description="own speech must be this much louder than the leakage explained"
    )
    dominance_db: float = Field(
        10.0, gt=0, description="B's coupling is measured where B is this much above all others"
    )
    quiet_dominance_db: float = Field(
        4.0,
        gt=0,
        description="a track never dominance_db above all others for min_frames frames (a "
        "quiet microphone in a room whose others hear its owner almost as loud) is measured "
        "where it is this much above them instead",
    )
    min_frames: int = Field(30, ge=1, description="fewer frames: no coupling is measured")
    delay_frames: int = Field(
        1,
        ge=0,
        description="leaked audio may arrive up to this many frames' time after its source, "
        "or half a frame before it (in time, wherever each track's frames fall on the grid)",
    )
    min_wall: float = Field(
        0.5,
        ge=0,
        description="leaked stretches this long (s) are walls regions never cross; shorter "
        "ones, often a dip inside the track's own speech during overlap, are only unvoiced",
    )
    max_clock_error: float = Field(
        2.0, ge=0, description="track start errors searched for, each way (s); 0: trust starts"
    )
    min_clock_correlation: float = Field(
        0.8, description="a leaked copy must match its source at least this well (0-1)"
    )
    drift_block: float = Field(
        60.0, gt=0, description="drift: the lag between two tracks is measured per block (s)"
    )
    min_drift: float = Field(
        2.0,
        ge=0,
        description="drift is corrected only when it moves a track by at least this many "
        "frames over its length",
    )
    report_bridge: float = Field(
        0.3, ge=0, description="one voice's leaked stretches closer than this (s): one record"
    )
    untracked_db: float = Field(
        6.0,
        gt=0,
        description="speech heard on two tracks at once, this far below one's own voice and "
        "louder on the other than its leakage explains, is the voice of someone with no track",
    )
    untracked_window: float = Field(
        1.0, gt=0, description="how long a stretch two tracks' levels are compared over (s)"
    )
