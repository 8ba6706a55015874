"""Download every file of an uploaded track recording into a manifest folder.

Files stream to ``tracks/.NAME.part`` and are renamed into place only once their size (and,
where the storage sends one, their MD5 ``ETag``) check out, so a file under its final name is
always whole. An interrupted download resumes from its ``.part`` with an HTTP ``Range``; an
expired pre-signed URL is replaced by asking the API for the recording again; a re-run skips
files that are already complete. Names from the API are sanitised before they touch the disk.
"""

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from models import (
    Manifest,
    Recording,
    RecordingFile,
    RetryPolicy,
    Track,
    TrackFailure,
    atomic_write_text,
    parse_file_name,
    protect_http_logs,
    redact_urls,
    safe_file_name,
    sha256_file,
)

__all__ = ["FetchError", "FetchOptions", "FetchResult", "fetch_recording"]

log = logging.getLogger(__name__)
protect_http_logs()

TRACKS_FOLDER = "tracks"
_CHUNK = 1 << 16


class FetchError(Exception):
    """A file could not be fetched; the message names it and says why (never its URL's query)."""


class FetchOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    concurrency: int = Field(default=4, ge=1, description="files downloaded at once")
    timeout: float = Field(default=60.0, gt=0, description="seconds without data before giving up")
    retry: RetryPolicy = RetryPolicy()
    progress: bool = True


class FetchResult(BaseModel):
    """The manifest of what arrived, and what did not (``failures``), so the rest can go on."""

    manifest: Manifest | None
    failures: list[TrackFailure] = Field(default_factory=list)
    skipped: int = Field(default=0, description="files already complete from an earlier run")


class _UrlExpiredError(Exception):
    pass


class _CorruptError(Exception):
    pass


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
    With ``user_ids``, only those participants' files are fetched (an API that recorded more
    than was asked must not add speakers); they also split file names whose user ids contain
    underscores. ``display_names`` (user id -> name) go into the manifest. A file that cannot
    be fetched is listed in ``failures`` after all others finished; the manifest lists the
    rest, so they can be transcribed and a re-run fetches only what is missing.
    """
    options = options or FetchOptions()
    files = recording.files()
    if not files:
        raise FetchError(
            f"recording {recording.id} has no files to download (status {recording.status})"
        )
    if user_ids:
        files = _of_users(files, user_ids)
        if not files:
            raise FetchError(f"recording {recording.id} has no file of {', '.join(user_ids)}")
    out_dir = Path(out_dir)
    (out_dir / TRACKS_FOLDER).mkdir(parents=True, exist_ok=True)
    targets = _local_names(files)
    urls = _Urls(recording, refresh)
    bar = tqdm(
        total=0, unit="B", unit_scale=True, desc="fetch", disable=not options.progress, leave=False
    )
    with httpx.Client(timeout=options.timeout, follow_redirects=True) as http:
        downloader = _Downloader(http, urls, options, bar)
        with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
            outcomes = list(
                pool.map(
                    lambda f: _attempt(downloader, f, out_dir / TRACKS_FOLDER / targets[f.name]),
                    files,
                )
            )
    bar.close()
    tracks: list[Track] = []
    failures: list[TrackFailure] = []
    skipped = 0
    for file, outcome in zip(files, outcomes, strict=True):
        local = f"{TRACKS_FOLDER}/{targets[file.name]}"
        parsed = parse_file_name(file.name, user_ids=user_ids)
        user_id = parsed.user_id if parsed else Path(targets[file.name]).stem
        if isinstance(outcome, str):
            failures.append(TrackFailure(path=local, user_id=user_id, reason=outcome))
            continue
        size, digest, was_there = outcome
        skipped += was_there
        started = parsed.date_time if parsed else recording.started_time or recording.invoked_time
        if started is None:
            failures.append(
                TrackFailure(path=local, user_id=user_id, reason="no start time in its name")
            )
            continue
        tracks.append(
            Track(
                user_id=user_id,
                display_name=(display_names or {}).get(user_id),
                peer_id=parsed.peer_id if parsed else None,
                path=local,
                started_time=started,
                sha256=digest,
                size=size,
            )
        )
    manifest = None
    if tracks:
        tracks.sort(key=lambda t: (t.started_time, t.user_id, t.path))
        manifest = Manifest(
            meeting_id=meeting_id or recording.meeting_id or recording.id,
            recording_id=recording.id,
            tracks=tracks,
            root=out_dir,
        )
        atomic_write_text(out_dir / "manifest.json", manifest.to_json())
    return FetchResult(manifest=manifest, failures=failures, skipped=skipped)


def _attempt(downloader: "_Downloader", file: RecordingFile, path: Path) -> tuple | str:
    """A fetched file's (size, sha256, already there), or why it failed."""
    try:
        return downloader.fetch(file, path)
    except FetchError as exc:
        log.error("%s", exc)
        return str(exc)
    except OSError as exc:
        reason = f"{file.name}: cannot write {path}: {exc.strerror or exc}"
        log.error("%s", reason)
        return reason


