"""trackscribe's public Python API: what a notebook or a script needs, and nothing more."""

from models import Manifest, ManifestError, Transcript, TranscriptError

from .core import NoUsableTrackError, PipelineOptions, transcribe_tracks

load_manifest = Manifest.load
load_transcript = Transcript.load

__all__ = [
    "Manifest",
    "ManifestError",
    "NoUsableTrackError",
    "PipelineOptions",
    "Transcript",
    "TranscriptError",
    "load_manifest",
    "load_transcript",
    "transcribe_tracks",
]
