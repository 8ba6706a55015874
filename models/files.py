"""Writing result files so that a reader never sees half of one."""

import contextlib
import errno
import functools
import hashlib
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def _read_umask() -> int:
    # Setting the umask is the only portable way to read it; done once, at import, before any
    # thread could be writing files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


class WriteError(OSError):
    """A file of ours (a result, decoded audio, a checkpoint) could not be written: the
    machine's problem (a full disk, no permission, a folder in the way), not the input's.

    It is kept apart from a track that cannot be read so that a full disk fails the meeting,
    to be run again, instead of being recorded as that track's fault. Names the file.
    """

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def write_error(path: Path, exc: OSError) -> WriteError:
    """``exc``, met while writing ``path``, as a :class:`WriteError` naming it."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and (file := file_in_the_way(path)):
        reason = f"{file} is not a folder"  # what "File exists" means here
    return WriteError(exc.errno or 0, f"cannot write: {reason}", str(path))


def file_in_the_way(path: Path) -> Path | None:
    """The nearest folder above ``path`` that is something else: a file, or a link to
    nothing."""
    for parent in Path(path).parents:
        if parent.exists():
            return None if parent.is_dir() else parent
        if parent.is_symlink():  # a link to nowhere: no folder can be made through it
            return parent
    return None


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Any OSError within, raised as a :class:`WriteError` naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise write_error(path, exc) from exc


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A crash or a full disk leaves either the old file or the new one, never a truncated one.
    """
    atomic_write_files({Path(path): data})


def atomic_write_files(files: Mapping[Path, bytes]) -> None:
    """Write several files, all to temporary names first, renaming them only once every one is
    whole: a full disk or a folder in the way leaves every file as it was. A rename that fails
    (a file made immutable, or one another program holds open on Windows) or is interrupted
    puts back the files already renamed, where the file system could keep their old versions
    aside (a hard link; most can), so that a folder does not hold some files of this write
    and some of the last; only a crash during the renames themselves could leave it so."""
    staged: list[tuple[Path, Path]] = []
    renamed: list[tuple[Path, bool, Path | None]] = []  # each file, whether it was there, its old
    try:
        for path, data in files.items():
            if path.is_dir():
                raise WriteError(errno.EISDIR, "a folder is in the way", str(path))
            staged.append((_staged(path, data), path))
        for tmp, path in staged:
            existed = os.path.lexists(path)
            # The last file's old version is never needed: nothing after it can fail.
            old = _kept_aside(path) if existed and path != staged[-1][1] else None
            try:
                with writing(path):
                    os.replace(tmp, path)
            except BaseException:
                if not os.path.lexists(tmp):  # renamed, then interrupted (Ctrl-C): if it was
                    renamed.append((path, existed, old))  # the last, the write is whole
                elif old is not None:
                    old.unlink(missing_ok=True)
                raise
            renamed.append((path, existed, old))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if len(renamed) < len(staged):
            _put_back(renamed)
        raise
    finally:
        if len(renamed) == len(staged):
            for _, _, old in renamed:
                if old is not None:
                    old.unlink(missing_ok=True)


def _kept_aside(path: Path) -> Path | None:
    """A second name for the file at ``path`` (a hard link beside it, in the shape of a
    temporary file, which a crash leaves for :func:`remove_unfinished_writes`), so that it
    can be put back; None where the folder's file system cannot link it."""
    for _ in range(100):
        prefix, suffix = _temporary_affixes(path.name)
        aside = path.with_name(f"{prefix}{secrets.token_hex(4)}{suffix}")
        try:
            os.link(path, aside, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError:
            return None
        return aside
    return None


def _put_back(renamed: list[tuple[Path, bool, Path | None]]) -> None:
    """Undo the renames of a write that failed part-way, as far as can be: a file new with it
    goes, an old one kept aside comes back (one that could not be kept stays new)."""
    for path, existed, old in reversed(renamed):
        with contextlib.suppress(OSError):
            if old is not None:
                os.replace(old, path)
            elif not existed:
                path.unlink()


def _staged(path: Path, data: bytes) -> Path:
    """``data`` in a temporary file beside ``path``, on disk."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temporary_file_for(path)
        try:
            # mkstemp makes the file private (0600); results are ordinary files for readers.
            os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return Path(tmp)


def temporary_file_for(path: Path) -> tuple[int, Path]:
    """A new private file (descriptor and name) beside ``path``, to be renamed to it once
    whole: ``.NAME.XXXXXXXX.part``, the shape :func:`remove_unfinished_writes` looks for."""
    prefix, suffix = _temporary_affixes(path.name)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    return fd, Path(tmp)


def _temporary_affixes(name: str) -> tuple[str, str]:
    """What a temporary file for ``name`` begins and ends with, around 8 random characters
    (as ``mkstemp`` makes them): the shape :func:`remove_unfinished_writes` looks for."""
    return f".{name}.", ".part"


def remove_unfinished_writes(folder: Path, name: str = "*", *, older_than: float = 0.0) -> None:
    """Remove the temporary files (:func:`temporary_file_for`) that writers of ``name``
    (every file, by default) killed mid-write (``kill -9``, a power cut) left in ``folder``.

    Without ``older_than``, only for a folder no other process is writing ``name`` into now
    (one whose lock is held): a writer's temporary file removed before its rename would fail
    that write. With it, only those made (or, for an old file kept aside, linked: its change
    time) more than that many seconds ago, which no writer still running has: a writer's
    temporary file lives for the moment it takes to write it. A download's ``.NAME.part``,
    resumed by a later fetch, does not have that shape and is kept.
    """
    prefix, suffix = _temporary_affixes(name)
    now = time.time()
    for part in Path(folder).glob(f"{prefix}????????{suffix}"):
        with contextlib.suppress(FileNotFoundError):
            info = part.lstat()
            abandoned = older_than <= 0 or now - info.st_ctime >= older_than
            if stat.S_ISREG(info.st_mode) and abandoned:
                part.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def read_regular_file(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of ``path``, which must be a regular file (a pipe would be waited on for
    good, a device read without end) of at most ``max_bytes``; else :class:`OSError`."""
    info = Path(path).stat()
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")  # the caller names the file
    if max_bytes is not None and info.st_size > max_bytes:
        raise OSError(errno.EFBIG, f"more than {max_bytes:,} bytes")
    return Path(path).read_bytes()


def file_state(path: Path) -> tuple[int, int, int, int]:
    """What changes whenever a file's bytes do: its identity (inode), size, modification
    time and change time. (The change time is the one no one can set back: a file rewritten
    in place and given its old modification time again still shows it.)"""
    return _state(Path(path).stat())


def _state(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks.

    Read once per process however often it is asked for (a batch's meeting key, the
    checkpoint keys and the decoder's check all ask): remembered by :func:`file_state`, so
    a changed file is read again.
    """
    info = Path(path).stat()
    if not stat.S_ISREG(info.st_mode):  # a pipe would be waited on forever, a folder fails
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return _sha256(Path(path).resolve(), _state(info))


@functools.lru_cache(maxsize=4096)
def _sha256(path: Path, _state: tuple[int, int, int, int]) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
