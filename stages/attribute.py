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
leak into the other's microphone. Someone with no track of their own (recorded for some users
only, or their file lost) leaks into several microphones at once, where no coupling explains
them; their copies are found by following each other on two tracks (:func:`_untracked`).
The limit: a coupling stronger than ``-dominance_db`` (a hot listener microphone right beside
a quiet talker's) cannot be measured, and is not corrected.
"""

import math
from collections.abc import Sequence
from itertools import combinations
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field

from models import LeakedSpan, TrackTiming, VoiceActivity, bridge_runs, frame_runs

__all__ = ["AttributionOptions", "TrackClock", "attribute", "estimate_clock"]

_ABSENT = np.nan

_EARLY = 0.5
"""Frames' time a leak may seem to come before its source. No sound does, but a start time a
few milliseconds off moves it so. Allowing more lets a second talker's onset, just after,
explain away the first one's last syllable as its leak. The clock check corrects start errors
from two frames up; a smaller one that makes leaks seem more than this early is not allowed for."""


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


class TrackClock(NamedTuple):
    """What the leakage between tracks says of one track's clock."""

    correction_s: float
    """Seconds to add to the track's start; 0 when not measured."""
    drift_ppm: float | None
    """How fast the track's clock ran against the others' (parts per million, positive:
    fast, so its audio is stretched: track time / (1 + drift) is meeting time); None when
    not measured."""
    pairs: int
    """Other tracks it was measured against."""
    correlation: float
    """How well leaked copies matched their sources (0-1)."""
    start_clear: bool
    """The start is off by two frames or more: it is to be corrected."""
    drift_clear: bool
    """The drift moves the track by ``min_drift`` frames or more over its length: it is to be
    corrected (the start was measured with it corrected)."""


def attribute(
    activities: Sequence[VoiceActivity | None],
    timings: Sequence[TrackTiming],
    owners: Sequence[str],
    options: AttributionOptions | None = None,
) -> tuple[list[VoiceActivity | None], list[list[LeakedSpan]]]:
    """Keep in each track only the speech that is its own.

    ``activities`` and ``timings`` (where each lies on the meeting clock) are per track,
    ``None`` for a track that could not be read; ``owners`` says whose each track is (a user
    who rejoined, or joined from two devices, has several; their voice is never leakage on
    each other, but what two of them both hold is kept on one). Returns the activities with
    leaked frames no longer voiced, and per track the leaked spans taken out (in track
    time).
    """
    options = options or AttributionOptions()
    present = [i for i, a in enumerate(activities) if a is not None]
    leaks: list[list[LeakedSpan]] = [[] for _ in activities]
    if not options.enabled or len(present) < 2:
        return list(activities), leaks
    frame_s = activities[present[0]].frame_s
    walls = round(options.min_wall / frame_s)
    level, voiced, where, offgrid = _meeting_frames(activities, timings, present, frame_s)

    coupling = _couplings(level, voiced, present, owners, options)
    own, margin, strongest = _own_frames(level, voiced, coupling, present, offgrid, options)
    own, source, under = _untracked(level, voiced, own, coupling, present, owners, options, frame_s)
    own, kept_on, below = _heard_twice(level, own, present, owners, options, frame_s)

    result: list[VoiceActivity | None] = list(activities)
    for i in present:
        span = where[i]  # each of the track's frames on the meeting's grid
        leaked = activities[i].voiced & ~own[i, span]
        twice = kept_on[i, span] >= 0
        other = source[i, span] != _NOT_OTHER
        result[i] = activities[i].owned(
            activities[i].voiced & own[i, span], _long_runs(leaked, walls)
        )
        leaks[i] = sorted(
            _spans(
                leaked & ~twice & ~other,
                strongest[i, span],
                margin[i, span] - options.margin_db,
                frame_s,
                options,
            )
            + _spans(other, source[i, span], under[i, span], frame_s, options)
            + _spans(twice, kept_on[i, span], below[i, span], frame_s, options, duplicate=True),
            key=lambda leak: leak.start,
        )
    return result, leaks


def estimate_clock(
    activities: Sequence[VoiceActivity | None],
    offsets: Sequence[float],
    owners: Sequence[str],
    options: AttributionOptions | None = None,
) -> list[TrackClock | None]:
    """How far off each track's start is, and how fast its clock ran, from the leakage.

    A leaked voice is a copy of its source: where B dominates, A's level follows B's. The lag
    at which it follows best is the error between the two tracks' clocks. Lags measured
    clearly (correlation at least ``min_clock_correlation``, and clearly better than at lag
    zero) are solved together for one value per track, the middle track kept fixed: first
    the drift, from how the lag changes from block to block of the meeting; then, with the
    drift taken out, the start. Returns per track a :class:`TrackClock`, or None where
    nothing was measured (no leakage: a clean meeting gives no clock reference, nor needs one).
    """
    options = options or AttributionOptions()
    present = [i for i, a in enumerate(activities) if a is not None]
    estimates: list[TrackClock | None] = [None] * len(activities)
    if len(present) < 2 or options.max_clock_error <= 0:
        return estimates
    frame_s = activities[present[0]].frame_s
    timings = [TrackTiming(offset) for offset in offsets]
    level, voiced, _, _ = _meeting_frames(activities, timings, present, frame_s)
    drifts, curves = _drifts(level, voiced, present, owners, options, frame_s)
    corrected = [
        d
        if d is not None and abs(d) * 1e-6 * len(activities[i].voiced) >= options.min_drift
        else 0.0
        for i, d in enumerate(drifts)
    ]
    if any(corrected):  # the lags change with the grid: none of the curves can be reused
        timings = [TrackTiming(o, d) for o, d in zip(offsets, corrected, strict=True)]
        level, voiced, _, _ = _meeting_frames(activities, timings, present, frame_s)
        curves = {}
    reach = round(options.max_clock_error / frame_s)
    filled = _filled(level)
    pairs: list[tuple[int, int, float, float]] = []  # (a, b, lag of a behind b in s, corr)
    lags = np.arange(-reach, reach + 1)
    for b in present:
        rivals, dominant = _dominant(
            b, filled, voiced, present, owners, options.dominance_db, spread=reach
        )
        frames = np.flatnonzero(dominant)
        for a in rivals:
            corr = curves.get((a, b))
            if corr is None:
                corr = _lag_correlations(
                    level[a], level[b], _within(level[a], frames, reach), lags, options.min_frames
                )
            if np.all(np.isnan(corr)):
                continue
            best = int(np.nanargmax(corr))
            lag = int(lags[best])
            if corr[best] >= options.min_clock_correlation and (
                lag == 0 or corr[best] - corr[reach] >= 0.2
            ):
                pairs.append((a, b, lag * frame_s, float(corr[best])))
    index = {t: k for k, t in enumerate(present)}
    solution = np.zeros(len(present))
    if pairs:
        # Least squares for corrections c: c[a] - c[b] = -lag(a, b), weighted by correlation;
        # then once more without the pairs that disagree with the rest (a false peak).
        solution = _solve(pairs, index)
        agreeing = [p for p in pairs if abs(_residual(p, solution, index)) <= 2 * frame_s]
        if agreeing and len(agreeing) < len(pairs):
            pairs = agreeing
            solution = _solve(pairs, index)
        solution = _anchored(solution, pairs, index)
    for t in present:
        mine = [p for p in pairs if t in (p[0], p[1])]
        if not mine and drifts[t] is None:
            continue
        correction = round(float(solution[index[t]]) / frame_s) * frame_s if mine else 0.0
        estimates[t] = TrackClock(
            correction_s=round(correction, 3),
            drift_ppm=drifts[t],
            pairs=len(mine),
            correlation=round(float(np.mean([p[3] for p in mine])), 2) if mine else 0.0,
            start_clear=abs(correction) >= 2 * frame_s - 1e-9,
            drift_clear=bool(corrected[t]),
        )
    return estimates


def _drifts(
    level: np.ndarray,
    voiced: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    options: AttributionOptions,
    frame_s: float,
) -> tuple[list[float | None], dict[tuple[int, int], np.ndarray]]:
    """Each track's clock rate against the others (ppm), or None where it cannot be told;
    and the correlation curves over all lags it computed on the way, per (receiver, source).

    For each pair with clear leakage, the lag is found block by block (``drift_block``
    seconds of the source talking alone each); a straight line through the lags over time
    gives the pair's drift, and the pairs are solved together like the starts. A pair needs
    three blocks that each match clearly, spread over at least half the meeting.
    """
    block = max(1, round(options.drift_block / frame_s))
    # The first block's lag is looked for around the pair's overall lag, as far as a clock
    # 1000 ppm off (far worse than any sound card's) would take it in half the meeting; each
    # next block's around the last one found.
    wide, near = 3 + round(5e-4 * level.shape[1]), 4
    search = round(options.max_clock_error / frame_s)
    whole = np.arange(-search, search + 1)
    filled = _filled(level)
    pairs: list[tuple[int, int, float, float]] = []  # (a, b, slope in frames per frame, weight)
    curves: dict[tuple[int, int], np.ndarray] = {}
    for b in present:
        rivals, dominant = _dominant(b, filled, voiced, present, owners, options.dominance_db)
        frames = np.flatnonzero(dominant)
        if frames.size == 0 or frames[-1] - frames[0] < level.shape[1] / 2:
            continue
        # The overall lag (which the start estimate reuses) from frames far from the rivals'
        # voices, whatever the clocks; each block's, near that lag, from all of B's.
        _, apart = _dominant(
            b, filled, voiced, present, owners, options.dominance_db, spread=search
        )
        for a in rivals:
            # A drifting copy matches less well overall than block by block: no bar here.
            corr = _lag_correlations(
                level[a],
                level[b],
                _within(level[a], np.flatnonzero(apart), search),
                whole,
                options.min_frames,
            )
            curves[(a, b)] = corr
            if np.all(np.isnan(corr)):
                continue
            guess = int(whole[int(np.nanargmax(corr))])
            points: list[tuple[float, float]] = []
            for k in np.unique(frames // block):
                chosen = frames[frames // block == k]
                reach = near if points else wide
                lags = np.arange(guess - reach, guess + reach + 1)
                c = _lag_correlations(level[a], level[b], chosen, lags, options.min_frames)
                if np.all(np.isnan(c)):
                    continue
                best = int(np.nanargmax(c))
                if c[best] < options.min_clock_correlation or best in (0, len(lags) - 1):
                    continue
                guess = int(lags[best])
                points.append((float(chosen.mean()), guess + _vertex(c[best - 1 : best + 2])))
            line = _line(points, level.shape[1] / 2)
            if line is not None:
                pairs.append((a, b, *line))
    drifts: list[float | None] = [None] * level.shape[0]
    if not pairs:
        return drifts, curves
    index = {t: k for k, t in enumerate(present)}
    # d[a] - d[b] = slope(a, b): A's copy of B falls further behind when A's clock is fast.
    solution = _anchored(
        _solve([(a, b, -slope, w) for a, b, slope, w in pairs], index), pairs, index
    )
    for t in present:
        if any(t in (p[0], p[1]) for p in pairs):
            drifts[t] = round(float(solution[index[t]]) * 1e6, 1)
    return drifts, curves


def _line(points: list[tuple[float, float]], min_span: float) -> tuple[float, float] | None:
    """The slope of a straight line through ``(time, lag)`` points, and a weight for it; None
    unless three or more points spanning ``min_span`` frames lie on it within a frame (one
    point off it, a false peak, is left out)."""
    for _ in range(2):
        if len(points) < 3 or points[-1][0] - points[0][0] < min_span:
            return None
        t, lag = np.array(points).T
        slope, intercept = np.polyfit(t, lag, 1)
        residual = np.abs(lag - (slope * t + intercept))
        if residual.max() <= 1.0:
            return float(slope), 1.0 / (0.1 + float(residual.std()))
        points = [p for p, r in zip(points, residual, strict=True) if r < residual.max()]
    return None


def _vertex(three: np.ndarray) -> float:
    """Where a parabola through three equally spaced values peaks, from -0.5 to 0.5."""
    y0, y1, y2 = (float(v) for v in three)
    if any(math.isnan(v) for v in (y0, y1, y2)):
        return 0.0
    curve = y0 - 2 * y1 + y2
    return 0.0 if curve >= 0 else max(-0.5, min(0.5, 0.5 * (y0 - y2) / curve))


def _solve(pairs: list[tuple[int, int, float, float]], index: dict[int, int]) -> np.ndarray:
    rows = np.zeros((len(pairs), len(index)))
    target = np.zeros(len(pairs))
    weight = np.array([p[3] for p in pairs])
    for r, (a, b, lag, _) in enumerate(pairs):
        rows[r, index[a]], rows[r, index[b]], target[r] = 1.0, -1.0, -lag
    solution, *_ = np.linalg.lstsq(rows * weight[:, None], target * weight, rcond=None)
    return solution


def _anchored(
    solution: np.ndarray, pairs: list[tuple[int, int, float, float]], index: dict[int, int]
) -> np.ndarray:
    """``solution`` with, in each group of tracks the pairs link, the middle track kept as
    stated (of two middle ones, the lower): lags and drifts say only how the tracks' clocks
    stand against each other, and the stated clocks are right for most tracks.

    The middle one is a track, not the average of two: in a group of two, one track takes
    the whole correction, rather than each taking half (a right track moved, and halves
    rounded to the frame grid apart).
    """
    group = list(range(len(solution)))

    def root(k: int) -> int:
        while group[k] != k:
            k = group[k]
        return k

    for a, b, _, _ in pairs:
        group[root(index[a])] = root(index[b])
    out = solution.copy()
    for r in {root(k) for k in range(len(solution))}:
        members = [k for k in range(len(solution)) if root(k) == r]
        values = np.sort(solution[members])
        out[members] -= values[(len(values) - 1) // 2]
    return out


def _residual(
    pair: tuple[int, int, float, float], solution: np.ndarray, index: dict[int, int]
) -> float:
    a, b, lag, _ = pair
    return float(solution[index[a]] - solution[index[b]] + lag)


def _lag_correlations(
    receiver: np.ndarray, source: np.ndarray, frames: np.ndarray, lags: np.ndarray, min_frames: int
) -> np.ndarray:
    """How well ``receiver`` follows ``source`` over ``frames`` at each of ``lags`` (frames).

    Pearson's correlation per lag, over the frames where both have a level; NaN for a lag
    with fewer than ``min_frames`` such frames, or a constant side. Lags are taken
    ``_LAG_CHUNK`` at a time, which keeps memory to that many rows of frames however long
    the meeting.
    """
    out = np.full(len(lags), np.nan)
    y = source[frames]
    for first in range(0, len(lags), _LAG_CHUNK):
        chunk = np.asarray(lags[first : first + _LAG_CHUNK])
        shifted = frames[None, :] + chunk[:, None]
        inside = (shifted >= 0) & (shifted < receiver.size)
        x = np.where(inside, receiver[np.clip(shifted, 0, receiver.size - 1)], np.nan)
        good = ~(np.isnan(x) | np.isnan(y)[None, :])
        count = good.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            dx = np.where(good, x - (np.where(good, x, 0).sum(axis=1) / count)[:, None], 0)
            yy = np.where(good, y[None, :], 0)
            dy = np.where(good, yy - (yy.sum(axis=1) / count)[:, None], 0)
            sxx, syy = (dx * dx).sum(axis=1), (dy * dy).sum(axis=1)
            corr = np.clip((dx * dy).sum(axis=1) / np.sqrt(sxx * syy), -1.0, 1.0)
        valid = (count >= min_frames) & (sxx > 0) & (syy > 0)
        out[first : first + len(chunk)] = np.where(valid, corr, np.nan)
    return out


_LAG_CHUNK = 16


def _within(receiver: np.ndarray, frames: np.ndarray, reach: int) -> np.ndarray:
    """Those of ``frames`` at which the receiver has a level at every lag within ``reach``.

    A correlation curve over lags is then taken over the same frames at every lag. Otherwise
    a lag that reaches past the receiver's edge compares only the few frames there, and those
    can fit by chance: a sound that happened to follow another track's last seconds once
    passed for a clock error of 1.8 s.
    """
    absent = np.concatenate(([0], np.cumsum(np.isnan(receiver))))
    lo = np.clip(frames - reach, 0, receiver.size)
    hi = np.clip(frames + reach + 1, 0, receiver.size)
    inside = (frames - reach >= 0) & (frames + reach < receiver.size)
    return frames[inside & (absent[hi] == absent[lo])]


def _meeting_frames(
    activities: Sequence[VoiceActivity | None],
    timings: Sequence[TrackTiming],
    present: Sequence[int],
    frame_s: float,
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray], np.ndarray]:
    """Every track's levels and voiced flags on the meeting's frame grid (absent: NaN); for
    each track the meeting frame of each of its frames; and how far each frame really lies
    from the grid frame it was put on, in frames (absent: NaN).

    A track's start falls anywhere within a frame, so its frames lie up to half a frame
    from the grid (a drifting clock's up to a whole frame): comparing two tracks frame by frame
    needs to know by how much.
    """
    where, offgrid = {}, {}
    for i in present:
        # The start is rounded apart from the rest, so that without drift a track's frames
        # stay one grid step apart whatever fraction of a frame its start falls on.
        own_clock = TrackTiming(0.0, timings[i].drift_ppm)
        since_start = own_clock.meeting_time(np.arange(len(activities[i].voiced)) * frame_s)
        where[i] = round(timings[i].offset / frame_s) + np.round(since_start / frame_s).astype(
            np.int64
        )
        # To a millionth of a frame: k * frame_s / frame_s is not quite k.
        offgrid[i] = np.round((timings[i].offset + since_start) / frame_s - where[i], 6)
    first = min((int(where[i][0]) for i in present if where[i].size), default=0)
    if first < 0:  # a start corrected to before the origin: the grid begins there instead
        where = {i: w - first for i, w in where.items()}
    total = max((int(where[i][-1]) + 1 for i in present if where[i].size), default=0)
    level = np.full((len(activities), total), _ABSENT)
    voiced = np.zeros((len(activities), total), bool)
    placed = np.full((len(activities), total), np.nan)
    for i in present:
        level[i, where[i]] = activities[i].level_db
        voiced[i, where[i]] = activities[i].voiced
        placed[i, where[i]] = offgrid[i]
    return level, voiced, where, placed


def _own_frames(
    level: np.ndarray,
    voiced: np.ndarray,
    coupling: np.ndarray,
    present: Sequence[int],
    offgrid: np.ndarray,
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
        # each frame of A stands for the loudest source frame whose sound it can hold.
        leaked = np.stack(
            [
                _reach(level[b], offgrid[b], offgrid[a], options.delay_frames) + coupling[a, b]
                for b in others
            ]
        )
        power = np.sum(np.power(10.0, leaked / 10), axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            margin[a] = level[a] - 10 * np.log10(power)
        margin[a] = np.where(np.isnan(margin[a]), np.inf, margin[a])
        own[a] = voiced[a] & (margin[a] >= options.margin_db)
        strongest[a] = np.asarray(others)[np.argmax(leaked, axis=0)]
    return own, margin, strongest


_NOT_OTHER = -2
"""In :func:`_untracked`'s sources: the frame is not another voice found there."""
_NO_TRACK = -1
"""In :func:`_untracked`'s sources: the voice of someone with no track."""


def _untracked(
    level: np.ndarray,
    voiced: np.ndarray,
    own: np.ndarray,
    coupling: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    options: AttributionOptions,
    frame_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``own`` without the voices of people who have no track (recorded only for some users,
    or a track lost), which the couplings cannot explain, as no track is theirs.

    Such a voice leaks into several microphones at once, so two tracks carry copies of it
    whose levels follow each other, and on a track whose owner's voice is known (where the
    owner talks alone) it lies well below that voice (``untracked_db``), while the other
    track holds it louder than the first track's own leakage would explain (its own quiet
    speech would be explained). A track whose owner's voice is not known (a listener) loses
    what follows such a copy elsewhere unless it is clearly the louder (``dominance_db``):
    then it is the source. Two people talking at once do not follow each other.

    Returns ``own`` and per frame the track whose voice it really is (:data:`_NO_TRACK`, or a
    track whose owner was talking at full voice; :data:`_NOT_OTHER` elsewhere), and the
    frame's level against its track's own voice (NaN where not known).
    """
    source = np.full(level.shape, _NOT_OTHER)
    under = np.full(level.shape, np.nan)
    filled = _filled(level)
    voice = {t: _own_voice(t, filled, voiced, present, owners, options) for t in present}
    envelope = {t: _envelope(level[t]) for t in present}
    half = max(1, round(options.untracked_window / frame_s / 2))
    pairs = [(a, b) for a, b in combinations(present, 2) if owners[a] != owners[b]]
    together = {pair: _follow(level, voiced, envelope, *pair, half, options) for pair in pairs}
    floor = -options.untracked_db
    least = round(options.min_wall / frame_s)  # a voice's copies follow each other for long
    other = own.copy()
    for first, second in pairs:
        for a, b in ((first, second), (second, first)):
            if voice[a] is None:
                continue
            with np.errstate(invalid="ignore"):
                quiet = level[a] - voice[a] <= floor
                # Unknown how A's voice reaches B (a microphone beside A's), B's copy may
                # be A's own quiet speech: nothing is taken from A then.
                unexplained = np.isfinite(coupling[b, a]) & (
                    level[b] >= level[a] + coupling[b, a] + options.margin_db
                )
            alike = own[a] & quiet & unexplained
            found = _sustained(alike & together[first, second], least, alike)
            source[a] = np.where(found & (source[a] == _NOT_OTHER), _NO_TRACK, source[a])
            if voice[b] is not None:  # B's owner at full voice: the voice is B's
                with np.errstate(invalid="ignore"):
                    talking = level[b] - voice[b] > floor
                source[a] = np.where(found & talking, b, source[a])
            under[a] = np.where(found, level[a] - voice[a], under[a])
            other[a] &= ~found
    for a in (t for t in present if voice[t] is None):
        for b in (t for t in present if owners[t] != owners[a] and voice[t] is not None):
            pair = (a, b) if (a, b) in together else (b, a)
            with np.errstate(invalid="ignore"):
                alike = own[a] & (level[a] - level[b] < options.dominance_db)
            found = _sustained(alike & together[pair] & (source[b] != _NOT_OTHER), least, alike)
            source[a] = np.where(found & (source[a] == _NOT_OTHER), source[b], source[a])
            other[a] &= ~found
    return other, source, under


def _sustained(mask: np.ndarray, least: int, alike: np.ndarray) -> np.ndarray:
    """The frames of ``alike`` (which holds ``mask``) within the stretches of ``mask``, gaps
    of up to ``least`` frames bridged, that hold ``least`` frames or more: a voice's words,
    not a moment two sounds happen to rise and fall together; with the frames among them
    that the voice detector heard on one track only."""
    out = np.zeros_like(mask)
    for start, end in bridge_runs(frame_runs(mask), least):
        if mask[start:end].sum() >= least:
            out[start:end] = alike[start:end]
    return out


def _own_voice(
    t: int,
    filled: np.ndarray,
    voiced: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    options: AttributionOptions,
) -> float | None:
    """The usual level of the track's owner talking alone (dB), None when they never do
    for ``min_frames``. ``filled``: the levels as :func:`_filled` gives them."""
    _, alone = _dominant(t, filled, voiced, present, owners, options.dominance_db)
    if alone.sum() < options.min_frames:
        return None
    return float(np.median(filled[t][alone]))


def _follow(
    level: np.ndarray,
    voiced: np.ndarray,
    envelope: dict[int, np.ndarray],
    a: int,
    b: int,
    half: int,
    options: AttributionOptions,
) -> np.ndarray:
    """Per frame: both tracks voiced, and their levels (``envelope``, per track) following
    each other (correlation ``min_clock_correlation`` or more) over the ``half`` frames
    either side, pauses included (the pauses of one voice fall in both copies at once): one
    sound on both."""
    voiced_both = voiced[a] & voiced[b]
    if not voiced_both.any():  # a clean meeting's tracks, most pairs
        return voiced_both
    both = ~np.isnan(level[a]) & ~np.isnan(level[b])
    x = np.where(both, envelope[a], 0.0)
    y = np.where(both, envelope[b], 0.0)

    def total(values: np.ndarray) -> np.ndarray:  # over the window around each frame
        running = np.concatenate(([0.0], np.cumsum(np.pad(values, half))))
        return running[2 * half + 1 :] - running[: -2 * half - 1]

    n = total(both.astype(float))
    sx, sy = total(x), total(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = total(x * y) - sx * sy / n
        vx, vy = total(x * x) - sx * sx / n, total(y * y) - sy * sy / n
        corr = cov / np.sqrt(vx * vy)
    usable = (n >= min(options.min_frames, half)) & (vx > 1e-6) & (vy > 1e-6)
    return voiced_both & usable & (corr >= options.min_clock_correlation)


def _envelope(levels: np.ndarray) -> np.ndarray:
    """Levels averaged (as power) with each neighbour frame, floored at :data:`_FLOOR_DB`.

    Two tracks' frames fall up to a frame apart in time, and a copy arrives a little late:
    frame by frame, the levels of one voice's two copies follow each other only loosely,
    their smoothed envelopes closely.
    """
    power = np.power(10.0, np.clip(np.nan_to_num(levels, nan=_FLOOR_DB), _FLOOR_DB, None) / 10)
    smooth = np.convolve(power, np.ones(3) / 3, mode="same")
    return 10 * np.log10(smooth)


_FLOOR_DB = -90.0
"""Levels below this (digital silence, a noise floor far down) count as this when levels are
compared: how far below it a silence lies says nothing of a voice."""


def _heard_twice(
    level: np.ndarray,
    own: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    options: AttributionOptions,
    frame_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``own`` with speech that two tracks of one user both hold kept on one of them only;
    per track and frame, the track that kept it (-1: none); and there, the track's level
    against the keeper's copy (dB).

    One person on two devices at once (a laptop and a phone in the same call) is heard on
    both, and the words would be transcribed twice. Where two tracks of a user are
    :func:`_one_voice`, each stretch of speech goes to the track that heard more of it (a
    rejoin's new file, then, over the old file's cut-off end), and the other track loses only
    the frames the keeper holds too: what only it heard (the keeper muted, a dropout) stays.
    """
    own = own.copy()
    kept_on = np.full(own.shape, -1)
    below = np.full(own.shape, np.nan)
    walls = round(options.min_wall / frame_s)
    for a, b in combinations(present, 2):
        if owners[a] != owners[b]:
            continue
        lag = _one_voice(level, own, a, b, options, frame_s)
        if lag is None:
            continue
        held, gap = _held(level, own, a, b, lag, options.margin_db)
        reach = int(np.abs(lag).max()) + walls
        for start, end in bridge_runs(frame_runs(own[a] | own[b]), reach):
            heard = {t: int(own[t, start:end].sum()) for t in (a, b)}
            keep = a if heard[a] >= heard[b] else b
            drop = b if keep == a else a
            frames = start + np.flatnonzero(held[drop][start:end])
            kept_on[drop, frames] = keep
            below[drop, frames] = gap[drop][frames]
            own[drop, frames] = False
    return own, kept_on, below


def _one_voice(
    level: np.ndarray,
    own: np.ndarray,
    a: int,
    b: int,
    options: AttributionOptions,
    frame_s: float,
) -> np.ndarray | None:
    """Per meeting frame, the lag (frames) at which B's copy of A's voice lies, when the two
    tracks carry one voice; None when they do not.

    One voice on two devices is voiced at the same moments. Block by block (``drift_block``),
    the lag within the clock search at which the two tracks' voiced frames overlap most, as a
    share of the frames either is voiced on, is found; a block matches where that share is a
    half or more. Over the matching blocks' common frames (``min_frames`` at least), the
    levels must follow each other (correlation ``min_clock_correlation``) at a steady
    difference (its middle half within ``margin_db``). Two people who share a user id
    overlap only when they talk at once, at levels that do not follow each other; a muted
    stretch or a dropout lowers the share only in its block. Other blocks take the lag of
    the nearest matching block, which follows a drifting clock.
    """
    frames = level.shape[1]
    search = round(options.max_clock_error / frame_s)
    block = max(1, round(options.drift_block / frame_s))
    starts = np.arange(0, frames, block)
    here_a, here_b = ~np.isnan(level[a]), ~np.isnan(level[b])
    lags = np.array(sorted(range(-search, search + 1), key=abs))  # ties: the smallest lag
    overlap = np.zeros((lags.size, starts.size))
    either = np.zeros((lags.size, starts.size))
    for k, shift in enumerate(lags):
        voiced_b, here = _shifted(own[b], shift), here_a & _shifted(here_b, shift)
        overlap[k] = np.add.reduceat(own[a] & voiced_b & here, starts)
        either[k] = np.add.reduceat((own[a] | voiced_b) & here, starts)
    share = np.where(either > 0, overlap / np.maximum(either, 1), 0.0)
    # Speech cut by a track's edge matches at many lags, each over fewer frames than the
    # last: of equal shares (to a thousandth), the one over the most frames wins.
    best = np.argmax(np.round(share * 1000) * (block + 1) + overlap, axis=0)
    column = np.arange(starts.size)
    matched = np.flatnonzero(
        (either[best, column] >= options.min_frames) & (share[best, column] >= 0.5)
    )
    if overlap[best[matched], matched].sum() < options.min_frames:
        return None
    nearest = matched[np.abs(column[:, None] - matched[None, :]).argmin(axis=1)]
    lag = np.repeat(lags[best[nearest]], block)[:frames]
    mine, copy = _pairs(level, own, a, b, lag, np.isin(np.arange(frames) // block, matched))
    if mine.size < options.min_frames or np.std(mine) == 0 or np.std(copy) == 0:
        return None
    low, high = np.percentile(mine - copy, [25, 75])
    if high - low > options.margin_db:
        return None
    return lag if np.corrcoef(mine, copy)[0, 1] >= options.min_clock_correlation else None


def _shifted(values: np.ndarray, shift: int) -> np.ndarray:
    """``values[f + shift]`` at each frame ``f``; False past either end."""
    out = np.zeros_like(values)
    if shift >= 0:
        out[: values.size - shift] = values[shift:]
    else:
        out[-shift:] = values[: values.size + shift]
    return out


def _pairs(
    level: np.ndarray,
    own: np.ndarray,
    a: int,
    b: int,
    lag: np.ndarray,
    where: np.ndarray | bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """A's levels and B's copy's (at ``lag``), over the frames both are voiced on (of A's
    frames, those ``where`` says)."""
    f = np.arange(level.shape[1])
    g = np.clip(f + lag, 0, level.shape[1] - 1)
    both = own[a] & own[b][g] & (f + lag >= 0) & (f + lag < level.shape[1]) & where
    return level[a][both], level[b][g[both]]


def _held(
    level: np.ndarray, own: np.ndarray, a: int, b: int, lag: np.ndarray, tolerance_db: float
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """For A and for B, the own frames the other track holds too (voiced within a frame of
    where ``lag`` puts the copy, at the pair's usual level difference within
    ``tolerance_db``), and there, the frame's level against the copy's."""
    n = level.shape[1]
    mine, copy = _pairs(level, own, a, b, lag)
    usual = float(np.median(mine - copy))
    held = {a: np.zeros(n, bool), b: np.zeros(n, bool)}
    gap = {a: np.full(n, np.nan), b: np.full(n, np.nan)}
    f = np.arange(n)
    for step in (-1, 0, 1):
        g = f + lag + step
        inside = (g >= 0) & (g < n)
        fa, gb = f[inside], g[inside]
        difference = level[a][fa] - level[b][gb]
        same = own[a][fa] & own[b][gb] & (np.abs(difference - usual) <= tolerance_db)
        held[a][fa[same]] = True
        held[b][gb[same]] = True
        gap[a][fa[same]] = difference[same]
        gap[b][gb[same]] = -difference[same]
    return held, gap


def _long_runs(mask: np.ndarray, length: int) -> np.ndarray:
    """``mask`` with its runs shorter than ``length`` frames cleared."""
    out = np.zeros_like(mask)
    for a, b in frame_runs(mask):
        if b - a >= length:
            out[a:b] = True
    return out


def _reach(
    level: np.ndarray, source_offgrid: np.ndarray, track_offgrid: np.ndarray, delay: int
) -> np.ndarray:
    """Per frame of a track, the loudest frame of a source whose sound it can hold (absent:
    -inf).

    A source frame's sound reaches the frames of the track it overlaps in time once moved up
    to ``delay`` frames later, or :data:`_EARLY` earlier. Frames are compared where they
    really are, not where the grid put them: a listener's frame put 0.4 frame late and a leak
    20 ms late can hold a source frame two grid steps back, which a fixed allowance of one
    step would take for the listener's own voice.
    """
    filled = _filled(level)
    out = np.full(filled.shape, -np.inf)
    n = filled.size
    widest = math.ceil(1 + max(delay, _EARLY)) + 2  # each frame is at most one off the grid
    for shift in range(-widest, widest + 1):
        if abs(shift) >= n:
            continue
        source = slice(max(shift, 0), n + min(shift, 0))
        track = slice(max(-shift, 0), n - max(shift, 0))
        # How far, in frames, the source frame starts after the track's frame.
        apart = shift + source_offgrid[source] - track_offgrid[track]
        with np.errstate(invalid="ignore"):  # either absent (NaN): holds nothing
            holds = (apart > -1 - delay) & (apart < 1 + _EARLY)
        out[track] = np.where(holds, np.maximum(out[track], filled[source]), out[track])
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
    dominates, so it is never taken for a source. A source track with too little of that (a
    rejoin holding one short reply) takes what its owner's best-measured other track gives:
    the same voice, most often through the same device and room. -inf where nothing is known.
    """
    n = level.shape[0]
    coupling = np.full((n, n), -np.inf)
    measured = np.zeros((n, n), int)
    filled = _filled(level)
    for b in present:
        rivals, source = _dominant(b, filled, voiced, present, owners, options.dominance_db)
        for a in rivals:
            frames = source & ~np.isnan(level[a])
            measured[a, b] = frames.sum()
            if measured[a, b] >= options.min_frames:
                coupling[a, b] = float(np.median(level[a][frames] - level[b][frames]))
    for b in present:
        siblings = [x for x in present if x != b and owners[x] == owners[b]]
        for a in present:
            known = [x for x in siblings if np.isfinite(coupling[a, x])]
            if np.isneginf(coupling[a, b]) and known:
                coupling[a, b] = coupling[a, max(known, key=lambda x: measured[a, x])]
    return coupling


def _dominant(
    b: int,
    filled: np.ndarray,
    voiced: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    dominance_db: float,
    spread: int = 0,
) -> tuple[list[int], np.ndarray]:
    """B's rivals (other people's tracks), and the frames where B is above all of them by
    ``dominance_db``: there B talks alone, and what the others hear of B is leakage.

    With ``spread``, B must be above the rivals' loudest within that many frames either side.
    Clocks are measured with it: where a rival's clock is off, its own voice sits beside B's
    copy of that voice, and B's copy would look like B talking alone. With three or more
    tracks, a third copy rules such frames out; in a meeting of two, nothing else does.
    """
    rivals = [x for x in present if owners[x] != owners[b]]
    if not rivals:
        return rivals, np.zeros(filled.shape[1], bool)
    loudest = np.max(filled[rivals], axis=0)
    if spread > 0:
        padded = np.pad(loudest, spread, constant_values=-np.inf)
        loudest = sliding_window_view(padded, 2 * spread + 1).max(axis=-1)
    with np.errstate(invalid="ignore"):  # both absent: -inf - -inf, never dominant
        return rivals, voiced[b] & (filled[b] - loudest >= dominance_db)


def _filled(level: np.ndarray) -> np.ndarray:
    """Levels with absent frames (NaN) as -inf, for maxima and comparisons."""
    return np.where(np.isnan(level), -np.inf, level)


def _spans(
    frames: np.ndarray,
    owner: np.ndarray,
    margin: np.ndarray,
    frame_s: float,
    options: AttributionOptions,
    duplicate: bool = False,
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
                    owner=None if who == _NO_TRACK else int(who),
                    margin_db=round(float(np.median(margin[a:b][mine[a:b]])), 1),
                    duplicate=duplicate,
                )
            )
    return sorted(spans, key=lambda span: span.start)