def _of_users(files: Sequence[RecordingFile], user_ids: Sequence[str]) -> list[RecordingFile]:
    wanted = []
    for file in files:
        parsed = parse_file_name(file.name, user_ids=user_ids)
        if parsed is not None and parsed.user_id in user_ids:
            wanted.append(file)
        else:
            log.warning("%s: not a file of the users asked for; not fetched", file.name)
    return wanted


def _local_names(files: Sequence[RecordingFile]) -> dict[str, str]:
    """A safe, distinct local file name for every API file name."""
    taken: set[str] = set()
    names: dict[str, str] = {}
    for file in files:
        base = safe_file_name(file.name)
        stem, dot, ext = base.partition(".")
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}{dot}{ext}"
        taken.add(name)
        names[file.name] = name
    return names


class _Urls:
    """The current pre-signed URL of each file, renewed once for all workers when they expire."""

    def __init__(self, recording: Recording, refresh: Callable[[], Recording]) -> None:
        self._refresh = refresh
        self._lock = threading.Lock()
        self._generation = 0
        self._set(recording)

    def _set(self, recording: Recording) -> None:
        self._urls = {f.name: f.url for f in recording.files()}
        self._expiry = recording.download_url_expiry

    def get(self, name: str) -> tuple[str, int]:
        with self._lock:
            if self._expiry is not None and self._expiry <= datetime.now(UTC):
                self._renew_locked()
            if name not in self._urls:
                raise FetchError(f"{name}: the recording no longer lists this file")
            return self._urls[name], self._generation

    def renew(self, seen_generation: int) -> None:
        """Get fresh URLs, unless another worker already did since ``seen_generation``."""
        with self._lock:
            if self._generation == seen_generation:
                self._renew_locked()

    def _renew_locked(self) -> None:
        log.info("pre-signed URLs expired; asking the API for fresh ones")
        self._set(self._refresh())
        self._generation += 1


