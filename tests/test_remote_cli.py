"""`trackscribe emulator`, `run`, `fetch`, `webhook` and `demo` as users run them: separate
processes talking real HTTP over loopback."""

import base64
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from models import Manifest, Recording, Track, Transcript, describe_error
from pipeline import remote, verify
from pipeline.emulator import FAULTS, Emulator, EmulatorOptions
from pipeline.webhook import RecordingErrored, WebhookReceiver
from stages.export import export
from stages.record import RealtimeKitClient, UploadTimeoutError

from .conftest import HalfStored, serving, words_of, write_key

TOKEN = "cli-token-do-not-log-me"


def status_line(connection: socket.socket) -> bytes:
    """The first line of the answer that comes on ``connection``."""
    with connection.makefile("rb") as answer:
        return answer.readline()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLOUDFLARE_API_TOKEN": TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def emulator_url(process: subprocess.Popen) -> str:
    """The API URL that `trackscribe emulator --port 0` says it serves at, once it listens:
    the port is the one the system gave it, which no other process can have taken."""
    assert process.stderr is not None
    for line in process.stderr:
        if said := re.search(r"RealtimeKit emulator for meeting \S+ at (\S+) ", line):
            return said.group(1)
    raise AssertionError(f"the emulator ended without serving (exit {process.wait()})")


