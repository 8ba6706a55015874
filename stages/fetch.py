"""Download every file of an uploaded track recording into a manifest folder.

Files stream to ``tracks/.NAME.part`` and are renamed into place only once their size (and,
where the storage sends one, their MD5 ``ETag``) check out, so a file under its final name is
always whole. An interrupted download resumes from its ``.part`` with an HTTP ``Range`` and
``If-Range`` (the ETag its bytes came with, kept beside it), so that bytes of a file that has
since changed are never completed with another file's; an
expired pre-signed URL is replaced by asking the API for the recording again; a re-run skips
files that are already complete. Names from the API are sanitised before they touch the disk.
"""

import contextlib
import hashlib
import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm.auto import tqdm

from models import (
    MANIFEST_FILE,
    UNSENDABLE,
    Manifest,
    ManifestError,
    Recording,
    RecordingFile,
    RetryPolicy,
    Track,
    TrackFailure,
    TrackFileName,
    atomic_write_text,
    describe,
    describe_error,
    format_utc,
    in_this_context,
    outlying_starts,
    parse_file_names,
    protect_http_logs,
    redact_urls,
    safe_file_name,
    shown_retry_after,
)

__all__ = [
    "TRACKS_FOLDER",
    "FetchError",
    "FetchOptions",
    "FetchResult",
    "download_of",
    "fetch_recording",
]

log = logging.getLogger(f"trackscribe.{__name__}")
_T = TypeVar("_T")
protect_http_logs()

