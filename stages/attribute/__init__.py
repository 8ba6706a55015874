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
them; their copies are found by following each other on two tracks
(:func:`_untracked.untracked_voices`).
Microphones differ in gain by 10 dB and more. A talker whose own track is rarely
``dominance_db`` above the others (a quiet microphone in a room, whose owner the others'
microphones hear almost as loud) is measured where it is ``quiet_dominance_db`` above them
for a syllable or more; a copy a hot microphone holds almost as loud as its source is
measured where the source is clear of the other tracks, not of that one. The limit: a voice
whose own track holds it less than ``quiet_dominance_db`` above a copy elsewhere cannot be
told from that copy, and is not corrected.

The step is split by job: ``_frames`` puts every track on the meeting's frame grid and holds
what the others share (levels, who dominates, lag correlations); ``_clock`` measures each
track's start and drift from the leakage; ``_ownership`` decides whose voice each frame is;
``_untracked`` finds the voices of people with no track.
"""

from ._clock import TrackClock, estimate_clock
from ._options import AttributionOptions
from ._ownership import attribute

__all__ = ["AttributionOptions", "TrackClock", "attribute", "estimate_clock"]
