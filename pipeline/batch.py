"""Many meetings, unattended: checkpointed, resumable, on local processes or a Dask cluster.

Each meeting gets its own folder under the batch's output and is done by
:func:`process_meeting`, wherever it runs: it takes finished work from the meeting's
checkpoints (``.work``), does what is missing, writes the outputs atomically and marks the
meeting done with the key of its inputs and settings (``done.json``). A re-run after a crash
or a ``kill -9`` therefore redoes only what was in flight, and a re-run with a changed
setting only what that setting changes. ``OUT/summary.json`` is written when the batch starts,
with every meeting still to do as pending, and again after every meeting.
"""

import errno
import fcntl
import hashlib
import json
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from tqdm.auto import tqdm

from models import (
    BATCH_SUMMARY,
    DONE_FILE,
    MANIFEST_FILE,
    STARTED_FILE,
    BatchSummary,
    Job,
    JobsError,
    Manifest,
    ManifestError,
    MeetingResult,
    RetryPolicy,
    SummaryError,
    Track,
    TrackFailure,
    Transcript,
    WriteError,
    atomic_write_text,
    describe,
    describe_error,
    load_jobs,
    redact_urls,
    refuse_shared,
    remove_unfinished_writes,
    sha256_file,
    writing,
)
from stages.export import (
    DEFAULT_FORMATS,
    FORMATS,
    export,
    formats_to_write,
    recorded,
    withdraw,
)
from stages.fetch import TRACKS_FOLDER, FetchError, FetchOptions, download_of
from stages.record import RealtimeKitError
from stages.transcribe import (
    ModelError,
    Transcriber,
    check_model,
    usable_cores,
)

from . import remote
from ._batch_common import one_line, worker_lost
from ._dask_runner import dask_client, on_dask
from ._worker import (
    WorkerLink,
    interruptible,
    interrupts_held,
    refuse_in_rerun_script,
    stops_unwrapped,
    unrunnable_script,
)
from .checkpoint import WORK_FOLDER, Checkpoints, work_key
from .config import ApiSettings
from .core import (
    NoUsableTrackError,
    PipelineOptions,
    bars_wanted,
    keyed_settings,
    run_meeting,
    runtime_versions,
)
from .signing import SigningKey, SigningKeyError, keep_signed

__all__ = ["process_meeting", "run_batch"]

log = logging.getLogger(f"trackscribe.{__name__}")


class _Done(BaseModel):
    key: str
    status: Literal["done", "partial"]
    duration_s: float
    reason: str | None = None
    formats: list[str] = []  # exported last; another choice is written from the transcript
    signed_by: str | None = None  # the bundle's key: another is written from the transcript
    # The job and settings as asked (not the inputs' bytes, which take reading): how
    # --retry-failed, which reads no input, tells a meeting done otherwise than asked now.
    asked: str | None = None
    # The user ids a meeting job's recording was fetched for ([]: everyone; None: not noted,
    # by an earlier version): a recording fetched for others is not this job's to reuse.
    users: list[str] | None = None


_NO_BUNDLE_TO_SIGN = "a signing key signs the compliance bundle: add bundle to formats"