TRACKS_FOLDER = "tracks"
_GONE = frozenset({404, 410})
"""Statuses that say a file is not in storage: lost for good (S3 is strongly consistent)."""
_EXPIRED_CODES = frozenset({"ExpiredToken", "RequestExpired", "TokenRefreshRequired"})
"""S3 error codes of a 400 for a pre-signed URL whose credentials ran out: renewed like a 403."""
_CODE_SHOWN = 100
"""The most of a storage's error code said in an error."""
_CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a storage host to accept a connection. Apart from the read timeout
(``FetchOptions.timeout``, a minute without data): a host out of reach fails a try in seconds,
not a minute, and the tries left go to the next."""


class FetchError(Exception):
    """A file could not be fetched; the message names it and says why (never its URL's query)."""


class _Lasting(FetchError):
    """A file no fetch again will get: storage says it is not there (404 or 410), the
    recording no longer lists it or gives it no download URL,
    or its URL or name cannot be used. Raised where that is found, so that one place
    (:func:`_attempt`) tells it from a failure that may pass, which a re-run resumes."""


@dataclass(frozen=True)
class _Failed:
    """Why a file was not fetched, and whether that lasts (no fetch again gets it)."""

    reason: str
    lasting: bool


_Outcome = tuple[int, str, bool] | _Failed
"""A fetched file's (size, sha256, already there), or why it was not."""


class FetchOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    concurrency: int = Field(default=4, ge=1, description="files downloaded at once")
    timeout: float = Field(default=60.0, gt=0, description="seconds without data before giving up")
    retry: RetryPolicy = RetryPolicy()
    progress: bool | None = Field(
        default=None,
        description="draw a progress bar; None: the caller decides (here, none is drawn; "
        "trackscribe's pipeline draws one where someone watches)",
    )


class FetchResult(BaseModel):
    """The manifest of what arrived, and what did not, so the rest can go on."""

    manifest: Manifest | None
    failures: list[TrackFailure] = Field(
        default_factory=list,
        description="files not fetched this time, for a reason that may pass (the network, "
        "storage busy or failing, a refused URL the API could not renew, another 4xx, no room "
        "to write, a stop): a re-run resumes them (each has fetch_again set)",
    )
    missing: list[TrackFailure] = Field(
        default_factory=list,
        description="what no re-run will get: files storage says are not there (404, 410), "
        "that the recording no longer lists, lists with no download URL or an "
        "entry that cannot be read, or does not list (one download URL), whose URL or name "
        "cannot be used, or whose start cannot be placed",
    )
    skipped: int = Field(default=0, description="files already complete from an earlier run")

    @property
    def lost(self) -> list[TrackFailure]:
        """Everything the manifest lacks, for a transcript's provenance."""
        return [*self.failures, *self.missing]


def fetch_recording(
    recording: Recording,
    out_dir: Path,
    *,
    refresh: Callable[[], Recording],
    meeting_id: str | None = None,
    user_ids: Sequence[str] = (),
    display_names: Mapping[str, str] | None = None,
    options: FetchOptions | None = None,
) -> FetchResult:
    """Fetch ``recording``'s files into ``out_dir/tracks`` and write ``out_dir/manifest.json``.

    ``refresh`` gets the recording again (fresh pre-signed URLs) when one has expired.
    ``meeting_id`` goes into the manifest (else the recording's, else its id). With
    ``user_ids``, only those participants' files are fetched (an API that recorded more
    than was asked must not add speakers); they also split file names whose user ids contain
    underscores. ``display_names`` (user id -> name) go into the manifest. A file that cannot
    be fetched is listed after all others finished: in ``failures`` when the reason may pass
    (a re-run fetches only those), in ``missing`` when no re-run can get it (storage answers
    404, say); the manifest lists the rest, so they can be transcribed.
    """
    options = options or FetchOptions()
    files = _once_each(recording.files())
    if not files and not recording.unreadable_layers:
        raise FetchError(
            f"recording {recording.id} has no files to download (status {recording.status})"
        )
    names = _read_names(files, user_ids)
    if user_ids:
        files = _of_users(files, names, user_ids)
        if not files:
            listed = "" if recording.lists_every_file else f"; {_one_url(recording)}"
            raise FetchError(
                f"recording {recording.id} has no file of {', '.join(user_ids)}{listed}"
            )
    out_dir = Path(out_dir)
    (out_dir / TRACKS_FOLDER).mkdir(parents=True, exist_ok=True)
    targets = _local_names(files)
    earlier = _earlier_manifest(out_dir / MANIFEST_FILE, recording.id)
    verified = _verified_tracks(earlier)
    cancel = threading.Event()
    urls = _Urls(recording, refresh, cancel)
    bar = tqdm(
        total=0, unit="B", unit_scale=True, desc="fetch", disable=not options.progress, leave=False
    )
    outcomes: dict[tuple[str, str], _Outcome] = {}
    with httpx.Client(
        timeout=httpx.Timeout(options.timeout, connect=min(_CONNECT_TIMEOUT, options.timeout)),
        follow_redirects=True,
        headers={"Accept-Encoding": "identity"},  # sizes and checksums are of the stored bytes
    ) as http:
        downloader = _Downloader(http, urls, options, bar, cancel)
        pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="fetch")
        futures = {
            pool.submit(
                in_this_context(_attempt),
                downloader,
                file,
                out_dir / TRACKS_FOLDER,
                targets[file.key],
                verified,
            ): file
            for file in files
        }
        try:
            for future in as_completed(futures):
                outcomes[futures[future].key] = future.result()
        except BaseException:
            # Ctrl-C or a bug: stop the downloads in flight (their .part files stay, to resume).
            # A read blocked on a stalled socket would see the cancel only at its timeout.
            cancel.set()
            downloader.abort()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
    bar.close()
    result = _result(
        recording,
        files,
        names,
        targets,
        outcomes,
        out_dir,
        meeting_id,
        user_ids,
        display_names or {},
    )
    if result.manifest is None and earlier is None and (out_dir / MANIFEST_FILE).exists():
        # Another recording's (or unreadable): with nothing fetched, it would still be there
        # to be transcribed as if it were this one's. This recording's own, from an earlier
        # run, still lists the files that run fetched and checked.
        (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
        log.warning(
            "%s: removed; it lists no file of recording %s, of which none could be fetched",
            out_dir / MANIFEST_FILE,
            recording.id,
        )
    return result


def _result(
    recording: Recording,
    files: Sequence[RecordingFile],
    all_names: Mapping[tuple[str, str], TrackFileName | None],
    targets: Mapping[tuple[str, str], str | None],
    outcomes: Mapping[tuple[str, str], _Outcome],
    out_dir: Path,
    meeting_id: str | None,
    user_ids: Sequence[str],
    display_names: Mapping[str, str],
) -> FetchResult:
    """The manifest of the files that arrived, and the failures, in the recording's order.

    ``all_names`` are the recording's file names as :func:`_read_names` read them (``files``
    may be fewer: those of the users asked for)."""
    tracks: list[Track] = []
    failures: list[TrackFailure] = []
    missing: list[TrackFailure] = []
    skipped = 0
    names = {file.key: all_names[file.key] for file in files}
    starts = {
        key: parsed.date_time if parsed else recording.started_time for key, parsed in names.items()
    }
    unplaced = _unplaced(files, starts)
    for file in files:
        local = f"{TRACKS_FOLDER}/{targets[file.key] or file.name}"
        parsed = names[file.key]
        user_id = parsed.user_id if parsed else file.name
        outcome = outcomes[file.key]
        if isinstance(outcome, _Failed):
            lost = TrackFailure(
                path=local, user_id=user_id, reason=outcome.reason, fetch_again=not outcome.lasting
            )
            (missing if outcome.lasting else failures).append(lost)
            continue
        size, digest, was_there = outcome
        skipped += was_there
        if parsed is None:
            log.warning(
                "%s: not named as RealtimeKit names track files; user id taken from the whole "
                "name and start time from the recording's",
                file.name,
            )
        started = starts[file.key]
        if started is None or file.key in unplaced:
            reason = unplaced.get(
                file.key,
                f"{file.name}: no start time in its name, and the recording's started_time "
                "is missing or cannot be read",
            )
            missing.append(
                TrackFailure(path=local, user_id=user_id, reason=reason, fetch_again=False)
            )
            continue
        try:
            track = Track(
                user_id=user_id,
                display_name=display_names.get(user_id),
                peer_id=parsed.peer_id if parsed else None,
                path=local,
                started_time=started,
                sha256=digest,
                size=size,
            )
        except ValidationError as exc:  # one odd name costs its file, not the manifest
            reason = f"{file.name}: left out of the manifest: its {describe(exc)}"
            log.error("%s", reason)
            missing.append(
                TrackFailure(path=local, user_id=user_id, reason=reason, fetch_again=False)
            )
            continue
        tracks.append(track)
    missing += _unlisted(recording, files, names, outcomes, user_ids)
    if unreadable := recording.unreadable_layers:  # as a file listed with no download URL
        entries = "an entry" if unreadable == 1 else f"{unreadable} entries"
        reason = (
            f"recording {recording.id}: {entries} of its download_url cannot be read; "
            f"whatever files {'it lists' if unreadable == 1 else 'they list'} cannot be fetched"
        )
        log.error("%s", reason)
        missing.append(TrackFailure(path="", user_id="", reason=reason, fetch_again=False))
    manifest = None
    if tracks:
        tracks.sort(key=lambda t: (t.started_time, t.user_id, t.path))
        manifest = Manifest(
            meeting_id=meeting_id or recording.meeting_id or recording.id,
            recording_id=recording.id,
            tracks=tracks,
            root=out_dir,
        )
        atomic_write_text(out_dir / MANIFEST_FILE, manifest.to_json())
    return FetchResult(manifest=manifest, failures=failures, missing=missing, skipped=skipped)


def _once_each(files: Sequence[RecordingFile]) -> list[RecordingFile]:
    """``files`` with each listed once: a file listed twice would be downloaded twice at
    once into one place, and put in the manifest twice."""
    first: dict[tuple[str, str], RecordingFile] = {}
    for file in files:
        if first.setdefault(file.key, file) is not file:
            log.warning("%s: listed twice in the recording; fetched once", file.name)
    return list(first.values())


def _unlisted(
    recording: Recording,
    files: Sequence[RecordingFile],
    names: Mapping[tuple[str, str], TrackFileName | None],
    outcomes: Mapping[tuple[str, str], _Outcome],
    user_ids: Sequence[str],
) -> list[TrackFailure]:
    """What is missing for want of being listed: users asked for who have no file, and, when
    ``download_url`` is one URL, the bytes the recording holds beyond that one file.

    A user without a file in a full listing most likely never joined while it recorded (a
    warning). Behind a single URL their file may well exist, unseen: a failure, so that the
    result says partial. The recording's ``file_size`` is compared only then: what it counts
    for track recordings is not documented, so it can confirm a loss but not rule one out.
    """
    present = {parsed.user_id for parsed in names.values() if parsed is not None}
    absent = [user_id for user_id in user_ids if user_id not in present]
    if recording.lists_every_file:
        for user_id in absent:
            log.warning(
                "recording %s lists no file of %s (did they join while it recorded?)",
                recording.id,
                user_id,
            )
        return []
    missing = [
        TrackFailure(
            path="",
            user_id=user_id,
            reason=f"{_one_url(recording)}, not {user_id}'s",
            fetch_again=False,
        )
        for user_id in absent
    ]
    sizes = [outcome[0] for outcome in outcomes.values() if not isinstance(outcome, _Failed)]
    # An answer's NaN or infinity (JSON allows neither, Python's reader both) says nothing.
    size = recording.file_size or 0
    declared = int(size) if math.isfinite(size) else 0
    if not user_ids and len(sizes) == len(files) and declared > sum(sizes):
        reason = (
            f"{_one_url(recording)}, of {sum(sizes):,} bytes, but the recording holds "
            f"{declared:,} bytes by its file_size: the other files cannot be listed"
        )
        missing.append(TrackFailure(path="", user_id="", reason=reason, fetch_again=False))
    elif not missing:
        others = (
            f"other files of {', '.join(user_ids)} (a rejoin makes one)"
            if user_ids
            else "other participants' files"
        )
        log.warning("%s; %s, if any, cannot be listed from it", _one_url(recording), others)
    return missing


def _one_url(recording: Recording) -> str:
    name = recording.files()[0].name
    return f"recording {recording.id} gives download_url as a single URL, of one file ({name})"


def _unplaced(
    files: Sequence[RecordingFile], starts: Mapping[tuple[str, str], datetime | None]
) -> dict[tuple[str, str], str]:
    """Files whose start is more than a day from the middle file's start, and why.

    Such a file is kept on disk (the pre-signed link to it will not last) but left out of the
    manifest, so that one bad name costs that file and not the meeting. The other files' starts
    are those of every file of the recording, arrived or not, so the verdict does not depend on
    which downloads failed.
    """
    timed = [(file, start) for file in files if (start := starts[file.key]) is not None]
    if not timed:
        return {}
    middle, far = outlying_starts([start for _, start in timed])
    reasons = {}
    for file, start in (timed[i] for i in far):
        reasons[file.key] = (
            f"{file.name}: it starts at {format_utc(start)}, more than a day from the middle "
            f"file's ({format_utc(middle)}); downloaded, but left out of the manifest"
        )
    return reasons


def _attempt(
    downloader: "_Downloader",
    file: RecordingFile,
    folder: Path,
    local: str | None,
    verified: Mapping[str, str],
) -> _Outcome:
    """A fetched file's (size, sha256, already there), or why it failed: whatever goes wrong
    with one file is that file's failure, and the others go on. Only a :class:`_Lasting`
    failure lasts; any other may pass (no room to write, a stop, the API refusing to renew
    URLs, anything unforeseen), so a fetch again is worth its try."""
    try:
        if local is None:
            raise _Lasting(f"{file.name!r}: the name has nothing usable as a file name")
        return downloader.fetch(file, folder / local, verified.get(local))
    except OSError as exc:
        reason = f"{file.name}: cannot write {folder / (local or '')}: {exc.strerror or exc}"
        lasting = False
    except _Cancelled:
        return _Failed(f"{file.name}: cancelled", lasting=False)
    except Exception as exc:
        reason, lasting = _reason(file, exc), isinstance(exc, _Lasting)
    reason = redact_urls(reason)
    log.error("%s", reason)
    return _Failed(reason, lasting)


def _reason(file: RecordingFile, exc: Exception) -> str:
    """Why ``file`` could not be fetched or checked, naming it (a FetchError already does)."""
    return str(exc) if isinstance(exc, FetchError) else f"{file.name}: {describe_error(exc)}"


def _earlier_manifest(manifest_path: Path, recording_id: str) -> Manifest | None:
    """The manifest an earlier run wrote for this recording; None when there is none (or it
    cannot be read, or is of another recording)."""
    if not manifest_path.exists():
        return None
    try:
        earlier = Manifest.load(manifest_path)
    except ManifestError as exc:
        log.warning("%s; files already here are kept only if storage confirms them", exc)
        return None
    return earlier if earlier.recording_id == recording_id else None


def _verified_tracks(earlier: Manifest | None) -> dict[str, str]:
    """Local file name -> SHA-256 of the tracks an earlier run fetched and checked; empty
    without its manifest: then nothing is taken as known."""
    if earlier is None:
        return {}
    return {
        PurePosixPath(t.path).name: t.sha256
        for t in earlier.tracks
        if t.sha256 is not None and PurePosixPath(t.path).parent == PurePosixPath(TRACKS_FOLDER)
    }


def _read_names(
    files: Sequence[RecordingFile], user_ids: Sequence[str]
) -> dict[tuple[str, str], TrackFileName | None]:
    """What each file's name says, read a layer at a time: a layer's files share one prefix,
    and where it ends can only be told from all its names together (one holding a user id
    asked for places it in all)."""
    layers: dict[str, list[RecordingFile]] = {}
    for file in files:
        layers.setdefault(file.layer, []).append(file)
    names: dict[tuple[str, str], TrackFileName | None] = {}
    for members in layers.values():
        parsed = parse_file_names([file.name for file in members], user_ids=user_ids)
        names |= {file.key: parsed[file.name] for file in members}
    return names


def _of_users(
    files: Sequence[RecordingFile],
    names: Mapping[tuple[str, str], TrackFileName | None],
    user_ids: Sequence[str],
) -> list[RecordingFile]:
    """The files of ``user_ids``, by their ``names``. Leaving out the others is what was
    asked (one line says how many); a name that does not say whose it is is warned of, file
    by file."""
    wanted, others = [], 0
    for file in files:
        parsed = names[file.key]
        if parsed is None:
            log.warning("%s: its name does not say whose file it is; not fetched", file.name)
        elif parsed.user_id in user_ids:
            wanted.append(file)
        else:
            others += 1
    if others:
        log.info("%d file(s) of users not asked for; not fetched", others)
    return wanted


def _local_names(files: Sequence[RecordingFile]) -> dict[tuple[str, str], str | None]:
    """A safe, distinct local file name for every file (None: no usable name at all).

    The same name can appear in two layers; the second gets its layer's name in front. Names
    that differ only in case are the same file on macOS and Windows, so they count as taken.
    Which file is "the second" never depends on the order the API listed them in: a fetch
    again must give each file the name it had, or it would take one for another. A name
    already safe keeps it; then layers and names go in alphabetical order.
    """
    bases: dict[tuple[str, str], str | None] = {}
    for file in files:
        try:
            bases[file.key] = safe_file_name(file.name)
        except ValueError:
            bases[file.key] = None
    taken: set[str] = set()
    names: dict[tuple[str, str], str | None] = {}
    for (layer, original), base in sorted(
        bases.items(), key=lambda item: (item[1] != item[0][1], item[0])
    ):
        if base is None:
            names[layer, original] = None
            continue
        name, n = base, 1
        if name.casefold() in taken:
            name = safe_file_name(f"{layer}-{base}")
        while name.casefold() in taken:
            n += 1
            stem, dot, ext = base.rpartition(".") if "." in base else (base, "", "")
            name = f"{stem}-{n}{dot}{ext}"
        taken.add(name.casefold())
        names[layer, original] = name
    return names


_STALE_RENEWALS = 3
"""Renewals in a row that give URLs expired already before the API is asked no more."""


class _Urls:
    """The current pre-signed URL of each file, renewed once for all workers when they expire.

    A recording past RealtimeKit's retention (7 days) is given URLs that are expired already,
    again on every renewal: after :data:`_STALE_RENEWALS` such renewals in a row, no more are
    asked for (each try of each file asked again: a burst against the API's rate limit), and a
    file they are refused for is lost for good.
    """

    def __init__(
        self, recording: Recording, refresh: Callable[[], Recording], cancel: threading.Event
    ) -> None:
        self._refresh = refresh
        self._cancel = cancel
        self._lock = threading.Lock()
        self._generation = 0
        self._stale = 0  # renewals in a row that gave URLs expired already
        self._set(recording)

    def _set(self, recording: Recording) -> None:
        self._urls = {f.key: f.url for f in recording.files()}
        self._expiry = recording.download_url_expiry

    def _expired(self) -> bool:
        return self._expiry is not None and self._expiry <= datetime.now(UTC)

    def get(self, file: RecordingFile) -> tuple[str, int]:
        with self._lock:
            if self._expired() and self._stale < _STALE_RENEWALS:
                self._renew_locked()
            if file.key not in self._urls:
                raise _Lasting(f"{file.name}: the recording no longer lists this file")
            url = self._urls[file.key]
            if url is None:
                raise _Lasting(f"{file.name}: the recording lists it with no download URL")
            return url, self._generation

    def renew(self, seen_generation: int, name: str) -> None:
        """Get fresh URLs, unless another worker already did since ``seen_generation``;
        ``name``'s URL was refused. Refused when the API has nothing fresher to give, the file
        is lost for good."""
        with self._lock:
            if self._stale >= _STALE_RENEWALS:
                raise _Lasting(
                    f"{name}: refused, and the API gives only download URLs that expired at "
                    f"{self._past_retention()}"
                )
            if self._generation == seen_generation:
                self._renew_locked()

    def _renew_locked(self) -> None:
        log.info("pre-signed URLs expired or refused; asking the API for fresh ones")
        self._set(_unless_cancelled(self._refresh, self._cancel))
        self._generation += 1
        self._stale = self._stale + 1 if self._expired() else 0
        if self._stale == _STALE_RENEWALS:
            log.warning(
                "the API gave download URLs that expired at %s, %d times; trying them as they are",
                self._past_retention(),
                _STALE_RENEWALS,
            )

    def _past_retention(self) -> str:
        """Why the API gives only expired URLs, for the error and the warning alike."""
        assert self._expiry is not None  # stale renewals gave one
        return (
            f"{self._expiry.isoformat()}: the recording is past RealtimeKit's retention of its "
            "files (7 days), or this machine's clock is wrong"
        )


def _unless_cancelled(call: Callable[[], _T], cancel: threading.Event) -> _T:
    """``call()``, given up on (and left to finish alone) once ``cancel`` is set.

    Renewing URLs goes through the API client, whose own retries may wait as long as a
    server's retry-after asks (minutes): a Ctrl-C must not wait for that, and a worker thread
    cannot be interrupted, so the call runs in a daemon thread of its own.
    """
    outcome: list[tuple[bool, Any]] = []
    finished = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the waiting worker, which raises it
            outcome.append((False, exc))
        finally:
            finished.set()

    threading.Thread(target=in_this_context(run), name="fetch-renew", daemon=True).start()
    while not finished.wait(0.1):
        if cancel.is_set():
            raise _Cancelled
    succeeded, value = outcome[0]
    if succeeded:
        return value
    raise value


class _Downloader:
    """Fetches one file at a time (several run in parallel), resuming and verifying."""

    def __init__(
        self,
        http: httpx.Client,
        urls: _Urls,
        options: FetchOptions,
        bar: tqdm,
        cancel: threading.Event,
    ) -> None:
        self._http = http
        self._urls = urls
        self._retry = options.retry
        self._progress = _Progress(bar)
        self._cancel = cancel
        self._sockets_lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._aborted = False

    def abort(self) -> None:
        """Shut the sockets of the downloads in flight, so that a worker blocked reading one
        (a stalled storage) wakes now, not at the read timeout; set the cancel first, so that
        it takes the broken connection for the cancel it is. Sockets of idle connections go
        too (nothing is fetched after a cancel), and so does any opened after this."""
        with self._sockets_lock:
            self._aborted = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's ``trace`` extension, on every request: keeps the socket of each
        connection the client opens (a connection is traced only when opened, and may then
        serve several requests), for :meth:`abort`. The socket is taken once TLS is set up
        too: wrapping a socket in TLS leaves the plain one without a file descriptor."""
        if not event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            return
        sock = info["return_value"].get_extra_info("socket")
        if not isinstance(sock, socket.socket):
            return
        with self._sockets_lock:
            self._sockets = [s for s in self._sockets if s.fileno() != -1]  # closed: gone
            self._sockets.append(sock)
            aborted = self._aborted
        if aborted:
            _shut(sock)

    def _get(
        self, url: str, headers: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[httpx.Response]:
        """A streamed GET whose connection :meth:`abort` can break."""
        return self._http.stream("GET", url, headers=headers, extensions={"trace": self._trace})

    def fetch(
        self, file: RecordingFile, path: Path, verified_sha256: str | None = None
    ) -> tuple[int, str, bool]:
        """Fetch ``file`` to ``path``; a complete copy already there is kept when storage
        confirms it, or, if storage cannot be asked, when it is the copy an earlier run
        verified (``verified_sha256``): a re-run must not lose a track it already has."""
        part = _part_of(path)
        if path.exists():
            try:
                total, version = self._probe(file)
            except _Cancelled:
                raise
            except Exception as exc:  # storage, or the API renewing expired URLs, cannot answer
                if verified_sha256 is None or _digests(path)[1] != verified_sha256:
                    raise
                log.warning(
                    "%s; kept the local copy, which an earlier run verified",
                    redact_urls(_reason(file, exc)),
                )
                size = path.stat().st_size
                self._progress.set(file.key, size, size)
                return size, verified_sha256, True
            if (sha256 := _matching_copy(path, total, version.md5)) is not None:
                log.info("%s: already complete, skipped", file.name)
                self._progress.set(file.key, total, total)
                return total, sha256, True
            log.warning("%s: the local copy differs from the recording; fetching again", file.name)
            path.unlink()
        return self._retrying(
            file, lambda: self._fetch_whole(file, part, path), lambda: _size_of(part)
        )

    def _retrying(
        self, file: RecordingFile, attempt: Callable[[], _T], done: Callable[[], int] = lambda: 0
    ) -> _T:
        """``attempt()`` until it succeeds or the retry policy says stop.

        A status worth retrying, a broken connection or a corrupt copy are tried again after
        a wait. A refused URL (403, or 400 for expired credentials) is renewed from the API
        first; the first refusal of a run of failures is tried again at once, since a URL
        past its time is expected, but each counts as a failure like any other, so that a
        storage which refuses every fresh URL is given up on, and the error says the fresh
        URLs did not help. A try that took ``done`` (bytes kept) further than any try before it is
        progress, not a failure: a flaky connection must not stop a long download that keeps
        advancing. Bytes got again after a corrupt copy was dropped are not: a copy that
        never checks out would otherwise be fetched for ever.
        """
        failed, fresh, furthest = 0, 0, done()
        renewed = False  # a URL refused in this run of failures was renewed: tries are fresh
        while True:
            retry_after, refused = None, None
            try:
                return attempt()
            except _UrlRefusedError as exc:
                reason, refused = str(exc), exc.generation
            except _RetryableStatusError as exc:
                reason, retry_after = str(exc), exc.retry_after
            except _CorruptError as exc:
                reason = str(exc)
            except UNSENDABLE as exc:  # a file:// URL, say: no try can do better
                raise _Lasting(
                    redact_urls(f"{file.name}: its URL cannot be fetched: {describe_error(exc)}")
                ) from None
            except httpx.TransportError as exc:
                if self._cancel.is_set():  # a socket shut by abort(): no failure of the file's
                    raise _Cancelled from None
                reason = describe_error(exc)
            reached = done()
            if reached > furthest:
                failed, fresh, renewed = 0, 0, False
            else:
                failed, fresh = failed + 1, fresh + renewed
            furthest = max(furthest, reached)
            # An expired URL is renewed and tried once more even under a policy of one try:
            # the URL's time running out is no failure of the storage's.
            first_refusal = refused is not None and not renewed
            if failed >= self._retry.attempts and not first_refusal:
                raise FetchError(redact_urls(f"{file.name}: {reason} ({_gave_up(failed, fresh)})"))
            if (too_long := self._retry.refused_wait(retry_after)) is not None:
                raise FetchError(redact_urls(f"{file.name}: {reason}: {too_long}"))
            if refused is not None:
                self._urls.renew(refused, file.name)  # the API failing to: this file's failure
                if not renewed:
                    renewed = True
                    continue
            wait = self._retry.delay(max(failed, 1), retry_after)
            log.warning("%s: %s; retrying in %.1f s", file.name, redact_urls(reason), wait)
            if self._cancel.wait(wait):
                raise _Cancelled

    def _fetch_whole(self, file: RecordingFile, part: Path, path: Path) -> tuple[int, str, bool]:
        """One try: the rest of the file into ``part``, checked, then renamed to ``path``."""
        try:
            total, version = self._download(file, part)
            if part.stat().st_size != total:
                raise _CorruptError(f"got {part.stat().st_size} bytes of {total}")
            md5, sha256 = _digests(part)
            if not _matches(md5, version.md5):
                raise _CorruptError("content does not match the storage's checksum (ETag)")
        except _CorruptError:
            _drop_part(part)
            raise
        os.replace(part, path)
        _validator(part).unlink(missing_ok=True)
        return total, sha256, False

    def _download(self, file: RecordingFile, part: Path) -> tuple[int, "_Version"]:
        """Append the rest of the file to ``part``; return the full size and its version."""
        url, generation = self._urls.get(file)
        have = _size_of(part)
        began_as = _read_validator(part) if have else None
        if have and began_as is None:
            # Bytes of no known version of the file (the storage sent no ETag, or they are
            # from an older trackscribe): completing them could make a file never uploaded.
            _drop_part(part)
            have = 0
        headers = {"Range": f"bytes={have}-", "If-Range": began_as} if began_as else {}
        with self._get(url, headers) as response:
            status = response.status_code
            whole = status == 416 and have > 0
            if whole:
                # Nothing after what we have: the .part is already whole (its size is checked
                # against the total the answer gives), or longer than the file (start over).
                total = _total_from_range(response.headers.get("content-range"))
                if total != have:
                    _drop_part(part)
                    raise _CorruptError(f"partial download of {have} bytes, file has {total}")
                self._progress.set(file.key, total, have)
            else:
                total = self._receive(response, generation, file, part, have, began_as)
                version = _Version.of(response.headers)
        if whole:
            # A run killed after the last byte left it: it is checked like any download, so
            # the ETag that the refusal did not carry is asked for.
            version = self._probe_once(file)[1]
            if version.etag != began_as:
                raise _CorruptError("the file changed since its partial download began")
            return total, version
        if total < 0:
            # No length came (a server that closes the connection to end the body): a body
            # cut short would look whole, so the length is asked for on its own.
            total = self._probe_once(file)[0]
        if total >= 0:
            return total, version
        if version.md5 is None:
            raise FetchError(
                f"{file.name}: storage sent neither the file's length nor an MD5 ETag, "
                "so a download cut short could not be told from a whole one"
            )
        return part.stat().st_size, version  # the ETag checks it

    def _receive(
        self,
        response: httpx.Response,
        generation: int,
        file: RecordingFile,
        part: Path,
        have: int,
        began_as: str | None,
    ) -> int:
        """Write the answer's body to ``part`` (appended to the ``have`` bytes there, of the
        version ``began_as`` names, for a 206); return the file's full size as the answer gives
        it, or -1 when it does not."""
        self._check(response, generation, file)
        etag = response.headers.get("etag")
        if response.status_code == 206:
            if etag != began_as:  # a storage that does not honour If-Range
                raise _CorruptError("the file changed since its partial download began")
            content_range = response.headers.get("content-range")
            if _start_from_range(content_range) != have:  # other bytes than those asked for
                raise _CorruptError(
                    f"asked for the bytes from {have} on, the storage sent {content_range!r}"
                )
            total = _total_from_range(content_range)
            mode = "ab"
        else:  # 200: the whole file, whatever was asked (a changed file, under If-Range)
            total = _content_length(response)
            have, mode = 0, "wb"
            _drop_part(part)
            if etag and not etag.startswith("W/"):  # only a strong ETag can resume it
                atomic_write_text(_validator(part), etag)
        self._progress.set(file.key, total, have)
        with part.open(mode) as out:
            for chunk in response.iter_raw():  # as received: a cut keeps what came
                if self._cancel.is_set():
                    raise _Cancelled
                out.write(chunk)
                have += len(chunk)
                self._progress.set(file.key, total, have)
            out.flush()
            os.fsync(out.fileno())
        if self._cancel.is_set():  # a body without a length, ended by abort(): no whole file
            raise _Cancelled
        return total

    def _probe(self, file: RecordingFile) -> tuple[int, "_Version"]:
        """Size and ETag of the remote file, from a one-byte ranged GET (pre-signed URLs are
        signed for GET only, so HEAD would be refused)."""
        return self._retrying(file, lambda: self._probe_once(file))

    def _probe_once(self, file: RecordingFile) -> tuple[int, "_Version"]:
        url, generation = self._urls.get(file)
        with self._get(url, {"Range": "bytes=0-0"}) as response:
            self._check(response, generation, file)
            if response.status_code == 206:
                total = _total_from_range(response.headers.get("content-range"))
            else:
                total = _content_length(response)  # body left unread
            return total, _Version.of(response.headers)

    def _check(self, response: httpx.Response, generation: int, file: RecordingFile) -> None:
        status = response.status_code
        if status in (200, 206):
            return
        code = _error_code(response)
        said = f", {code}" if code else ""
        if status == 403 or (status == 400 and code in _EXPIRED_CODES):
            raise _UrlRefusedError(
                f"storage refused the pre-signed URL (HTTP {status}{said})", generation
            )
        if self._retry.should_retry(status):
            raise _RetryableStatusError(status, response.headers.get("retry-after"))
        # Only 404 and 410 say the object is not there, and S3 is strongly consistent: the
        # same answer comes again. Any other status given up on is not known to last: a 401
        # or 407 (a proxy) may pass, a 400 may be of credentials renewed since, a 3xx not
        # followed or a 5xx taken off the list may be answered otherwise later.
        error = _Lasting if status in _GONE else FetchError
        raise error(f"{file.name}: storage answered HTTP {status}{said}")


def _shut(sock: socket.socket) -> None:
    """Shut ``sock`` down both ways, waking a thread blocked on it; one already closed is
    left be. The plain socket's own shutdown: a TLS socket's would also drop its TLS state
    under the thread reading it."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _part_of(path: Path) -> Path:
    """Where a download of ``path`` streams to until it is whole."""
    return path.with_name(f".{path.name}.part")


