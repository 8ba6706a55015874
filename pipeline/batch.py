"""Many meetings, unattended: checkpointed, resumable, on local processes or a Dask cluster.

Each meeting gets its own folder under the batch's output and is done by
:func:`process_meeting`, wherever it runs: it takes finished work from the meeting's
checkpoints (``.work``), does what is missing, writes the outputs atomically and marks the
meeting done with the key of its inputs and settings (``done.json``). A re-run after a crash
or a ``kill -9`` therefore redoes only what was in flight, and a re-run with a changed
setting only what that setting changes. ``OUT/summary.json`` is rewritten after every meeting.
"""

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path

from pydantic import BaseModel
from tqdm.auto import tqdm

from models import (
    BatchSummary,
    Job,
    Manifest,
    MeetingResult,
    Track,
    atomic_write_text,
    load_jobs,
    sha256_file,
)
from stages.export import FORMATS, export
from stages.transcribe import TranscribeOptions, Transcriber

from . import remote
from .checkpoint import Checkpoints, work_key
from .config import ApiSettings
from .core import PipelineOptions, run_meeting, software_version

__all__ = ["process_meeting", "run_batch"]

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
_DONE = "done.json"
_STARTED = "recording.json"


class _Done(BaseModel):
    key: str
    status: str
    duration_s: float
    reason: str | None = None