def run_batch(
    jobs: Sequence[Job | Mapping[str, Any]] | Path | str,
    out: Path | str,
    *,
    options: PipelineOptions | Mapping[str, Any] | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    api: ApiSettings | None = None,
    formats: Sequence[str] | str = DEFAULT_FORMATS,
    signing_key: SigningKey | None = None,
    retry_failed: bool = False,
    progress: bool | None = None,
) -> BatchSummary:
    """Transcribe every meeting of ``jobs`` (a JOBS file, or a list of jobs or of dicts of
    the same fields) into ``out/<meeting>``, in ``formats`` (one name or several).

    ``workers`` local processes each take one meeting at a time with a model of their own;
    ``scheduler`` (``tcp://host:port``) runs the same work on a Dask cluster instead. A plain
    re-run redoes what failed and skips what is done (also a meeting done with input lost,
    whose inputs have not changed); with ``retry_failed``, only the meetings that failed or
    lost input in the last run are done, those with lost input again from their checkpoints.
    With ``signing_key``, each meeting's bundle (``formats`` must hold it) is signed with it;
    the workers read the key from its path themselves. ``api`` is needed for jobs that fetch
    or record from RealtimeKit; every meeting to be recorded has its recording started first,
    as those meetings are under way. Returns the summary also saved as ``out/summary.json``.
    One batch at a time writes into ``out``: while another runs there, this one raises
    :class:`OSError` (``errno.EBUSY``) before doing anything.
    """
    refuse_in_rerun_script("run_batch")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number, 1 or more, not {workers!r}")
    formats = formats_to_write(formats)  # one clear error before any work, not one per meeting
    if signing_key is not None and "bundle" not in formats:
        raise ValueError(_NO_BUNDLE_TO_SIGN)
    options = PipelineOptions.model_validate(options or {})  # a dict, as in a notebook
    jobs = load_jobs(Path(jobs)) if isinstance(jobs, str | Path) else _as_jobs(jobs)
    out = Path(out)
    with writing(out / BATCH_SUMMARY):  # a file in the way is named, as export names it
        out.mkdir(parents=True, exist_ok=True)
    # One batch at a time writes the summary: a second one would overwrite it with only its
    # own meetings. Holding the lock also makes a killed run's half-written summary nobody's.
    with _exclusive(out, busy="another batch is writing its results here; let it end first"):
        remove_unfinished_writes(out, BATCH_SUMMARY)  # the rest of OUT may be the user's
        jobs = _in_folders_found(jobs, out)
        if scheduler is None:  # a cluster's workers may see folders this machine does not
            check_model(options.transcribe.model)  # one clear error, not one per meeting
        results = _done_last_time(out) if retry_failed else {}
        _warn_of_outputs_kept(
            out, [j for j in jobs if j.folder_name in results], options, formats, signing_key
        )
        order = [j.folder_name for j in jobs]  # the summary lists meetings as JOBS does
        todo = [j for j in jobs if j.folder_name not in results]
        for job in todo:  # one clear error before any work, not a failure per meeting
            keep_signed(out / job.folder_name, signing_key, _signed_by(out / job.folder_name))
        # Until its result comes, a meeting is listed as pending: a summary left by a run that
        # was stopped or killed must not read as a smaller batch that all went well.
        results |= {
            j.folder_name: MeetingResult(
                job=j.folder_name, status="pending", folder=str(out.resolve() / j.folder_name)
            )
            for j in todo
        }

        unsaved: WriteError | None = None  # why the summary of the results so far is not saved

        def record(result: MeetingResult | None = None) -> None:
            nonlocal unsaved
            if result is not None:
                results[result.job] = result
            try:
                BatchSummary(meetings=[results[n] for n in order]).save(out / BATCH_SUMMARY)
                unsaved = None
            except WriteError as exc:
                # A full disk, say: the meetings still to come may fit once it has room (each
                # gives back its decoded audio, done or not), and the next result tries again.
                log.error("%s; the meetings go on", exc)
                unsaved = exc

        work = _Work(
            out=out.resolve(),
            options=options,
            api=api,
            formats=tuple(formats),
            signing_key=signing_key,
            retry_partial=retry_failed,
        )
        if scheduler and workers > 1:
            log.warning("--workers is ignored with --scheduler: the cluster's workers do the work")
        # Closed here if anything fails (the summary cannot be written, say), so that its
        # workers stop within the lock rather than go on unseen after it is released.
        with (
            dask_client(scheduler) if scheduler else nullcontext() as cluster,
            closing(
                on_dask(todo, work, cluster)
                if cluster is not None
                else _on_processes(todo, work, workers)
            ) as runs,
            tqdm(
                total=len(todo), desc="meetings", unit="meeting", disable=not bars_wanted(progress)
            ) as bar,
        ):
            # Once the work can be run (a cluster that cannot be reached stops it first).
            record()
            if unsaved is not None:  # before any work: a folder in its place, say
                raise unsaved
            if api is not None:
                _start_recordings([j for j in todo if j.meeting_id], out, api)
            for result in runs:
                record(result)
                bar.update()
                log.info("%s: %s", result.job, result.status)
        if unsaved is not None:  # every meeting has been tried; their summary is what is lost
            raise unsaved
        return BatchSummary(meetings=[results[n] for n in order])


def _as_jobs(jobs: Sequence[Job | Mapping[str, Any]]) -> list[Job]:
    """The jobs, each given as a :class:`Job` or as a dict of a JOBS line's fields.

    A relative manifest path is made absolute here, against the current folder, as a JOBS
    file's are against its own: a cluster's workers run elsewhere, and the meeting's folder
    name is made from the path.
    """
    if isinstance(jobs, Mapping) or not isinstance(jobs, Sequence):
        raise TypeError(
            f"jobs must be a JOBS file's path or a list of jobs, not {type(jobs).__name__}"
        )
    checked = []
    for number, job in enumerate(jobs, 1):
        try:
            job = job if isinstance(job, Job) else Job.model_validate(job)
        except ValidationError as exc:
            raise JobsError(f"job {number}: {describe(exc)}") from None
        if job.manifest is not None and not job.manifest.is_absolute():
            job = job.model_copy(update={"manifest": job.manifest.resolve()})
        checked.append(job)
    if not checked:
        raise JobsError("no jobs given")
    refuse_shared(checked)
    return checked


