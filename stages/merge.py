"""Put every track's segments on one meeting clock and turn them into speaker turns.

Each file's time zero is its ``started_time``; the meeting's time zero (the origin) is the
earliest of them, leaving out a track whose start is days from the others'. A user who left
and rejoined has several files, and they are one speaker. Segments of a speaker that follow
each other closely are one utterance, unless someone else began speaking in between;
utterances that overlap in time with another speaker's are marked with who was talking
meanwhile.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from models import (
    Manifest,
    Provenance,
    Segment,
    Speaker,
    TrackTiming,
    Transcript,
    Utterance,
    Word,
    ends_sentence,
)

__all__ = ["MergeOptions", "meeting_origin", "merge", "track_offsets"]


class MergeOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    join_gap: float = Field(
        0.95,
        ge=0,
        description="a speaker's segments closer than this (s) form one utterance: a segment "
        "starts with its lead-in, so this is about 1.4 s of silence",
    )
    sentence_gap: float = Field(
        0.55,
        ge=0,
        description="after a sentence ends, a pause this long (s) already starts a new "
        "utterance: a segment starts with its lead-in, so this is about a second of silence",
    )
    min_overlap: float = Field(
        0.3,
        ge=0,
        description="shorter overlaps between speakers are not marked: Whisper's word times "
        "are good to about 0.2 s, so turns that merely touch must not count",
    )


def track_offsets(manifest: Manifest) -> list[float]:
    """Seconds from the meeting's origin to the start of each track, in manifest order."""
    origin = meeting_origin(manifest)
    return [(t.started_time - origin).total_seconds() for t in manifest.tracks]


def meeting_origin(manifest: Manifest) -> datetime:
    """The meeting clock's time zero as the manifest states it: the earliest track start,
    of the tracks that are placed on it (see :meth:`Manifest.unplaced_tracks`)."""
    unplaced = manifest.unplaced_tracks()
    return min(t.started_time for i, t in enumerate(manifest.tracks) if i not in unplaced)


def merge(
    manifest: Manifest,
    segments: Mapping[int, Sequence[Segment]],
    provenance: Provenance,
    options: MergeOptions | None = None,
    timings: Sequence[TrackTiming] | None = None,
    origin: datetime | None = None,
) -> Transcript:
    """One transcript from the segments of each track (keyed by index in ``manifest.tracks``).

    ``timings`` places each track on the meeting clock, counted from ``origin``; by default
    each track at its ``started_time``, its clock taken as right, from :func:`meeting_origin`.
    """
    options = options or MergeOptions()
    origin = origin or meeting_origin(manifest)
    if timings is None:
        timings = [TrackTiming(offset) for offset in track_offsets(manifest)]
    timeline = sorted(
        (
            (manifest.tracks[index].user_id, _shift(segment, timings[index]), index)
            for index, track_segments in segments.items()
            for segment in track_segments
            if segment.dropped is None  # left out; the provenance says so
        ),
        key=lambda item: item[1].start,
    )

    utterances: list[Utterance] = []
    for user, group in _turns(timeline, options):
        start, end = group[0].start, max(s.end for s in group)
        utterances.append(
            Utterance(
                speaker=user,
                start=start,
                end=end,
                start_time=origin + timedelta(seconds=start),
                end_time=origin + timedelta(seconds=end),
                text=" ".join(s.text for s in group if s.text),
                words=[w for s in group for w in s.words],
            )
        )
    utterances.sort(key=lambda u: (u.start, u.speaker))
    _mark_overlaps(utterances, options.min_overlap)
    return Transcript(
        meeting_id=manifest.meeting_id,
        origin=origin,
        speakers=_speakers(manifest),
        utterances=utterances,
        provenance=provenance,
    )


def _shift(segment: Segment, timing: TrackTiming) -> Segment:
    def at(t: float) -> float:
        return round(timing.meeting_time(t), 3)

    return segment.model_copy(
        update={
            "start": at(segment.start),
            "end": at(segment.end),
            "words": [
                Word(word=w.word, start=at(w.start), end=at(w.end), probability=w.probability)
                for w in segment.words
            ],
        }
    )


def _turns(
    timeline: Sequence[tuple[str, Segment, int]], options: MergeOptions
) -> list[tuple[str, list[Segment]]]:
    """Group segments (sorted by start) into turns.

    A speaker's segment joins their previous turn when the pause between them is at most
    ``join_gap`` (``sentence_gap`` if the turn so far ends a sentence) and nobody else
    spoke into that pause; an interjection wholly inside the turn's speech does not split it
    (it is an overlap, and is marked as one). A segment of another of the speaker's tracks
    that begins before the turn ends (two people on one user id, or a copy two devices both
    kept) is an utterance of its own: joined, its words would come out of order.
    """
    turns: list[tuple[str, list[Segment]]] = []
    # user -> (turn index, position, turn end, track of its last segment)
    last: dict[str, tuple[int, int, float, int]] = {}
    for position, (user, segment, track) in enumerate(timeline):
        if user in last:
            index, since, end, their_track = last[user]
            # Begun as the speaker resumes is not into the pause: ties in the order of
            # starts fall as the tracks came, and must decide nothing.
            spoken_into_pause = any(
                other != user and theirs.end > end and theirs.start < segment.start
                for other, theirs, _ in timeline[since + 1 : position]
            )
            first_word = segment.words[0].start if segment.words else segment.start
            at_once = track != their_track and first_word < end
            turn = turns[index][1]
            longest = options.join_gap
            if ends_sentence(turn[-1].text):
                longest = min(longest, options.sentence_gap)
            if segment.start - end <= longest and not spoken_into_pause and not at_once:
                turns[index][1].append(segment)
                last[user] = (index, position, max(end, segment.end), track)
                continue
        turns.append((user, [segment]))
        last[user] = (len(turns) - 1, position, segment.end, track)
    return turns


def _mark_overlaps(utterances: list[Utterance], min_overlap: float) -> None:
    """Fill ``overlaps`` by a sweep over the spoken parts of utterances, sorted by start.

    Judged on the words, not on the utterance bounds: an utterance starts a little before its
    first word (the lead-in), and a reply that follows promptly is not talking over anyone.
    """
    spans = sorted((*_spoken(u), i) for i, u in enumerate(utterances))
    active: list[tuple[float, float, int]] = []
    for start, end, i in spans:
        active = [a for a in active if a[1] - start > min_overlap]
        u = utterances[i]
        for _, other_end, j in active:
            other = utterances[j]
            if other.speaker != u.speaker and min(other_end, end) - start > min_overlap:
                if u.speaker not in other.overlaps:
                    other.overlaps.append(u.speaker)
                if other.speaker not in u.overlaps:
                    u.overlaps.append(other.speaker)
        active.append((start, end, i))
    for u in utterances:
        u.overlaps.sort()


def _spoken(u: Utterance) -> tuple[float, float]:
    return (u.words[0].start, u.words[-1].end) if u.words else (u.start, u.end)


def _speakers(manifest: Manifest) -> list[Speaker]:
    """Every participant of the manifest, once, in order of first appearance."""
    seen: dict[str, Speaker] = {}
    for track in manifest.tracks:
        known = seen.get(track.user_id)
        if known is None or (known.display_name is None and track.display_name):
            seen[track.user_id] = Speaker(user_id=track.user_id, display_name=track.display_name)
    return list(seen.values())
