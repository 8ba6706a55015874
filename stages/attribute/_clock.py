"""Each track's start and clock rate, measured from the leakage between tracks: a leaked
copy lies where its source's clock puts it, so the lag between the two tells how far apart
the clocks are, and how that lag changes over the meeting tells their drift."""

import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, TypeVar

import numpy as np

from models import TrackTiming, VoiceActivity

from ._frames import (
    comparable_tracks,
    dominant_frames,
    filled_levels,
    lag_correlations,
    meeting_frames,
)
from ._options import AttributionOptions


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
    echo_s: float = 0.0
    """How much later than their sources the others' voices reach this track, beyond what
    its clock explains (s): the way back through the participant's speakers and the
    network. 0 when not measured."""
    echo_clear: bool = False
    """The echo is two frames or more: leakage into this track is looked for that late."""


def estimate_clock(
    activities: Sequence[VoiceActivity | None],
    offsets: Sequence[float],
    owners: Sequence[str],
    options: AttributionOptions | None = None,
) -> list[TrackClock | None]:
    """How far off each track's start is, how fast its clock ran, and how late the others'
    voices come back into it through its speakers, from the leakage.

    A leaked voice is a copy of its source: where B dominates, A's level follows B's. The lag
    at which it follows best is the error between the two tracks' clocks, plus A's echo
    where A hears B through speakers. Lags measured clearly (correlation at least
    ``min_clock_correlation``, and clearly better than at lag zero and at every lag away
    from the peak) are solved together, the middle track kept fixed: first the drift, from
    how the lag changes from block to block of the meeting; then, with the drift taken out,
    the start and the echo (:func:`_starts`). Returns per track a :class:`TrackClock`, or
    None where nothing was measured (no leakage: a clean meeting gives no clock reference,
    nor needs one).
    """
    options = options or AttributionOptions()
    comparable = comparable_tracks(activities)
    present = list(comparable)
    estimates: list[TrackClock | None] = [None] * len(activities)
    if len(present) < 2 or options.max_clock_error <= 0:
        return estimates
    frame_s = comparable[present[0]].frame_s
    timings = [TrackTiming(offset) for offset in offsets]
    level, voiced, _, _ = meeting_frames(
        comparable, len(activities), timings, frame_s, options.max_clock_error
    )
    drifts, curves = _drifts(level, voiced, present, owners, options, frame_s)
    corrected = [
        d
        if d is not None and abs(d) * 1e-6 * len(comparable[i].voiced) >= options.min_drift
        else 0.0
        for i, d in enumerate(drifts)
    ]
    if any(corrected):  # the lags change with the grid: none of the curves can be reused
        timings = [TrackTiming(o, d) for o, d in zip(offsets, corrected, strict=True)]
        level, voiced, _, _ = meeting_frames(
            comparable, len(activities), timings, frame_s, options.max_clock_error
        )
        curves = {}
    reach = round(options.max_clock_error / frame_s)
    filled = filled_levels(level)
    pairs: list[tuple[int, int, float, float]] = []  # (a, b, lag of a behind b in s, corr)
    lags = np.arange(-reach, reach + 1)
    for b in present:
        rivals, dominant = dominant_frames(
            b, filled, voiced, present, owners, options.dominance_db, spread=reach
        )
        frames = np.flatnonzero(dominant)
        for a in rivals:
            corr = curves.get((a, b))
            if corr is None:
                corr = lag_correlations(
                    level[a],
                    level[b],
                    _frames_within(level[a], frames, reach),
                    lags,
                    options.min_frames,
                )
            if np.all(np.isnan(corr)):
                continue
            best = int(np.nanargmax(corr))
            lag = int(lags[best])
            if (
                corr[best] >= options.min_clock_correlation
                and (lag == 0 or corr[best] - corr[reach] >= _CLEARLY_BETTER)
                and _stands_out(corr, best)
            ):
                pairs.append((a, b, lag * frame_s, float(corr[best])))
    pairs, starts = _starts(pairs, present, owners, frame_s)
    echoes = _echoes(pairs, starts, owners, present, frame_s)
    for t in present:
        mine = [p for p in pairs if t in (p[0], p[1])]
        if not mine and drifts[t] is None and t not in echoes:
            continue
        correction = round(starts.get(t, 0.0) / frame_s) * frame_s if mine else 0.0
        echo = round(echoes.get(t, 0.0) / frame_s) * frame_s
        estimates[t] = TrackClock(
            correction_s=round(correction, 3),
            drift_ppm=drifts[t],
            pairs=len(mine),
            correlation=round(float(np.mean([p[3] for p in mine])), 2) if mine else 0.0,
            start_clear=abs(correction) >= 2 * frame_s - 1e-9,
            drift_clear=bool(corrected[t]),
            echo_s=round(echo, 3),
            echo_clear=echo >= 2 * frame_s - 1e-9,
        )
    return estimates