def _in_folders_found(jobs: list[Job], out: Path) -> list[Job]:
    """Each job, in the folder an earlier version named for it where that one is there and
    the one of the current name is not: a meeting job done in a folder of its own again would
    start a second recording of its meeting."""
    found = []
    for job in jobs:
        name, older = job.folder_names
        if older != name and (out / older).is_dir() and not (out / name).exists():
            job = job.in_older_folder()
        found.append(job)
    return found


def _done_last_time(out: Path) -> dict[str, MeetingResult]:
    """The meetings the last run's summary says were done, for ``--retry-failed`` to skip;
    shown as a plain re-run shows a meeting it skips: done earlier, not timed now, and in its
    folder under ``out`` (the summary's may be where ``out`` was when it was written)."""
    if not (out / BATCH_SUMMARY).exists():
        return {}
    try:
        previous = BatchSummary.load(out / BATCH_SUMMARY).meetings
    except SummaryError as exc:
        raise SummaryError(
            f"{exc}; so it cannot tell what failed last time: run without --retry-failed "
            "(finished meetings are skipped anyway)"
        ) from None
    earlier = {"reused": True, "wall_s": None, "realtime_factor": None}
    skipped = {}
    for m in previous:
        # A folder removed or emptied since is not done, whatever the summary says.
        if m.status == "done" and (finished := _read_done(out / m.job)) is not None:
            now = {"signed_by": finished.signed_by, "folder": str(out.resolve() / m.job)}
            skipped[m.job] = m.model_copy(update=earlier | now)
    return skipped


def _signed_by(folder: Path) -> str | None:
    """Whose key the meeting's bundle is signed with, as its folder says (a summary written
    by an earlier version does not)."""
    done = _read_done(folder)
    return done.signed_by if done is not None else None


def _warn_of_outputs_kept(
    out: Path,
    kept: list[Job],
    options: PipelineOptions,
    formats: Sequence[str],
    signing_key: SigningKey | None,
) -> None:
    """Say which meetings ``--retry-failed`` leaves as done for another job or with other
    settings, or written in other formats, or with a bundle signed otherwise, than this run
    asks for: it does not touch them, and a reviewer handed the folder would find another
    transcript, other outputs or another signature than the command suggests."""
    wanted = sorted(set(formats))
    fingerprint = signing_key.fingerprint if signing_key is not None else None
    otherwise, differ, signed = [], [], []
    for job in kept:
        name = job.folder_name
        done = _read_done(out / name)
        if done is None:
            continue
        if done.asked is not None and done.asked != _asked(job, options):
            otherwise.append(name)
        if fingerprint is None and done.signed_by and "bundle" in wanted:
            signed.append(name)  # written again only with a key: no re-run without one helps
        elif done.formats != wanted or ("bundle" in wanted and done.signed_by != fingerprint):
            differ.append(name)
    if otherwise:
        log.warning(
            "--retry-failed leaves %d meeting(s) done last time for another job or with other "
            "settings than asked now, as they were: %s; run without --retry-failed to do them "
            "as asked",
            len(otherwise),
            ", ".join(otherwise),
        )
    if differ:
        log.warning(
            "--retry-failed leaves %d meeting(s) done last time as they were written, in other "
            "formats or signed otherwise than asked now: %s; run without --retry-failed to "
            "write them again from their transcripts",
            len(differ),
            ", ".join(differ),
        )
    if signed:
        log.warning(
            "--retry-failed leaves %d meeting(s) done last time with their bundles signed, "
            "where this run has no signing key: %s",
            len(signed),
            ", ".join(signed),
        )


def process_meeting(
    job: Job,
    folder: Path,
    options: PipelineOptions,
    api: ApiSettings | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
    decode_workers: int | None = 1,
    retry_partial: bool = False,
    decode_apart: bool = False,
    signing_key: SigningKey | None = None,
) -> MeetingResult:
    """Do one meeting in ``folder``, taking whatever an earlier run finished. Whatever goes
    wrong with the meeting is its failure, with its reason; only arguments that cannot go
    together (a ``signing_key`` with no bundle in ``formats``) raise :class:`ValueError`.

    One process at a time works in a folder (a lock): a worker of a killed run that is still
    finishing a meeting is waited for, never raced, so no track is transcribed twice.
    ``retry_partial`` redoes a meeting that was finished with input lost. ``decode_workers``
    and ``decode_apart`` are :func:`run_meeting`'s ``workers`` and ``decode_apart``; the
    bundle is signed with ``signing_key``, if one is given.
    """
    if signing_key is not None and "bundle" not in formats:
        raise ValueError(_NO_BUNDLE_TO_SIGN)
    started = time.perf_counter()
    folder = Path(folder).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _exclusive(folder), stops_unwrapped():  # a stop is no meeting's failure
            return _process(
                job,
                folder,
                options,
                api,
                formats,
                decode_workers,
                decode_apart,
                retry_partial,
                started,
                signing_key,
            )
    except Exception as exc:
        reason = _reason(exc)
        log.error("%s: failed: %s", job.folder_name, reason)
        return MeetingResult(
            job=job.folder_name,
            status="failed",
            folder=str(folder),
            wall_s=round(time.perf_counter() - started, 3),
            reason=reason,
        )


