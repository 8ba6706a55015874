"""Every track's levels on the meeting's frame grid, and what the other modules read off
them: who dominates a frame, and each track's levels with its gaps filled."""

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from models import TrackTiming, VoiceActivity, frame_runs

from ._options import AttributionOptions

_ABSENT = np.nan


def comparable_tracks(activities: Sequence[VoiceActivity | None]) -> dict[int, VoiceActivity]:
    """The tracks that can be compared with others, by index, in order: read, and at least
    one frame long (one shorter has nothing to compare, and is passed on as it is)."""
    return {i: a for i, a in enumerate(activities) if a is not None and a.voiced.size}


def meeting_frames(
    comparable: Mapping[int, VoiceActivity],
    tracks: int,
    timings: Sequence[TrackTiming],
    frame_s: float,
    max_clock_error: float,
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray], np.ndarray]:
    """Every track's levels and voiced flags on the meeting's frame grid, a row for each of
    the meeting's ``tracks`` (absent, or not ``comparable``: NaN); for each comparable
    track the meeting frame of each of its frames; and how far each frame really lies
    from the grid frame it was put on, in frames (absent: NaN).

    A track's start falls anywhere within a frame, so its frames lie up to half a frame
    from the grid (a drifting clock's up to a whole frame): comparing two tracks frame by frame
    needs to know by how much.

    Where no track is present for long, the grid leaves most of that time out
    (:func:`_closed_up`); ``max_clock_error`` (s) is how far apart frames are compared.
    """
    present = list(comparable)
    where, offgrid = {}, {}
    for i in present:
        # The start is rounded apart from the rest, so that without drift a track's frames
        # stay one grid step apart whatever fraction of a frame its start falls on.
        own_clock = TrackTiming(0.0, timings[i].drift_ppm)
        since_start = own_clock.meeting_time(np.arange(len(comparable[i].voiced)) * frame_s)
        where[i] = round(timings[i].offset / frame_s) + np.round(since_start / frame_s).astype(
            np.int64
        )
        # To a millionth of a frame: k * frame_s / frame_s is not quite k.
        offgrid[i] = np.round((timings[i].offset + since_start) / frame_s - where[i], 6)
    first = min((int(where[i][0]) for i in present if where[i].size), default=0)
    if first < 0:  # a start corrected to before the origin: the grid begins there instead
        where = {i: w - first for i, w in where.items()}
    where = _closed_up(where, round(max(_KEPT_S, 4 * max_clock_error) / frame_s))
    total = max((int(where[i][-1]) + 1 for i in present if where[i].size), default=0)
    level = np.full((tracks, total), _ABSENT)
    voiced = np.zeros((tracks, total), bool)
    placed = np.full((tracks, total), np.nan)
    for i in present:
        level[i, where[i]] = comparable[i].level_db
        voiced[i, where[i]] = comparable[i].voiced
        placed[i, where[i]] = offgrid[i]
    return level, voiced, where, placed


def _closed_up(where: dict[int, np.ndarray], keep: int) -> dict[int, np.ndarray]:
    """``where`` with each stretch of the grid that no track covers cut to ``keep`` frames
    either side of the tracks around it.

    A manifest may place one file hours, up to a day, from the others (a device's clock gone
    wrong): every per-frame array would span all of it, a few hundred MB per track, for
    frames where nothing is present. No comparison reaches that far: clock lags, couplings
    and windows look seconds away, and ``keep`` is well beyond them, so nothing compared
    changes. A track is never cut: it lies within what is kept.
    """
    spans = sorted((int(w[0]), int(w[-1]) + 1, i) for i, w in where.items() if w.size)
    if not spans:
        return where
    shift = {spans[0][2]: 0}
    removed, covered = 0, spans[0][1]
    for start, end, i in spans[1:]:
        if start - covered > 2 * keep:
            removed += start - covered - 2 * keep
        shift[i] = removed
        covered = max(covered, end)
    if not removed:
        return where
    return {i: w - shift.get(i, 0) for i, w in where.items()}


_KEPT_S = 120.0
"""Seconds of grid kept either side of the tracks where none is present (see
:func:`_closed_up`): more than the widest lag any comparison searches."""


