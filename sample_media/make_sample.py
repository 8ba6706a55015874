"""Build the sample meeting in ``sample_media/meeting`` from synthesised speech.

Four participants, one WebM/Opus file each, as RealtimeKit track recording names them:
Alice opens the call, Bruno leaves and rejoins (two files, one speaker), Chen joins late,
Dana listens and never speaks. One pair of turns overlaps. Writes ``manifest.json``
(trackscribe.manifest/1), ``tracks/*.webm`` and ``truth.json`` (SegLST, seconds from the
earliest track start, each turn from the first to the last sample of its speech).

Needs the ``espeak-ng`` program to synthesise speech (``apt-get install espeak-ng``); the
encoding is done with PyAV, like the decoding in trackscribe. The outputs are committed, so
neither the demo nor the tests need espeak-ng. Re-run with:

    python sample_media/make_sample.py
"""

import hashlib
import json
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RATE = 48_000
OUT = Path(__file__).parent / "meeting"
ORIGIN = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)
MEETING_ID = "5a3c1f0e-7d2b-4c6a-9e8f-0b1d2c3e4f50"
RECORDING_ID = "0c9b8a76-5432-4fed-8cba-987654321000"

# user_id, display name, espeak-ng voice, peer id per file
PEOPLE = {
    "user-alice": ("Alice", "en-us+f3", ["peer-a1f3c2d4e5b6"]),
    "user-bruno": ("Bruno", "en-gb+m3", ["peer-b2e4d6f8a0c1", "peer-b9d7c5a3e1f0"]),
    "user-chen": ("Chen", "en-us+m7", ["peer-c3a5b7d9e1f2"]),
    "user-dana": ("Dana", None, ["peer-d4b6c8e0f2a3"]),
}

# Who says what, and when the turn starts (seconds from the origin).
SCRIPT = [
    ("user-alice", 1.0, "Good morning everyone, thanks for joining the weekly planning call."),
    ("user-bruno", 6.2, "Morning. I finished the billing migration yesterday, and the tests pass."),
    ("user-alice", 12.0, "Great news. Did the old invoices move over as well?"),
    ("user-bruno", 15.6, "Yes, all of them. I checked the totals against last month's report."),
    ("user-chen", 22.4, "Sorry I am late, my train was delayed. Did I miss anything important?"),
    ("user-alice", 28.4, "Only the billing update. Bruno can send you his notes."),
    ("user-chen", 37.2, "Thanks. On my side, the new search page is ready for review."),
    ("user-bruno", 40.3, "I can review it this afternoon, right after lunch."),
    ("user-alice", 45.6, "Perfect. Let us meet again next Tuesday at ten."),
]

# When each file starts and stops (seconds from the origin). Bruno drops out and comes back.
PRESENCE = {
    "user-alice": [(0.0, 50.5)],
    "user-bruno": [(0.35, 21.0), (34.8, 50.2)],
    "user-chen": [(21.7, 50.8)],
    "user-dana": [(0.9, 50.6)],
}


def synthesise(text: str, voice: str) -> np.ndarray:
    """Speech for ``text`` at 48 kHz, trimmed to its first and last audible sample."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "155", "-w", str(wav), text], check=True)
        with av.open(str(wav)) as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
            chunks = [
                out.to_ndarray().reshape(-1)
                for frame in container.decode(audio=0)
                for out in resampler.resample(frame)
            ]
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    audio = np.concatenate(chunks)
    loud = np.flatnonzero(np.abs(audio) > 10 ** (-50 / 20))
    audio = audio[loud[0] : loud[-1] + 1]
    return 0.5 * audio / np.max(np.abs(audio))  # -6 dBFS peak, as a headset gives


def encode_webm(samples: np.ndarray, path: Path) -> None:
    """Mono float samples at 48 kHz to WebM/Opus, 20-ms frames, as browsers send them."""
    with av.open(str(path), mode="w", format="webm") as container:
        stream = container.add_stream("libopus", rate=RATE, layout="mono")
        stream.bit_rate = 24_000
        frame_len = 960
        padded = np.concatenate([samples, np.zeros(-len(samples) % frame_len, np.float32)])
        for i in range(0, len(padded), frame_len):
            frame = av.AudioFrame.from_ndarray(
                padded[i : i + frame_len].reshape(1, -1).astype(np.float32),
                format="flt",
                layout="mono",
            )
            frame.sample_rate = RATE
            frame.pts = i
            frame.time_base = Fraction(1, RATE)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def main() -> None:
    rng = np.random.default_rng(7)
    end = max(stop for windows in PRESENCE.values() for _, stop in windows)
    timeline = {user: np.zeros(int((end + 1) * RATE), np.float32) for user in PEOPLE}
    truth = []
    for user, start, text in SCRIPT:
        speech = synthesise(text, PEOPLE[user][1])
        stop = start + len(speech) / RATE
        if not any(join <= start and stop <= leave for join, leave in PRESENCE[user]):
            raise SystemExit(f"{user}'s turn at {start} s does not fit while they are present")
        first = round(start * RATE)
        timeline[user][first : first + len(speech)] += speech
        truth.append(
            {
                "session_id": MEETING_ID,
                "speaker": user,
                "start_time": round(start, 3),
                "end_time": round(start + len(speech) / RATE, 3),
                "words": text,
            }
        )

    (OUT / "tracks").mkdir(parents=True, exist_ok=True)
    for old in (OUT / "tracks").glob("*.webm"):
        old.unlink()
    tracks = []
    for user, (name, _, peers) in PEOPLE.items():
        # A quiet room: low noise under everyone's microphone, including the silent listener.
        audio = timeline[user] + rng.normal(0, 10 ** (-65 / 20), len(timeline[user])).astype(
            np.float32
        )
        for peer, (join, leave) in zip(peers, PRESENCE[user], strict=True):
            started = ORIGIN + timedelta(seconds=join)
            millis = round(started.timestamp() * 1000)
            file_name = f"default_{user}_{peer}_peer_audio_{millis}.webm"
            path = OUT / "tracks" / file_name
            encode_webm(audio[round(join * RATE) : round(leave * RATE)], path)
            data = path.read_bytes()
            tracks.append(
                {
                    "user_id": user,
                    "display_name": name,
                    "peer_id": peer,
                    "path": f"tracks/{file_name}",
                    "started_time": iso(started),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                }
            )
    manifest = {
        "schema": "trackscribe.manifest/1",
        "meeting_id": MEETING_ID,
        "recording_id": RECORDING_ID,
        "tracks": tracks,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (OUT / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    size = sum(p.stat().st_size for p in (OUT / "tracks").glob("*.webm"))
    print(f"{OUT}: {len(tracks)} files, {size / 1e6:.2f} MB, {len(truth)} turns")


if __name__ == "__main__":
    main()