def _reason(exc: Exception) -> str:
    """Why a meeting failed, on one line. Ours say what and where; anything else is named by
    its type (a bare KeyError's text is just a key). Neither with a secret in it."""
    explained = isinstance(exc, _EXPLAINED) and str(exc)
    return one_line(redact_urls(str(exc)) if explained else describe_error(exc))


_EXPLAINED = (
    NoUsableTrackError,
    ManifestError,
    FetchError,
    RealtimeKitError,
    ModelError,
    SigningKeyError,
)
"""Errors whose message names the file or field and the reason, as the command line shows it."""


@contextmanager
def _exclusive(folder: Path, *, busy: str | None = None) -> Iterator[None]:
    """Hold ``folder``'s lock (a file, as a directory cannot be locked over NFS): wait for
    whoever holds it, or, given ``busy``, refuse at once with that reason."""
    path = folder / WORK_FOLDER / "lock"
    with writing(path):  # ".work" made a file by hand: named as such, not as "File exists"
        path.parent.mkdir(exist_ok=True)
        opened = path.open("a")
    with opened as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if busy is not None:
                raise OSError(errno.EBUSY, busy, str(folder)) from None
            log.warning("%s: another process is working on this meeting; waiting", folder)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _process(
    job: Job,
    folder: Path,
    options: PipelineOptions,
    api: ApiSettings | None,
    formats: Sequence[str],
    decode_workers: int | None,
    decode_apart: bool,
    retry_partial: bool,
    started: float,
    signing_key: SigningKey | None,
) -> MeetingResult:
    # This process holds the meeting's lock, so what a killed run left half-written (an
    # output, a checkpoint) is nobody's: removed, whether the meeting is done again or not.
    # A half-downloaded track is not among them; it is resumed.
    for written in (folder, folder / remote.RECORDING_FOLDER):
        remove_unfinished_writes(written)
    # What would stop the meeting, before its inputs cost a download.
    done = _read_done(folder)
    keep_signed(folder, signing_key, done.signed_by if done is not None else None)
    wanted = sorted(set(formats))
    signer, signed_by = None, None
    if signing_key is not None:  # process_meeting saw to it that the bundle is wanted
        signing_key.check()  # a worker reads it here: one gone or changed fails this meeting
        signer, signed_by = signing_key.sign, signing_key.fingerprint
    checkpoints = Checkpoints(folder / WORK_FOLDER)
    checkpoints.drop_partial()
    if done is not None and job.manifest is None and done.users not in (None, job.asked_users):
        # Taken away before anything that may fail (the API out of reach, a fetch that gets
        # nothing): a participant the job leaves out since must not stay in a transcript
        # still marked done.
        _no_longer_current(folder, checkpoints, done, "its user_ids changed")
        done = None
    earlier = _reusable_manifest(job, folder, done, options)
    try:
        manifest, missing = (earlier, []) if earlier is not None else _inputs(job, folder, api)
    except ManifestError:
        if done is not None and job.manifest is not None:
            absent = not Manifest.file_at(job.manifest).exists()
            if absent and done.asked in (None, _asked(job, options)):
                # Gone is not changed: moved away, or on a share not mounted this time (and
                # the job still asks for what was done, not for a manifest elsewhere).
                why = f"its manifest {job.manifest} is not there"
                return _kept(job, folder, checkpoints, done, why)
            # The manifest changed since (it is what cannot be read): what was made from
            # the old one no longer stands for this meeting.
            _no_longer_current(folder, checkpoints, done, "its manifest can no longer be read")
        raise
    manifest = _named(job, manifest)
    key = _meeting_key(manifest, options)
    # A track deleted after it was transcribed (a retention policy), or unreadable for the
    # moment (a share's permissions, an I/O error), is not a new input: taken to be the bytes
    # that were transcribed (or else the manifest's checksum), the meeting is as it was done.
    # Done again, it would only lose that track.
    if done is not None and done.key != key and (unread := _unread(manifest)):
        kept = checkpoints.transcript()
        known = {t.path: t.sha256 for t in manifest.tracks} | (
            {i.path: i.sha256 for i in kept.provenance.inputs} if kept else {}
        )
        if _meeting_key(manifest, options, absent=known) == done.key:
            why = "; ".join(f"{path}: {reason}" for path, reason in unread.items())
            return _kept(job, folder, checkpoints, done, why)
    if done is not None and done.signed_by and signed_by != done.signed_by and "bundle" in wanted:
        log.warning(
            "%s: its bundle was signed with the key %s; it is written again %s",
            folder,
            done.signed_by,
            f"signed with {signed_by}" if signed_by else "unsigned (the signed one was removed)",
        )
    if done is not None and done.key == key and not (retry_partial and done.status == "partial"):
        intact = _as_written(folder, wanted)
        if intact and done.formats == wanted and done.signed_by == signed_by:
            return _result(job, folder, _as_asked_now(folder, done, job, options), reused=True)
        # Other formats or another key asked for, or an output deleted, damaged or edited by
        # hand: the transcript is current, so only the exports are written again (and a
        # missing kept transcript, from the checkpoints below). It is the last one made: a
        # run that makes another removes it first, and keeps the new one before exporting it.
        if (kept := checkpoints.transcript()) is not None:
            export(kept, folder, wanted, replace=True, signer=signer)
            done = _done(key, job, options, kept, done.duration_s, wanted, signed_by)
            atomic_write_text(folder / DONE_FILE, done.model_dump_json(indent=2) + "\n")
            _journal_exported(checkpoints, key, _sha256_of(kept), wanted, signed_by)
            log.info("%s: wrote %s from its transcript", folder, ", ".join(wanted))
            return _result(job, folder, done, reused=True)
    if earlier is not None and done is not None and done.status == "partial":
        # To be done again: what its fetch could not get is not in the manifest, and only
        # fetching again (which skips the files already here) says what it was.
        manifest, missing = _inputs(job, folder, api)
        manifest = _named(job, manifest)
        key = _meeting_key(manifest, options)
    # Loaded before anything is withdrawn: a model that cannot be loaded fails the meeting,
    # and must not take its earlier transcript with it.
    transcriber = Transcriber(options.transcribe)  # the model is cached: one per process
    if done is not None and done.key != key:
        # Made from other inputs or settings: whatever happens now, it no longer stands for
        # this meeting (a run that fails must not leave it looking current).
        why = "its inputs or settings changed, so it is done again"
        _no_longer_current(folder, checkpoints, done, why)
    checkpoints.drop_transcript()  # about to be made anew, whatever happens to this run
    try:
        run = run_meeting(
            manifest,
            options=options,
            progress=False,
            workers=decode_workers,
            decode_apart=decode_apart,
            transcriber=transcriber,
            checkpoints=checkpoints,
        )
    finally:
        # Large and cheap to make again: never left behind, least of all by a meeting that
        # failed for want of disk space, where it would fail every meeting after it too.
        checkpoints.drop_pcm()
    transcript = run.transcript
    transcript.provenance.failures.extend(missing)  # what the fetch could not get at all
    checkpoints.save_transcript(transcript)
    sha256 = _sha256_of(transcript)
    checkpoints.journal("merged", key=key, sha256=sha256)
    if dropped := checkpoints.drop_unused():  # a user left out, earlier settings
        checkpoints.journal("dropped", why="not what this transcript was made from", files=dropped)
    export(transcript, folder, wanted, replace=True, signer=signer)
    meeting_s = round(run.stats.meeting_s, 3)
    done = _done(key, job, options, transcript, meeting_s, wanted, signed_by)
    atomic_write_text(folder / DONE_FILE, done.model_dump_json(indent=2) + "\n")
    _journal_exported(checkpoints, key, sha256, wanted, signed_by)
    return _result(job, folder, done, wall_s=time.perf_counter() - started)