def wait_listening(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listening on {port}")


@pytest.fixture
def emulator_process(sample_dir) -> Iterator[tuple[str, list[str]]]:
    """`trackscribe emulator` in its own process with every fault switched on."""
    faults = [arg for name in FAULTS for arg in ("--fault", f"{name}=2")]
    args = [
        "--meeting",
        str(sample_dir),
        "--port",
        "0",
        "--token",
        TOKEN,
        "--start-delay",
        "0.1",
        "--record-seconds",
        "0.5",
        "--upload-seconds",
        "0.1",
        *faults,
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "emulator", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield emulator_url(process), ["--account-id", "acct", "--app-id", "app"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_run_with_a_subset_of_users_gives_exactly_their_words(
    emulator_process, sample_manifest, sample_truth, tmp_path
):
    base_url, account = emulator_process
    result = cli(
        "run",
        "--meeting-id",
        sample_manifest.meeting_id,
        "--user-id",
        "user-alice",
        "--user-id",
        "user-chen",
        "-o",
        str(tmp_path),
        "--base-url",
        base_url,
        *account,
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    transcript = Transcript.load(tmp_path / "transcript.json")
    assert {s.user_id for s in transcript.speakers} == {"user-alice", "user-chen"}
    said = {u.speaker for u in transcript.utterances}
    assert said == {"user-alice", "user-chen"}
    for user in ("user-alice", "user-chen"):
        truth = [w for t in sample_truth if t["speaker"] == user for w in words_of(t["words"])]
        heard = [w for u in transcript.utterances if u.speaker == user for w in words_of(u.text)]
        assert len(set(truth) & set(heard)) >= 0.8 * len(set(truth))
    # every file as the meeting's original, though every fault fired twice on the way
    fetched = Manifest.load(tmp_path / "recording" / "manifest.json")
    for track in fetched.tracks:
        original = next(
            t for t in sample_manifest.tracks if Path(t.path).name == Path(track.path).name
        )
        assert (
            fetched.track_path(track).read_bytes()
            == sample_manifest.track_path(original).read_bytes()
        )
    assert TOKEN not in result.stderr and "X-Amz-Signature" not in result.stderr


def test_fetch_an_existing_recording_then_rerun_skips_it(
    emulator_process, sample_manifest, tmp_path
):
    base_url, account = emulator_process
    client = RealtimeKitClient(account_id="a", app_id="b", token=TOKEN, base_url=base_url)
    recording = client.start_track_recording(sample_manifest.meeting_id)
    client.wait_until_uploaded(recording.id, poll=0.1)

    fetch = ["fetch", "--recording-id", recording.id, "-o", str(tmp_path), "--base-url", base_url]
    first = cli("-v", *fetch, *account, "--no-progress")
    again = cli(*fetch, *account, "--no-progress")

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert f"{len(sample_manifest.tracks)} already complete" in again.stderr
    assert TOKEN not in first.stderr + again.stderr
    assert "X-Amz-Signature" not in first.stderr + again.stderr


def test_a_fetch_that_fails_leaves_no_empty_output_folder_but_keeps_an_existing_one(
    emulator_process, tmp_path
):
    base_url, account = emulator_process
    mine = tmp_path / "mine"
    mine.mkdir()
    for out in (tmp_path / "new" / "folder", mine):
        result = cli(
            "fetch",
            "--recording-id",
            "no-such-recording",
            "-o",
            str(out),
            "--base-url",
            base_url,
            *account,
            "--no-progress",
        )
        assert result.returncode == 2, result.stderr
        assert "404" in result.stderr
    assert not (tmp_path / "new").exists()  # nor the folders made above it
    assert mine.is_dir()  # the user's own folder, even empty, is theirs


def test_missing_credentials_are_named_before_any_work(sample_manifest, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"recording_id": "r1"}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE", "REALTIMEKIT"))}
    for command in (
        ["run", "--meeting-id", "m", "-o", str(tmp_path / "run")],
        ["batch", str(jobs), "-o", str(tmp_path / "batch")],  # not one failure per meeting
    ):
        env_free = subprocess.run(
            [sys.executable, "-m", "pipeline", *command],
            capture_output=True,
            text=True,
            timeout=60,
            env=env | {"HOME": str(tmp_path)},
        )
        assert env_free.returncode == 2, command
        assert "account_id (--account-id, $CLOUDFLARE_ACCOUNT_ID or account_id in" in (
            env_free.stderr
        )
        assert not (tmp_path / command[-1]).exists()


def test_demo_goes_through_the_emulator_step_by_step(sample_truth):
    result = cli("demo", "--no-progress")
    assert result.returncode == 0, result.stderr
    steps = result.stderr
    for step in (
        "emulator serving",
        "started track recording",
        "UPLOADED",
        "fetched 5 file(s)",
        "transcribing",
    ):
        assert step in steps
    about, said = result.stdout.split("\n\n", 1)  # the text export: what it is, then who said what
    assert about.startswith("# Meeting ")
    assert len(said.splitlines()) == len(sample_truth)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stopped_emulator_command_still_sends_the_webhooks_it_had_queued(sample_dir, stop):
    """close() gives pending webhooks one last try: a stopped command must get to call it."""
    statuses: list[str] = []

    class SlowReceiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(0.3)  # the later deliveries are still queued when the stop comes
            statuses.append(body["recording"]["status"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    with serving(SlowReceiver) as hooks:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "pipeline", "emulator", "--meeting", str(sample_dir)),
                *("--port", "0", "--token", TOKEN, "--webhook-url", f"{hooks}/"),
                *("--start-delay", "0", "--record-seconds", "0.1", "--upload-seconds", "0.1"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            client = RealtimeKitClient(
                account_id="a", app_id="b", token=TOKEN, base_url=emulator_url(process)
            )
            meeting_id = Manifest.load(sample_dir / "manifest.json").meeting_id
            recording = client.start_track_recording(meeting_id)
            while client.get_recording(recording.id).status != "UPLOADED":
                time.sleep(0.02)  # every status change is queued by now
            process.send_signal(stop)
            process.wait(timeout=30)
        finally:
            process.kill()
            process.communicate(timeout=30)

    assert process.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[stop]
    assert statuses == ["INVOKED", "RECORDING", "UPLOADING", "UPLOADED"]


def _sign(key: rsa.RSAPrivateKey, body: bytes) -> str:
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def test_webhook_receiver_verifies_signatures_and_acts_once_per_recording():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    handled: list[Recording] = []
    with WebhookReceiver(public, handled.append) as receiver:
        body = json.dumps(
            {"event": "recording.statusUpdate", "recording": {"id": "r1", "status": "UPLOADED"}}
        ).encode()
        delivery = str(uuid.uuid4())

        def post(data: bytes, signature: str, rtk_uuid: str) -> httpx.Response:
            return httpx.post(
                receiver.url,
                content=data,
                headers={"rtk-signature": signature, "rtk-uuid": rtk_uuid},
            )

        assert post(body, _sign(key, body + b" "), delivery).status_code == 401  # not this body
        assert post(body, "not base64!", delivery).status_code == 401
        assert post(body, _sign(key, body), delivery).status_code == 202
        assert post(body, _sign(key, body), delivery).json()["status"].startswith("duplicate")
        assert post(body, _sign(key, body), str(uuid.uuid4())).status_code == 200  # same recording
        receiver.wait_idle()
    assert [r.id for r in handled] == ["r1"]


@pytest.mark.parametrize(
    "odd",
    [
        {
            "downloadUrl": [
                {"layerName": "default", "downloadUrls": {"a.webm": {"downloadUrl": None}}}
            ]
        },
        {"startedTime": "2026-11-20T10:00:00"},  # no time zone
        {"downloadUrl": 42},
    ],
)
def test_an_uploaded_recording_is_acted_on_though_fields_it_does_not_need_are_odd(odd):
    # RealtimeKit redelivers only after a 5xx: a 400 here would lose the announcement.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    handled: list[Recording] = []
    with WebhookReceiver(public, handled.append) as receiver:
        recording = {"id": "r1", "status": "UPLOADED", "meetingId": "m1", **odd}
        body = json.dumps({"event": "recording.statusUpdate", "recording": recording}).encode()
        answer = httpx.post(receiver.url, content=body, headers={"rtk-signature": _sign(key, body)})
        receiver.wait_idle()
    assert answer.status_code == 202
    assert [(r.id, r.meeting_id) for r in handled] == [("r1", "m1")]


def test_webhook_receiver_listens_on_an_ipv6_address_too():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    handled: list[Recording] = []
    with WebhookReceiver(public, handled.append, host="::1") as receiver:
        assert receiver.url.startswith("http://[::1]:")
        body = json.dumps(
            {"event": "recording.statusUpdate", "recording": {"id": "r1", "status": "UPLOADED"}}
        ).encode()
        headers = {"rtk-signature": _sign(key, body), "rtk-uuid": str(uuid.uuid4())}
        assert httpx.post(receiver.url, content=body, headers=headers).status_code == 202
        receiver.wait_idle()
    assert [r.id for r in handled] == ["r1"]


@pytest.fixture
def webhook_sender(sample_dir, tmp_path) -> Iterator[tuple[Emulator, int, Path]]:
    """An emulator that signs and delivers its webhooks to a free port: (it, port, its public
    key file)."""
    port = free_port()
    key_file = tmp_path / "webhook-key.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    options = EmulatorOptions(
        token=TOKEN,
        start_delay=0.1,
        record_seconds=0.3,
        upload_seconds=0.1,
        webhook_url=f"http://127.0.0.1:{port}/",
        webhook_key=key_file,
    )
    with Emulator(sample_dir, options) as emu:
        public = tmp_path / "public.pem"
        public.write_text(emu.public_key_pem)
        yield emu, port, public


def run_webhook_command(
    sender: tuple[Emulator, int, Path], out: Path, wanted: Path, *, token: str = TOKEN
) -> str:
    """Run `trackscribe webhook` until the emulator has recorded user-bruno and ``wanted``
    exists under ``out/RECORDING_ID``; its stderr."""
    emu, port, public = sender
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "webhook",
            "--port",
            str(port),
            "-o",
            str(out),
            "--public-key",
            str(public),
            *api_flags(emu),
        ],
        env={**os.environ, "CLOUDFLARE_API_TOKEN": token},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(port, receiver)
        client = RealtimeKitClient(account_id="a", app_id="b", token=TOKEN, base_url=emu.base_url)
        recording = client.start_track_recording(emu.meeting_id, user_ids=["user-bruno"])
        path = out / recording.id / wanted
        deadline = time.monotonic() + 240
        while not path.exists() and time.monotonic() < deadline:
            assert receiver.poll() is None
            time.sleep(0.2)
        assert path.exists(), f"no {path}"
    finally:
        receiver.terminate()
        stderr = receiver.communicate(timeout=30)[1]
    return stderr


def test_webhook_command_fetches_and_transcribes_what_the_emulator_announces(
    webhook_sender, tmp_path
):
    out = tmp_path / "out"
    stderr = run_webhook_command(webhook_sender, out, Path("transcript.json"))

    (transcript_path,) = out.glob("*/transcript.json")
    transcript = Transcript.load(transcript_path)
    assert {u.speaker for u in transcript.utterances} == {"user-bruno"}
    assert not (transcript_path.parent / "failed.json").exists()
    assert TOKEN not in stderr and "X-Amz-Signature" not in stderr


def test_webhook_command_leaves_failed_json_for_a_recording_it_could_not_handle(
    webhook_sender, tmp_path
):
    out = tmp_path / "out"
    stderr = run_webhook_command(
        webhook_sender, out, Path("failed.json"), token="a-token-the-api-refuses"
    )

    (failed_path,) = out.glob("*/failed.json")
    failed = json.loads(failed_path.read_text())
    assert failed["recording_id"] == failed_path.parent.name
    assert "401" in failed["error"]
    assert f"--recording-id {failed['recording_id']}" in failed["by_hand"]
    # the server's account flags, so the commands ask the same API (the token is not there)
    assert f"--base-url {webhook_sender[0].base_url}" in failed["by_hand"]
    assert "--account-id a --app-id b" in failed["by_hand"]
    assert not (failed_path.parent / "transcript.json").exists()
    assert "a-token-the-api-refuses" not in stderr
    # The log says what failed.json says: why, and the commands that do it by hand.
    (gave_up,) = [line for line in stderr.splitlines() if "gave up on recording" in line]
    assert "401" in gave_up
    assert failed["by_hand"] in stderr


def test_the_receiver_reports_a_recording_it_gave_up_on_and_acts_on_it_when_announced_again():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tries: list[str] = []
    failed: list[tuple[str, str]] = []

    def always_fails(recording: Recording) -> None:
        tries.append(recording.id)
        raise RuntimeError(f"storage down (try {len(tries)})")

    def announce(receiver: WebhookReceiver) -> int:
        body = json.dumps(
            {"event": "recording.statusUpdate", "recording": {"id": "r1", "status": "UPLOADED"}}
        ).encode()
        headers = {"rtk-signature": _sign(key, body), "rtk-uuid": str(uuid.uuid4())}
        return httpx.post(receiver.url, content=body, headers=headers).status_code

    with WebhookReceiver(
        public,
        always_fails,
        on_failed=lambda r, e: failed.append((r.id, str(e))),
        tries=2,
        retry_wait=0.0,
    ) as receiver:
        assert announce(receiver) == 202
        receiver.wait_idle()
        assert tries == ["r1", "r1"]
        assert failed == [("r1", "storage down (try 2)")]
        assert announce(receiver) == 202  # given up on, so acted on again
        receiver.wait_idle()
    assert len(tries) == 4 and len(failed) == 2


def test_webhook_receiver_refuses_abuse_before_reading_a_body():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    handled: list[Recording] = []
    with WebhookReceiver(public, handled.append) as receiver:
        host, port = receiver.url.removeprefix("http://").rstrip("/").split(":")
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.0 411")
        with socket.create_connection((host, int(port))) as raw:  # more digits than int() reads
            raw.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
            )
            assert raw.recv(100).startswith(b"HTTP/1.0 413")
        with socket.create_connection((host, int(port))) as raw:  # "²" in Latin-1
            raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\xb2\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.0 411")
        body = json.dumps(
            {
                "event": "recording.statusUpdate",
                "recording": {"id": "../../etc", "status": "UPLOADED"},
            }
        ).encode()
        sent = httpx.post(
            receiver.url,
            content=body,
            headers={"rtk-signature": _sign(key, body), "rtk-uuid": "u1"},
        )
        assert sent.status_code == 400
        receiver.wait_idle()
    assert handled == []


def _webhook_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public


def _announce(
    receiver: WebhookReceiver, key: rsa.RSAPrivateKey, recording: dict, **body: object
) -> httpx.Response:
    """A signed ``recording.statusUpdate`` delivery, as RealtimeKit sends it."""
    data = json.dumps({"event": "recording.statusUpdate", "recording": recording, **body}).encode()
    headers = {"rtk-signature": _sign(key, data), "rtk-uuid": str(uuid.uuid4())}
    return httpx.post(receiver.url, content=data, headers=headers)


def test_a_receiver_stopped_with_recordings_accepted_gives_each_up_in_a_word():
    # Each was answered 2xx, so RealtimeKit will not deliver it again: none may vanish.
    key, public = _webhook_key()
    begun, release = threading.Event(), threading.Event()
    failed: list[tuple[str, str]] = []

    def slow(recording: Recording) -> None:
        begun.set()
        release.wait(30)
        raise RuntimeError("storage down")  # after it was given up on: not reported twice

    receiver = WebhookReceiver(
        public, slow, on_failed=lambda r, e: failed.append((r.id, str(e))), tries=1
    )
    receiver.start()
    try:
        for rid in ("r1", "r2", "r3"):
            assert _announce(receiver, key, {"id": rid, "status": "UPLOADED"}).status_code == 202
        assert _announce(receiver, key, {"id": "r4", "status": "ERRORED"}).status_code == 200
        assert begun.wait(10)
        receiver.close(grace=0.2)
    finally:
        release.set()
    receiver._worker_thread.join(10)
    assert failed == [
        ("r2", "the receiver stopped before handling it"),
        ("r3", "the receiver stopped before handling it"),
        ("r4", "RealtimeKit announced the recording as ERRORED: it has no files to transcribe"),
        ("r1", "the receiver stopped while handling it"),
    ]


def sigterm_once_logged(caplog: pytest.LogCaptureFixture, said: str) -> None:
    """Send this process SIGTERM (a second stop) once a log line holding ``said`` is out,
    a moment into the wait that follows it; from a thread of its own, started now."""

    def stop_again() -> None:
        deadline = time.monotonic() + 10
        while not any(said in r.getMessage() for r in caplog.records):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        time.sleep(0.2)  # into the wait that follows the line
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_again, daemon=True).start()


@contextlib.contextmanager
def sigterm_raises(error: type[BaseException]) -> Iterator[None]:
    """SIGTERM raises ``error`` meanwhile, as the command line's handler raises its own."""

    def terminate(signum: int, frame: object) -> None:
        raise error

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_second_stop_while_the_receiver_waits_for_the_recording_in_hand_still_reports_it(
    caplog,
):
    # The second Ctrl-C or SIGTERM interrupts the wait; after that Python 3.11 takes the
    # worker's thread for ended though it still runs: the recording must not vanish with it.
    key, public = _webhook_key()
    begun, release = threading.Event(), threading.Event()
    failed: list[tuple[str, str]] = []

    class Terminated(Exception):
        """What the command line's SIGTERM handler raises."""

    def slow(recording: Recording) -> None:
        begun.set()
        release.wait(30)

    caplog.set_level(logging.WARNING, logger="trackscribe")
    receiver = WebhookReceiver(
        public, slow, on_failed=lambda r, e: failed.append((r.id, str(e))), tries=1
    )
    receiver.start()
    try:
        with sigterm_raises(Terminated):
            assert _announce(receiver, key, {"id": "r1", "status": "UPLOADED"}).status_code == 202
            assert begun.wait(10)
            sigterm_once_logged(caplog, "waiting up to")
            with pytest.raises(Terminated):
                receiver.close(grace=20)  # the first stop; the second comes while it waits
    finally:
        release.set()
    assert failed == [("r1", "the receiver stopped while handling it")]


def test_a_second_stop_while_the_waiting_recordings_are_reported_still_names_each(caplog):
    # on_failed may take a while for each (it looks an ERRORED one up, writes failed.json): a
    # second stop then must not leave the rest unsaid, nor the recording in hand.
    key, public = _webhook_key()
    begun, reporting, release = threading.Event(), threading.Event(), threading.Event()
    failed: list[str] = []

    class Terminated(KeyboardInterrupt):
        """What the command line's SIGTERM handler raises."""

    def slow(recording: Recording) -> None:
        begun.set()
        release.wait(30)

    def on_failed(recording: Recording, error: BaseException) -> None:
        failed.append(recording.id)
        if recording.id == "r2":
            reporting.set()
            release.wait(30)

    def stop_again_while_it_reports() -> None:
        if reporting.wait(10):
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGTERM)

    caplog.set_level(logging.WARNING, logger="trackscribe")
    receiver = WebhookReceiver(public, slow, on_failed=on_failed, tries=1)
    receiver.start()
    try:
        with sigterm_raises(Terminated):
            for rid in ("r1", "r2", "r3"):
                answer = _announce(receiver, key, {"id": rid, "status": "UPLOADED"})
                assert answer.status_code == 202
            assert begun.wait(10)
            threading.Thread(target=stop_again_while_it_reports, daemon=True).start()
            with pytest.raises(Terminated):
                receiver.close(grace=20)
    finally:
        release.set()
    said = [r.getMessage() for r in caplog.records]
    assert "webhook: stopping; 2 recording(s) accepted and not begun are given up on: r2, r3" in (
        said
    )
    (unreported,) = [line for line in said if "could be reported" in line]
    assert unreported.startswith("webhook: stopped before recording(s) r2, r3 could be reported")
    assert failed == ["r2", "r1"]  # the one in hand is left at once, and said


def test_a_stop_does_not_wait_out_the_pause_before_a_try_again(caplog):
    # A stop between two tries neither sat out the pause (seconds: the try number times
    # retry_wait) nor began the next try and waited for it: the grace ran out instead. It is
    # the stop that left the recording, after one try: the report said it "gave up after 3
    # tries", with tries unused.
    key, public = _webhook_key()
    tried: list[str] = []
    first = threading.Event()
    failed: list[tuple[str, str, BaseException | None]] = []

    def fail(recording: Recording) -> None:
        tried.append(recording.id)
        first.set()
        raise RuntimeError("storage down")

    caplog.set_level(logging.WARNING, logger="trackscribe")
    receiver = WebhookReceiver(
        public,
        fail,
        on_failed=lambda r, e: failed.append((r.id, describe_error(e), e.__cause__)),
        tries=3,
        retry_wait=30.0,
    )
    receiver.start()
    assert _announce(receiver, key, {"id": "r1", "status": "UPLOADED"}).status_code == 202
    assert first.wait(10)
    time.sleep(0.2)  # into the pause
    began = time.monotonic()
    receiver.close(grace=10)
    assert time.monotonic() - began < 3
    assert len(tried) == 1  # no try begun after the stop
    stopped = "the receiver stopped after try 1 of 3, which failed: RuntimeError: storage down"
    [(recording_id, error, cause)] = failed  # reported once
    assert (recording_id, error) == ("r1", f"ReceiverStopped: {stopped}")
    assert str(cause) == "storage down"  # the last failure, for on_failed to tell apart
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert said == [
        "webhook: handling recording r1 failed (try 1 of 3): RuntimeError: storage down",
        f"webhook: recording r1 was not handled: {stopped}",
    ]


@pytest.mark.parametrize("status", ["ERRORED", "UPLOADED"])
def test_a_recording_whose_failure_is_being_reported_when_the_grace_ends_is_reported_once(
    status, caplog
):
    # on_failed may take seconds (it looks an ERRORED one up): a stop whose grace runs out
    # meanwhile must not report the recording again (failed.json twice, two error lines), and
    # must not return before the report is done: the process ends when close returns, and
    # the worker's daemon thread with it, leaving neither failed.json nor the error line.
    key, public = _webhook_key()
    reporting = threading.Event()
    begun: list[str] = []
    reported: list[str] = []

    def fail(recording: Recording) -> None:
        raise RuntimeError("storage down")

    def on_failed(recording: Recording, error: BaseException) -> None:
        begun.append(recording.id)
        reporting.set()
        time.sleep(1.0)  # the command line's lookup of an ERRORED recording, then failed.json
        reported.append(recording.id)

    caplog.set_level(logging.WARNING, logger="trackscribe")
    receiver = WebhookReceiver(public, fail, on_failed=on_failed, tries=1)
    receiver.start()
    assert _announce(receiver, key, {"id": "r1", "status": status}).status_code in (200, 202)
    assert reporting.wait(10)
    receiver.close(grace=0.2)
    assert (begun, reported) == (["r1"], ["r1"])  # done when close returns, and done once
    said = [r.getMessage() for r in caplog.records]
    assert "for the failure of recording r1 to be reported" in " ".join(said)
    assert not [line for line in said if "cut that report short" in line]
    (_,) = [line for line in said if "r1 was not handled" in line or "up on recording r1" in line]


def test_a_stop_waits_for_a_report_under_way_only_so_long(monkeypatch, caplog):
    # on_failed that hangs must not hold a stop for ever: the wait is bounded, and the log
    # says the report may be cut short (it is still not made a second time).
    key, public = _webhook_key()
    reporting, release = threading.Event(), threading.Event()
    failed: list[str] = []

    def on_failed(recording: Recording, error: BaseException) -> None:
        failed.append(recording.id)
        reporting.set()
        release.wait(30)

    monkeypatch.setattr("pipeline.webhook._REPORT_SECONDS", 0.3)
    caplog.set_level(logging.WARNING, logger="trackscribe")
    receiver = WebhookReceiver(public, lambda r: None, on_failed=on_failed, tries=1)
    receiver.start()
    try:
        assert _announce(receiver, key, {"id": "r1", "status": "ERRORED"}).status_code == 200
        assert reporting.wait(10)
        began = time.monotonic()
        receiver.close(grace=0.2)
        assert time.monotonic() - began < 5
    finally:
        release.set()
    assert failed == ["r1"]
    said = [r.getMessage() for r in caplog.records]
    (cut,) = [line for line in said if "cut that report short" in line]
    assert cut.startswith("webhook: stopped while the failure of recording r1 was being")


def test_a_second_stop_while_a_report_under_way_is_waited_for_leaves_at_once(caplog):
    key, public = _webhook_key()
    reporting, release = threading.Event(), threading.Event()
    failed: list[str] = []

    class Terminated(KeyboardInterrupt):
        """What the command line's SIGTERM handler raises."""

    def on_failed(recording: Recording, error: BaseException) -> None:
        failed.append(recording.id)
        reporting.set()
        release.wait(30)

    caplog.set_level(logging.WARNING, logger="trackscribe")
    receiver = WebhookReceiver(public, lambda r: None, on_failed=on_failed, tries=1)
    receiver.start()
    try:
        with sigterm_raises(Terminated):
            assert _announce(receiver, key, {"id": "r1", "status": "ERRORED"}).status_code == 200
            assert reporting.wait(10)
            sigterm_once_logged(caplog, "to be reported")
            began = time.monotonic()
            with pytest.raises(Terminated):
                receiver.close(grace=0.2)
            assert time.monotonic() - began < 5  # not the whole bound of the wait (15 s)
    finally:
        release.set()
    assert failed == ["r1"]
    said = [r.getMessage() for r in caplog.records]
    (cut,) = [line for line in said if "cut that report short" in line]
    assert cut.startswith("webhook: stopped while the failure of recording r1 was being")


def test_the_grace_of_a_stop_counts_from_its_start_the_reports_of_those_waiting_included():
    # on_failed may take seconds for each waiting ERRORED recording (it looks each up): the
    # recording in hand must not get its grace only after them, or a stop takes n*5 s + grace.
    key, public = _webhook_key()
    begun, release = threading.Event(), threading.Event()
    failed: list[str] = []

    def slow(recording: Recording) -> None:
        begun.set()
        release.wait(30)
        time.sleep(0.3)  # done soon after the waiting ones are reported: within a new grace

    def on_failed(recording: Recording, error: BaseException) -> None:
        failed.append(recording.id)
        if recording.id in ("r2", "r3"):
            time.sleep(0.6)  # the two take longer than the whole grace
        if recording.id == "r3":
            release.set()

    receiver = WebhookReceiver(public, slow, on_failed=on_failed, tries=1)
    receiver.start()
    try:
        assert _announce(receiver, key, {"id": "r1", "status": "UPLOADED"}).status_code == 202
        assert begun.wait(10)
        for rid in ("r2", "r3"):
            assert _announce(receiver, key, {"id": rid, "status": "ERRORED"}).status_code == 200
        receiver.close(grace=1.0)
    finally:
        release.set()
    receiver._worker_thread.join(10)
    assert failed == ["r2", "r3", "r1"]  # r1's grace was gone when it could be waited for


@pytest.mark.parametrize("error", [ConnectionResetError("reset by peer"), ValueError("a bug")])
def test_a_request_that_fails_is_logged_not_printed(capsys, caplog, error):
    # socketserver prints a traceback to stderr for each; a client hanging up is routine.
    from pipeline._listen import LocalServer

    class Failing(BaseHTTPRequestHandler):
        def handle(self) -> None:
            raise error

    server = LocalServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="trackscribe"):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(server.url)
            time.sleep(0.2)
    finally:
        server.shutdown()
        server.server_close()
    assert capsys.readouterr().err == ""
    (said,) = [r for r in caplog.records if r.name == "trackscribe.pipeline._listen"]
    assert said.levelno == (logging.DEBUG if isinstance(error, ConnectionError) else logging.ERROR)
    assert str(error) in said.getMessage()


