"""From a live meeting to a transcript: record, wait for the upload, fetch, transcribe.

Each step is also usable alone: ``record`` for the recording, ``fetch`` for an existing
recording's files, ``run`` for all of it. A recording's files go to ``OUT/recording`` (a
manifest folder ``trackscribe transcribe`` can read again), the transcript to ``OUT``.
"""

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from models import Recording, TrackFailure, Transcript, safe_file_name
from stages.fetch import FetchError, FetchOptions, FetchResult, fetch_recording
from stages.record import (
    DEFAULT_WAIT,
    RealtimeKitClient,
    RealtimeKitError,
    RecordingFailedError,
    UploadTimeoutError,
)
from stages.transcribe import Transcriber

from .checkpoint import Checkpoints
from .core import NoUsableTrackError, PipelineOptions, bars_wanted, run_meeting

__all__ = ["RECORDING_FOLDER", "fetch", "lost_for_now", "record", "run", "transcribe_recording"]

log = logging.getLogger(f"trackscribe.{__name__}")

RECORDING_FOLDER = "recording"

Step = Callable[[str], None]
"""Hears one line per step taken (the CLI prints them)."""

Started = Callable[[Recording], None]
"""Hears the recording as soon as it has started, then again at each status it is seen in:
from the start on, stopping this process does not stop the recording (the CLI says how to
finish it by hand, by its last status)."""


def record(
    client: RealtimeKitClient,
    meeting_id: str,
    user_ids: Sequence[str] = (),
    *,
    stop_after: float | None = None,
    timeout: float = DEFAULT_WAIT,
    poll: float = 1.0,
    on_step: Step | None = None,
    on_started: Started | None = None,
) -> Recording:
    """Start track recording for ``user_ids`` (everyone when empty) and wait for the upload.

    The recording ends when the meeting does (or after ``stop_after`` seconds, when given).
    Both times are checked before anything starts: a recording started only to fail on a
    bad number keeps running, and blocks the next start with a 409.
    """
    _check_seconds("stop_after", stop_after, zero=True)
    _check_seconds("timeout", timeout, zero=False)
    say = on_step or (lambda _line: None)
    recording = client.start_track_recording(meeting_id, user_ids=list(user_ids) or None)
    if on_started is not None:
        on_started(recording)
    who = ", ".join(user_ids) if user_ids else "every participant"
    say(f"started track recording {recording.id} of meeting {meeting_id} for {who}")

    def heard(r: Recording) -> None:
        say(f"recording {r.id}: {r.status}")
        if on_started is not None:
            on_started(r)

    if stop_after is not None:
        # Watched meanwhile: a meeting that ends first, or a recording that fails, is not
        # waited out, nor stopped when it has already stopped.
        stop_at = time.monotonic() + stop_after
        try:
            return client.wait_until_uploaded(
                recording.id,
                timeout=stop_after,
                poll=poll,
                on_status=heard,
            )
        except UploadTimeoutError:
            pass  # still going: stopped now, as asked
        except RecordingFailedError:
            raise  # ended ERRORED
        except RealtimeKitError as exc:  # cannot be watched: stopped when asked all the same
            log.warning(
                "%s; recording %s is stopped at the time asked all the same", exc, recording.id
            )
            time.sleep(max(0.0, stop_at - time.monotonic()))
        client.stop(recording.id)
        say(f"stopped recording {recording.id} after {stop_after:g} s")
    return client.wait_until_uploaded(recording.id, timeout=timeout, poll=poll, on_status=heard)


def seconds_problem(value: float, *, zero: bool) -> str | None:
    """What is wrong with ``value`` as a number of seconds to wait (``zero``: 0 will do), or
    None. The command line asks it when it reads its options, :func:`record` again."""
    if math.isfinite(value) and (value > 0 or (zero and value == 0)):
        return None
    return f"must be {'0 or more' if zero else 'more than 0'} seconds, not {value:g}"


def _check_seconds(name: str, value: float | None, *, zero: bool) -> None:
    if value is not None and (problem := seconds_problem(value, zero=zero)):
        raise ValueError(f"{name} {problem}")


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

    ``meeting_id`` names the meeting in the manifest; without it, the one the recording
    object names, which the API does not always send (then the recording id stands in).
    Unless ``options`` say otherwise, the fetch draws a progress bar where someone watches.
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
        options=_with_bars(options, None),
    )