def _kept(job: Job, folder: Path, checkpoints: Checkpoints, done: _Done, why: str) -> MeetingResult:
    """The meeting as an earlier run did it, though an input it was made from is gone: a
    re-run that cannot read it must not take away, or redo worse, what was made of it."""
    note = f"{why}; what was made from it earlier is kept"
    log.warning("%s: %s", folder, note)
    checkpoints.journal("kept", key=done.key, why=why)
    result = _result(job, folder, done, reused=True)
    return result.model_copy(update={"reason": "; ".join(filter(None, [result.reason, note]))})


def _no_longer_current(folder: Path, checkpoints: Checkpoints, done: _Done, why: str) -> None:
    """Take away the mark and the exports of what was made for this meeting before."""
    (folder / DONE_FILE).unlink(missing_ok=True)
    files = [path.name for path in withdraw(folder)]
    removed = ", ".join(files)
    log.warning("%s: %s%s", folder, why, f"; removed the earlier {removed}" if removed else "")
    checkpoints.journal("withdrawn", key=done.key, why=why, files=files)


def _journal_exported(
    checkpoints: Checkpoints,
    key: str,
    sha256: str,
    formats: list[str],
    signed_by: str | None,
) -> None:
    """Journal the outputs written, with the SHA-256 of the transcript JSON they show
    (:func:`_sha256_of`, as the folder's record names it): which transcript a meeting's
    folder held, and when."""
    checkpoints.journal("exported", key=key, sha256=sha256, formats=formats, signed_by=signed_by)