_CLEARLY_BETTER = 0.2
"""How much better than another lag a lag must match to be taken (correlation)."""

_PEAK_HALF_WIDTH = 3
"""Frames either side of a correlation peak that belong to it: a voice's level envelope
stays alike over about a syllable, so a true peak falls off over a few frames, not one."""


def _stands_out(corr: np.ndarray, best: int) -> bool:
    """Whether the peak of ``corr`` at ``best`` is clearly better than every lag outside it.

    A leaked copy matches its source at one lag and much worse at all others. When a stated
    start is further off than the lags searched, the true lag is not among them, and the best
    of the rest is a chance match of a few dozen frames: one bump among others of nearly its
    height. On 255 runs with one start 2.5-20 s off, such false peaks stood at most 0.09 above
    the rest of their curve, and true peaks (starts up to 1.8 s off) at least 0.33.
    """
    outside = np.abs(np.arange(corr.size) - best) > _PEAK_HALF_WIDTH
    rest = corr[outside & ~np.isnan(corr)]
    return rest.size == 0 or corr[best] - rest.max() >= _CLEARLY_BETTER


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
    three blocks that each match clearly, spread over at least half the time both tracks
    cover (:func:`_min_span`).
    """
    block = max(1, round(options.drift_block / frame_s))
    # The first block's lag is looked for around the pair's overall lag, as far as a clock
    # 1000 ppm off would take it in half the meeting; each next block's around the last one
    # found.
    wide, near = 3 + round(_MAX_DRIFT / 2 * level.shape[1]), 4
    search = round(options.max_clock_error / frame_s)
    whole = np.arange(-search, search + 1)
    filled = filled_levels(level)
    pairs: list[tuple[int, int, float, float]] = []  # (a, b, slope in frames per frame, weight)
    curves: dict[tuple[int, int], np.ndarray] = {}
    covered = ~np.isnan(level)  # where each track is
    for b in present:
        rivals, dominant = dominant_frames(b, filled, voiced, present, owners, options.dominance_db)
        frames = np.flatnonzero(dominant)
        if frames.size == 0 or frames[-1] - frames[0] < _min_span(
            np.flatnonzero(covered[b]), level.shape[1], frame_s
        ):
            continue
        # The overall lag (which the start estimate reuses) from frames far from the rivals'
        # voices, whatever the clocks; each block's, near that lag, from all of B's.
        _, apart = dominant_frames(
            b, filled, voiced, present, owners, options.dominance_db, spread=search
        )
        for a in rivals:
            # A drifting copy matches less well overall than block by block: no bar here.
            corr = lag_correlations(
                level[a],
                level[b],
                _frames_within(level[a], np.flatnonzero(apart), search),
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
                # Around the last block found; after blocks passed over (matching unclearly:
                # voices with no track mixed in), also as far as the clock can have gone
                # meanwhile.
                if points:
                    passed = chosen.mean() - points[-1][0] - block
                    reach = near + math.ceil(_MAX_DRIFT * max(0.0, passed))
                else:
                    reach = wide
                lags = np.arange(guess - reach, guess + reach + 1)
                c = lag_correlations(level[a], level[b], chosen, lags, options.min_frames)
                if np.all(np.isnan(c)):
                    continue
                best = int(np.nanargmax(c))
                if c[best] < options.min_clock_correlation or best in (0, len(lags) - 1):
                    continue
                guess = int(lags[best])
                points.append((float(chosen.mean()), guess + _vertex(c[best - 1 : best + 2])))
            both = np.flatnonzero(covered[a] & covered[b])
            line = _line(points, _min_span(both, level.shape[1], frame_s))
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


def _min_span(frames: np.ndarray, total: int, frame_s: float) -> float:
    """How far apart, in frames, the blocks a drift is measured from must lie, for a stretch
    of ``frames`` of a meeting of ``total`` frames: half the stretch, so that a track that
    joined late (or a rejoin file) is measured over the time it is there, not over half a
    meeting it was mostly not in; but at least :data:`_MIN_DRIFT_SPAN` (a drift of a few
    hundred ppm moves a copy a frame in a minute or two, and a shorter line is noise), and
    never more than half the meeting, as for a track that is there throughout."""
    stretch = float(frames[-1] - frames[0]) if frames.size else 0.0
    return min(total / 2, max(stretch / 2, _MIN_DRIFT_SPAN / frame_s))


_MAX_DRIFT = 1e-3
"""The fastest a clock is taken to drift, 1000 ppm: far worse than any sound card's."""

