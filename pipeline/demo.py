"""The sample meeting that ships with trackscribe, for ``trackscribe demo`` and the tests."""

from importlib.resources import files
from pathlib import Path


def sample_meeting() -> Path:
    """The folder holding the sample meeting's ``manifest.json``, tracks and ``truth.json``."""
    return Path(str(files("sample_media") / "meeting"))