class _Downloader:
    def __init__(self, http: httpx.Client, urls: _Urls, options: FetchOptions, bar: tqdm) -> None:
        self._http = http
        self._urls = urls
        self._retry = options.retry
        self._progress = _Progress(bar)

    def fetch(self, file: RecordingFile, path: Path) -> tuple[int, str, bool]:
        part = path.with_name(f".{path.name}.part")
        label = f"{file.name}"
        if path.exists():
            total, etag = self._probe(file, label)
            if path.stat().st_size == total and _matches(path, etag):
                log.info("%s: already complete, skipped", label)
                return total, sha256_file(path), True
            log.warning("%s: the local copy differs from the recording; fetching again", label)
            path.unlink()
        reason, retry_after = "", None
        for attempt in range(1, self._retry.attempts + 1):
            try:
                total, etag = self._download(file, part, label)
                if part.stat().st_size != total:
                    raise _CorruptError(f"got {part.stat().st_size} bytes of {total}")
                if not _matches(part, etag):
                    raise _CorruptError("content does not match the storage's checksum (ETag)")
                os.replace(part, path)
                return total, sha256_file(path), False
            except _CorruptError as exc:
                part.unlink(missing_ok=True)
                reason = f"{label}: {exc}"
            except _UrlExpiredError as exc:
                reason = f"{label}: {exc}"
                continue  # fresh URLs are in place: go again at once
            except _RetryableStatusError as exc:
                reason, retry_after = f"{label}: {exc}", exc.retry_after
            except httpx.TransportError as exc:
                reason = f"{label}: {_describe(exc)}"
            if attempt == self._retry.attempts:
                break
            wait = self._retry.delay(attempt, retry_after)
            log.warning("%s; retrying in %.1f s", redact_urls(reason), wait)
            time.sleep(wait)
            retry_after = None
        raise FetchError(redact_urls(f"{reason} (gave up after {self._retry.attempts} tries)"))

    def _download(self, file: RecordingFile, part: Path, label: str) -> tuple[int, str | None]:
        """Append the rest of the file to ``part``; return the full size and the ETag."""
        url, generation = self._urls.get(file.name)
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self._http.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if status == 416 and have:
                part.unlink()  # the .part is longer than the file: start over
                raise _CorruptError("partial download longer than the file")
            self._check(response, generation, label)
            if status == 206:
                total = _total_from_range(response.headers.get("content-range"), have)
                mode = "ab"
            else:  # 200: the whole file, whatever was asked
                total = int(response.headers.get("content-length", -1))
                have, mode = 0, "wb"
            self._progress.start(file.name, total, have)
            with part.open(mode) as out:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
                    self._progress.advance(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if total < 0:
                total = part.stat().st_size
            return total, response.headers.get("etag")

    def _probe(self, file: RecordingFile, label: str) -> tuple[int, str | None]:
        """Size and ETag of the remote file, from a one-byte ranged GET (pre-signed URLs are
        signed for GET only, so HEAD would be refused)."""
        for attempt in range(1, self._retry.attempts + 1):
            url, generation = self._urls.get(file.name)
            try:
                response = self._http.get(url, headers={"Range": "bytes=0-0"})
                self._check(response, generation, label)
            except _UrlExpiredError:
                continue
            except (httpx.TransportError, _RetryableStatusError) as exc:
                if attempt == self._retry.attempts:
                    raise FetchError(redact_urls(f"{label}: {_describe(exc)}")) from None
                time.sleep(self._retry.delay(attempt))
                continue
            if response.status_code == 206:
                return _total_from_range(
                    response.headers.get("content-range"), 0
                ), response.headers.get("etag")
            return len(response.content), response.headers.get("etag")
        raise FetchError(f"{label}: could not learn the file's size")

    def _check(self, response: httpx.Response, generation: int, label: str) -> None:
        status = response.status_code
        if status in (200, 206):
            return
        if status == 403:
            self._urls.renew(generation)
            raise _UrlExpiredError("pre-signed URL refused (expired); got fresh URLs")
        if self._retry.should_retry(status):
            raise _RetryableStatusError(status, response.headers.get("retry-after"))
        raise FetchError(f"{label}: storage answered HTTP {status}")


class _Progress:
    """One byte counter over all files; a file's bytes count once however often it restarts."""

    def __init__(self, bar: tqdm) -> None:
        self._bar = bar
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}

    def start(self, name: str, total: int, have: int) -> None:
        with self._lock:
            if name not in self._sizes and total > 0:
                self._sizes[name] = total
                self._bar.total = sum(self._sizes.values())
            self._bar.n = 0  # recount: a restarted file's earlier bytes no longer count
            self._bar.update(have)

    def advance(self, size: int) -> None:
        self._bar.update(size)


class _RetryableStatusError(Exception):
    def __init__(self, status: int, retry_after: str | None) -> None:
        super().__init__(f"storage answered HTTP {status}")
        self.retry_after = retry_after


def _total_from_range(content_range: str | None, have: int) -> int:
    """``bytes 100-199/2000`` -> 2000."""
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    raise _CorruptError(f"ranged answer without a usable Content-Range ({content_range!r})")


def _matches(path: Path, etag: str | None) -> bool:
    """True unless the storage's ETag is an MD5 of the content and this file's differs.

    S3 and R2 send the MD5 as the ETag for files uploaded in one part; multipart ETags
    (``"…-3"``) are not content hashes and are not checked.
    """
    tag = (etag or "").strip().strip('"').removeprefix("W/").strip('"').lower()
    if len(tag) != 32 or any(c not in "0123456789abcdef" for c in tag):
        return True
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest() == tag


def _describe(exc: Exception) -> str:
    text = str(exc)
    return redact_urls(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