def run_batch(
    jobs: Sequence[Job] | Path | str,
    out: Path | str,
    *,
    options: PipelineOptions | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    api: ApiSettings | None = None,
    formats: Sequence[str] = tuple(FORMATS),
    retry_failed: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """Transcribe every meeting of ``jobs`` (a list or a JOBS file) into ``out/<meeting>``.

    ``workers`` local processes each take one meeting at a time with a model of their own;
    ``scheduler`` (``tcp://host:port``) runs the same work on a Dask cluster instead. With
    ``retry_failed``, only meetings that failed or lost input in the last run are redone
    (a plain re-run also redoes them, and skips everything done). ``api`` is needed for
    jobs that fetch or record from RealtimeKit. Returns the summary also saved as
    ``out/summary.json``.
    """
    if isinstance(jobs, str | Path):
        jobs = load_jobs(Path(jobs))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    options = options or PipelineOptions()
    results: dict[str, MeetingResult] = {}
    todo = list(jobs)
    if retry_failed and (out / SUMMARY).exists():
        previous = {m.job: m for m in BatchSummary.load(out / SUMMARY).meetings}
        keep = {n for n, m in previous.items() if m.status == "done"}
        results = {n: m for n, m in previous.items() if n in keep}
        todo = [j for j in jobs if j.folder_name not in keep]

    def record(result: MeetingResult) -> None:
        results[result.job] = result
        ordered = [results[j.folder_name] for j in jobs if j.folder_name in results]
        BatchSummary(meetings=ordered).save(out / SUMMARY)

    run = _on_dask if scheduler else _on_processes
    with tqdm(total=len(todo), desc="meetings", unit="meeting", disable=not progress) as bar:
        for result in run(todo, out, options, api, formats, workers, scheduler):
            record(result)
            bar.update()
            log.info("%s: %s", result.job, result.status)
    return BatchSummary(meetings=[results[j.folder_name] for j in jobs if j.folder_name in results])


def process_meeting(
    job: Job,
    folder: Path,
    options: PipelineOptions,
    api: ApiSettings | None = None,
    formats: Sequence[str] = tuple(FORMATS),
    decode_workers: int | None = 1,
) -> MeetingResult:
    """Do one meeting in ``folder``, taking whatever an earlier run finished. Never raises:
    whatever goes wrong is the meeting's failure, with its reason."""
    started = time.perf_counter()
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        manifest = _reusable_manifest(job, folder) or _inputs(job, folder, api)
        key = _meeting_key(job, manifest, options, formats)
        done = _read_done(folder)
        if done is not None and done.key == key:
            return _result(job, folder, done, reused=True)
        checkpoints = Checkpoints(folder / ".work")
        run = run_meeting(
            manifest,
            options=options,
            progress=False,
            workers=decode_workers,
            transcriber=_model(options.transcribe),
            checkpoints=checkpoints,
        )
        export(run.transcript, folder, formats)
        transcript = run.transcript
        done = _Done(
            key=key,
            status="partial" if transcript.partial else "done",
            duration_s=round(run.stats.meeting_s, 3),
            reason="; ".join(transcript.problems()) or None,
        )
        atomic_write_text(folder / _DONE, done.model_dump_json(indent=2) + "\n")
        checkpoints.drop_pcm()
        return _result(job, folder, done, wall_s=time.perf_counter() - started)
    except Exception as exc:
        reason = str(exc) if str(exc) else type(exc).__name__
        log.error("%s: failed: %s", job.folder_name, reason)
        return MeetingResult(
            job=job.folder_name,
            status="failed",
            folder=str(folder),
            wall_s=round(time.perf_counter() - started, 3),
            reason=reason,
        )


def _result(
    job: Job, folder: Path, done: _Done, *, reused: bool = False, wall_s: float | None = None
) -> MeetingResult:
    return MeetingResult(
        job=job.folder_name,
        status="partial" if done.status == "partial" else "done",
        folder=str(folder),
        duration_s=done.duration_s,
        wall_s=None if wall_s is None else round(wall_s, 3),
        realtime_factor=round(done.duration_s / wall_s, 2) if wall_s else None,
        reused=reused,
        reason=done.reason,
    )


def _read_done(folder: Path) -> _Done | None:
    try:
        return _Done.model_validate_json((folder / _DONE).read_bytes())
    except (OSError, ValueError):
        return None


def _reusable_manifest(job: Job, folder: Path) -> Manifest | None:
    """For a job that fetches, the manifest an earlier run fetched, if it has one: a meeting
    already done must not cost a call to the API."""
    fetched = folder / remote.RECORDING_FOLDER / "manifest.json"
    if job.manifest is not None or not fetched.exists() or not (folder / _DONE).exists():
        return None
    return Manifest.load(fetched)


def _inputs(job: Job, folder: Path, api: ApiSettings | None) -> Manifest:
    if job.manifest is not None:
        return Manifest.load(job.manifest)
    if api is None:
        raise ValueError("this job needs RealtimeKit settings (account, app, token)")
    target = folder / remote.RECORDING_FOLDER
    with api.client() as client:
        recording_id = job.recording_id or _started_recording(job, folder, client)
        recording = client.wait_until_uploaded(recording_id)
        result = remote.fetch(
            client,
            recording,
            target,
            meeting_id=job.meeting_id,
            user_ids=job.user_ids,
            display_names=job.names,
        )
    if result.failures:
        reasons = "; ".join(f.reason for f in result.failures)
        raise RuntimeError(f"not every file could be fetched (a re-run resumes): {reasons}")
    assert result.manifest is not None
    return result.manifest


def _started_recording(job: Job, folder: Path, client: "remote.RealtimeKitClient") -> str:
    """The recording this job started; started now if no earlier run did. Remembered at once,
    so a crash while waiting never makes a second recording of the same meeting."""
    marker = folder / _STARTED
    if marker.exists():
        return marker.read_text(encoding="utf-8").strip()
    assert job.meeting_id is not None
    recording = client.start_track_recording(job.meeting_id, user_ids=list(job.user_ids) or None)
    atomic_write_text(marker, recording.id)
    return recording.id


def _meeting_key(
    job: Job, manifest: Manifest, options: PipelineOptions, formats: Sequence[str]
) -> str:
    """Everything a meeting's outputs depend on: each file's bytes, its place in the manifest,
    and every setting (but not how many threads did the work)."""
    tracks = [
        (t.model_dump(mode="json", exclude={"sha256", "size"}), _file_hash(manifest, t))
        for t in manifest.tracks
    ]
    settings = options.model_dump(mode="json", exclude={"transcribe": {"parallel", "cpu_threads"}})
    return work_key(
        "meeting",
        manifest.meeting_id,
        tracks,
        settings,
        sorted(formats),
        software_version(),
        job.names,
    )


def _file_hash(manifest: Manifest, track: Track) -> str | None:
    try:
        return sha256_file(manifest.track_path(track))
    except OSError:
        return None


_MODELS: dict[str, Transcriber] = {}
_MODELS_LOCK = threading.Lock()


def _model(options: TranscribeOptions) -> Transcriber:
    """One model per worker process, loaded by its first meeting and kept for the rest."""
    key = options.model_dump_json()
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = Transcriber(options)
        return _MODELS[key]


def _on_processes(
    jobs: Sequence[Job],
    out: Path,
    options: PipelineOptions,
    api: ApiSettings | None,
    formats: Sequence[str],
    workers: int,
    _scheduler: str | None,
) -> Iterator[MeetingResult]:
    """Here, one meeting after another (tracks decoded in parallel), or in ``workers``
    processes, one meeting each at a time (tracks decoded in that process)."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield process_meeting(job, out / job.folder_name, options, api, formats, None)
        return
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures: dict[Future[MeetingResult], Job] = {
            pool.submit(process_meeting, job, out / job.folder_name, options, api, formats, 1): job
            for job in jobs
        }
        for future in as_completed(futures):
            yield _outcome(future, futures[future], out)


def _on_dask(
    jobs: Sequence[Job],
    out: Path,
    options: PipelineOptions,
    api: ApiSettings | None,
    formats: Sequence[str],
    _workers: int,
    scheduler: str | None,
) -> Iterator[MeetingResult]:
    """The same work as tasks on a Dask cluster; every worker must see ``out`` at the same
    path (a shared file system), as the outputs are written where the work is done."""
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "running on Dask needs the distributed package: pip install 'trackscribe[dask]'",
            name="distributed",
        ) from None
    with Client(scheduler) as client:
        futures = {
            client.submit(
                process_meeting,
                job,
                (out / job.folder_name).resolve(),
                options,
                api,
                formats,
                1,  # Dask's worker processes may not start processes of their own
                key=f"trackscribe-{job.folder_name}-{os.urandom(4).hex()}",
                pure=False,
            ): job
            for job in jobs
        }
        for future in dask_completed(futures):
            yield _outcome(future, futures[future], out)


def _outcome(future: "Future[MeetingResult]", job: Job, out: Path) -> MeetingResult:
    """A meeting's result, or its failure when the worker itself died (killed, out of memory)."""
    try:
        return future.result()
    except Exception as exc:
        return MeetingResult(
            job=job.folder_name,
            status="failed",
            folder=str(out / job.folder_name),
            reason=f"the worker doing it was lost: {type(exc).__name__}: {exc}",
        )
