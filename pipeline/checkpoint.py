"""Finished work of one meeting, kept on disk so that a re-run redoes only what is missing.

Every entry is keyed by a hash of what it was made from: the input file's SHA-256 and the
settings that change the result. A killed run, a changed setting or a changed file simply
finds no entry under the new key. Entries are written to a temporary name and renamed, the
small description last, so an entry either exists whole or not at all.

Layout under the meeting's ``.work`` folder: ``decode/KEY.pcm`` + ``decode/KEY.json`` (the
decoded track and what decoding found), ``vad/KEY.npz`` (voice activity), ``transcribe/KEY.json``
(a track's segments), ``transcript.json`` (the meeting's transcript, whatever formats were
exported from it) and ``journal.jsonl`` (one line per piece of work done, for audit; the
batch adds what became of each transcript).
"""

import hashlib
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, TypeAdapter

from models import (
    PcmAudio,
    Segment,
    Transcript,
    VoiceActivity,
    atomic_write_bytes,
    atomic_write_text,
    remove_unfinished_writes,
    temporary_file_for,
    writing,
)

__all__ = ["WORK_FOLDER", "Checkpoints", "work_key"]

WORK_FOLDER = ".work"
"""The folder, in a meeting's output folder, its checkpoints are kept in: hidden, so that
``verify`` and a sweep over the outputs do not take it for a transcript's folder."""

_SEGMENTS = TypeAdapter(list[Segment])
_TRACK_STAGES = ("decode", "vad", "transcribe")
"""The folders of each track's work, an entry per file, named by its key."""
_TRANSCRIPT = "transcript.json"
_T = TypeVar("_T")

log = logging.getLogger(f"trackscribe.{__name__}")


