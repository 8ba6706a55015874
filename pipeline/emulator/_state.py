"""The emulated service's state: the meeting's tracks as files, and each recording."""

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from models import Manifest, ManifestError


@dataclass(frozen=True)
class TrackFile:
    """A track of the meeting as a file the service would have recorded."""

    user_id: str
    peer_id: str
    path: Path
    started_ms: int
    size: int
    etag: str


@dataclass
class Recording:
    """One recording's state; times are ``time.monotonic()`` values."""

    id: str
    layer: str
    files: dict[str, TrackFile]
    limit: float
    """Recorded seconds it stops at (``max_seconds``, 86,400 by default)."""
    invoked_at: float
    since: float
    status: str = "INVOKED"
    started_at: float | None = None
    stopped_at: float | None = None
    recorded: float = 0.0
    stop_reason: str | None = None
    last_expiry: int | None = None


def track_files(manifest: Manifest, manifest_path: Path) -> list[TrackFile]:
    """Every track as a servable file; a track file that is missing is a manifest error."""
    files = []
    for index, track in enumerate(manifest.tracks):
        path = manifest.track_path(track)
        try:
            with path.open("rb") as f:
                etag = hashlib.file_digest(f, "md5").hexdigest()
            size = path.stat().st_size
        except OSError as exc:
            raise ManifestError(
                f"{manifest_path}: tracks[{index}].path: cannot read {track.path}: {exc.strerror}"
            ) from None
        since_epoch = track.started_time - datetime(1970, 1, 1, tzinfo=UTC)
        files.append(
            TrackFile(
                user_id=track.user_id,
                peer_id=track.peer_id or str(uuid.uuid5(uuid.NAMESPACE_URL, track.path)),
                path=path,
                started_ms=since_epoch // timedelta(milliseconds=1),
                size=size,
                etag=etag,
            )
        )
    return files


def file_name(prefix: str, track: TrackFile) -> str:
    """The name the API gives a track file: prefix, user, peer, stream and media kind, time."""
    return f"{prefix}_{track.user_id}_{track.peer_id}_peer_audio_{track.started_ms}.webm"