_MIN_DRIFT_SPAN = 60.0
"""Seconds: the shortest spread of blocks a drift is measured over, below half a meeting."""


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
    group = _groups(range(len(solution)), [(index[a], index[b]) for a, b, _, _ in pairs])
    out = solution.copy()
    for r in set(group.values()):
        members = [k for k in range(len(solution)) if group[k] == r]
        values = np.sort(solution[members])
        out[members] -= values[(len(values) - 1) // 2]
    return out


def _starts(
    pairs: list[tuple[int, int, float, float]],
    present: Sequence[int],
    owners: Sequence[str],
    frame_s: float,
) -> tuple[list[tuple[int, int, float, float]], dict[int, float]]:
    """The pairs that agree with the rest, and each track's start correction (s) from them.

    A voice that leaks through a participant's speakers comes back late, by the network's
    round trip and the device's buffers; a lag is then a clock error plus that echo. Two
    sources heard on one track come back about equally late (each stream has a jitter
    buffer of its own), so the difference of their lags there is, but for that, the
    difference of their clocks: every lag is solved as one term per source (its clock) plus
    one per receiver (its clock and echo), and the sources' terms are the corrections. That
    needs the sources linked by tracks that hear two of them; where they are not (a meeting
    of two, most often), each pair's two lags are taken to hold the same echo, and the
    clocks are solved from how the two differ.
    """
    if not pairs:
        return pairs, {}
    solved = _by_source_and_receiver(pairs, frame_s, owners)
    if solved is not None:
        return solved
    index = {t: k for k, t in enumerate(present)}

    def fit(pairs: list[tuple[int, int, float, float]]) -> tuple[np.ndarray, np.ndarray]:
        solution = _solve(pairs, index)
        return solution, np.array([abs(_residual(p, solution, index)) for p in pairs])

    agreed = _fit_agreeing(pairs, fit, frame_s)
    assert agreed is not None  # least squares always has a solution
    pairs, solution = agreed
    solution = _anchored(solution, pairs, index)
    linked = {t for p in pairs for t in p[:2]}
    return pairs, {t: float(solution[index[t]]) for t in linked}


def _by_source_and_receiver(
    pairs: list[tuple[int, int, float, float]], frame_s: float, owners: Sequence[str]
) -> tuple[list[tuple[int, int, float, float]], dict[int, float]] | None:
    """:func:`_starts` where the sources are linked; None where they are not.

    A track that is never a source (a listener, a rejoin's short file, a talker never clear
    of the others) has no clock of its own in the lags, only its clock and echo together.
    Where another track of its owner is a source, it hears as late as that one does. Else,
    in a room (the sources hear each other within two frames), its whole lag is its clock,
    as it was before echoes were measured. Where the others hear each other through
    speakers, a lag an echo can be (up to :data:`_MAX_ECHO`) is taken for its echo, and its
    start kept as stated; another is taken as the middle echo and a clock error."""
    solved = _fit_agreeing(pairs, _terms, frame_s)
    if solved is None:
        return None
    pairs, terms = solved
    sources = sorted({b for _, b, _, _ in pairs})
    receivers = {a for a, _, _, _ in pairs}
    middle = float(np.sort([terms["source", b] for b in sources])[(len(sources) - 1) // 2])
    starts = {b: terms["source", b] - middle for b in sources}
    echo = {t: terms["receiver", t] + terms["source", t] for t in receivers.intersection(sources)}
    usual = max(0.0, float(np.median(list(echo.values())))) if echo else 0.0
    for a in sorted(receivers - set(sources)):
        lag = terms["receiver", a] + middle  # its echo less its correction
        siblings = [echo[t] for t in echo if owners[t] == owners[a]]
        if siblings:
            starts[a] = float(np.median(siblings)) - lag
        elif usual < 2 * frame_s - 1e-9:
            starts[a] = -lag
        else:
            starts[a] = 0.0 if 0.0 <= lag <= _MAX_ECHO else usual - lag
    return pairs, starts


_Fit = TypeVar("_Fit")


def _fit_agreeing(
    pairs: list[tuple[int, int, float, float]],
    fit: Callable[[list[tuple[int, int, float, float]]], tuple[_Fit, np.ndarray] | None],
    frame_s: float,
) -> tuple[list[tuple[int, int, float, float]], _Fit] | None:
    """``fit`` (a solution and each pair's residual, s; None where it cannot be solved) of the
    pairs; then once more without those more than two frames off it (a false peak), where
    that can be solved. Returns the pairs kept and their solution."""
    fitted = fit(pairs)
    if fitted is None:
        return None
    solution, residual = fitted
    agreeing = [p for p, r in zip(pairs, residual, strict=True) if r <= 2 * frame_s]
    if agreeing and len(agreeing) < len(pairs) and (again := fit(agreeing)) is not None:
        return agreeing, again[0]
    return pairs, solution


_MAX_ECHO = 1.0
"""Seconds: the latest a voice is taken to come back through a participant's speakers (the
network's round trip and the devices' buffers)."""


def _terms(
    pairs: list[tuple[int, int, float, float]],
) -> tuple[dict[tuple[str, int], float], np.ndarray] | None:
    """Each lag as a source's term plus a receiver's, by least squares weighted by
    correlation; with each pair's residual (s). None where the sources are not linked."""
    sources = sorted({b for _, b, _, _ in pairs})
    heard: dict[int, list[int]] = {}
    for a, b, _, _ in pairs:
        heard.setdefault(a, []).append(b)
    # Two sources are linked where one track hears both.
    links = [(bs[0], b) for bs in heard.values() for b in bs[1:]]
    if len(set(_groups(sources, links).values())) > 1:
        return None
    receivers = sorted({a for a, _, _, _ in pairs})
    names = [("source", b) for b in sources] + [("receiver", a) for a in receivers]
    column = {name: k for k, name in enumerate(names)}
    rows = np.zeros((len(pairs), len(names)))
    for r, (a, b, _, _) in enumerate(pairs):
        rows[r, column["source", b]] = rows[r, column["receiver", a]] = 1.0
    lag = np.array([p[2] for p in pairs])
    weight = np.array([p[3] for p in pairs])
    solution, *_ = np.linalg.lstsq(rows * weight[:, None], lag * weight, rcond=None)
    terms = {name: float(solution[k]) for name, k in column.items()}
    return terms, np.abs(rows @ solution - lag)


def _groups(members: Iterable[int], links: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Each of ``members`` with the id of its group, the members ``links`` join."""
    group = {k: k for k in members}

    def root(k: int) -> int:
        while group[k] != k:
            k = group[k]
        return k

    for a, b in links:
        group[root(a)] = root(b)
    return {k: root(k) for k in group}


def _echoes(
    pairs: list[tuple[int, int, float, float]],
    starts: dict[int, float],
    owners: Sequence[str],
    present: Sequence[int],
    frame_s: float,
) -> dict[int, float]:
    """Per receiving track, how much later than their sources the others' voices reach it
    once the clocks are corrected (s, not below 0): the middle of its pairs' lags less
    the clocks' difference. A track with no such pair (a rejoin's short file) takes its
    owner's best-measured other track's: the same speakers, most often."""
    late: dict[int, list[float]] = {}
    for a, b, lag, _ in pairs:
        late.setdefault(a, []).append(lag - starts.get(b, 0.0) + starts.get(a, 0.0))
    # A track in a room with some and on speakers for others (a hybrid meeting) hears its
    # room within a frame or so: its echo is that of the voices from its speakers.
    echoes = {
        a: max(0.0, float(np.median([v for v in values if v >= 2 * frame_s] or values)))
        for a, values in late.items()
    }
    for t in set(present) - set(late):
        siblings = [a for a in late if owners[a] == owners[t]]
        if siblings:
            echoes[t] = echoes[max(siblings, key=lambda a: len(late[a]))]
    return echoes


def _residual(
    pair: tuple[int, int, float, float], solution: np.ndarray, index: dict[int, int]
) -> float:
    a, b, lag, _ = pair
    return float(solution[index[a]] - solution[index[b]] + lag)


def _frames_within(receiver: np.ndarray, frames: np.ndarray, reach: int) -> np.ndarray:
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
