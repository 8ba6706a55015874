"""trackscribe's public Python API: what a notebook or a script needs, and nothing more.

Names are loaded on first use, so that a decode worker process, which imports a small part of
this package, does not load the speech model's libraries.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models import (
        BatchSummary,
        Job,
        JobsError,
        Manifest,
        ManifestError,
        Transcript,
        TranscriptError,
        WriteError,
        load_jobs,
    )
    from stages.export import export
    from stages.transcribe import ModelError

    from .batch import run_batch
    from .core import NoUsableTrackError, PipelineOptions, run_meeting, transcribe_tracks
    from .signing import PublicKey, SigningKey, SigningKeyError
    from .verification import Verification, verify

    load_manifest = Manifest.load
    load_transcript = Transcript.load

_WHERE = {
    "BatchSummary": "models",
    "export": "stages.export",
    "Job": "models",
    "JobsError": "models",
    "WriteError": "models",
    "load_jobs": "models",
    "run_batch": "pipeline.batch",
    "Manifest": "models",
    "ManifestError": "models",
    "ModelError": "stages.transcribe",
    "Transcript": "models",
    "TranscriptError": "models",
    "NoUsableTrackError": "pipeline.core",
    "PipelineOptions": "pipeline.core",
    "run_meeting": "pipeline.core",
    "transcribe_tracks": "pipeline.core",
    "PublicKey": "pipeline.signing",
    "SigningKey": "pipeline.signing",
    "SigningKeyError": "pipeline.signing",
    "Verification": "pipeline.verification",
    "verify": "pipeline.verification",
}

__all__ = [
    "BatchSummary",
    "Job",
    "JobsError",
    "Manifest",
    "ManifestError",
    "ModelError",
    "NoUsableTrackError",
    "PipelineOptions",
    "PublicKey",
    "SigningKey",
    "SigningKeyError",
    "Transcript",
    "TranscriptError",
    "Verification",
    "WriteError",
    "export",
    "load_jobs",
    "load_manifest",
    "load_transcript",
    "run_batch",
    "run_meeting",
    "transcribe_tracks",
    "verify",
]


if not TYPE_CHECKING:  # seen by a type checker, it would let any misspelt name through

    def __getattr__(name: str) -> Any:
        if name == "load_manifest":
            return import_module("models").Manifest.load
        if name == "load_transcript":
            return import_module("models").Transcript.load
        if name in _WHERE:
            return getattr(import_module(_WHERE[name]), name)
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:  # what a notebook's tab completion offers
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
