"""Typed data shared by the stages and the pipeline. Imports nothing else of trackscribe."""

from ._time import TrackTiming, UtcDatetime, format_utc
from .audio import FULL_SCALE, SAMPLE_RATE, SILENCE_DB, PcmAudio, level_db
from .batch import BatchSummary, Job, JobsError, MeetingResult, load_jobs
from .files import atomic_write_bytes, atomic_write_files, atomic_write_text, sha256_file
from .http import RetryPolicy, describe_error, protect_http_logs, redact_urls
from .manifest import (
    MANIFEST_SCHEMA,
    Manifest,
    ManifestError,
    Track,
    outlying_starts,
)
from .recording import (
    DownloadLayer,
    Recording,
    RecordingFile,
    RecordingStatus,
    SignedUrl,
    WebhookEvent,
)
from .recording_files import TrackFileName, parse_file_name, safe_file_name, time_from_file_name
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
    "FULL_SCALE",
    "MANIFEST_SCHEMA",
    "SAMPLE_RATE",
    "SILENCE_DB",
    "TRANSCRIPT_SCHEMA",
    "BatchSummary",
    "ClockEstimate",
    "DownloadLayer",
    "DroppedSpeech",
    "InputFile",
    "Job",
    "JobsError",
    "LeakedSpan",
    "Manifest",
    "ManifestError",
    "MeetingResult",
    "PcmAudio",
    "Provenance",
    "Recording",
    "RecordingFile",
    "RecordingStatus",
    "RetryPolicy",
    "Segment",
    "SignedUrl",
    "Speaker",
    "SpeechRegion",
    "Track",
    "TrackFailure",
    "TrackFileName",
    "TrackTiming",
    "Transcript",
    "TranscriptError",
    "UtcDatetime",
    "Utterance",
    "VoiceActivity",
    "WebhookEvent",
    "Word",
    "atomic_write_bytes",
    "atomic_write_files",
    "atomic_write_text",
    "bridge_runs",
    "describe_error",
    "format_utc",
    "frame_runs",
    "level_db",
    "load_jobs",
    "outlying_starts",
    "parse_file_name",
    "protect_http_logs",
    "redact_urls",
    "safe_file_name",
    "sha256_file",
    "time_from_file_name",
]
