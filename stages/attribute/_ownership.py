"""Whose voice each voiced frame of each track is: the track's owner's, or another's leaked
in. Leaked frames are taken out and recorded; real overlap stays on both speakers."""

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from models import LeakedSpan, TrackTiming, VoiceActivity, bridge_runs, frame_runs

from ._frames import (
    comparable_tracks,
    dominant_frames,
    filled_levels,
    lag_correlations,
    long_runs,
    meeting_frames,
    shifted,
    syllables,
    talking_alone,
)
from ._options import AttributionOptions
from ._untracked import NO_TRACK, NOT_OTHER, untracked_voices

_EARLY = 0.5
"""Frames' time a leak may seem to come before its source. No sound does, but a start time a
few milliseconds off moves it so. Allowing more lets a second talker's onset, just after,
explain away the first one's last syllable as its leak. The clock check corrects start errors
from two frames up; a smaller one that makes leaks seem more than this early is not allowed for."""


def attribute(
    activities: Sequence[VoiceActivity | None],
    timings: Sequence[TrackTiming],
    owners: Sequence[str],
    options: AttributionOptions | None = None,
    echoes: Sequence[float] | None = None,
) -> tuple[list[VoiceActivity | None], list[list[LeakedSpan]]]:
    """Keep in each track only the speech that is its own.

    ``activities`` and ``timings`` (where each lies on the meeting clock) are per track,
    ``None`` for a track that could not be read; ``owners`` says whose each track is (a user
    who rejoined, or joined from two devices, has several; their voice is never leakage on
    each other, but what two of them both hold is kept on one). Returns the activities with
    leaked frames no longer voiced, and per track the leaked spans taken out (in track
    time). ``echoes`` says, per track, how much later than their sources (s) the others'
    voices reach it, where they come back through its owner's speakers
    (:attr:`TrackClock.echo_s`); by default, as soon as a room carries them.
    """
    options = options or AttributionOptions()
    comparable = comparable_tracks(activities)
    present = list(comparable)
    leaks: list[list[LeakedSpan]] = [[] for _ in activities]
    if not options.enabled or len(present) < 2:
        return list(activities), leaks
    frame_s = comparable[present[0]].frame_s
    walls = round(options.min_wall / frame_s)
    level, voiced, where, offgrid = meeting_frames(
        comparable, len(activities), timings, frame_s, options.max_clock_error
    )

    # In whole frames, from two up: below that, a room's allowance (delay_frames) holds it.
    late = np.zeros(len(activities)) if echoes is None else np.round(np.asarray(echoes) / frame_s)
    late[late < 2] = 0
    coupling, late_from = _couplings(level, voiced, present, owners, options, frame_s, late)
    own, margin, strongest, over_noise = _own_frames(
        level, voiced, coupling, present, offgrid, options, late_from
    )
    own, source, under = untracked_voices(
        level, voiced, own, coupling, present, owners, options, frame_s, late
    )
    own, kept_on, below = _heard_twice(level, own, present, owners, options, frame_s)
    strongest = _voice_carried(strongest, own, source)
    # Last, so that what is found above (whose voice a leak is) is as without it: where a
    # leaked word fades out into a track's noise, what is left is noise that webrtcvad may
    # still call voiced, and no leakage measured explains it; it is not the owner's voice.
    # Only there: elsewhere, a quiet talker's own speech near their noise stays theirs.
    fading = _near(voiced & ~own, round(_FADE / frame_s))
    noisy = own & fading & (over_noise < options.margin_db)
    own &= ~noisy
    first_of: dict[str, int] = {}
    voice = np.array([first_of.setdefault(owner, i) for i, owner in enumerate(owners)])

    result: list[VoiceActivity | None] = list(activities)
    for i in present:
        span = where[i]  # each of the track's frames on the meeting's grid
        activity = comparable[i]
        leaked = activity.voiced & ~own[i, span]
        twice = kept_on[i, span] >= 0
        other = source[i, span] != NOT_OTHER
        noise = noisy[i, span]
        result[i] = activity.owned(activity.voiced & own[i, span], long_runs(leaked, walls) | twice)
        short = np.where(noise, over_noise[i, span], margin[i, span]) - options.margin_db
        leaks[i] = sorted(
            _spans(
                leaked & ~twice & ~other & ~noise,
                strongest[i, span],
                short,
                frame_s,
                options,
                voice,
            )
            + _spans(noise, np.full(span.size, NO_TRACK), short, frame_s, options, noise=True)
            + _spans(other, source[i, span], under[i, span], frame_s, options, voice)
            + _spans(twice, kept_on[i, span], below[i, span], frame_s, options, duplicate=True),
            key=lambda leak: leak.start,
        )
    return result, leaks


