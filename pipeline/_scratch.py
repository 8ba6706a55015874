"""Scratch folders that a killed run does not leave behind for good.

A run keeps each track's decoded audio in a scratch folder (about 115 MB per hour of track)
and removes it when it ends, however it ends, except when it is killed outright: ``kill -9``,
the out-of-memory killer, a job scheduler's time limit. Folders left that way would pile up in
the temporary folder run after run. So each folder holds a lock for as long as its run lives
(the system lets go of it when the process dies, whatever kills it), and every run first
removes the folders whose lock nobody holds any more.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(f"trackscribe.{__name__}")

_PREFIX = "trackscribe-"
_OWNER = ".owner"  # locked while the run that made the folder lives


@contextmanager
def scratch_folder(kind: str = "", *, parent: Path | str | None = None) -> Iterator[Path]:
    """A new, private folder under ``parent`` (default: the system's temporary folder),
    removed when the block ends. Folders of runs that were killed are removed first."""
    parent = Path(parent if parent is not None else tempfile.gettempdir())
    if not parent.is_dir():  # else the error would name a folder made up here
        problem = "is not a folder" if parent.exists() else "no such folder"
        raise NotADirectoryError(f"workdir {parent}: {problem}")
    _remove_abandoned(parent)
    folder: Path | None = None
    owner: IO[str] | None = None
    try:
        folder = _new_folder(parent, kind)
        owner = _claim(folder)
        yield folder
    finally:
        # Removed while still locked, so that no run starting now takes it for abandoned.
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        if owner is not None:
            owner.close()


def _new_folder(parent: Path, kind: str) -> Path:
    """A new folder of ours in ``parent``, private to this user. As ``tempfile.mkdtemp``, but
    a Ctrl-C (or a worker's stop) that comes while it is made leaves none: one with no owner
    file yet is never taken for abandoned, and would stay for good."""
    while True:
        folder = parent / f"{_PREFIX}{kind}{secrets.token_hex(4)}"
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError:  # not made
            raise
        except BaseException:  # an interrupt, perhaps just after it was made
            with contextlib.suppress(OSError):
                folder.rmdir()
            raise
        return folder


def _claim(folder: Path) -> IO[str]:
    """The open owner file of ``folder``, locked for as long as it stays open."""
    # Locked under another name, then named: a folder whose owner file exists is always
    # locked until its run ends, so another run never takes one being set up for dead.
    claiming = folder / f"{_OWNER}.new"
    owner = claiming.open("w")
    try:
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody holds it
    except OSError:  # a file system without locks: the folder is never taken for dead
        log.debug("%s: cannot be locked; it stays if this run is killed", folder)
    else:
        claiming.rename(folder / _OWNER)
    return owner


def _remove_abandoned(parent: Path) -> None:
    """Remove ``parent``'s scratch folders whose run has died. Only this user's own folders
    are looked at (not a link, not another user's): the others are not this run's business."""
    try:
        candidates = list(parent.glob(f"{_PREFIX}*"))
    except OSError:
        return
    for folder in candidates:
        try:
            found = folder.lstat()
            if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
                continue
            # Opened for writing: NFS locks only a file open for writing.
            owner_fd = os.open(folder / _OWNER, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:  # none (made by an older version, or being made) or not ours
            continue
        try:
            try:
                fcntl.flock(owner_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # its run is alive
                continue
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s, left behind by a run that was killed", folder)
        finally:
            os.close(owner_fd)
