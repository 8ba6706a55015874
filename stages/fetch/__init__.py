"""Download every file of an uploaded track recording into a manifest folder.

Files stream to ``tracks/.NAME.part`` and are renamed into place only once their size (and,
where the storage sends one, their MD5 ``ETag``) check out, so a file under its final name is
always whole. An interrupted download resumes from its ``.part`` with an HTTP ``Range`` and
``If-Range`` (the ETag its bytes came with, kept beside it), so that bytes of a file that has
since changed are never completed with another file's; an
expired pre-signed URL is replaced by asking the API for the recording again; a re-run skips
files that are already complete. Names from the API are sanitised before they touch the disk.

This module lists the recording's files, chooses the users', names them safely, and writes the
manifest and the result; ``_download`` fetches one file whole and verified, and ``_options``
holds what both share.
"""

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

import httpx
from pydantic import BaseModel, Field, ValidationError
from tqdm.auto import tqdm

from models import (
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    Recording,
    RecordingFile,
    Track,
    TrackFailure,
    TrackFileName,
    atomic_write_text,
    describe,
    format_utc,
    in_this_context,
    outlying_starts,
    parse_file_names,
    protect_http_logs,
    redact_urls,
    safe_file_name,
)

from ._download import Cancelled, Downloader, Lasting, Urls, download_of, failure_reason
from ._options import FetchError, FetchOptions

__all__ = [
    "TRACKS_FOLDER",
    "FetchError",
    "FetchOptions",
    "FetchResult",
    "download_of",
    "fetch_recording",
]

log = logging.getLogger(f"trackscribe.{__name__}")
protect_http_logs()

TRACKS_FOLDER = "tracks"
_CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a storage host to accept a connection. Apart from the read timeout
(``FetchOptions.timeout``, a minute without data): a host out of reach fails a try in seconds,
not a minute, and the tries left go to the next."""


@dataclass(frozen=True)
class _Failed:
    """Why a file was not fetched, and whether that lasts (no fetch again gets it)."""

    reason: str
    lasting: bool


_Outcome = tuple[int, str, bool] | _Failed
"""A fetched file's (size, sha256, already there), or why it was not."""


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
    urls = Urls(recording, refresh, cancel)
    bar = tqdm(
        total=0, unit="B", unit_scale=True, desc="fetch", disable=not options.progress, leave=False
    )
    outcomes: dict[tuple[str, str], _Outcome] = {}
    with httpx.Client(
        timeout=httpx.Timeout(options.timeout, connect=min(_CONNECT_TIMEOUT, options.timeout)),
        follow_redirects=True,
        headers={"Accept-Encoding": "identity"},  # sizes and checksums are of the stored bytes
    ) as http:
        downloader = Downloader(http, urls, options, bar, cancel)
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
    downloader: "Downloader",
    file: RecordingFile,
    folder: Path,
    local: str | None,
    verified: Mapping[str, str],
) -> _Outcome:
    """A fetched file's (size, sha256, already there), or why it failed: whatever goes wrong
    with one file is that file's failure, and the others go on. Only a :class:`Lasting`
    failure lasts; any other may pass (no room to write, a stop, the API refusing to renew
    URLs, anything unforeseen), so a fetch again is worth its try."""
    try:
        if local is None:
            raise Lasting(f"{file.name!r}: the name has nothing usable as a file name")
        return downloader.fetch(file, folder / local, verified.get(local))
    except OSError as exc:
        reason = f"{file.name}: cannot write {folder / (local or '')}: {exc.strerror or exc}"
        lasting = False
    except Cancelled:
        return _Failed(f"{file.name}: cancelled", lasting=False)
    except Exception as exc:
        reason, lasting = failure_reason(file, exc), isinstance(exc, Lasting)
    reason = redact_urls(reason)
    log.error("%s", reason)
    return _Failed(reason, lasting)


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