def download_of(name: str) -> str:
    """The name of the track file a file in the tracks folder is of: its own, or, for a
    resumable download (its ``.part``, and that part's ETag), the file being downloaded."""
    if name.startswith(".") and name.endswith((".part", ".part.etag")):
        return name[1:].removesuffix(".etag").removesuffix(".part")
    return name


def _validator(part: Path) -> Path:
    """Where the ETag of the version a ``.part``'s bytes are of is kept."""
    return part.with_name(f"{part.name}.etag")


def _read_validator(part: Path) -> str | None:
    try:
        return _validator(part).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _drop_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    _validator(part).unlink(missing_ok=True)


class _Progress:
    """One byte counter over all files; a file's bytes count once however often it restarts."""

    def __init__(self, bar: tqdm) -> None:
        self._bar = bar
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], int] = {}
        self._done: dict[tuple[str, str], int] = {}

    def set(self, key: tuple[str, str], total: int, done: int) -> None:
        with self._lock:
            if total > 0 and self._totals.get(key) != total:
                self._totals[key] = total
                self._bar.total = sum(self._totals.values())
            self._done[key] = done
            self._bar.update(sum(self._done.values()) - self._bar.n)


def _size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


class _UrlRefusedError(Exception):
    """Storage refused a pre-signed URL; ``generation`` is that of the URLs it was one of, so
    that the URLs are renewed once however many workers saw them refused."""

    def __init__(self, message: str, generation: int) -> None:
        super().__init__(message)
        self.generation = generation