def _sha256_of(transcript: Transcript) -> str:
    return hashlib.sha256(transcript.to_json().encode()).hexdigest()


def _asked(job: Job, options: PipelineOptions) -> str:
    return work_key("asked", job.model_dump(mode="json"), options.result_settings())


def _as_asked_now(folder: Path, done: _Done, job: Job, options: PipelineOptions) -> _Done:
    """``done``, found current for the job and settings asked now, noted as done for them:
    else a meeting job asked for its users otherwise (the same files) would be fetched again
    on every run, and ``--retry-failed`` would warn of it as done otherwise than asked."""
    now = {"asked": _asked(job, options), "users": job.asked_users}
    if done.model_dump(include=set(now)) != now:
        done = done.model_copy(update=now)
        atomic_write_text(folder / DONE_FILE, done.model_dump_json(indent=2) + "\n")
    return done


def _done(
    key: str,
    job: Job,
    options: PipelineOptions,
    transcript: Transcript,
    duration_s: float,
    formats: list[str],
    signed_by: str | None,
) -> _Done:
    return _Done(
        key=key,
        asked=_asked(job, options),
        users=job.asked_users,
        status="partial" if transcript.partial else "done",
        duration_s=duration_s,
        reason=" ".join("; ".join(transcript.problems()).split()) or None,
        formats=formats,
        signed_by=signed_by,
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
        signed_by=done.signed_by,
    )


def _read_done(folder: Path) -> _Done | None:
    try:
        return _Done.model_validate_json((folder / DONE_FILE).read_bytes())
    except (OSError, ValueError):
        return None


def _reusable_manifest(
    job: Job, folder: Path, done: _Done | None, options: PipelineOptions
) -> Manifest | None:
    """For a job that fetches, the manifest an earlier run fetched for the same users, if it
    has one: a meeting already done must not cost a call to the API. Fetched for other users,
    it is fetched again (the files here are kept), for these: a participant the job leaves out
    since must not stay in its transcript."""
    fetched = folder / remote.RECORDING_FOLDER / MANIFEST_FILE
    if job.manifest is not None or not fetched.exists() or done is None:
        return None
    # Done for other users, the caller has withdrawn it already; one done by an earlier
    # version, which noted only the job as a whole, was done for these users if for this job.
    if done.users is None and done.asked != _asked(job, options):
        return None
    manifest = Manifest.load(fetched)
    # A job since pointed at another meeting or recording is not done by what is there.
    if job.meeting_id not in (None, manifest.meeting_id):
        return None
    if job.recording_id not in (None, manifest.recording_id):
        return None
    return manifest


def _inputs(job: Job, folder: Path, api: ApiSettings | None) -> tuple[Manifest, list[TrackFailure]]:
    """The job's manifest, and what its recording holds that this fetch did not get: a file
    whose download failed for a reason that may pass (its reason says ``--retry-failed``
    fetches it again), or what no fetch can get (storage has no such file, one download URL,
    a file whose start cannot be placed). The meeting is then done in part: a file that never
    arrives must not keep the others from their transcript."""
    if job.manifest is not None:
        return Manifest.load(job.manifest), []
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
            # The batch shows one bar, of meetings: bars of files, from meetings run side by
            # side, would tangle with it.
            options=FetchOptions(progress=False),
        )
    if result.manifest is None:  # nothing arrived that can be used
        reasons = "; ".join(f.reason for f in result.lost)
        raise NoUsableTrackError(f"no file of the recording can be used: {reasons}")
    _keep_only_fetched(
        target, [t.path for t in result.manifest.tracks] + [f.path for f in result.lost]
    )
    failed = [
        failure.model_copy(
            update={"reason": f"{failure.reason} (not fetched: --retry-failed tries again)"}
        )
        for failure in result.failures
    ]
    return result.manifest, [*failed, *result.missing]


def _keep_only_fetched(target: Path, wanted: Sequence[str]) -> None:
    """Remove from the meeting's recording folder the files this fetch did not ask for: a
    participant the job has since left out (their audio must not stay beside the transcript
    that leaves them out), or an interrupted download of theirs. The folder is the batch's
    own; what this fetch got, or may yet resume, stays."""
    kept = {PurePosixPath(path).name for path in wanted}
    removed = []
    for path in sorted((target / TRACKS_FOLDER).iterdir()):
        if download_of(path.name) not in kept and path.is_file():
            path.unlink()
            removed.append(path.name)
    if removed:
        log.info("%s: removed %s, not asked for by this job", target, ", ".join(removed))


