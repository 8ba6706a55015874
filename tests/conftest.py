"""Shared fixtures: the sample meeting, its transcript (made once), and real WebM/Opus files.

Test media is made with PyAV's Opus encoder, so every file the tests decode is a genuine
WebM/Opus file with the packet timestamps a test needs (offsets, gaps, stereo, truncation).
"""

import hashlib
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import av
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from models import Manifest, PcmAudio
from pipeline import Transcript, transcribe_tracks
from pipeline.demo import sample_meeting
from stages.decode import decode

RATE = 48_000
FRAME = 960  # 20 ms


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` answering on a loopback port for the length of the block: an API or a
    storage that misbehaves as a test needs. Yields its root URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


class HalfStored(BaseHTTPRequestHandler):
    """An API and its storage in one: recording r1 has the files in ``stored``; storage
    answers 503 (come back at once) for those in ``down``, as a storage having trouble, and
    404 for those in ``gone``, as S3 for an object it does not have."""

    stored: ClassVar[dict[str, bytes]] = {}
    down: ClassVar[set[str]] = set()
    gone: ClassVar[set[str]] = set()

    def do_GET(self) -> None:
        if self.path.startswith("/file/"):
            name = self.path.removeprefix("/file/").split("?")[0]
            if name in self.down:
                self._send(503, b"", "text/plain", ("Retry-After", "0"))
            elif name in self.gone:
                self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
            else:
                body = self.stored[name]
                etag = f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
                self._send(200, body, "application/octet-stream", ("ETag", etag))
            return
        root = f"http://127.0.0.1:{self.server.server_port}/file"
        urls = {name: {"download_url": f"{root}/{name}?sig=s"} for name in self.stored}
        recording = {
            "id": "r1",
            "status": "UPLOADED",
            "download_url": [{"layer_name": "default", "download_urls": urls}],
            "started_time": "2026-11-20T10:00:00Z",
        }
        body = json.dumps({"success": True, "data": recording}).encode()
        self._send(200, body, "application/json")

    def _send(self, status: int, body: bytes, kind: str, *header: tuple[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in header:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def write_webm(
    path: Path,
    samples: np.ndarray,
    *,
    start: float = 0.0,
    gaps: dict[float, float] | None = None,
    channels: int = 1,
    clock: float = 1.0,
    opposite: bool = False,
) -> Path:
    """Encode mono float samples (48 kHz) as WebM/Opus.

    ``start`` stamps the first packet at that time; ``gaps`` maps a position in ``samples``
    (seconds) to a jump in timestamps inserted there (seconds), as a dropped connection makes;
    ``clock`` scales the timestamps (0.95: a sender whose clock runs 5 % slow); ``opposite``
    puts the second of two channels in opposite phase (a microphone wired half reversed).
    """
    gaps = gaps or {}
    layout = "mono" if channels == 1 else "stereo"
    padded = np.concatenate([samples, np.zeros(-len(samples) % FRAME, np.float32)])
    with av.open(str(path), mode="w", format="webm") as container:
        stream = container.add_stream("libopus", rate=RATE, layout=layout)
        stream.bit_rate = 32_000
        shift = round(start * RATE)
        for i in range(0, len(padded), FRAME):
            shift += sum(round(g * RATE) for at, g in gaps.items() if round(at * RATE) == i)
            chunk = padded[i : i + FRAME].astype(np.float32)
            both = [chunk, -chunk if opposite else chunk]
            data = np.stack(both).T.reshape(1, -1) if channels > 1 else chunk[None]
            frame = av.AudioFrame.from_ndarray(data, format="flt", layout=layout)
            frame.sample_rate = RATE
            frame.pts = round(i * clock) + shift
            frame.time_base = Fraction(1, RATE)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def tone(seconds: float, freq: float = 440.0, db: float = -12.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (10 ** (db / 20) * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing what was said."""
    return re.findall(r"[a-z0-9']+", text.lower())


BUNDLE_MEMBERS = [
    "transcript.json",
    "transcript.vtt",
    "transcript.srt",
    "transcript.txt",
    "transcript.seglst.json",
    "provenance.txt",
    "SHA256SUMS",
]
"""What a compliance bundle holds, in its order: the contract a reviewer's tools rely on."""


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return sample_meeting()


@pytest.fixture(scope="session")
def sample_manifest(sample_dir: Path) -> Manifest:
    return Manifest.load(sample_dir / "manifest.json")


@pytest.fixture(scope="session")
def sample_truth(sample_dir: Path) -> list[dict]:
    return json.loads((sample_dir / "truth.json").read_text())


@pytest.fixture(scope="session")
def sample_transcript(sample_manifest: Manifest) -> Transcript:
    """The whole pipeline on the sample meeting, real model; made once for many tests."""
    return transcribe_tracks(sample_manifest, progress=False)


@pytest.fixture(scope="session")
def sample_speech(
    sample_manifest: Manifest, tmp_path_factory: pytest.TempPathFactory
) -> np.ndarray:
    """Alice's track as 48 kHz float samples: real (synthesised) speech to build test files."""
    track = sample_manifest.tracks[0]
    pcm: PcmAudio = decode(
        sample_manifest.track_path(track), tmp_path_factory.mktemp("speech") / "alice.pcm"
    )
    x16 = pcm.read()
    return np.repeat(x16, 3).astype(np.float32)  # 16 -> 48 kHz; plenty for tests of timing


@pytest.fixture
def meeting_copy(sample_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the sample meeting, to break in tests."""
    target = tmp_path / "meeting"
    shutil.copytree(sample_dir, target)
    return target


_CRASHING_DECODER = """
import os, signal
import av
_open = av.open
def _open_or_crash(file, *args, **kwargs):
    if "CRASH" in str(file):  # what a decoder that crashes on a damaged file does
        os.kill(os.getpid(), signal.SIGSEGV)
    return _open(file, *args, **kwargs)
av.open = _open_or_crash
"""


def crash_first_track(meeting: Path) -> str:
    """Rename ``meeting``'s first track to a name the crashing decoder (see
    :func:`crashing_decoder_env`) crashes on, in its manifest too; its new manifest path."""
    manifest = meeting / "manifest.json"
    raw = json.loads(manifest.read_text())
    path = raw["tracks"][0]["path"]
    renamed = str(Path(path).with_name(f"CRASH_{Path(path).name}"))
    (meeting / path).rename(meeting / renamed)
    raw["tracks"][0]["path"] = renamed
    manifest.write_text(json.dumps(raw))
    return renamed


@pytest.fixture
def crashing_decoder_env(tmp_path) -> dict[str, str]:
    """An environment in which every Python process (a run's workers too) gets a decoder
    that crashes on any file whose path holds ``CRASH``."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_CRASHING_DECODER)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(inject), *sys.path])}


def write_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A new Ed25519 key pair as ``openssl genpkey`` writes it: ``name.pem`` (this account
    alone may read it) and ``name.pub.pem``."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = folder / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public = folder / f"{name}.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public
