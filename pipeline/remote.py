"""From a live meeting to a transcript: record, wait for the upload, fetch, transcribe.

Each step is also usable alone: ``record`` for the recording, ``fetch`` for an existing
recording's files, ``run`` for all of it. A recording's files go to ``OUT/recording`` (a
manifest folder ``trackscribe transcribe`` can read again), the transcript to ``OUT``.
"""

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from models import Recording, Transcript
from stages.fetch import FetchError, FetchOptions, FetchResult, fetch_recording
from stages.record import RealtimeKitClient

from .core import NoUsableTrackError, PipelineOptions, transcribe_tracks

__all__ = ["RECORDING_FOLDER", "fetch", "record", "run", "transcribe_recording"]

log = logging.getLogger(__name__)

RECORDING_FOLDER = "recording"

Step = Callable[[str], None]
"""Hears one line per step taken (the CLI prints them)."""


def record(
    client: RealtimeKitClient,
    meeting_id: str,
    user_ids: Sequence[str] = (),
    *,
    stop_after: float | None = None,
    timeout: float = 86_400.0,
    poll: float = 1.0,
    on_step: Step | None = None,
) -> Recording:
    """Start track recording for ``user_ids`` (everyone when empty) and wait for the upload.

    The recording ends when the meeting does (or after ``stop_after`` seconds, when given).
    """
    say = on_step or (lambda _line: None)
    recording = client.start_track_recording(meeting_id, user_ids=list(user_ids) or None)
    who = ", ".join(user_ids) if user_ids else "every participant"
    say(f"started track recording {recording.id} of meeting {meeting_id} for {who}")
    if stop_after is not None:
        time.sleep(stop_after)
        client.stop(recording.id)
        say(f"stopped recording {recording.id} after {stop_after:g} s")
    recording = client.wait_until_uploaded(
        recording.id,
        timeout=timeout,
        poll=poll,
        on_status=lambda r: say(f"recording {r.id}: {r.status}"),
    )
    return recording


def fetch(
    client: RealtimeKitClient,
    recording: Recording | str,
    out_dir: Path,
    *,
    meeting_id: str | None = None,
    user_ids: Sequence[str] = (),
    display_names: Mapping[str, str] | None = None,
    options: FetchOptions | None = None,
) -> FetchResult:
    """Fetch an uploaded recording's files into the manifest folder ``out_dir``.

    ``meeting_id`` names the meeting in the manifest; the API's recording object does not
    carry it (without it, the recording id stands in).
    """
    if isinstance(recording, str):
        recording = client.get_recording(recording)
    if recording.status != "UPLOADED":
        raise FetchError(f"recording {recording.id} is {recording.status}, not UPLOADED yet")
    recording_id = recording.id
    return fetch_recording(
        recording,
        out_dir,
        refresh=lambda: client.get_recording(recording_id),
        meeting_id=meeting_id,
        user_ids=user_ids,
        display_names=display_names,
        options=options,
    )


def run(
    client: RealtimeKitClient,
    meeting_id: str,
    out: Path,
    user_ids: Sequence[str] = (),
    *,
    options: PipelineOptions | None = None,
    fetch_options: FetchOptions | None = None,
    display_names: Mapping[str, str] | None = None,
    stop_after: float | None = None,
    timeout: float = 86_400.0,
    poll: float = 1.0,
    progress: bool = True,
    on_step: Step | None = None,
) -> Transcript:
    """Record, fetch and transcribe. Files that could not be fetched are listed as failures
    in the transcript's provenance (a partial result), like tracks that could not be decoded.
    """
    recording = record(
        client,
        meeting_id,
        user_ids,
        stop_after=stop_after,
        timeout=timeout,
        poll=poll,
        on_step=on_step,
    )
    return transcribe_recording(
        client,
        recording,
        out,
        meeting_id=meeting_id,
        user_ids=user_ids,
        display_names=display_names,
        options=options,
        fetch_options=fetch_options,
        progress=progress,
        on_step=on_step,
    )


def transcribe_recording(
    client: RealtimeKitClient,
    recording: Recording | str,
    out: Path,
    *,
    meeting_id: str | None = None,
    user_ids: Sequence[str] = (),
    display_names: Mapping[str, str] | None = None,
    options: PipelineOptions | None = None,
    fetch_options: FetchOptions | None = None,
    progress: bool = True,
    on_step: Step | None = None,
) -> Transcript:
    """Fetch an uploaded recording into ``out/recording`` and transcribe it. Files that could
    not be fetched are listed as failures in the transcript's provenance; when none could be,
    :class:`NoUsableTrackError`."""
    say = on_step or (lambda _line: None)
    folder = Path(out) / RECORDING_FOLDER
    result = fetch(
        client,
        recording,
        folder,
        meeting_id=meeting_id,
        user_ids=user_ids,
        display_names=display_names,
        options=fetch_options,
    )
    recording_id = recording if isinstance(recording, str) else recording.id
    if result.manifest is None:
        reasons = "; ".join(f.reason for f in result.failures)
        raise NoUsableTrackError(f"recording {recording_id}: no file could be fetched: {reasons}")
    say(
        f"fetched {len(result.manifest.tracks)} file(s) into {folder}"
        + (f", {len(result.failures)} failed" if result.failures else "")
    )
    say("transcribing")
    transcript = transcribe_tracks(result.manifest, options=options, progress=progress)
    transcript.provenance.failures.extend(result.failures)
    return transcript