def test_a_receiver_never_started_closes_at_once():
    _, public = _webhook_key()
    closing = threading.Thread(target=WebhookReceiver(public, print).close, daemon=True)
    closing.start()
    closing.join(10)
    assert not closing.is_alive()


def test_a_receiver_is_started_once():
    # Recordings are handled one at a time, on one worker: a second start would make two.
    key, public = _webhook_key()
    handled: list[str] = []
    with WebhookReceiver(public, lambda r: handled.append(r.id)) as receiver:
        with pytest.raises(RuntimeError, match="started once"):
            receiver.start()
        with pytest.raises(RuntimeError, match="started once"):
            receiver.serve_forever()
        assert _announce(receiver, key, {"id": "r1", "status": "UPLOADED"}).status_code == 202
        receiver.wait_idle()
    assert handled == ["r1"]
    with pytest.raises(RuntimeError, match="started once"):
        receiver.start()  # nor once closed


def test_refused_deliveries_are_logged_at_most_once_a_minute(caplog):
    # RealtimeKit does not redeliver after a 4xx: a wrong public key must not lose every
    # recording without a word.
    key, _ = _webhook_key()
    _, other_public = _webhook_key()
    with (
        WebhookReceiver(other_public, print) as receiver,
        caplog.at_level(logging.WARNING, logger="trackscribe"),
    ):
        for _ in range(3):
            assert _announce(receiver, key, {"id": "r1", "status": "UPLOADED"}).status_code == 401
    said, at_close = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "refused a delivery (401 bad or missing rtk-signature)" in said
    assert "is the public key RealtimeKit's for this app?" in said
    # the two kept out of the log are counted when the receiver stops, not left unsaid
    assert at_close == (
        "webhook: 2 more request(s) refused (401, 411 or 413) since the last one logged"
    )