def run(
    client: RealtimeKitClient,
    meeting_id: str,
    out: Path,
    user_ids: Sequence[str] = (),
    *,
    options: PipelineOptions | Mapping[str, Any] | None = None,
    fetch_options: FetchOptions | None = None,
    display_names: Mapping[str, str] | None = None,
    stop_after: float | None = None,
    timeout: float = DEFAULT_WAIT,
    poll: float = 1.0,
    progress: bool | None = None,
    on_step: Step | None = None,
    on_started: Started | None = None,
    transcriber: Transcriber | None = None,
) -> Transcript:
    """Record, fetch and transcribe. Files that could not be fetched are listed as failures
    in the transcript's provenance (a partial result), like tracks that could not be decoded.

    The model is loaded (``transcriber``, else ``options.transcribe``) before the recording
    starts: a model that cannot load must cost no recording, no wait and no download.
    """
    options = PipelineOptions.model_validate(options or {})  # a dict, as in a notebook
    if transcriber is None:
        transcriber = Transcriber(options.transcribe)
    recording = record(
        client,
        meeting_id,
        user_ids,
        stop_after=stop_after,
        timeout=timeout,
        poll=poll,
        on_step=on_step,
        on_started=on_started,
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
        transcriber=transcriber,
    )


def transcribe_recording(
    client: RealtimeKitClient,
    recording: Recording | str,
    out: Path,
    *,
    meeting_id: str | None = None,
    user_ids: Sequence[str] = (),
    display_names: Mapping[str, str] | None = None,
    options: PipelineOptions | Mapping[str, Any] | None = None,
    fetch_options: FetchOptions | None = None,
    progress: bool | None = None,
    on_step: Step | None = None,
    transcriber: Transcriber | None = None,
    checkpoints: Checkpoints | None = None,
) -> Transcript:
    """Fetch an uploaded recording into ``out/recording`` and transcribe it. Files that could
    not be fetched are listed as failures in the transcript's provenance; when none could be,
    :class:`NoUsableTrackError`. ``transcriber`` is a model already loaded with
    ``options.transcribe`` (loaded here when None). ``progress`` draws the fetch's and the
    run's progress bars (default: where someone watches, see :func:`bars_wanted`). With
    ``checkpoints``, each track's finished work is kept there, and taken from there by a try
    again (see :func:`lost_for_now`): only tracks whose speech changed meet the model again."""
    say = on_step or (lambda _line: None)
    options = PipelineOptions.model_validate(options or {})  # refused before any download
    progress = bars_wanted(progress)
    folder = Path(out) / RECORDING_FOLDER
    result = fetch(
        client,
        recording,
        folder,
        meeting_id=meeting_id,
        user_ids=user_ids,
        display_names=display_names,
        options=_with_bars(fetch_options, progress),
    )
    recording_id = recording if isinstance(recording, str) else recording.id
    if result.manifest is None:
        reasons = "; ".join(f.reason for f in result.lost)
        raise NoUsableTrackError(
            f"recording {recording_id}: no file could be fetched: {reasons}", result.lost
        )
    say(
        f"fetched {len(result.manifest.tracks)} file(s) into {folder}"
        + (f", {len(result.failures)} failed" if result.failures else "")
        + (f", {len(result.missing)} not to be had" if result.missing else "")
    )
    say("transcribing")
    try:
        transcript = run_meeting(
            result.manifest,
            options=options,
            progress=progress,
            transcriber=transcriber,
            checkpoints=checkpoints,
        ).transcript
    except NoUsableTrackError as exc:  # what was fetched is of no use: so are the rest?
        exc.failures += result.lost
        raise
    transcript.provenance.failures.extend(result.lost)
    return transcript


def _with_bars(options: FetchOptions | None, progress: bool | None) -> FetchOptions:
    """``options`` with its progress bar decided: as they say, else as ``progress`` says,
    else where someone watches (see :func:`bars_wanted`)."""
    options = options or FetchOptions()
    if options.progress is not None:
        return options
    return options.model_copy(update={"progress": bars_wanted(progress)})


def lost_for_now(transcript: Transcript, out: Path) -> list[TrackFailure]:
    """The files ``transcript`` (made by :func:`transcribe_recording` into ``out``) lacks that
    a fetch again may get: those whose download failed for a reason that may pass (the
    network, storage busy or failing, a refused URL the API could not renew, no room to
    write), as the fetch marked them (``fetch_again``). That is read from the transcript, so
    that it holds as well for one read back from its file after a restart. Anything else is
    lost for good, whether a copy of the file is on disk or not: storage has no such file
    (404), the recording does not list it or gives it no URL, its name or URL cannot be used,
    it was fetched but cannot be decoded or placed.

    A transcript written before the fetch said (``fetch_again`` None) is read as that version
    did: a file is lost for now when its name is usable and it is not under
    ``out/recording`` (so a file storage has not is retried too, as it was then)."""
    folder = Path(out) / RECORDING_FOLDER
    return [
        failure
        for failure in transcript.provenance.failures
        if failure.fetch_again
        or (
            failure.fetch_again is None
            and _usable(failure.path)
            and not (folder / failure.path).exists()
        )
    ]


def _usable(path: str) -> bool:
    """Whether ``path`` (a track's, in its manifest folder) is made of names the fetch could
    have written: one that is not was never downloaded, and never will be."""
    try:
        return all(safe_file_name(part) == part for part in path.split("/"))
    except ValueError:  # nothing usable in a part, or no path at all
        return False
