"""Decide, across tracks on one clock, whose voice each moment of speech is.

Every microphone also picks up the others, below the participant's own voice. Whisper
normalises loudness per window, so a leaked voice transcribes as clearly as the owner's: it
must be taken out before the model sees it.

How loudly participant B leaks into A's microphone is measured, not assumed: when B speaks
and A does not, A's level sits at B's level plus a fixed coupling (A's gain, distance, echo
cancellation). That coupling is the median of ``level_A - level_B`` over the frames where B
clearly dominates the meeting (so A is not talking, and B's frame is B's own voice). A frame
of A is then A's own speech only if it is clearly louder (``margin_db``) than what the other
tracks' leakage explains.
Comparing each pair of tracks through its own coupling absorbs microphone gain differences,
and genuine overlap stays on both speakers: a talking participant is tens of dB above their
leak into the other's microphone. The limit: a coupling stronger than ``-dominance_db`` (a
hot listener microphone right beside a quiet talker's) cannot be measured, and is not
corrected.
"""

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models import LeakedSpan, VoiceActivity, bridge_runs, frame_runs

__all__ = ["AttributionOptions", "attribute", "estimate_clock"]

_ABSENT = np.nan


class AttributionOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    margin_db: float = Field(
        6.0, description="own speech must be this much louder than the leakage explained"
    )
    dominance_db: float = Field(
        10.0, gt=0, description="B's coupling is measured where B is this much above all others"
    )
    min_frames: int = Field(30, ge=1, description="fewer frames: no coupling is measured")
    delay_frames: int = Field(
        1, ge=0, description="leaked audio may lag or lead its source by this many frames"
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
    report_bridge: float = Field(
        0.3, ge=0, description="one voice's leaked stretches closer than this (s): one record"
    )


def attribute(
    activities: Sequence[VoiceActivity | None],
    offsets: Sequence[float],
    owners: Sequence[str],
    options: AttributionOptions | None = None,
) -> tuple[list[VoiceActivity | None], list[list[LeakedSpan]]]:
    """Keep in each track only the speech that is its own.

    ``activities`` and ``offsets`` (seconds from the meeting's origin) are per track, ``None``
    for a track that could not be read; ``owners`` says whose each track is (a user who
    rejoined has several, and they never leak into each other). Returns the activities with
    leaked frames no longer voiced, and per track the leaked spans taken out.
    """
    options = options or AttributionOptions()
    present = [i for i, a in enumerate(activities) if a is not None]
    leaks: list[list[LeakedSpan]] = [[] for _ in activities]
    if not options.enabled or len(present) < 2:
        return list(activities), leaks
    frame_s = activities[present[0]].frame_s
    walls = round(options.min_wall / frame_s)
    level, voiced, starts = _meeting_frames(activities, offsets, present, frame_s)

    coupling = _couplings(level, voiced, present, owners, options)
    own, margin, strongest = _own_frames(level, voiced, coupling, present, options)

    result: list[VoiceActivity | None] = list(activities)
    for i in present:
        span = slice(starts[i], starts[i] + len(activities[i].voiced))
        leaked = voiced[i, span] & ~own[i, span]
        result[i] = activities[i].owned(own[i, span].copy(), _long_runs(leaked, walls))
        leaks[i] = _spans(
            voiced[i, span] & ~own[i, span],
            strongest[i, span],
            margin[i, span] - options.margin_db,
            frame_s,
            options,
        )
    return result, leaks


def estimate_clock(
    activities: Sequence[VoiceActivity | None],
    offsets: Sequence[float],
    owners: Sequence[str],
    options: AttributionOptions | None = None,
) -> list[tuple[float, int, float] | None]:
    """How far off each track's start is, measured from the leakage between tracks.

    A leaked voice is a copy of its source: where B dominates, A's level follows B's. The lag
    at which it follows best is the error between the two tracks' start times. Lags measured
    clearly (correlation at least ``min_clock_correlation``, and clearly better than at lag
    zero) are solved together for one correction per track, the median track kept fixed.
    Returns per track ``(correction_s, pairs, correlation)``, or None where nothing was
    measured (no leakage: a clean meeting gives no clock reference, nor needs one).
    """
    options = options or AttributionOptions()
    present = [i for i, a in enumerate(activities) if a is not None]
    estimates: list[tuple[float, int, float] | None] = [None] * len(activities)
    if len(present) < 2 or options.max_clock_error <= 0:
        return estimates
    frame_s = activities[present[0]].frame_s
    level, voiced, _ = _meeting_frames(activities, offsets, present, frame_s)
    reach = round(options.max_clock_error / frame_s)
    filled = _filled(level)
    pairs: list[tuple[int, int, float, float]] = []  # (a, b, lag of a behind b in s, corr)
    for b in present:
        rivals, dominant = _dominant(b, filled, voiced, present, owners, options.dominance_db)
        frames = np.flatnonzero(dominant)
        for a in rivals:
            found = _best_lag(level[a], level[b], frames, reach, options.min_frames)
            if found is None:
                continue
            lag, corr, at_zero = found
            if corr >= options.min_clock_correlation and (lag == 0 or corr - at_zero >= 0.2):
                pairs.append((a, b, lag * frame_s, corr))
    if not pairs:
        return estimates
    # Least squares for corrections c: c[a] - c[b] = -lag(a, b), weighted by correlation;
    # then once more without the pairs that disagree with the rest (a false peak).
    index = {t: k for k, t in enumerate(present)}
    solution = _solve(pairs, index)
    agreeing = [p for p in pairs if abs(_residual(p, solution, index)) <= 2 * frame_s]
    if agreeing and len(agreeing) < len(pairs):
        pairs = agreeing
        solution = _solve(pairs, index)
    solution -= np.median(solution)
    for t in present:
        mine = [p for p in pairs if t in (p[0], p[1])]
        if mine:
            correction = round(float(solution[index[t]]) / frame_s) * frame_s
            estimates[t] = (
                round(correction, 3),
                len(mine),
                round(float(np.mean([p[3] for p in mine])), 2),
            )
    return estimates


def _solve(pairs: list[tuple[int, int, float, float]], index: dict[int, int]) -> np.ndarray:
    rows = np.zeros((len(pairs), len(index)))
    target = np.zeros(len(pairs))
    weight = np.array([p[3] for p in pairs])
    for r, (a, b, lag, _) in enumerate(pairs):
        rows[r, index[a]], rows[r, index[b]], target[r] = 1.0, -1.0, -lag
    solution, *_ = np.linalg.lstsq(rows * weight[:, None], target * weight, rcond=None)
    return solution


def _residual(
    pair: tuple[int, int, float, float], solution: np.ndarray, index: dict[int, int]
) -> float:
    a, b, lag, _ = pair
    return float(solution[index[a]] - solution[index[b]] + lag)


def _best_lag(
    receiver: np.ndarray, source: np.ndarray, frames: np.ndarray, reach: int, min_frames: int
) -> tuple[int, float, float] | None:
    """The lag (frames) at which ``receiver`` follows ``source`` best over ``frames``.

    Pearson's correlation at each lag, over the frames where both have a level; lags with
    fewer than ``min_frames`` such frames, or a constant side, are out. Returns the best lag
    (the first of equals), its correlation and the correlation at lag zero (-1 if none).
    One lag at a time keeps memory to one row of frames, however long the meeting.
    """
    best: tuple[int, float] | None = None
    at_zero = -1.0
    for lag in range(-reach, reach + 1):
        shifted = frames + lag
        keep = (shifted >= 0) & (shifted < receiver.size)
        x, y = receiver[shifted[keep]], source[frames[keep]]
        good = ~(np.isnan(x) | np.isnan(y))
        if np.count_nonzero(good) < min_frames:
            continue
        dx, dy = x[good] - x[good].mean(), y[good] - y[good].mean()
        sxx, syy = float(dx @ dx), float(dy @ dy)
        if sxx == 0 or syy == 0:
            continue
        corr = min(1.0, max(-1.0, float(dx @ dy) / math.sqrt(sxx * syy)))
        if lag == 0:
            at_zero = corr
        if best is None or corr > best[1]:
            best = (lag, corr)
    if best is None:
        return None
    return best[0], best[1], at_zero


def _meeting_frames(
    activities: Sequence[VoiceActivity | None],
    offsets: Sequence[float],
    present: Sequence[int],
    frame_s: float,
) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """Every track's levels and voiced flags on the meeting's frame grid (absent: NaN)."""
    starts = {i: round(offsets[i] / frame_s) for i in present}
    total = max(starts[i] + len(activities[i].voiced) for i in present)
    level = np.full((len(activities), total), _ABSENT)
    voiced = np.zeros((len(activities), total), bool)
    for i in present:
        a = activities[i]
        level[i, starts[i] : starts[i] + len(a.voiced)] = a.level_db
        voiced[i, starts[i] : starts[i] + len(a.voiced)] = a.voiced
    return level, voiced, starts


def _own_frames(
    level: np.ndarray,
    voiced: np.ndarray,
    coupling: np.ndarray,
    present: Sequence[int],
    options: AttributionOptions,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per track and frame: own speech or not, margin over the leakage explained (dB), and
    the track whose leakage is strongest there."""
    own = voiced.copy()
    margin = np.full(level.shape, np.inf)
    strongest = np.zeros(level.shape, int)
    for a in present:
        others = [b for b in present if np.isfinite(coupling[a, b])]
        if not others:
            continue
        # The level each frame of A would have from the others' leakage alone, as power. A
        # leaked voice arrives a little late (acoustics, network), often in the next frame:
        # each source frame stands for itself and its neighbours.
        leaked = np.stack(
            [_spread(level[b], options.delay_frames) + coupling[a, b] for b in others]
        )
        power = np.sum(np.power(10.0, leaked / 10), axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            margin[a] = level[a] - 10 * np.log10(power)
        margin[a] = np.where(np.isnan(margin[a]), np.inf, margin[a])
        own[a] = voiced[a] & (margin[a] >= options.margin_db)
        strongest[a] = np.asarray(others)[np.argmax(leaked, axis=0)]
    return own, margin, strongest


def _long_runs(mask: np.ndarray, length: int) -> np.ndarray:
    """``mask`` with its runs shorter than ``length`` frames cleared."""
    out = np.zeros_like(mask)
    for a, b in frame_runs(mask):
        if b - a >= length:
            out[a:b] = True
    return out


def _spread(level: np.ndarray, frames: int) -> np.ndarray:
    """Each frame's level raised to the loudest within ``frames`` either side (absent: -inf)."""
    spread = _filled(level)
    out = spread.copy()
    for shift in range(1, frames + 1):
        out[shift:] = np.maximum(out[shift:], spread[:-shift])
        out[:-shift] = np.maximum(out[:-shift], spread[shift:])
    return out


def _couplings(
    level: np.ndarray,
    voiced: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    options: AttributionOptions,
) -> np.ndarray:
    """coupling[a, b]: dB from B's level to the level of B's voice in A's microphone.

    Measured where B clearly dominates the meeting (``dominance_db`` above every other
    track): there B is talking, its voice is all the others hear of it, and nobody talks
    over it. A track that only ever carries others' voices (a silent listener) never
    dominates, so it is never taken for a source. -inf where it cannot be measured.
    """
    n = level.shape[0]
    coupling = np.full((n, n), -np.inf)
    filled = _filled(level)
    for b in present:
        rivals, source = _dominant(b, filled, voiced, present, owners, options.dominance_db)
        for a in rivals:
            frames = source & ~np.isnan(level[a])
            if frames.sum() >= options.min_frames:
                coupling[a, b] = float(np.median(level[a][frames] - level[b][frames]))
    return coupling


def _dominant(
    b: int,
    filled: np.ndarray,
    voiced: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    dominance_db: float,
) -> tuple[list[int], np.ndarray]:
    """B's rivals (other people's tracks), and the frames where B is above all of them by
    ``dominance_db``: there B talks alone, and what the others hear of B is leakage."""
    rivals = [x for x in present if owners[x] != owners[b]]
    if not rivals:
        return rivals, np.zeros(filled.shape[1], bool)
    with np.errstate(invalid="ignore"):  # both absent: -inf - -inf, never dominant
        return rivals, voiced[b] & (filled[b] - np.max(filled[rivals], axis=0) >= dominance_db)


def _filled(level: np.ndarray) -> np.ndarray:
    """Levels with absent frames (NaN) as -inf, for maxima and comparisons."""
    return np.where(np.isnan(level), -np.inf, level)


def _spans(
    frames: np.ndarray,
    owner: np.ndarray,
    margin: np.ndarray,
    frame_s: float,
    options: AttributionOptions,
) -> list[LeakedSpan]:
    """Leaked frames as stretches of each owner's voice; every leaked frame is in one."""
    bridge = round(options.report_bridge / frame_s)
    spans = []
    for who in np.unique(owner[frames]):
        mine = frames & (owner == who)
        for a, b in bridge_runs(frame_runs(mine), bridge):
            spans.append(
                LeakedSpan(
                    start=round(a * frame_s, 3),
                    end=round(b * frame_s, 3),
                    owner=int(who),
                    margin_db=round(float(np.median(margin[a:b][mine[a:b]])), 1),
                )
            )
    return sorted(spans, key=lambda span: span.start)