def _start_recordings(jobs: Sequence[Job], out: Path, api: ApiSettings) -> None:
    """Start the recording of every meeting to be recorded, before any meeting is done.

    Those meetings are under way now: a recording that waited for its turn, behind meetings
    being recorded, uploaded and transcribed, would miss what was said meanwhile. Each start
    is tried once, so that an API out of reach holds nothing up for long; one that fails here
    is only early: the meeting's turn tries again, as hard as ever, or fails with the reason.
    """
    if not jobs:
        return
    log.info("starting the recordings of %d meeting(s)", len(jobs))
    try:
        client = api.client(retry=RetryPolicy(attempts=1))
    except Exception as exc:  # settings missing: each meeting's turn says so
        log.warning("recordings not started yet: %s", _reason(exc))
        return
    with client:
        for job in jobs:
            folder = out / job.folder_name
            try:
                folder.mkdir(exist_ok=True)
                # Busy: a worker of a killed run is on it, and has started it.
                with _exclusive(folder, busy="another process is working on this meeting"):
                    _started_recording(job, folder, client)
            except Exception as exc:  # the meeting's own turn tells, if it fails again
                log.warning("%s: recording not started yet: %s", job.folder_name, _reason(exc))


def _started_recording(job: Job, folder: Path, client: "remote.RealtimeKitClient") -> str:
    """The recording this job started; started now if no earlier run did. Remembered at once,
    so a crash while waiting never makes a second recording of the same meeting. A recording
    remembered for another meeting (the job was pointed elsewhere since) is not this job's."""
    assert job.meeting_id is not None
    marker = folder / STARTED_FILE
    if marker.exists():
        text = marker.read_text(encoding="utf-8").strip()
        try:
            started = json.loads(text)
        except (ValueError, RecursionError):
            started = None
        if not isinstance(started, dict):  # written by a version that kept the bare id
            return text
        if started.get("meeting_id") == job.meeting_id:
            return started["recording_id"]
        log.warning(
            "%s: the recording started earlier was of meeting %s; starting one of %s",
            job.folder_name,
            started.get("meeting_id"),
            job.meeting_id,
        )
    recording = client.start_track_recording(job.meeting_id, user_ids=list(job.user_ids) or None)
    marker_text = json.dumps({"recording_id": recording.id, "meeting_id": job.meeting_id})
    atomic_write_text(marker, marker_text + "\n")
    return recording.id


def _named(job: Job, manifest: Manifest) -> Manifest:
    """The manifest with the job's display names applied (they win over the manifest's)."""
    if not job.names:
        return manifest
    tracks = [
        t.model_copy(update={"display_name": job.names.get(t.user_id, t.display_name)})
        for t in manifest.tracks
    ]
    return manifest.model_copy(update={"tracks": tracks})


def _meeting_key(
    manifest: Manifest,
    options: PipelineOptions,
    *,
    absent: Mapping[str, str | None] | None = None,
) -> str:
    """Everything a meeting's transcript depends on: the whole manifest (ids, names, times, the
    checksums it expects: the provenance repeats them), each file's bytes, every setting but
    how many threads did the work (the model as what it is, not where), and the software.
    Not the output formats: they are written from the transcript. Nor the bytes of a track
    left out for its start (the manifest's times say which): the run never reads them.
    ``absent``: track path -> the SHA-256 a file that is not there counts as."""
    unplaced = manifest.unplaced_tracks()
    hashes = [
        None if i in unplaced else _file_hash(manifest, t, absent or {})
        for i, t in enumerate(manifest.tracks)
    ]
    return work_key(
        "meeting",
        manifest.model_dump(mode="json"),
        hashes,
        keyed_settings(options),
        runtime_versions(),
    )


def _file_hash(manifest: Manifest, track: Track, absent: Mapping[str, str | None]) -> str | None:
    try:
        return sha256_file(manifest.track_path(track))
    except OSError:  # gone, or unreadable for now: what ``absent`` says it was, if anything
        return absent.get(track.path)


def _unread(manifest: Manifest) -> dict[str, str]:
    """The tracks whose bytes cannot be read now, each with why."""
    unread = {}
    for track in manifest.tracks:
        try:
            sha256_file(manifest.track_path(track))
        except FileNotFoundError:
            unread[track.path] = "no longer there"
        except OSError as exc:
            unread[track.path] = f"cannot be read now ({exc.strerror or exc})"
    return unread


@dataclass(frozen=True)
class _Work:
    """What every meeting of a run is done with; picklable, for worker processes and Dask."""

    out: Path
    options: PipelineOptions
    api: ApiSettings | None
    formats: tuple[str, ...]
    signing_key: SigningKey | None
    retry_partial: bool

    def __call__(
        self, job: Job, decode_workers: int | None = 1, decode_apart: bool = False
    ) -> MeetingResult:
        with interruptible():  # Ctrl-C stops a worker's meeting, not its waiting for one
            return process_meeting(
                job,
                self.out / job.folder_name,
                self.options,
                self.api,
                self.formats,
                decode_workers,
                retry_partial=self.retry_partial,
                decode_apart=decode_apart,
                signing_key=self.signing_key,
            )