def test_each_signed_delivery_refused_is_logged_with_its_recording_and_first_problem(caplog):
    # RealtimeKit's own deliveries, lost for good: none may go unsaid for a minute's limit.
    # Headers come with spaces around them from some senders: the values are what counts.
    key, public = _webhook_key()
    handled: list[str] = []

    def send(recording: dict, *, pad: str = "", rtk_uuid: str | None = None) -> bytes:
        body = json.dumps({"event": "recording.statusUpdate", "recording": recording}).encode()
        with socket.create_connection((url.host, url.port), timeout=10) as sender:
            sender.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\n"
                + f"Content-Length: {len(body)}\r\n".encode()
                + f"rtk-signature: {pad}{_sign(key, body)}{pad}\r\n".encode()
                + f"rtk-uuid: {pad}{rtk_uuid or uuid.uuid4()}{pad}\r\n\r\n".encode()
                + body
            )
            return status_line(sender).split()[1]

    with (
        WebhookReceiver(public, lambda r: handled.append(r.id)) as receiver,
        caplog.at_level(logging.WARNING, logger="trackscribe"),
    ):
        url = httpx.URL(receiver.url)
        for _ in range(2):
            assert send({"id": "r1"}) == b"400"
        assert send({"status": "UPLOADED"}) == b"400"
        assert send({"id": "../r2", "status": "UPLOADED"}) == b"400"
        assert send({"id": "r3", "status": "UPLOADED"}, pad=" \t", rtk_uuid="d3") == b"202"
        assert send({"id": "r4", "status": "UPLOADED"}, rtk_uuid="d3") == b"200"  # the same
        receiver.wait_idle()
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert said == [
        "webhook: refused a signed delivery announcing recording r1 (400 body is not a "
        "webhook event: recording.status: missing); the sender does not deliver it again"
    ] * 2 + [
        "webhook: refused a signed delivery (400 body is not a webhook event: recording.id: "
        "missing); the sender does not deliver it again",
        "webhook: refused a signed delivery announcing recording ../r2 (400 recording.id: not "
        "usable as a folder name); the sender does not deliver it again",
    ]
    assert handled == ["r3"]


