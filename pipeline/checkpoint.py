"""Finished work of one meeting, kept on disk so that a re-run redoes only what is missing.

Every entry is keyed by a hash of what it was made from: the input file's SHA-256 and the
settings that change the result. A killed run, a changed setting or a changed file simply
finds no entry under the new key. Entries are written to a temporary name and renamed, the
small description last, so an entry either exists whole or not at all.

Layout under the meeting's ``.work`` folder: ``decode/KEY.pcm`` + ``decode/KEY.json`` (the
decoded track and what decoding found), ``vad/KEY.npz`` (voice activity), ``transcribe/KEY.json``
(a track's segments), and ``journal.jsonl`` (one line per piece of work done, for audit).
"""

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, TypeAdapter

from models import PcmAudio, Segment, VoiceActivity, atomic_write_bytes, atomic_write_text

__all__ = ["Checkpoints", "work_key"]

_SEGMENTS = TypeAdapter(list[Segment])


def work_key(*parts: object) -> str:
    """A stable hash of ``parts`` (strings, numbers, pydantic models, dicts, lists)."""

    def plain(value: object) -> Any:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    text = json.dumps([plain(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Checkpoints:
    """The store of one meeting's finished work, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._journal_lock = threading.Lock()

    # -- decoded audio ---------------------------------------------------------------------

    def pcm_path(self, key: str) -> Path:
        """Where a decoder should write the PCM for ``key`` (renamed into place on save)."""
        path = self.folder / "decode" / f"{key}.pcm.part"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def save_decoded(self, key: str, audio: PcmAudio) -> PcmAudio:
        final = self.folder / "decode" / f"{key}.pcm"
        os.replace(audio.pcm_path, final)
        audio = audio.model_copy(update={"pcm_path": final})
        atomic_write_text(final.with_suffix(".json"), audio.model_dump_json())
        return audio

    def decoded(self, key: str) -> PcmAudio | None:
        """The decoded track's description; its PCM may be gone (see :meth:`drop_pcm`)."""
        meta = self.folder / "decode" / f"{key}.json"
        if not meta.exists():
            return None
        return PcmAudio.model_validate_json(meta.read_bytes())

    def drop_pcm(self) -> None:
        """Remove the decoded audio (large; cheap to make again), keep the rest."""
        for pcm in (self.folder / "decode").glob("*.pcm*"):
            pcm.unlink(missing_ok=True)

    # -- voice activity --------------------------------------------------------------------

    def save_activity(self, key: str, activity: VoiceActivity) -> None:
        path = self.folder / "vad" / f"{key}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        with tmp.open("wb") as f:
            np.savez(
                f,
                voiced=activity.voiced,
                level_db=activity.level_db,
                frame_s=activity.frame_s,
                duration=activity.duration,
            )
        os.replace(tmp, path)

    def activity(self, key: str) -> VoiceActivity | None:
        path = self.folder / "vad" / f"{key}.npz"
        if not path.exists():
            return None
        with np.load(path) as data:
            return VoiceActivity(
                frame_s=float(data["frame_s"]),
                voiced=data["voiced"],
                level_db=data["level_db"],
                duration=float(data["duration"]),
            )

    # -- transcription ---------------------------------------------------------------------

    def save_segments(self, key: str, segments: list[Segment]) -> None:
        atomic_write_bytes(
            self.folder / "transcribe" / f"{key}.json", _SEGMENTS.dump_json(segments)
        )

    def segments(self, key: str) -> list[Segment] | None:
        path = self.folder / "transcribe" / f"{key}.json"
        if not path.exists():
            return None
        return _SEGMENTS.validate_json(path.read_bytes())

    # -- audit -----------------------------------------------------------------------------

    def journal(self, event: str, **fields: object) -> None:
        """Append one line saying what was done (a crash can cut only the last line)."""
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}) + "\n"
        path = self.folder / "journal.jsonl"
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