class _CorruptError(Exception):
    pass


class _Cancelled(Exception):
    pass


def _tries(count: int) -> str:
    return "1 try" if count == 1 else f"{count} tries"


def _gave_up(failed: int, fresh: int) -> str:
    """How many tries failed in a row, and how many of those had a URL renewed for them: a
    storage that refuses fresh URLs too is no expired URL, and the reader should know."""
    with_fresh = f", {fresh} of them with a fresh URL from the API" if fresh else ""
    return f"gave up after {_tries(failed)} in a row{with_fresh}"


class _RetryableStatusError(Exception):
    def __init__(self, status: int, retry_after: str | None) -> None:
        # What the storage asked is said: a reader of the failure should know how long the
        # storage wanted, above all when that was too long to wait.
        super().__init__(f"storage answered HTTP {status}{shown_retry_after(retry_after)}")
        self.retry_after = retry_after


def _total_from_range(content_range: str | None) -> int:
    """``bytes 100-199/2000`` (or ``bytes */2000``) -> 2000."""
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        if total.isascii() and total.isdigit():
            return int(total)
    raise _CorruptError(f"ranged answer without a usable Content-Range ({content_range!r})")


def _start_from_range(content_range: str | None) -> int | None:
    """``bytes 100-199/2000`` -> 100; None when it says no start."""
    unit, _, rest = (content_range or "").strip().partition(" ")
    first = rest.split("-", 1)[0].strip()
    return int(first) if unit == "bytes" and first.isascii() and first.isdigit() else None