def work_key(*parts: object) -> str:
    """A stable hash of ``parts`` (strings, numbers, pydantic models, dicts, lists)."""

    def plain(value: object) -> Any:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    text = json.dumps([plain(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Checkpoints:
    """The store of one meeting's finished work, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._journal_lock = threading.Lock()
        self._used: set[tuple[str, str]] = set()  # (stage, key) read or written here

    # -- decoded audio ---------------------------------------------------------------------

    def pcm_path(self, key: str) -> Path:
        """A fresh temporary name for a decoder to write the PCM for ``key`` into (two tracks
        may have the same bytes, so the same key); :meth:`save_decoded` renames it."""
        folder = self.folder / "decode"
        with writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = temporary_file_for(folder / f"{key}.pcm")
        os.close(fd)
        return name

    def save_decoded(self, key: str, audio: PcmAudio) -> PcmAudio:
        final = self._entry("decode", key, ".pcm")
        with writing(final):
            _fsync(audio.pcm_path)
            os.replace(audio.pcm_path, final)
        audio = audio.model_copy(update={"pcm_path": final})
        atomic_write_text(final.with_suffix(".json"), audio.model_dump_json())
        return audio

    def decoded(self, key: str) -> PcmAudio | None:
        """The decoded track's description; its PCM may be gone (see :meth:`drop_pcm`)."""
        meta = self._entry("decode", key, ".json")
        audio = self._read(meta, lambda data: PcmAudio.model_validate_json(data))
        if audio is None:
            return None
        pcm = audio.pcm_path
        if pcm.exists() and pcm.stat().st_size != audio.num_samples * 2:
            pcm.unlink()  # cut short (a crash before the rename was synced): decoded again
        return audio

    def drop_partial(self) -> None:
        """Remove what a killed run or worker left half-written (decoded audio, entries).
        Only while no other process works on the meeting: its writers use these names."""
        for stage in _TRACK_STAGES:
            remove_unfinished_writes(self.folder / stage)
        remove_unfinished_writes(self.folder, _TRANSCRIPT)

    def drop_pcm(self) -> None:
        """Remove the decoded audio (large; cheap to make again), keep the rest."""
        for pcm in (self.folder / "decode").glob("*.pcm*"):
            pcm.unlink(missing_ok=True)

    # -- voice activity --------------------------------------------------------------------

    def save_activity(self, key: str, activity: VoiceActivity) -> None:
        path = self._entry("vad", key, ".npz")
        data = io.BytesIO()
        np.savez(
            data,
            voiced=activity.voiced,
            level_db=activity.level_db,
            frame_s=activity.frame_s,
            duration=activity.duration,
        )
        atomic_write_bytes(path, data.getvalue())

    def activity(self, key: str) -> VoiceActivity | None:
        def load(data: bytes) -> VoiceActivity:
            with np.load(io.BytesIO(data)) as arrays:
                return VoiceActivity(
                    frame_s=float(arrays["frame_s"]),
                    voiced=arrays["voiced"],
                    level_db=arrays["level_db"],
                    duration=float(arrays["duration"]),
                )

        return self._read(self._entry("vad", key, ".npz"), load)

    # -- transcription ---------------------------------------------------------------------

    def save_segments(self, key: str, segments: list[Segment]) -> None:
        atomic_write_bytes(self._entry("transcribe", key, ".json"), _SEGMENTS.dump_json(segments))

    def segments(self, key: str) -> list[Segment] | None:
        return self._read(self._entry("transcribe", key, ".json"), _SEGMENTS.validate_json)

    def _entry(self, stage: str, key: str, suffix: str) -> Path:
        """Where a track's work for ``stage`` is kept, marked as used by this run (what
        :meth:`drop_unused` keeps)."""
        self._used.add((stage, key))
        return self.folder / stage / f"{key}{suffix}"

    def drop_unused(self) -> list[str]:
        """Remove every entry of a track's work that was neither read nor written through this
        object, and return their names. Called once a meeting's run has finished, it leaves
        only what that run was made from: not the segments (words) and voice activity of a
        participant the meeting has since left out, nor work done under other settings."""
        removed = []
        for stage in _TRACK_STAGES:
            folder = self.folder / stage
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
            for path in entries:
                key = path.name.split(".", 1)[0]
                if (stage, key) not in self._used and path.is_file():
                    path.unlink()
                    removed.append(f"{stage}/{path.name}")
        return removed

    # -- the meeting's transcript ----------------------------------------------------------

    def save_transcript(self, transcript: Transcript) -> None:
        """Keep the transcript itself, so that other output formats can be written from it
        later without the audio or the model (the exported ones may not include JSON)."""
        transcript.save(self.folder / _TRANSCRIPT)

    def transcript(self) -> Transcript | None:
        """The transcript kept last, if any (a damaged one: None, and removed)."""
        return self._read(self.folder / _TRANSCRIPT, Transcript.model_validate_json)

    def drop_transcript(self) -> None:
        """Forget the kept transcript: a run that may make another must not leave the old
        one to be taken for it if it stops half-way."""
        (self.folder / _TRANSCRIPT).unlink(missing_ok=True)

    @staticmethod
    def _read(path: Path, parse: Callable[[bytes], _T]) -> _T | None:
        """An entry, or None when there is none or it cannot be read: a damaged entry (a disk
        that lost the last writes) is work to do again, never a reason to fail. Only a
        damaged one is removed: one that could not be read this time (too many open files, a
        network disk gone for a moment) may be read by the next run."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("%s: checkpoint not readable now, redoing that work (%s)", path, exc)
            return None
        try:
            return parse(data)
        except Exception as exc:
            log.warning("%s: unreadable checkpoint, redoing that work (%s)", path, exc)
            path.unlink(missing_ok=True)
            return None

    # -- audit -----------------------------------------------------------------------------

    def journal(self, event: str, **fields: object) -> None:
        """Append one line saying what was done (a crash can cut only the last line)."""
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}) + "\n"
        path = self.folder / "journal.jsonl"
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._journal_lock, path.open("a+b") as f:
                f.seek(0, os.SEEK_END)
                if f.tell():  # a line cut by a crash is ended, not continued
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        line = "\n" + line
                f.write(line.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())