def _own_frames(
    level: np.ndarray,
    voiced: np.ndarray,
    coupling: np.ndarray,
    present: Sequence[int],
    offgrid: np.ndarray,
    options: AttributionOptions,
    late_from: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per track and frame: own speech or not, margin over the leakage explained (dB), the
    track whose leakage is strongest there (the track itself where none is measured), and
    the margin over that leakage and the track's noise together. ``late_from[a, b]``: how
    many frames late B's voice comes back into A through A's speakers."""
    own = voiced.copy()
    margin = np.full(level.shape, np.inf)
    over_noise = np.full(level.shape, np.inf)
    strongest = np.repeat(np.arange(level.shape[0])[:, None], level.shape[1], axis=1)
    for a in present:
        others = [b for b in present if np.isfinite(coupling[a, b])]
        if not others:
            continue
        # The level each frame of A would have from the others' leakage alone, as power. A
        # leaked voice arrives a little late (acoustics, network), often in the next frame:
        # each frame of A stands for the loudest source frame whose sound it can hold.
        leaked = np.stack(
            [
                _reach(level[b], offgrid[b], offgrid[a], options.delay_frames, late_from[a, b])
                + coupling[a, b]
                for b in others
            ]
        )
        power = np.sum(np.power(10.0, leaked / 10), axis=0)
        noise = np.power(10.0, _noise_floor(level[a], voiced[a]) / 10)
        with np.errstate(divide="ignore", invalid="ignore"):
            margin[a] = level[a] - 10 * np.log10(power)
            over_noise[a] = level[a] - 10 * np.log10(power + noise)
        margin[a] = np.where(np.isnan(margin[a]), np.inf, margin[a])
        over_noise[a] = np.where(np.isnan(over_noise[a]), np.inf, over_noise[a])
        own[a] = voiced[a] & (margin[a] >= options.margin_db)
        strongest[a] = np.asarray(others)[np.argmax(leaked, axis=0)]
    return own, margin, strongest, over_noise


def _noise_floor(level: np.ndarray, voiced: np.ndarray) -> float:
    """A track's own noise, dB: its median level where the voice detector hears nothing;
    -inf for a track with too few such frames to tell (voiced throughout). Not a low
    percentile of all its frames: a track with no pause is never at its noise, and that
    would be the leakage, explained already."""
    quiet = level[~voiced & ~np.isnan(level)]
    return float(np.median(quiet)) if quiet.size >= _NOISE_FRAMES else -np.inf


_NOISE_FRAMES = 100
"""Frames (3 s) without voice a track needs for its noise to be measured."""
_FADE = 0.3
"""Seconds after (or before) a frame not the owner's in which a frame near the track's noise
is taken for the noise a leaked word fades into: a word's decay, and the pause webrtcvad
bridges after it."""


def _near(mask: np.ndarray, reach: int) -> np.ndarray:
    """Per track, the frames within ``reach`` frames of one set in ``mask``."""
    width = 2 * reach + 1
    counts = np.cumsum(np.pad(mask.astype(np.int64), ((0, 0), (reach + 1, reach))), axis=1)
    return counts[:, width:] - counts[:, :-width] > 0


def _voice_carried(strongest: np.ndarray, own: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Per track and frame, whose voice the strongest leakage is.

    The strongest track's owner's where that track speaks; where it only carries something
    itself, what it carries: another's voice found on it (someone with no track, say), or
    else, as its own strongest leakage, whose voice that is, and so on along the chain. A
    frame at the edge of a voice with no track can be found on one track and not yet on the
    next, and the record must still name the voice, not the track that relayed it. Where
    the chain reaches no voice, the strongest track is named.
    """
    frames = np.arange(strongest.shape[1])
    voice, at = strongest.copy(), strongest.copy()
    unsettled = np.ones(strongest.shape, bool)
    for _ in range(strongest.shape[0]):  # a chain longer than the tracks goes round
        speaks, relayed = own[at, frames], source[at, frames]
        found = unsettled & (speaks | (relayed != NOT_OTHER))
        voice[found] = np.where(speaks, at, relayed)[found]
        unsettled &= ~found
        if not unsettled.any():
            break
        at = strongest[at, frames]
    return voice


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
        voiced_b, here = shifted(own[b], shift), here_a & shifted(here_b, shift)
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
    for t in (a, b):
        # A copy starts a fraction of a frame later: at a word's edges, where the level
        # changes fastest, its frames hold parts of the voice the other's do not, and miss the
        # test above. Each held stretch takes the own frames either side of it too.
        edges = own[t] & ~held[t] & (shifted(held[t], 1) | shifted(held[t], -1))
        gap[t][edges] = np.where(shifted(held[t], 1), shifted(gap[t], 1), shifted(gap[t], -1))[
            edges
        ]
        held[t] |= edges
    return held, gap


def _reach(
    level: np.ndarray,
    source_offgrid: np.ndarray,
    track_offgrid: np.ndarray,
    delay: int,
    echo: float,
) -> np.ndarray:
    """Per frame of a track, the loudest frame of a source whose sound it can hold (absent:
    -inf).

    A source frame's sound reaches the frames of the track it overlaps in time once moved up
    to ``delay`` frames later, or :data:`_EARLY` earlier; with an ``echo`` (frames, measured
    to the frame), from a frame before it to ``delay`` after it. Frames are compared where they
    really are, not where the grid put them: a listener's frame put 0.4 frame late and a leak
    20 ms late can hold a source frame two grid steps back, which a fixed allowance of one
    step would take for the listener's own voice.
    """
    filled = filled_levels(level)
    out = np.full(filled.shape, -np.inf)
    n = filled.size
    earliest, latest = (echo - 1, echo + delay) if echo > 0 else (-_EARLY, delay)
    widest = math.ceil(1 + max(latest, -earliest)) + 2  # each frame is at most one off the grid
    for shift in range(-widest, widest + 1):
        if abs(shift) >= n:
            continue
        source = slice(max(shift, 0), n + min(shift, 0))
        track = slice(max(-shift, 0), n - max(shift, 0))
        # How far, in frames, the source frame starts after the track's frame.
        apart = shift + source_offgrid[source] - track_offgrid[track]
        with np.errstate(invalid="ignore"):  # either absent (NaN): holds nothing
            holds = (apart > -1 - latest) & (apart < 1 - earliest)
        out[track] = np.where(holds, np.maximum(out[track], filled[source]), out[track])
    return out


_LOUDEST_DB = 1.0
"""dB above every other track that makes a track the loudest, not level with another."""

_NEAR_DB = 3.0
"""A copy measured within this much of ``-dominance_db``, with its receiver's level left out
of the choice of frames, is one the choice would cut short: it is taken as measured so."""


def _couplings(
    level: np.ndarray,
    voiced: np.ndarray,
    present: Sequence[int],
    owners: Sequence[str],
    options: AttributionOptions,
    frame_s: float,
    late: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """coupling[a, b]: dB from B's level to the level of B's voice in A's microphone; and
    how many frames after B's that voice lies in A (:func:`_echo_of`: 0 but where it comes
    back through A's speakers, ``late`` frames after its source or so).

    Measured where B clearly dominates the meeting (``dominance_db`` above every other
    track): there B is talking, its voice is all the others hear of it, and nobody talks
    over it. A track that only ever carries others' voices (a silent listener) never
    dominates, so it is never taken for a source. A source track with too little of that (a
    rejoin holding one short reply) takes what its owner's best-measured other track gives:
    the same voice, most often through the same device and room. A microphone that holds B
    almost as loud as B's own (a hot one) is measured where B is clear of the third tracks
    and a little above it. -inf where nothing is known.
    """
    n = level.shape[0]
    coupling = np.full((n, n), -np.inf)
    late_from = np.zeros((n, n))
    measured = np.zeros((n, n), int)
    filled = filled_levels(level)
    for b in present:
        rivals, source = talking_alone(b, filled, voiced, present, owners, options, frame_s)
        # The loudest track of all for syllables at a time: a voice, if a quiet one.
        _, loudest = dominant_frames(b, filled, voiced, present, owners, _LOUDEST_DB)
        speaks = syllables(loudest, frame_s).sum() >= options.min_frames
        for a in rivals:
            late_from[a, b] = _echo_of(level[a], level[b], source, late[a], options)
            # Where A holds each frame of B's.
            heard = shifted(level[a], round(late_from[a, b]), np.nan)
            frames = source & ~np.isnan(heard)
            measured[a, b] = frames.sum()
            if measured[a, b] >= options.min_frames:
                coupling[a, b] = float(np.median(heard[frames] - level[b][frames]))
            # Chosen where B is also dominance_db above A, a copy of B that A holds almost
            # as loud (a hot microphone) is measured on its dips alone, 8-12 dB too weak: its
            # voice stayed on A. Measured again where B is that far above the others and only
            # quiet_dominance_db above A (B's voice there, not A's), the larger is kept when
            # near. Only for a voice B is: a listener's track, loud beside third parties,
            # is not one.
            if not speaks:
                continue
            _, free = talking_alone(
                b, filled, voiced, present, owners, options, frame_s, excluding=(a,)
            )
            free &= ~np.isnan(heard)
            with np.errstate(invalid="ignore"):
                free &= filled[b] - filled[a] >= options.quiet_dominance_db  # B's voice, not A's
            if free.sum() < options.min_frames:
                continue
            again = float(np.median(heard[free] - level[b][free]))
            if again > max(coupling[a, b], -options.dominance_db - _NEAR_DB):
                coupling[a, b] = again
                measured[a, b] = free.sum()
    for b in present:
        siblings = [x for x in present if x != b and owners[x] == owners[b]]
        for a in present:
            known = [x for x in siblings if np.isfinite(coupling[a, x])]
            if np.isneginf(coupling[a, b]) and known:
                coupling[a, b] = coupling[a, max(known, key=lambda x: measured[a, x])]
    return coupling, late_from


def _echo_of(
    receiver: np.ndarray,
    source: np.ndarray,
    talking: np.ndarray,
    late: float,
    options: AttributionOptions,
) -> float:
    """How many frames after the source the receiver's copy of it lies: 0 where the receiver
    hears no echo (``late`` 0) or hears this source in the room; else where the copy follows
    the source best within :data:`_JITTER` of ``late`` (the receiver's echo), which it is
    where no lag there follows clearly. Each stream coming in has a jitter buffer of its
    own, so two voices played by one device come back a few tens of milliseconds apart; a
    voice from the same room comes in at once, through the air."""
    if late < 2:
        return 0.0
    near = np.arange(int(late) - _JITTER, int(late) + _JITTER + 1)
    lags = np.concatenate(([0, 1], near[near > 1]))
    corr = lag_correlations(receiver, source, np.flatnonzero(talking), lags, options.min_frames)
    if np.all(np.isnan(corr)):
        return late
    best = int(np.nanargmax(corr))
    if lags[best] <= 1:
        return 0.0 if corr[best] >= options.min_clock_correlation else late
    if corr[best] < options.min_clock_correlation or lags[best] in (near[0], near[-1]):
        return late
    return float(lags[best])


_JITTER = 3
"""Frames (90 ms) either side of a track's echo within which one voice's echo is looked for."""


def _spans(
    frames: np.ndarray,
    owner: np.ndarray,
    margin: np.ndarray,
    frame_s: float,
    options: AttributionOptions,
    voice: np.ndarray | None = None,
    duplicate: bool = False,
    noise: bool = False,
) -> list[LeakedSpan]:
    """Leaked frames as stretches of each owner's voice; every leaked frame is in one.

    With ``voice`` (per track, the first track of its user), one user's tracks are one
    voice: a user on two devices is heard from both, frame by frame from whichever is louder
    there, and a stretch of their voice is one record, not two that overlap. It names the
    track that carried most of it.
    """
    bridge = round(options.report_bridge / frame_s)
    whose = owner if voice is None else np.where(owner >= 0, voice[np.maximum(owner, 0)], owner)
    spans = []
    for who in np.unique(whose[frames]):
        mine = frames & (whose == who)
        for a, b in bridge_runs(frame_runs(mine), bridge):
            carriers, counts = np.unique(owner[a:b][mine[a:b]], return_counts=True)
            spans.append(
                LeakedSpan(
                    start=round(a * frame_s, 3),
                    end=round(b * frame_s, 3),
                    owner=None if who == NO_TRACK else int(carriers[np.argmax(counts)]),
                    margin_db=round(float(np.median(margin[a:b][mine[a:b]])), 1),
                    duplicate=duplicate,
                    noise=noise,
                )
            )
    return sorted(spans, key=lambda span: span.start)