def _content_length(response: httpx.Response) -> int:
    """The declared length, or -1 when there is none (then only the ETag can check the file)."""
    value = response.headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else -1


def _error_code(response: httpx.Response) -> str:
    """The S3-style error code of an answer, "" if it has none: said in the error, and
    telling an expired URL answered 400 from a bad request. The ``x-amz-error-code`` header
    if sent, else the XML body's ``<Code>``."""
    if code := response.headers.get("x-amz-error-code", "").strip():
        return code[:_CODE_SHOWN]
    if response.is_stream_consumed or not response.headers.get("content-type", "").endswith("xml"):
        return ""
    try:
        body = response.read()[:2048].decode("utf-8", "replace")
    except httpx.HTTPError:
        return ""
    start, end = body.find("<Code>"), body.find("</Code>")
    return body[start + 6 : end][:_CODE_SHOWN] if 0 <= start < end else ""


def _matches(md5: str, expected: str | None) -> bool:
    """True unless the storage vouches for an MD5 of the content (``expected``) that differs."""
    return expected is None or md5 == expected


class _Version(NamedTuple):
    """Which version of a file an answer was of (its ETag, to resume by), and the MD5 of the
    content that the storage vouches for, if any (to check the bytes by)."""

    etag: str | None
    md5: str | None

    @classmethod
    def of(cls, headers: httpx.Headers) -> "_Version":
        etag = headers.get("etag")
        return cls(etag, None if _encrypted_apart(headers) else _md5_in(etag))