def dominant_frames(
    b: int,
    filled: np.ndarray,
    voiced: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    dominance_db: float,
    spread: int = 0,
    excluding: Sequence[int] = (),
) -> tuple[list[int], np.ndarray]:
    """B's rivals (other people's tracks), and the frames where B is above all of them by
    ``dominance_db``: there B talks alone, and what the others hear of B is leakage. Rivals
    in ``excluding`` are still returned, but not compared.

    With ``spread``, B must be above the rivals' loudest within that many frames either side.
    Clocks are measured with it: where a rival's clock is off, its own voice sits beside B's
    copy of that voice, and B's copy would look like B talking alone. With three or more
    tracks, a third copy rules such frames out; in a meeting of two, nothing else does.
    """
    rivals = [x for x in present if owners[x] != owners[b]]
    compared = [x for x in rivals if x not in excluding]
    if not compared:
        return rivals, np.zeros(filled.shape[1], bool)
    loudest = np.max(filled[compared], axis=0)
    if spread > 0:
        padded = np.pad(loudest, spread, constant_values=-np.inf)
        loudest = sliding_window_view(padded, 2 * spread + 1).max(axis=-1)
    with np.errstate(invalid="ignore"):  # both absent: -inf - -inf, never dominant
        return rivals, voiced[b] & (filled[b] - loudest >= dominance_db)


def talking_alone(
    b: int,
    filled: np.ndarray,
    voiced: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    options: AttributionOptions,
    frame_s: float,
    excluding: Sequence[int] = (),
) -> tuple[list[int], np.ndarray]:
    """:func:`dominant_frames` at ``dominance_db``; for a track that is that far above the
    others in fewer than ``min_frames`` frames, or in few beside those where it is
    ``quiet_dominance_db`` above them (:data:`_TAIL`), its stretches of a syllable or more
    at ``quiet_dominance_db``. ``excluding``: rivals not compared.

    A quiet microphone in a room (10 dB of gain less is common) holds its owner's voice
    less than ``dominance_db`` above the others' copies of it. Unmeasured, that voice is
    explained by no coupling: its copies stayed on the others' tracks as their own, and its
    own track, which seemed to carry a voice without a track, lost it. A listener's track,
    even a hot one, is the loudest only for a frame or two at a time, where the copies it
    holds add up or arrive a little apart; a voice talking alone is, for its syllables.
    """
    rivals, clear = dominant_frames(
        b, filled, voiced, present, owners, options.dominance_db, excluding=excluding
    )
    _, alone = dominant_frames(
        b, filled, voiced, present, owners, options.quiet_dominance_db, excluding=excluding
    )
    sustained = syllables(alone, frame_s)
    if clear.sum() >= max(options.min_frames, _TAIL * sustained.sum()):
        return rivals, clear
    return rivals, sustained if sustained.sum() >= options.min_frames else clear


def syllables(frames: np.ndarray, frame_s: float) -> np.ndarray:
    """``frames`` without its runs shorter than a syllable: a voice talking alone is the
    loudest for its syllables, a track that only holds copies for a frame or two at a time."""
    return long_runs(frames, max(2, round(_SYLLABLE / frame_s)))


def long_runs(mask: np.ndarray, length: int) -> np.ndarray:
    """``mask`` with its runs shorter than ``length`` frames cleared."""
    out = np.zeros_like(mask)
    for start, end in frame_runs(mask):
        if end - start >= length:
            out[start:end] = True
    return out


_TAIL = 0.25
"""A track clear of the others by ``dominance_db`` in fewer frames than this share of those
where it talks alone at ``quiet_dominance_db`` is measured there instead: its clear frames are
the moments the others' copies happened to dip, and couplings measured on them alone came
out 8-12 dB too weak."""

_SYLLABLE = 0.09
"""Seconds a voice talking alone stays the loudest track at the least."""


def shifted(values: np.ndarray, shift: int, fill: float | None = None) -> np.ndarray:
    """``values`` (one row) as ``values[f + shift]`` at each frame ``f``; ``fill`` (by
    default zero, False) past either end (all of them for a shift longer than ``values``: a
    meeting shorter than the clock error allowed)."""
    if fill is None:
        out = np.zeros_like(values)
    else:
        out = np.full(values.shape, fill, dtype=np.result_type(values, fill))
    if abs(shift) >= values.size:
        return out
    if shift >= 0:
        out[: values.size - shift] = values[shift:]
    else:
        out[-shift:] = values[: values.size + shift]
    return out


def filled_levels(level: np.ndarray) -> np.ndarray:
    """Levels with absent frames (NaN) as -inf, for maxima and comparisons."""
    return np.where(np.isnan(level), -np.inf, level)


def lag_correlations(
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
