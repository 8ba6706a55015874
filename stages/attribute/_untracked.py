"""The voices of people with no track (recorded for some users only, or a file lost): no
coupling explains them, and they are found where two tracks' levels follow each other well
below the owners' own voices."""

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from models import bridge_runs, frame_runs

from ._frames import filled_levels, shifted, talking_alone
from ._options import AttributionOptions

NOT_OTHER = -2
"""In :func:`untracked_voices`'s sources: the frame is not another voice found there."""
NO_TRACK = -1
"""In :func:`untracked_voices`'s sources: the voice of someone with no track."""


def untracked_voices(
    level: np.ndarray,
    voiced: np.ndarray,
    own: np.ndarray,
    coupling: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    options: AttributionOptions,
    frame_s: float,
    late: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``own`` without the voices of people who have no track (recorded only for some users,
    or a track lost), which the couplings cannot explain, as no track is theirs.

    Such a voice leaks into several microphones at once, so two tracks carry copies of it
    whose levels follow each other, and on a track whose owner's voice is known (where the
    owner talks alone) it lies well below that voice (``untracked_db``), while the other
    track holds it louder than the first track's own leakage would explain (its own quiet
    speech would be explained). A track whose owner's voice is not known (a listener) loses
    what follows such a copy elsewhere unless it is clearly the louder (``dominance_db``):
    then it is the source. Two people talking at once do not follow each other. A voice
    whose track was lost was heard through the others' speakers: each track holds it as
    late as its echo (``late``, frames per track), and the two copies are compared there.

    Returns ``own`` and per frame the track whose voice it really is (:data:`NO_TRACK`, or a
    track whose owner was talking at full voice; :data:`NOT_OTHER` elsewhere), and the
    frame's level against its track's own voice (NaN where not known).
    """
    source = np.full(level.shape, NOT_OTHER)
    under = np.full(level.shape, np.nan)
    filled = filled_levels(level)
    voice = {t: _own_voice(t, filled, voiced, present, owners, options, frame_s) for t in present}
    envelope = {t: _envelope(level[t]) for t in present}
    half = max(1, round(options.untracked_window / frame_s / 2))
    pairs = [(a, b) for a, b in combinations(present, 2) if owners[a] != owners[b]]
    floor = -options.untracked_db
    least = round(options.min_wall / frame_s)  # a voice's copies follow each other for long
    other = own.copy()
    together: dict[tuple[int, int], np.ndarray] = {}

    def copies(a: int, b: int) -> tuple[int, np.ndarray, np.ndarray]:
        """How many frames after A's copy B's lies; B's levels moved there; and per frame of
        A, whether the two copies follow each other."""
        apart = round(late[b] - late[a])
        level_b = shifted(level[b], apart, np.nan)
        if (a, b) not in together:
            if apart == 0 and (b, a) in together:
                together[a, b] = together[b, a]
            else:
                together[a, b] = _follow(
                    (level[a], level_b),
                    (voiced[a], shifted(voiced[b], apart)),
                    (envelope[a], shifted(envelope[b], apart, _FLOOR_DB)),
                    half,
                    options,
                )
        return apart, level_b, together[a, b]

    for first, second in pairs:
        for a, b in ((first, second), (second, first)):
            if voice[a] is None:
                continue
            _, level_b, follows = copies(a, b)
            with np.errstate(invalid="ignore"):
                quiet = level[a] - voice[a] <= floor
                # Unknown how A's voice reaches B (a microphone beside A's), B's copy may
                # be A's own quiet speech: nothing is taken from A then.
                unexplained = np.isfinite(coupling[b, a]) & (
                    level_b >= level[a] + coupling[b, a] + options.margin_db
                )
            alike = own[a] & quiet & unexplained
            # Within a stretch where the copies follow each other, a frame of A far below its
            # owner's voice is that voice's too, though B's copy dipped there (noise, the
            # codec): left as A's own, a few such frames would open a region over the rest.
            found = _sustained(alike & follows, least, own[a] & quiet)
            source[a] = np.where(found & (source[a] == NOT_OTHER), NO_TRACK, source[a])
            if voice[b] is not None:  # B's owner at full voice: the voice is B's
                with np.errstate(invalid="ignore"):
                    talking = level_b - voice[b] > floor
                source[a] = np.where(found & talking, b, source[a])
            under[a] = np.where(found, level[a] - voice[a], under[a])
            other[a] &= ~found
    for a in (t for t in present if voice[t] is None):
        for b in (t for t in present if owners[t] != owners[a] and voice[t] is not None):
            apart, level_b, follows = copies(a, b)
            theirs = shifted(source[b], apart, NOT_OTHER)
            with np.errstate(invalid="ignore"):
                alike = own[a] & (level[a] - level_b < options.dominance_db)
            found = _sustained(alike & follows & (theirs != NOT_OTHER), least, alike)
            whose = _nearest_known(theirs, found)
            source[a] = np.where(found & (source[a] == NOT_OTHER), whose, source[a])
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


def _nearest_known(source: np.ndarray, found: np.ndarray) -> np.ndarray:
    """``source`` with each ``found`` frame where it is :data:`NOT_OTHER` given the source
    of the nearest found frame where it is known: a stretch of one voice's copies is that
    voice throughout, also where the other copy dipped, and the record must say whose."""
    known = np.flatnonzero(found & (source != NOT_OTHER))
    unknown = np.flatnonzero(found & (source == NOT_OTHER))
    if not known.size or not unknown.size:
        return source
    after = np.clip(np.searchsorted(known, unknown), 0, known.size - 1)
    before = np.clip(after - 1, 0, known.size - 1)
    closer = np.where(
        np.abs(known[before] - unknown) <= np.abs(known[after] - unknown), before, after
    )
    out = source.copy()
    out[unknown] = source[known[closer]]
    return out


def _own_voice(
    t: int,
    filled: np.ndarray,
    voiced: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    options: AttributionOptions,
    frame_s: float,
) -> float | None:
    """The usual level of the track's owner talking alone (dB), None when they never do
    for ``min_frames``. ``filled``: the levels as :func:`filled_levels` gives them."""
    _, alone = talking_alone(t, filled, voiced, present, owners, options, frame_s)
    if alone.sum() < options.min_frames:
        return None
    return float(np.median(filled[t][alone]))


def _follow(
    levels: tuple[np.ndarray, np.ndarray],
    voiced: tuple[np.ndarray, np.ndarray],
    envelopes: tuple[np.ndarray, np.ndarray],
    half: int,
    options: AttributionOptions,
) -> np.ndarray:
    """Per frame: both tracks (their levels, voiced flags and :func:`_envelope`, frame by
    frame) voiced, and their envelopes following each other (correlation
    ``min_clock_correlation`` or more) over the ``half`` frames either side, pauses included
    (the pauses of one voice fall in both copies at once): one sound on both."""
    voiced_both = voiced[0] & voiced[1]
    if not voiced_both.any():  # a clean meeting's tracks, most pairs
        return voiced_both
    both = ~np.isnan(levels[0]) & ~np.isnan(levels[1])
    x = np.where(both, envelopes[0], 0.0)
    y = np.where(both, envelopes[1], 0.0)

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