def _md5_in(etag: str | None) -> str | None:
    """The content's MD5 when the ETag is one, else None.

    S3 and R2 send the MD5 as the ETag for files uploaded in one part; multipart ETags
    (``"…-3"``) are not content hashes and cannot check anything.
    """
    tag = (etag or "").strip().removeprefix("W/").strip('"').lower()
    if len(tag) != 32 or any(c not in "0123456789abcdef" for c in tag):
        return None
    return tag


def _encrypted_apart(headers: httpx.Headers) -> bool:
    """Whether S3 says the object is encrypted with a KMS key or a key of the customer's
    (SSE-KMS, DSSE-KMS, SSE-C). The ETag of such an object is 32 hex digits like an MD5 but
    is not one of the content: checked as one, every download of a bucket so configured was
    refused as corrupt. (With S3's own keys, SSE-S3, the ETag is still the MD5.)"""
    sse = headers.get("x-amz-server-side-encryption", "").strip().lower()
    return sse.startswith("aws:kms") or "x-amz-server-side-encryption-customer-algorithm" in headers


def _matching_copy(path: Path, total: int, md5: str | None) -> str | None:
    """The SHA-256 of a local file that matches the recording's size and, where the storage
    vouches for one, its MD5, else None. The size is compared first: a file of the wrong size
    is not worth reading through."""
    if path.stat().st_size != total:
        return None
    digest, sha256 = _digests(path)
    return sha256 if _matches(digest, md5) else None


def _digests(path: Path) -> tuple[str, str]:
    """MD5 (to check against the ETag) and SHA-256 (for the manifest), in one read."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()
