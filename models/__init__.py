"""Typed data shared by the stages and the pipeline. Imports nothing else of trackscribe."""

from ._time import UtcDatetime, format_utc
from .audio import SAMPLE_RATE, PcmAudio
from .files import atomic_write_bytes, atomic_write_text, sha256_file
from .manifest import MANIFEST_SCHEMA, Manifest, ManifestError, Track
from .recording_files import time_from_file_name
from .speech import LeakedSpan, SpeechRegion, VoiceActivity, bridge_runs, frame_runs
from .transcript import (
    TRANSCRIPT_SCHEMA,
    ClockEstimate,
    DroppedSpeech,
    InputFile,
    Provenance,
    Segment,
    Speaker,
    TrackFailure,
    Transcript,
    TranscriptError,
    Utterance,
    Word,
)

__all__ = [
    "MANIFEST_SCHEMA",
    "SAMPLE_RATE",
    "TRANSCRIPT_SCHEMA",
    "ClockEstimate",
    "DroppedSpeech",
    "InputFile",
    "LeakedSpan",
    "Manifest",
    "ManifestError",
    "PcmAudio",
    "Provenance",
    "Segment",
    "Speaker",
    "SpeechRegion",
    "Track",
    "TrackFailure",
    "Transcript",
    "TranscriptError",
    "UtcDatetime",
    "Utterance",
    "VoiceActivity",
    "Word",
    "atomic_write_bytes",
    "atomic_write_text",
    "bridge_runs",
    "format_utc",
    "frame_runs",
    "sha256_file",
    "time_from_file_name",
]