def _on_processes(
    jobs: Sequence[Job], work: _Work, workers: int
) -> Generator[MeetingResult, None, None]:
    """Here, one meeting after another (tracks decoded in parallel), or in ``workers``
    processes, one meeting each at a time (tracks decoded in that process).

    Each worker is a pool of its own, given one meeting at a time, so that a worker that
    dies (a decoder that crashed on a damaged file, the out-of-memory killer) is known to
    have been doing that meeting and no other: the meetings beside it, and those not begun,
    go on. The lost meeting gets one more try in a new worker, decoding each track in a
    process apart, so that a file that kills its decoder costs only its own track; lost
    again, it fails."""
    if workers > 1 and len(jobs) > 1 and (reason := unrunnable_script()):
        log.warning("doing the meetings here, one at a time: %s", reason)
        workers = 1
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield work(job, None)
        return
    slots = min(workers, len(jobs))
    work = replace(work, options=_share_cores(work.options, slots))
    context = multiprocessing.get_context("forkserver")
    waiting = deque((job, False) for job in jobs)  # (job, tracks decoded apart)
    # Workers log through the batch's logging and stop when it is killed, even with -9,
    # rather than finish meetings unseen; Ctrl-C stops them as it does the batch.
    with WorkerLink(context, ignore_interrupt=False) as link:
        pools = [link.pool(1) for _ in range(slots)]
        running: dict[Future[MeetingResult], tuple[int, Job, bool]] = {}

        def renew(slot: int) -> None:
            pools[slot].shutdown(wait=True)
            pools[slot] = link.pool(1)

        def give(slot: int) -> None:
            if not waiting:
                return
            job, apart = waiting.popleft()
            with interrupts_held():
                try:
                    future = pools[slot].submit(work, job, 1, apart)
                except BrokenProcessPool:  # its worker died between meetings: not this one's
                    renew(slot)
                    future = pools[slot].submit(work, job, 1, apart)
            running[future] = (slot, job, apart)

        try:
            for slot in range(slots):
                give(slot)
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    slot, job, apart = running.pop(future)
                    lost = isinstance(future.exception(), BrokenProcessPool)
                    if lost:
                        renew(slot)
                    if lost and not apart:
                        log.warning(
                            "%s: the worker doing it died; it gets another try, each track "
                            "decoded in a process apart",
                            job.folder_name,
                        )
                        waiting.appendleft((job, True))
                    else:
                        yield _outcome(future, job, work.out)
                    give(slot)
        except BaseException:
            # Stopped early (Ctrl-C, SIGTERM, or the caller stopped asking): the meetings
            # running stop too, and what they finished stays for a re-run.
            for pool in pools:
                link.stop(pool)
            raise
        finally:
            for pool in pools:
                pool.shutdown(wait=True)


def _as_written(folder: Path, formats: Sequence[str]) -> bool:
    """Whether each of ``formats`` is in ``folder`` with the bytes its record says were
    written there (with no record, whether it is there). One changed since (a file cut short
    by a full disk, an edit) is said, and is then written again from the transcript: a
    finished meeting's outputs are what it renders to, as ``verify`` checks."""
    try:
        written = recorded(folder)
    except OSError:
        written = None
    if written is None:  # no record to check them against (it could not be written)
        return all((folder / FORMATS[f][0]).exists() for f in formats)
    intact = True
    for name in (FORMATS[f][0] for f in formats):
        try:
            same = sha256_file(folder / name) == written.get(name)
        except OSError:  # not there: written again, nothing to say
            intact = False
            continue
        if not same:
            log.warning("%s: changed since it was written; written again", folder / name)
            intact = False
    return intact


def _share_cores(options: PipelineOptions, workers: int) -> PipelineOptions:
    """Each worker's model gets its share of the cores, so that N workers do not run N times
    the threads there are cores for. Transcripts do not depend on it (a track's batches are
    its own, whatever runs beside them)."""
    cores = usable_cores()
    transcribe = options.transcribe
    parallel = max(1, min(transcribe.parallel, cores // workers))
    threads = transcribe.cpu_threads or max(1, cores // (workers * parallel))
    return options.model_copy(
        update={
            "transcribe": transcribe.model_copy(
                update={"parallel": parallel, "cpu_threads": threads}
            )
        }
    )


def _outcome(future: "Future[MeetingResult]", job: Job, out: Path) -> MeetingResult:
    """A meeting's result, or its failure when the worker itself died (killed, out of
    memory)."""
    try:
        return future.result()
    except Exception as exc:
        return worker_lost(job, out, exc)