def test_text_a_delivery_gives_cannot_forge_or_recolour_a_line_of_the_log(caplog):
    # A body or header is the sender's to fill: a line break or a terminal's escape in what
    # is logged of it would write a line of its own (or recolour the log), in a library
    # user's log as much as in the command line's.
    key, public = _webhook_key()
    handled: list[str] = []
    forged = "r1\n2026-01-01 webhook: all is well\x1b[31m"
    with (
        WebhookReceiver(public, lambda r: handled.append(r.id)) as receiver,
        caplog.at_level(logging.DEBUG, logger="trackscribe"),
    ):
        assert _announce(receiver, key, {"id": forged, "status": "UPLOADED"}).status_code == 400
        odd = {"id": "r2\r\x1b[2K", "status": "UPLOADED"}
        assert _announce(receiver, key, odd, meeting="m").status_code == 400  # read in part
        assert _announce(receiver, key, {"id": "r3", "status": "UP\nLOADED"}).status_code == 200
        url = httpx.URL(receiver.url)
        with socket.create_connection((url.host, url.port), timeout=10) as sender:
            sender.sendall(b"POST /\x1b[31mhook HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
            assert status_line(sender).split()[1] == b"401"
        receiver.wait_idle()
    said = [r.getMessage() for r in caplog.records if r.name == "trackscribe.pipeline.webhook"]
    assert [line for line in said if not line.isprintable()] == []
    assert (
        "webhook: refused a signed delivery announcing recording r1\\n2026-01-01 webhook: all "
        "is well\\x1b[31m (400 recording.id: not usable as a folder name); the sender does not "
        "deliver it again"
    ) in said
    assert any("recording r2\\r\\x1b[2K: fields other than" in line for line in said)
    assert "webhook: recording r3 is UP\\nLOADED" in said
    assert any('"POST /\\x1b[31mhook HTTP/1.1" 401' in line for line in said)
    assert handled == []


def test_a_recording_announced_as_errored_goes_to_on_failed_and_one_of_a_meeting_keeps_it():
    key, public = _webhook_key()
    handled: list[Recording] = []
    failed: list[tuple[str, str]] = []
    with WebhookReceiver(
        public, handled.append, on_failed=lambda r, e: failed.append((r.id, str(e)))
    ) as receiver:
        assert _announce(receiver, key, {"id": "r1", "status": "ERRORED"}).status_code == 200
        # The meeting's id in the body's "meeting", not the recording's "meetingId"
        meeting = {"id": "m-9", "title": "weekly"}
        announced = _announce(receiver, key, {"id": "r2", "status": "UPLOADED"}, meeting=meeting)
        assert announced.status_code == 202
        receiver.wait_idle()
    assert failed == [
        ("r1", "RealtimeKit announced the recording as ERRORED: it has no files to transcribe")
    ]
    assert [(r.id, r.meeting_id) for r in handled] == [("r2", "m-9")]


def test_a_recording_the_api_does_not_know_is_left_at_one_look_and_announcements_of_it_ignored(
    emulator, tmp_path, caplog
):
    # RealtimeKit's key signs every app's deliveries: one may announce another app's
    # recording. Asking again gets the same 404, and failed.json would ask a hand to fetch
    # someone else's meeting.
    key, public = _webhook_key()
    looked: list[str] = []
    failed: list[str] = []
    client = RealtimeKitClient(account_id="a", app_id="b", token=TOKEN, base_url=emulator.base_url)

    def fetch(recording: Recording) -> None:  # what the webhook command does first
        looked.append(recording.id)
        remote.fetch(client, recording.id, tmp_path / recording.id / "recording")

    foreign = {"id": "someone-elses", "status": "UPLOADED"}
    with (
        client,
        caplog.at_level(logging.INFO, logger="trackscribe"),
        WebhookReceiver(
            public, fetch, on_failed=lambda r, e: failed.append(r.id), retry_wait=0
        ) as receiver,
    ):
        assert _announce(receiver, key, foreign).status_code == 202
        receiver.wait_idle()
        for status in ("UPLOADED", "ERRORED"):  # replays, each with a new rtk-uuid
            again = _announce(receiver, key, {**foreign, "status": status})
            assert again.json() == {"status": "not a recording of this app; ignored"}
        receiver.wait_idle()
    assert looked == ["someone-elses"] and failed == []
    assert not (tmp_path / "someone-elses").exists()
    (said,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert said.levelno == logging.WARNING
    assert said.getMessage().startswith("webhook: recording someone-elses is not one of this app's")
    assert "HTTP 404" in said.getMessage()


def test_what_on_failed_and_on_uploaded_are_told_or_may_raise_is_public():
    # A library user's on_failed tells these apart; they must be importable as API.
    import pipeline.webhook

    named = {"PartialTranscript", "ReceiverStopped", "RecordingErrored"}
    assert named <= set(pipeline.webhook.__all__)


def test_a_recording_announced_as_errored_again_goes_to_on_failed_once():
    # A replay (a new rtk-uuid) must not write failed.json again, nor log the failure twice.
    key, public = _webhook_key()
    failed: list[str] = []
    with WebhookReceiver(public, print, on_failed=lambda r, e: failed.append(r.id)) as receiver:
        assert _announce(receiver, key, {"id": "r1", "status": "ERRORED"}).status_code == 200
        receiver.wait_idle()
        again = _announce(receiver, key, {"id": "r1", "status": "ERRORED"})
        assert again.json() == {"status": "the recording's failure was noted already"}
        receiver.wait_idle()
    assert failed == ["r1"]


class _Shown:
    """What an API shows of each recording, as ``on_uploaded``'s one look (the command's
    ``_uploaded``) finds it: not UPLOADED yet, UploadTimeoutError; ended ERRORED,
    RecordingErrored. Each look is noted, with what it found."""

    def __init__(self, **statuses: str) -> None:
        self.statuses = statuses
        self.looks: list[tuple[str, str]] = []
        self.looking = threading.Event()
        self.answer = threading.Event()
        self.answer.set()

    def __call__(self, recording: Recording) -> None:
        self.looking.set()
        assert self.answer.wait(10)
        status = self.statuses[recording.id]
        self.looks.append((recording.id, status))
        if status == "ERRORED":
            raise RecordingErrored(f"recording {recording.id} ended ERRORED")
        if status != "UPLOADED":
            raise UploadTimeoutError(recording.id, status, 0)


def test_a_recording_announced_errored_while_put_aside_is_reported_once_and_left(caplog):
    # The ERRORED announcement was a job of its own beside the one put aside: failed.json
    # and the error line came once from it, once from the other's look, and, as it was
    # given up on, an UPLOADED delivered again was a third job, and its report a third.
    key, public = _webhook_key()
    api = _Shown(r1="UPLOADING")
    failed: list[tuple[str, str | None]] = []
    caplog.set_level(logging.WARNING, logger="trackscribe")
    with WebhookReceiver(
        public, api, on_failed=lambda r, e: failed.append((r.id, r.meeting_id))
    ) as receiver:
        uploaded = {"id": "r1", "status": "UPLOADED", "meetingId": "m1"}
        assert _announce(receiver, key, uploaded).status_code == 202
        deadline = time.monotonic() + 10
        while not any("looking again" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        api.statuses["r1"] = "ERRORED"
        errored = _announce(receiver, key, {"id": "r1", "status": "ERRORED"})
        assert errored.json() == {"status": "noted: the recording failed"}
        receiver.wait_idle()
        looks = len(api.looks)
        for replay in (uploaded, {"id": "r1", "status": "ERRORED"}):  # each a new rtk-uuid
            again = _announce(receiver, key, replay)
            assert again.json() == {"status": "the recording's failure was noted already"}
        receiver.wait_idle()
        assert len(api.looks) == looks  # no job of it again
    assert failed == [("r1", "m1")]  # once, naming the meeting the first announcement did
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([line for line in said if "r1 was not handled" in line]) == 1


def test_a_recording_found_errored_or_announced_so_while_it_is_looked_at_is_reported_once(
    caplog,
):
    # r1: the look finds it ERRORED; RealtimeKit's announcement of it, after, is no second
    # report. r2: announced ERRORED while its look finds it not UPLOADED yet: given up on at
    # once as announced, not put aside to be given up again when the wait is over.
    key, public = _webhook_key()
    api = _Shown(r1="ERRORED", r2="UPLOADING")
    failed: list[tuple[str, str]] = []
    receiver = WebhookReceiver(
        public,
        api,
        on_failed=lambda r, e: failed.append((r.id, str(e))),
        upload_timeout=2.0,
    )
    with receiver:
        assert _announce(receiver, key, {"id": "r1", "status": "UPLOADED"}).status_code == 202
        receiver.wait_idle()
        again = _announce(receiver, key, {"id": "r1", "status": "ERRORED"})
        assert again.json() == {"status": "the recording's failure was noted already"}
        api.looking.clear()
        api.answer.clear()
        assert _announce(receiver, key, {"id": "r2", "status": "UPLOADED"}).status_code == 202
        assert api.looking.wait(10)
        errored = _announce(receiver, key, {"id": "r2", "status": "ERRORED"})
        assert errored.json() == {"status": "noted: the recording failed"}
        api.answer.set()
        began = time.monotonic()
        receiver.wait_idle()
        assert time.monotonic() - began < 1.5  # not the wait for the upload
    assert api.looks == [("r1", "ERRORED"), ("r2", "UPLOADING")]
    assert failed == [
        ("r1", "recording r1 ended ERRORED"),
        ("r2", "RealtimeKit announced the recording as ERRORED: it has no files to transcribe"),
    ]
    assert "looking again" not in caplog.text


def test_a_try_whose_look_meets_an_api_down_for_now_waits_afresh_not_from_the_first_wait(
    caplog,
):
    # The wait for the upload was measured from the first look, before the tries began: a
    # 503 at try 2's look, later than upload_timeout after it, wrote the recording off at
    # once ("no status known after ..."), with a try unused and the recording uploaded.
    key, public = _webhook_key()
    steps: list[BaseException | None] = [
        UploadTimeoutError("r1", "UPLOADING", 0),  # the webhook came first
        RuntimeError("storage down"),  # uploaded now: try 1 fails
        UploadTimeoutError("r1", None, 0, " (HTTP 503 at this look)"),  # try 2's look
        None,  # the look after: done
    ]
    ran: list[BaseException | None] = []
    failed: list[str] = []

    def on_uploaded(recording: Recording) -> None:
        ran.append(step := steps[len(ran)])
        if step is not None:
            raise step

    caplog.set_level(logging.WARNING, logger="trackscribe")
    with WebhookReceiver(
        public,
        on_uploaded,
        on_failed=lambda r, e: failed.append(str(e)),
        retry_wait=0.6,  # try 2 comes after the wait of 0.5 s is over
        upload_timeout=0.5,
    ) as receiver:
        assert _announce(receiver, key, {"id": "r1", "status": "UPLOADED"}).status_code == 202
        receiver.wait_idle()
    assert failed == []
    assert ran == steps
    said = [r.getMessage() for r in caplog.records]
    (again,) = [line for line in said if "could not be asked" in line]
    assert again.endswith("(HTTP 503 at this look); looking again for up to 0.5 s")


def test_a_sender_that_trickles_its_request_is_cut_off_and_too_many_at_once_are_told_to_retry(
    monkeypatch,
):
    import pipeline.webhook

    monkeypatch.setattr(pipeline.webhook, "_REQUEST_SECONDS", 1.0)
    monkeypatch.setattr(pipeline.webhook, "_MAX_CONNECTIONS", 1)
    key, public = _webhook_key()
    with WebhookReceiver(public, print) as receiver:
        host, port = receiver.url.removeprefix("http://").rstrip("/").split(":")
        with socket.create_connection((host, int(port))) as slow:
            slow.sendall(b"POST / HTTP/1.1\r\n")
            time.sleep(0.3)
            busy = _announce(receiver, key, {"id": "r1", "status": "UPLOADED"})
            assert busy.status_code == 503  # a 5xx: RealtimeKit delivers it again later
            # A header byte every 0.1 s: each read is quick, the request never ends.
            started = time.monotonic()
            with pytest.raises(OSError):  # cut off, its thread free
                while time.monotonic() - started < 10:
                    slow.sendall(b"X")
                    time.sleep(0.1)
            assert time.monotonic() - started < 5
        time.sleep(0.2)
        assert _announce(receiver, key, {"id": "r1", "status": "UPLOADED"}).status_code == 202


def test_a_burst_of_deliveries_that_come_before_the_receiver_takes_any_is_answered_in_full():
    # The receiver takes one connection at a time: the system must hold the rest meanwhile,
    # not drop or reset them (socketserver holds 5 by default).
    key, public = _webhook_key()
    handled: list[str] = []
    receiver = WebhookReceiver(public, lambda r: handled.append(r.id))  # listening, not serving
    host, port = receiver.url.removeprefix("http://").rstrip("/").split(":")
    senders: list[socket.socket] = []
    try:
        for n in range(40):
            sender = socket.create_connection((host, int(port)), timeout=5)
            senders.append(sender)
            body = json.dumps(
                {
                    "event": "recording.statusUpdate",
                    "recording": {"id": f"r{n}", "status": "UPLOADED"},
                }
            ).encode()
            sender.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\n"
                + f"Content-Length: {len(body)}\r\nrtk-signature: {_sign(key, body)}\r\n".encode()
                + f"rtk-uuid: {uuid.uuid4()}\r\n\r\n".encode()
                + body
            )
        receiver.start()
        answers = [status_line(sender) for sender in senders]
        receiver.wait_idle()
    finally:
        for sender in senders:
            sender.close()
        receiver.close()
    assert [answer.split()[1] for answer in answers] == [b"202"] * 40, answers
    assert sorted(handled) == sorted(f"r{n}" for n in range(40))


def test_the_receiver_and_the_emulator_read_bodies_up_to_one_limit(sample_dir):
    # One limit, kept in one place: a change to it reaches both local servers.
    from pipeline._listen import MAX_BODY

    _, public = _webhook_key()
    with (
        WebhookReceiver(public, print) as receiver,
        Emulator(sample_dir, EmulatorOptions(token=TOKEN)) as emu,
    ):
        for url in (httpx.URL(receiver.url), httpx.URL(emu.base_url)):
            for length, refused in ((MAX_BODY, False), (MAX_BODY + 1, True)):
                with socket.create_connection((url.host, url.port), timeout=10) as sender:
                    sender.sendall(
                        f"POST {url.path} HTTP/1.1\r\nHost: x\r\n".encode()
                        + f"Content-Length: {length}\r\n\r\n".encode()
                    )
                    if not refused:
                        sender.sendall(b"{" * length)
                    assert (status_line(sender).split()[1] == b"413") is refused, (url, length)


def test_a_folder_with_the_recordings_transcript_or_bundle_counts_as_transcribed_already(
    sample_transcript, tmp_path
):
    # What the webhook command asks before it transcribes a recording announced again (after
    # a restart, or a captured delivery replayed).
    from pipeline._remote_cli import _transcribed

    made = sample_transcript.model_copy(deep=True)
    made.provenance.recording_id = "r1"
    for formats in (["json"], ["bundle"]):
        out = tmp_path / formats[0]
        assert not _transcribed(out, "r1")
        export(made, out, formats)
        assert _transcribed(out, "r1") and not _transcribed(out, "r2")
    export(made, tmp_path / "text", ["txt", "vtt"])  # no provenance to say which recording
    assert not _transcribed(tmp_path / "text", "r1")


@pytest.mark.parametrize(
    ("lost", "fetch_again", "done"),
    [
        ("tracks/b.webm", True, False),  # its download failed for now: a fetch again may get it
        ("tracks/on-disk.webm", True, False),  # a copy storage could not confirm, for now
        ("tracks/b.webm", False, True),  # storage has no such file (404): none will come
        ("tracks/on-disk.webm", False, True),  # fetched, but undecodable: no fetch again helps
        ("", False, True),  # names no file (one the listing does not show)
    ],
)
def test_a_transcript_that_lacks_a_file_not_fetched_for_now_is_not_done(
    sample_transcript, tmp_path, lost, fetch_again, done
):
    # A redelivery (after a restart) must retry the missing speaker, not say "there already";
    # what a fetch again may get is read back from the transcript's file, not from the disk.
    from models import TrackFailure
    from pipeline._remote_cli import _transcribed

    made = sample_transcript.model_copy(deep=True)
    made.provenance.recording_id = "r1"
    failure = TrackFailure(path=lost, user_id="u", reason="it failed", fetch_again=fetch_again)
    made.provenance.failures.append(failure)
    (tmp_path / "recording" / "tracks").mkdir(parents=True)
    (tmp_path / "recording" / "tracks" / "on-disk.webm").write_bytes(b"not media")
    export(made, tmp_path, ["json"])
    read = Transcript.load(tmp_path / "transcript.json")
    assert remote.lost_for_now(read, tmp_path) == ([failure] if fetch_again else [])
    assert _transcribed(tmp_path, "r1") is done


@pytest.mark.parametrize(
    ("lost", "done"),
    [
        ("tracks/b.webm", False),  # not on disk: its download failed, a fetch again may get it
        ("tracks/on-disk.webm", True),  # fetched, but undecodable: no fetch again helps
        ("", True),  # names no file (one the listing does not show)
        ("tracks/../b.webm", True),  # a name the fetch could not have written
    ],
)
def test_a_transcript_written_before_lost_files_were_marked_is_judged_as_then(
    sample_transcript, tmp_path, lost, done
):
    # Its failures have no fetch_again, which read as False: a file lost for now (storage
    # answering 503) was taken as done, and an announcement again no longer retried it.
    from models import TrackFailure
    from pipeline._remote_cli import _transcribed

    made = sample_transcript.model_copy(deep=True)
    made.provenance.recording_id = "r1"
    reason = f"{lost}: storage answered HTTP 503 (gave up after 3 tries in a row)"
    made.provenance.failures.append(TrackFailure(path=lost, user_id="u", reason=reason))
    (tmp_path / "recording" / "tracks").mkdir(parents=True)
    (tmp_path / "recording" / "tracks" / "on-disk.webm").write_bytes(b"not media")
    raw = json.loads(made.to_json())
    for failure in raw["provenance"]["failures"]:
        del failure["fetch_again"]  # as the version before wrote it
    (tmp_path / "transcript.json").write_text(json.dumps(raw))
    assert _transcribed(tmp_path, "r1") is done


def test_refused_deliveries_of_no_length_or_too_long_are_logged_and_one_cut_short_is_not_judged(
    caplog,
):
    _, public = _webhook_key()
    with (
        WebhookReceiver(public, print) as receiver,
        caplog.at_level(logging.DEBUG, logger="trackscribe"),
    ):
        host, port = receiver.url.removeprefix("http://").rstrip("/").split(":")
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999\r\n\r\n{")
            raw.shutdown(socket.SHUT_WR)  # the sender hangs up mid-body
            raw.recv(100)
        time.sleep(0.2)
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert said == []  # not taken for a bad signature
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.0 411")
    (refused,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "(411 a Content-Length is required)" in refused


@pytest.fixture
def emulator(sample_dir) -> Iterator[Emulator]:
    """An emulator in this process, so that a test can ask it what was started."""
    options = EmulatorOptions(token=TOKEN, start_delay=0.1, record_seconds=3.0, upload_seconds=0.1)
    with Emulator(sample_dir, options) as emu:
        yield emu


def api_flags(emu: Emulator) -> list[str]:
    return ["--base-url", emu.base_url, "--account-id", "a", "--app-id", "b", "--no-progress"]


def recordings_of(emu: Emulator) -> list[Recording]:
    client = RealtimeKitClient(account_id="a", app_id="b", token=TOKEN, base_url=emu.base_url)
    with client:
        return list(client.list_recordings(meeting_id=emu.meeting_id))


def public_key_file(folder: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "public.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (["--stop-after", "-1"], "--stop-after: must be 0 or more seconds"),
        (["--timeout", "-1"], "--timeout: must be more than 0 seconds"),
        (["--model", "smal.en"], "cannot load model 'smal.en'"),
        (["--threads", "-1"], "argument --threads: must be 0 or more, not -1"),
        (["--beam-size", "0"], "argument --beam-size: must be 1 or more, not 0"),
    ],
    ids=["negative-stop-after", "negative-timeout", "unloadable-model", "threads", "beam"],
)
def test_run_refuses_a_bad_option_or_model_before_starting_a_recording(
    emulator, tmp_path, option, said
):
    result = cli(
        "run",
        "--meeting-id",
        emulator.meeting_id,
        "-o",
        str(tmp_path),
        *option,
        *api_flags(emulator),
    )
    assert result.returncode == 2, result.stderr
    assert said in result.stderr
    assert recordings_of(emulator) == []  # nothing left running, nothing to block a re-run


@pytest.mark.parametrize(
    ("moment", "state"),
    [("started track recording", "is still going"), ("transcribing", "is uploaded; finish")],
    ids=["while recording", "after the upload"],
)
def test_interrupting_run_names_the_running_recording_and_how_to_finish_it(
    emulator, tmp_path, moment, state
):
    out = tmp_path / "my out"
    key, public_key = write_key(tmp_path, "signer")
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            "--meeting-id",
            emulator.meeting_id,
            "--user-id",
            "user-bruno",
            "--name",
            "user-bruno=Bruno B",
            "-o",
            str(out),
            "--formats",
            "json,bundle",
            "--sign-key",
            str(key),
            *api_flags(emulator),
        ],
        env={**os.environ, "CLOUDFLARE_API_TOKEN": TOKEN},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stderr is not None
        while moment not in (line := run.stderr.readline()):
            assert line, f"run ended before {moment!r}"
        run.send_signal(signal.SIGINT)
        stderr = run.communicate(timeout=60)[1]
    finally:
        run.kill()
    (recording,) = recordings_of(emulator)
    assert run.returncode == 130, stderr
    assert f"recording {recording.id} of meeting {emulator.meeting_id} {state}" in stderr
    command = stderr.split("finish it with:\n", 1)[1].splitlines()[0].strip()

    client = RealtimeKitClient(account_id="a", app_id="b", token=TOKEN, base_url=emulator.base_url)
    with client:
        client.wait_until_uploaded(recording.id, poll=0.1)
    for step in command.split(" && "):
        program, *args = shlex.split(step)
        assert program == "trackscribe"
        done = cli(*args)
        assert done.returncode == 0, done.stderr
    transcript = Transcript.load(out / "transcript.json")
    assert {u.speaker for u in transcript.utterances} == {"user-bruno"}
    assert [s.display_name for s in transcript.speakers] == ["Bruno B"]
    assert verify(out, public_key=public_key).ok  # signed as the interrupted run would have
    assert TOKEN not in stderr


def test_a_run_that_times_out_says_how_to_finish_and_the_next_run_names_what_is_in_its_way(
    emulator, tmp_path
):
    first = cli(
        "run",
        "--meeting-id",
        emulator.meeting_id,
        "-o",
        str(tmp_path / "first"),
        "--timeout",
        "0.5",
        *api_flags(emulator),
    )
    (recording,) = recordings_of(emulator)
    assert first.returncode == 2, first.stderr
    assert f"recording {recording.id} still RECORDING after 0.5 s" in first.stderr
    assert f"recording {recording.id} of meeting {emulator.meeting_id} is still going" in (
        first.stderr
    )
    assert f"trackscribe fetch --recording-id {recording.id}" in first.stderr

    second = cli(
        "run",
        "--meeting-id",
        emulator.meeting_id,
        "-o",
        str(tmp_path / "second"),
        *api_flags(emulator),
    )
    assert second.returncode == 2, second.stderr
    assert "HTTP 409" in second.stderr
    assert f"already has recording {recording.id} (RECORDING)" in second.stderr
    assert "retrying" not in second.stderr  # the answer would not change
    assert [r.id for r in recordings_of(emulator)] == [recording.id]


def test_a_run_whose_files_cannot_be_fetched_says_how_to_finish_by_hand(sample_dir, tmp_path):
    options = EmulatorOptions(token=TOKEN, start_delay=0.05, record_seconds=0.3, upload_seconds=0)
    with Emulator(sample_dir, options) as emulator:
        emulator.inject("corrupt", 1000)  # every download, every try
        out = tmp_path / "out"
        result = cli(
            "run",
            "--meeting-id",
            emulator.meeting_id,
            "--user-id",
            "user-alice",
            "-o",
            str(out),
            *api_flags(emulator),
        )
        (recording,) = recordings_of(emulator)
        emulator.disarm("corrupt")  # storage mended
        command = result.stderr.split("finish it with:\n", 1)[-1].splitlines()[0].strip()
        by_hand = [cli(*shlex.split(step)[1:]) for step in command.split(" && ")]
    assert result.returncode == 2, result.stderr
    assert "no file could be fetched" in result.stderr
    assert f"recording {recording.id} of meeting {emulator.meeting_id} was started" in (
        result.stderr
    )
    assert [shlex.split(step)[0] for step in command.split(" && ")] == ["trackscribe"] * 2
    assert [done.returncode for done in by_hand] == [0, 0], by_hand[-1].stderr
    transcript = Transcript.load(out / "transcript.json")
    assert {u.speaker for u in transcript.utterances} == {"user-alice"}


@pytest.mark.parametrize("command", ["webhook", "emulator"])
def test_a_key_file_that_is_not_a_pem_key_is_named_as_bad_input(sample_dir, tmp_path, command):
    bad = tmp_path / "key.pem"
    bad.write_text("not a key\n")
    args = {
        "webhook": [
            "webhook",
            "--port",
            "0",
            "-o",
            str(tmp_path / "out"),
            "--public-key",
            str(bad),
            "--account-id",
            "a",
            "--app-id",
            "b",
        ],
        "emulator": [
            "emulator",
            "--meeting",
            str(sample_dir),
            "--port",
            "0",
            "--token",
            TOKEN,
            "--webhook-key",
            str(bad),
        ],
    }[command]
    result = cli(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"key {bad}: not " in result.stderr
    assert "internal error" not in result.stderr


def test_webhook_refuses_an_output_folder_that_is_a_file_before_listening(tmp_path):
    taken = tmp_path / "out"
    taken.write_text("a file, not a folder\n")
    public = public_key_file(tmp_path)
    result = cli(
        "webhook",
        "--port",
        str(free_port()),
        "-o",
        str(taken),
        "--public-key",
        str(public),
        "--account-id",
        "a",
        "--app-id",
        "b",
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"cannot use {taken} as the output folder" in result.stderr


@pytest.mark.parametrize("command", ["webhook", "emulator"])
def test_a_port_out_of_range_is_bad_usage(sample_dir, tmp_path, command):
    args = {
        "webhook": ["webhook", "-o", str(tmp_path), "--account-id", "a", "--app-id", "b"],
        "emulator": ["emulator", "--meeting", str(sample_dir), "--token", TOKEN],
    }[command]
    result = cli(*args, "--port", "99999", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "--port: a port is 0 to 65535, not 99999" in result.stderr


@pytest.mark.parametrize("command", ["webhook", "emulator"])
def test_a_port_in_use_is_named(sample_dir, tmp_path, command):
    args = {
        "webhook": ["webhook", "-o", str(tmp_path / "out"), "--account-id", "a", "--app-id", "b"],
        "emulator": ["emulator", "--meeting", str(sample_dir), "--token", TOKEN],
    }[command]
    if command == "webhook":
        args += ["--public-key", str(public_key_file(tmp_path))]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(*args, "--host", "127.0.0.1", "--port", str(port), timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["fetch", "--recording-id", ".."], ["run", "--meeting-id", ".."]],
    ids=["fetch", "run"],
)
def test_an_id_that_cannot_be_a_path_segment_is_bad_input_before_any_call(tmp_path, args):
    nobody = f"http://127.0.0.1:{free_port()}/client/v4"  # a call would fail only after retries
    started = time.monotonic()
    result = cli(
        *args,
        "-o",
        str(tmp_path),
        "--base-url",
        nobody,
        "--account-id",
        "a",
        "--app-id",
        "b",
        "--no-progress",
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "'..' is not a usable" in result.stderr
    assert time.monotonic() - started < 30


class _OddlyNamedRecording(BaseHTTPRequestHandler):
    """An API and its storage in one: recording r1 has one file, whose name from the API holds
    a line break and a terminal code."""

    name = "x\ntrackscribe: WARNING: all files verified\x1b[2K.webm"
    body = b""

    def do_GET(self) -> None:
        if self.path.startswith("/file"):
            self._send(self.body, "application/octet-stream")
            return
        url = f"http://127.0.0.1:{self.server.server_port}/file?sig=s"
        recording = {
            "id": "r1",
            "status": "UPLOADED",
            "download_url": [
                {"layer_name": "default", "download_urls": {self.name: {"download_url": url}}}
            ],
            "started_time": "2026-11-20T10:00:00Z",
        }
        self._send(json.dumps({"success": True, "data": recording}).encode(), "application/json")

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_file_name_from_the_api_cannot_forge_a_log_line(sample_manifest, tmp_path):
    track = sample_manifest.tracks[0]
    handler = type(
        "Api", (_OddlyNamedRecording,), {"body": sample_manifest.track_path(track).read_bytes()}
    )
    with serving(handler) as root:
        base = f"{root}/client/v4"
        result = cli(
            "fetch",
            "--recording-id",
            "r1",
            "-o",
            str(tmp_path / "rec"),
            "--base-url",
            base,
            "--account-id",
            "a",
            "--app-id",
            "b",
            "--no-progress",
        )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not any(line.startswith("trackscribe: WARNING: all files") for line in lines)
    assert "\x1b" not in result.stderr
    # said on one line, escaped, so a reader still sees what the name was
    assert "x\\ntrackscribe: WARNING: all files verified\\x1b[2K.webm: not named as" in (
        result.stderr
    )
    (fetched,) = (tmp_path / "rec" / "tracks").iterdir()
    assert fetched.name == "x_trackscribe_WARNING_all_files_verified_2K.webm"


class _OddlyNamedAndGone(_OddlyNamedRecording):
    """The same recording, whose file storage no longer has."""

    def do_GET(self) -> None:
        if self.path.startswith("/file"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


def test_a_fetch_says_which_lost_files_a_fetch_again_may_get(sample_manifest, tmp_path):
    tracks, stored = stored_files(sample_manifest, "user-alice", "user-bruno", "user-chen")
    busy, gone = Path(tracks[1].path).name, Path(tracks[2].path).name
    storage = type("Api", (HalfStored,), {"stored": stored, "down": {busy}, "gone": {gone}})
    with serving(storage) as root:
        flags = ["--base-url", f"{root}/client/v4", "--account-id", "a", "--app-id", "b"]
        result = cli("fetch", "--recording-id", "r1", "-o", str(tmp_path), *flags, "--no-progress")
    assert result.returncode == 1, result.stderr
    lines = {line for line in result.stderr.splitlines() if line.startswith("  ")}
    [busy_line] = [line for line in lines if busy in line]
    [gone_line] = [line for line in lines if gone in line]
    assert busy_line.endswith("(a fetch again may get it)") and "503" in busy_line
    assert "404" in gone_line and "fetch again" not in gone_line


def test_a_fetch_that_gets_no_file_says_so_exits_2_and_leaves_no_manifest_of_another_recording(
    sample_manifest, tmp_path
):
    out = tmp_path / "rec"
    out.mkdir()
    earlier = sample_manifest.model_copy(update={"recording_id": "an-earlier-recording"})
    (out / "manifest.json").write_text(earlier.to_json())
    with serving(_OddlyNamedAndGone) as root:
        flags = ["--base-url", f"{root}/client/v4", "--account-id", "a", "--app-id", "b"]
        result = cli("fetch", "--recording-id", "r1", "-o", str(out), *flags, "--no-progress")
    assert result.returncode == 2, result.stderr  # nothing fetched is not a partial result
    assert "no file could be fetched, and no manifest was written" in result.stderr
    assert "404" in result.stderr
    # the other recording's manifest would have been transcribed as this one's
    assert not (out / "manifest.json").exists()
    assert "\x1b" not in result.stderr  # the name, printed in the list of losses, is escaped
    assert "x\\ntrackscribe: WARNING: all files verified\\x1b[2K.webm" in result.stderr


@contextlib.contextmanager
def webhook_command(
    out: Path, public: bytes, base_url: str, folder: Path, *flags: str
) -> Iterator[tuple[int, list[str]]]:
    """`trackscribe webhook` (with ``flags`` besides) listening on a free port for deliveries
    signed with the key of ``public``, asking the API at ``base_url``: (its port, its stderr,
    filled in once it ended)."""
    port = free_port()
    key_file = folder / "webhook-public.pem"
    key_file.write_bytes(public)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "webhook",
            "--port",
            str(port),
            "-o",
            str(out),
            "--public-key",
            str(key_file),
            "--base-url",
            base_url,
            "--account-id",
            "a",
            "--app-id",
            "b",
            "--no-progress",
            *flags,
        ],
        env={**os.environ, "CLOUDFLARE_API_TOKEN": TOKEN},
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []
    try:
        wait_listening(port, process)
        yield port, said
    finally:
        process.terminate()
        said.append(process.communicate(timeout=60)[1])


def wait_for(path: Path, check: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + 240
    while not (path.exists() and check()):
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.2)


def stored_files(manifest: Manifest, *users: str) -> tuple[list[Track], dict[str, bytes]]:
    """The first track of each of ``users``, and its bytes by file name (what a storage
    stand-in holds)."""
    first = {t.user_id: t for t in reversed(manifest.tracks)}
    tracks = [first[user] for user in users]
    return tracks, {Path(t.path).name: manifest.track_path(t).read_bytes() for t in tracks}


@contextlib.contextmanager
def webhook_before(
    storage: type, folder: Path
) -> Iterator[tuple[Path, rsa.RSAPrivateKey, int, list[str]]]:
    """`trackscribe webhook` (see :func:`webhook_command`) asking an API and storage served
    by ``storage``, writing into ``folder/out``: (that folder, the key that signs
    deliveries, its port, its stderr once it ended)."""
    key, public = _webhook_key()
    out = folder / "out"
    with (
        serving(storage) as root,
        webhook_command(out, public, f"{root}/client/v4", folder) as (port, said),
    ):
        yield out, key, port, said


def announce_uploaded(port: int, key: rsa.RSAPrivateKey, recording_id: str = "r1") -> int:
    """Deliver a signed announcement that ``recording_id`` is uploaded, as a new delivery;
    the receiver's answer."""
    recording = {"id": recording_id, "status": "UPLOADED"}
    data = json.dumps({"event": "recording.statusUpdate", "recording": recording}).encode()
    headers = {"rtk-signature": _sign(key, data), "rtk-uuid": str(uuid.uuid4())}
    return httpx.post(f"http://127.0.0.1:{port}/", content=data, headers=headers).status_code


def test_a_transcript_missing_a_file_storage_failed_is_written_retried_and_done_when_it_mends(
    sample_manifest, tmp_path
):
    # A download that failed is lost for now: the transcript of what there is is written,
    # but the recording is not done; after the last try failed.json names the file, and an
    # announcement again (storage mended) fetches it and completes the transcript.
    (bruno, chen), stored = stored_files(sample_manifest, "user-bruno", "user-chen")
    lost = Path(chen.path).name
    storage = type("Api", (HalfStored,), {"stored": stored, "down": {lost}})
    with webhook_before(storage, tmp_path) as (out, key, port, said):
        assert announce_uploaded(port, key) == 202
        wait_for(out / "r1" / "failed.json")
        failed = json.loads((out / "r1" / "failed.json").read_text())
        partial = Transcript.load(out / "r1" / "transcript.json")
        journal = (out / "r1" / ".work" / "journal.jsonl").read_text().splitlines()
        storage.down.clear()  # storage mended
        assert announce_uploaded(port, key) == 202
        wait_for(
            out / "r1" / "transcript.json",
            lambda: (
                not (out / "r1" / "failed.json").exists()
                and len(Transcript.load(out / "r1" / "transcript.json").provenance.inputs) == 2
            ),
        )
        whole = Transcript.load(out / "r1" / "transcript.json")
    stderr = said[0]
    assert {u.speaker for u in partial.utterances} == {"user-bruno"}
    assert [f.path for f in partial.provenance.failures] == [f"tracks/{lost}"]
    assert failed["missing"] == [partial.provenance.failures[0].describe()]
    assert "503" in failed["missing"][0]
    assert "--recording-id r1" in failed["by_hand"]
    assert failed["error"].startswith("PartialTranscript: recording r1: the transcript lacks 1")
    assert "(try 3 of 3)" in stderr and "is there already" not in stderr
    assert {u.speaker for u in whole.utterances} == {"user-bruno", "user-chen"}
    assert whole.provenance.failures == []
    # Three tries, one of them through the model: the others took its segments as kept.
    transcribed = [line for line in journal if json.loads(line)["event"] == "transcribed"]
    assert len(transcribed) == 1 and Path(bruno.path).name in transcribed[0]
    assert not (out / "r1" / ".work").exists()  # done: nothing kept for a try again


def test_a_transcript_missing_a_file_left_by_a_stop_between_tries_says_so_and_names_the_file(
    sample_manifest, tmp_path
):
    # Stopped in the pause after try 1 wrote a partial transcript: failed.json says it was
    # the stop, after try 1 of 3, and still names the file the commands by hand would fetch.
    (_, chen), stored = stored_files(sample_manifest, "user-bruno", "user-chen")
    storage = type("Api", (HalfStored,), {"stored": stored, "down": {Path(chen.path).name}})
    with webhook_before(storage, tmp_path) as (out, key, port, said):
        assert announce_uploaded(port, key) == 202
        wait_for(out / "r1" / "transcript.json")
    # stopped (SIGTERM) as try 1 ends, or in the pause after it (2 s)
    failed = json.loads((out / "r1" / "failed.json").read_text())
    partial = Transcript.load(out / "r1" / "transcript.json")
    assert failed["error"].startswith(
        "ReceiverStopped: the receiver stopped after try 1 of 3, which failed: "
        "PartialTranscript: recording r1: the transcript lacks 1"
    )
    assert failed["missing"] == [partial.provenance.failures[0].describe()]
    assert "--recording-id r1" in failed["by_hand"]
    assert "(try 2 of 3)" not in said[0] and "after 3 tries" not in said[0]


def test_a_transcript_missing_a_file_storage_does_not_have_is_written_once_and_not_retried(
    sample_manifest, tmp_path
):
    # A 404 does not pass (S3 is strongly consistent): the recording is done, partial, at
    # its first try. Taken as lost for now (it was not on disk), it was tried twice more,
    # then left a failed.json asking a hand to fetch what is not there.
    (_, chen), stored = stored_files(sample_manifest, "user-bruno", "user-chen")
    lost = Path(chen.path).name
    storage = type("Api", (HalfStored,), {"stored": stored, "gone": {lost}})
    with webhook_before(storage, tmp_path) as (out, key, port, said):
        assert announce_uploaded(port, key) == 202
        wait_for(out / "r1" / "transcript.json")
    # stopped: the recording in hand was waited for
    stderr = said[0]
    partial = Transcript.load(out / "r1" / "transcript.json")
    assert {u.speaker for u in partial.utterances} == {"user-bruno"}
    [failure] = partial.provenance.failures
    assert (failure.path, failure.fetch_again) == (f"tracks/{lost}", False)
    assert "HTTP 404, NoSuchKey" in failure.reason
    assert "recording r1: done (exit status 1)" in stderr
    assert "(try 1 of 3)" not in stderr and "to be tried again" not in stderr
    assert not (out / "r1" / "failed.json").exists()


def test_a_recording_none_of_whose_files_storage_has_fails_at_once_not_after_every_try(
    sample_manifest, tmp_path
):
    # Every file 404: no try again can fetch one. It was tried three times, seconds apart,
    # before failed.json; a file lost for now among them is still worth the tries.
    _, stored = stored_files(sample_manifest, "user-bruno", "user-chen")
    storage = type("Api", (HalfStored,), {"stored": stored, "gone": set(stored)})
    with webhook_before(storage, tmp_path) as (out, key, port, said):
        assert announce_uploaded(port, key) == 202
        wait_for(out / "r1" / "failed.json")
    stderr = said[0]
    failed = json.loads((out / "r1" / "failed.json").read_text())
    assert failed["error"].startswith("NoUsableTrackError: recording r1: no file could be")
    assert "404" in failed["error"]
    assert failed["by_hand"].startswith("nothing a fetch again can mend")
    assert "(try 1 of 3; no try again can mend it)" in stderr
    assert "(try 2 of 3" not in stderr
    assert not (out / "r1" / "transcript.json").exists()


@contextlib.contextmanager
def emulated(
    meeting: Path, options: EmulatorOptions
) -> Iterator[tuple[Emulator, RealtimeKitClient]]:
    """The emulator serving ``meeting``, and a client of it."""
    with (
        Emulator(meeting, options) as emu,
        RealtimeKitClient(account_id="a", app_id="b", token=TOKEN, base_url=emu.base_url) as api,
    ):
        yield emu, api


@contextlib.contextmanager
def webhook_on_emulator(
    meeting: Path, options: EmulatorOptions, folder: Path, *flags: str
) -> Iterator[tuple[Emulator, RealtimeKitClient, Path, rsa.RSAPrivateKey, int, list[str]]]:
    """:func:`webhook_command` (``flags`` besides) asking the emulator of ``meeting``, writing
    into ``folder``/out: the emulator, a client of it, that folder, the key deliveries are
    signed with, and the command's port and stderr (filled in once it ended)."""
    key, public = _webhook_key()
    out = folder / "out"
    with (
        emulated(meeting, options) as (emu, api),
        webhook_command(out, public, emu.base_url, folder, *flags) as (port, said),
    ):
        yield emu, api, out, key, port, said


def test_a_recording_announced_errored_is_looked_up_before_failed_json_says_what_to_do(
    sample_dir, tmp_path
):
    # Another app's (the API does not know it) leaves no failed.json; this app's with no
    # files gets one that says nothing can be done, not a fetch that cannot work; one that
    # has files after all gets the commands that fetch and transcribe it.
    options = EmulatorOptions(token=TOKEN, start_delay=0.5, record_seconds=0.2, upload_seconds=0)
    key, public = _webhook_key()
    out = tmp_path / "out"
    with emulated(sample_dir, options) as (emu, api):
        empty = api.start_track_recording(emu.meeting_id, user_ids=["user-bruno"])
        api.stop(empty.id)  # before it started: ERRORED, nothing recorded
        full = api.start_track_recording(emu.meeting_id, user_ids=["user-bruno"])
        api.wait_until_uploaded(full.id, timeout=30, poll=0.1)
        with webhook_command(out, public, emu.base_url, tmp_path) as (port, said):
            for recording_id in ("someone-elses", empty.id, full.id):
                data = json.dumps(
                    {
                        "event": "recording.statusUpdate",
                        "recording": {"id": recording_id, "status": "ERRORED"},
                    }
                ).encode()
                headers = {"rtk-signature": _sign(key, data), "rtk-uuid": str(uuid.uuid4())}
                sent = httpx.post(f"http://127.0.0.1:{port}/", content=data, headers=headers)
                assert sent.status_code == 200
            wait_for(out / full.id / "failed.json")  # handled in turn: the others are done
        assert api.get_recording(empty.id).status == "ERRORED"
    assert not (out / "someone-elses").exists()
    assert "recording someone-elses is not one of this app's" in said[0]
    nothing = json.loads((out / empty.id / "failed.json").read_text())
    assert nothing["by_hand"] == (
        "nothing: RealtimeKit ended the recording ERRORED and has no files of it"
    )
    fetchable = json.loads((out / full.id / "failed.json").read_text())
    assert f"trackscribe fetch --recording-id {full.id}" in fetchable["by_hand"]


def shown_as(api: RealtimeKitClient, recording_id: str, status: str) -> None:
    """Wait until the API shows ``recording_id`` as ``status``."""
    deadline = time.monotonic() + 30
    while api.get_recording(recording_id).status != status:
        assert time.monotonic() < deadline, f"{recording_id} never {status}"
        time.sleep(0.05)


def test_a_recording_announced_uploaded_before_the_api_says_so_is_waited_for_and_transcribed(
    sample_dir, tmp_path
):
    # RealtimeKit's webhook may come before the recording's GET says UPLOADED. Three tries
    # over about 6 s wrote such a recording off to failed.json; the receiver now looks again
    # until the API shows it UPLOADED (9 s here), and no look is a try.
    options = EmulatorOptions(token=TOKEN, start_delay=0.1, record_seconds=0.3, upload_seconds=9)
    with webhook_on_emulator(sample_dir, options, tmp_path) as (emu, api, out, key, port, said):
        recording = api.start_track_recording(emu.meeting_id, user_ids=["user-bruno"])
        shown_as(api, recording.id, "UPLOADING")
        assert announce_uploaded(port, key, recording.id) == 202
        done = [out / recording.id / name for name in ("transcript.json", "failed.json")]
        wait_for(out / recording.id, lambda: any(path.exists() for path in done))
    stderr = said[0]
    assert not done[1].exists(), done[1].read_text()
    assert {u.speaker for u in Transcript.load(done[0]).utterances} == {"user-bruno"}
    assert (
        f"recording {recording.id} was announced UPLOADED, but the API shows it UPLOADING; "
        "looking again for up to 3600 s"
    ) in stderr
    assert "(try 1 of 3)" not in stderr


def test_a_recording_the_api_does_not_show_uploaded_in_time_leaves_failed_json_saying_so(
    sample_dir, tmp_path
):
    options = EmulatorOptions(token=TOKEN, start_delay=0.1, record_seconds=600)
    receiver = webhook_on_emulator(sample_dir, options, tmp_path, "--upload-timeout", "2")
    with receiver as (emu, api, out, key, port, said):
        recording = api.start_track_recording(emu.meeting_id, user_ids=["user-bruno"])
        shown_as(api, recording.id, "RECORDING")
        began = time.monotonic()
        assert announce_uploaded(port, key, recording.id) == 202
        wait_for(out / recording.id / "failed.json")
        waited = time.monotonic() - began
    failed = json.loads((out / recording.id / "failed.json").read_text())
    assert failed["error"] == (
        f"UploadTimeoutError: RealtimeKit wait for upload: recording {recording.id} still "
        "RECORDING after 2 s"
    )
    assert f"trackscribe fetch --recording-id {recording.id}" in failed["by_hand"]
    assert waited >= 2
    assert not (out / recording.id / "transcript.json").exists()
    (gave_up,) = [line for line in said[0].splitlines() if "gave up waiting" in line]
    assert "still RECORDING after 2 s" in gave_up


def test_a_recording_waited_for_until_the_api_shows_it_uploaded_holds_up_none_behind_it(
    sample_dir,
):
    # One worker handles the recordings in turn: one put aside until the API shows it
    # UPLOADED lets the next be handled meanwhile.
    options = EmulatorOptions(token=TOKEN, start_delay=0.1, record_seconds=0.3, upload_seconds=2)
    key, public = _webhook_key()
    handled: list[tuple[str, str]] = []
    with emulated(sample_dir, options) as (emu, api):
        second = api.start_track_recording(emu.meeting_id, user_ids=["user-bruno"])
        api.wait_until_uploaded(second.id, timeout=30, poll=0.1)
        first = api.start_track_recording(emu.meeting_id, user_ids=["user-bruno"])
        shown_as(api, first.id, "UPLOADING")

        def on_uploaded(recording: Recording) -> None:
            api.wait_until_uploaded(recording.id, timeout=0)  # one look, as the command's
            handled.append((recording.id, api.get_recording(first.id).status))

        failed: list[str] = []
        with WebhookReceiver(
            public, on_uploaded, on_failed=lambda r, e: failed.append(f"{r.id}: {e}")
        ) as receiver:
            for recording in (first, second):
                answer = _announce(receiver, key, {"id": recording.id, "status": "UPLOADED"})
                assert answer.status_code == 202
            receiver.wait_idle()
    # the second, while the API still showed the first UPLOADING; then the first
    assert handled == [(second.id, "UPLOADING"), (first.id, "UPLOADED")]
    assert failed == []


def test_a_stop_does_not_wait_for_a_recording_waited_for_and_says_what_the_api_showed(
    sample_dir, caplog
):
    options = EmulatorOptions(token=TOKEN, start_delay=0.1, record_seconds=600)
    key, public = _webhook_key()
    failed: list[tuple[str, str]] = []
    caplog.set_level(logging.WARNING, logger="trackscribe")
    with emulated(sample_dir, options) as (emu, api):
        recording = api.start_track_recording(emu.meeting_id, user_ids=["user-bruno"])
        shown_as(api, recording.id, "RECORDING")
        receiver = WebhookReceiver(
            public,
            lambda r: api.wait_until_uploaded(r.id, timeout=0),
            on_failed=lambda r, e: failed.append((r.id, str(e))),
        )
        receiver.start()
        assert _announce(receiver, key, {"id": recording.id, "status": "UPLOADED"}).status_code
        deadline = time.monotonic() + 10
        while not any("looking again" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        began = time.monotonic()
        receiver.close(grace=30)
        assert time.monotonic() - began < 2  # not the grace, nor the hour of the wait
    assert failed == [
        (
            recording.id,
            "the receiver stopped while waiting for the API to show it UPLOADED (still RECORDING)",
        )
    ]
    said = [r.getMessage() for r in caplog.records]
    assert (
        "webhook: stopping; 1 recording(s) the API does not show UPLOADED yet are given up "
        f"on: {recording.id} (still RECORDING)"
    ) in said


def test_a_recording_announced_uploaded_that_the_api_shows_errored_is_given_up_at_once(
    sample_dir, tmp_path
):
    # No try again, nor wait, can bring files the recording never had.
    options = EmulatorOptions(token=TOKEN, start_delay=0.5, record_seconds=0.2)
    with webhook_on_emulator(sample_dir, options, tmp_path) as (emu, api, out, key, port, said):
        empty = api.start_track_recording(emu.meeting_id, user_ids=["user-bruno"])
        api.stop(empty.id)  # before it started: ERRORED, nothing recorded
        assert announce_uploaded(port, key, empty.id) == 202
        wait_for(out / empty.id / "failed.json")
    failed = json.loads((out / empty.id / "failed.json").read_text())
    assert f"recording {empty.id} ended ERRORED" in failed["error"]
    assert failed["by_hand"] == (
        "nothing: RealtimeKit ended the recording ERRORED and has no files of it"
    )
    assert "(try 1 of 3)" not in said[0] and "looking again" not in said[0]


def test_an_api_that_cannot_be_asked_is_waited_out_as_a_recording_not_uploaded_yet(
    sample_dir, tmp_path
):
    # A 503 at each look is no try spent: it is looked at again until the wait is over, and
    # failed.json says that no status was known, and why.
    options = EmulatorOptions(token=TOKEN, start_delay=0.1, record_seconds=0.2, upload_seconds=0)
    receiver = webhook_on_emulator(sample_dir, options, tmp_path, "--upload-timeout", "2")
    with receiver as (emu, api, out, key, port, said):
        recording = api.start_track_recording(emu.meeting_id, user_ids=["user-bruno"])
        api.wait_until_uploaded(recording.id, timeout=30, poll=0.1)
        emu.inject("server_error", 1000)
        assert announce_uploaded(port, key, recording.id) == 202
        wait_for(out / recording.id / "failed.json")
    failed = json.loads((out / recording.id / "failed.json").read_text())
    assert failed["error"].startswith(
        f"UploadTimeoutError: RealtimeKit wait for upload: recording {recording.id} no status "
        "known after 2 s (RealtimeKit GET /recordings/"
    )
    assert "HTTP 503" in failed["error"]
    assert "(try 1 of 3)" not in said[0]
    assert f"{recording.id} was announced UPLOADED, but the API could not be asked (" in said[0]
