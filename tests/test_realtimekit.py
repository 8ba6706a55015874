"""The RealtimeKit client and the fetch stage, over real HTTP on loopback against the emulator.

Every fault the emulator can inject must end in the same files, byte for byte, as the
meeting's originals, with nothing partial or doubled left behind, and no secret in any log
line or error message.
"""

import json
import logging
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from models import (
    DownloadLayer,
    Manifest,
    Recording,
    RecordingFile,
    RetryPolicy,
    SignedUrl,
    safe_file_name,
)
from pipeline import remote
from pipeline.emulator import FAULTS, Emulator, EmulatorOptions
from stages import fetch
from stages.fetch import FetchOptions, FetchResult, fetch_recording
from stages.record import (
    RealtimeKitClient,
    RealtimeKitError,
    RecordingFailedError,
    RecordingNotFoundError,
    UnexpectedAnswerError,
    UploadTimeoutError,
)

from .conftest import serving

TOKEN = "test-token-s3cr3t-value"
FAST = {"start_delay": 0.05, "record_seconds": 0.2, "upload_seconds": 0.05}
QUICK_RETRY = RetryPolicy(backoff=0.01, max_delay=2.0)
QUIET = FetchOptions(progress=False, retry=QUICK_RETRY)


@pytest.fixture
def emulator(sample_dir: Path):
    with Emulator(sample_dir, EmulatorOptions(token=TOKEN, **FAST)) as emu:
        yield emu


def client_for(emu: Emulator, token: str = TOKEN, **options: Any) -> RealtimeKitClient:
    return RealtimeKitClient(
        account_id="acct",
        app_id="app",
        token=token,
        base_url=emu.base_url,
        **({"retry": QUICK_RETRY} | options),
    )


def originals(sample_manifest: Manifest, users: set[str] | None = None) -> dict[str, bytes]:
    """The meeting's files by user id + start, as they should arrive."""
    return {
        f"{t.user_id}@{t.started_time.isoformat()}": sample_manifest.track_path(t).read_bytes()
        for t in sample_manifest.tracks
        if users is None or t.user_id in users
    }


def fetched(manifest: Manifest) -> dict[str, bytes]:
    return {
        f"{t.user_id}@{t.started_time.isoformat()}": manifest.track_path(t).read_bytes()
        for t in manifest.tracks
    }


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or "part" in p.name)


def first_file_changed(
    recording: Recording, name: str | None = None, url: str | None = None
) -> Recording:
    """``recording`` with its first file listed under another name, or at another URL."""
    first, *others = recording.files()
    urls = {(name or first.name): SignedUrl(download_url=url or first.url)}
    urls |= {f.name: SignedUrl(download_url=f.url) for f in others}
    return recording.model_copy(update={"download_url": [DownloadLayer(download_urls=urls)]})


def record_and_fetch(emu: Emulator, out: Path, users: list[str] | None = None):
    with client_for(emu) as client:
        recording = remote.record(client, emu.meeting_id, users or (), poll=0.05)
        return remote.fetch(client, recording, out, user_ids=users or (), options=QUIET)


def test_recording_chosen_users_fetches_exactly_their_files_byte_for_byte(
    emulator, sample_manifest, tmp_path
):
    result = record_and_fetch(emulator, tmp_path / "rec", ["user-alice", "user-bruno"])

    assert result.failures == []
    manifest = Manifest.load(tmp_path / "rec" / "manifest.json")
    assert {t.user_id for t in manifest.tracks} == {"user-alice", "user-bruno"}
    assert fetched(manifest) == originals(sample_manifest, {"user-alice", "user-bruno"})
    # the start of each file comes from its API file name, and matches the truth
    by_path = {Path(t.path).name: t for t in sample_manifest.tracks}
    for track in manifest.tracks:
        assert track.started_time == by_path[Path(track.path).name].started_time
        assert track.sha256 == by_path[Path(track.path).name].sha256
    assert leftovers(tmp_path / "rec") == []


def test_fetching_some_users_of_a_recording_of_everyone_says_so_once_not_per_file(
    emulator, sample_manifest, tmp_path, caplog
):
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, (), poll=0.05)
        caplog.set_level(logging.INFO, logger="trackscribe.stages.fetch")
        result = remote.fetch(
            client, recording, tmp_path / "alice", user_ids=["user-alice"], options=QUIET
        )
    assert {t.user_id for t in result.manifest.tracks} == {"user-alice"}
    others = sum(t.user_id != "user-alice" for t in sample_manifest.tracks)
    fetch_lines = [r for r in caplog.records if r.name == "trackscribe.stages.fetch"]
    assert [r.levelname for r in fetch_lines if "not asked for" in r.getMessage()] == ["INFO"]
    assert f"{others} file(s) of users not asked for" in caplog.text
    assert not [r for r in fetch_lines if r.levelno >= logging.WARNING]


def test_a_users_files_are_told_by_the_prefix_all_names_of_the_layer_share(
    emulator, sample_manifest, tmp_path
):
    # A prefix with an underscore, and a guest whose user id ends in alice's: read name by
    # name, the guest's file ended in "_user-alice" and was fetched as alice's.
    layers = {"speakers": {"file_name_prefix": "weekly_sync"}}
    with client_for(emulator) as client:
        started = client.start_track_recording(emulator.meeting_id, layers=layers)
        recording = client.wait_until_uploaded(started.id, poll=0.05)
    chen = next(f for f in recording.files() if "_user-chen_" in f.name)
    urls = {
        f.name.replace("_user-chen_", "_guest_user-alice_"): SignedUrl(download_url=f.url)
        for f in recording.files()
    }
    guest = chen.name.replace("_user-chen_", "_guest_user-alice_")
    assert guest in urls and guest.startswith("weekly_sync_")
    listed = recording.model_copy(
        update={"download_url": [DownloadLayer(layer_name="speakers", download_urls=urls)]}
    )

    result = fetch_recording(
        listed,
        tmp_path / "rec",
        refresh=lambda: listed,
        user_ids=["user-alice", "user-bruno"],
        options=QUIET,
    )

    assert result.failures == [] and result.missing == []
    assert fetched(result.manifest) == originals(sample_manifest, {"user-alice", "user-bruno"})
    assert not (tmp_path / "rec" / "tracks" / guest).exists()


def test_a_fetch_draws_no_progress_bar_into_a_log_unless_asked(emulator, tmp_path, capsys):
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, (), poll=0.05)
        capsys.readouterr()
        remote.fetch(client, recording, tmp_path / "quiet", options=FetchOptions(concurrency=2))
        assert capsys.readouterr().err == ""  # stderr is no terminal here: nobody watches
        remote.fetch(client, recording, tmp_path / "asked", options=FetchOptions(progress=True))
        assert "fetch" in (bar := capsys.readouterr().err) and "B/s" in bar  # tqdm's own


@pytest.mark.parametrize("fault", FAULTS)
def test_every_fault_ends_in_identical_files_and_no_secret_in_logs(
    fault, sample_dir, sample_manifest, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    options = EmulatorOptions(token=TOKEN, faults={fault: 2}, **FAST)
    with Emulator(sample_dir, options) as emu:
        result = record_and_fetch(emu, tmp_path / "rec")

    assert result.failures == []
    assert fetched(result.manifest) == originals(sample_manifest)
    assert leftovers(tmp_path / "rec") == []
    assert len(list((tmp_path / "rec" / "tracks").iterdir())) == len(sample_manifest.tracks)
    assert_no_secrets(caplog.text)


def test_all_faults_at_once(sample_dir, sample_manifest, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    options = EmulatorOptions(token=TOKEN, faults=dict.fromkeys(FAULTS, 2), **FAST)
    with Emulator(sample_dir, options) as emu:
        result = record_and_fetch(emu, tmp_path / "rec")
    assert fetched(result.manifest) == originals(sample_manifest)
    assert leftovers(tmp_path / "rec") == []
    assert_no_secrets(caplog.text)


def assert_no_secrets(text: str) -> None:
    assert TOKEN not in text
    assert "X-Amz-Signature=" not in text and "X-Amz-Expires=" not in text


def test_a_rerun_skips_complete_files_and_resumes_a_partial_one(
    emulator, sample_manifest, tmp_path
):
    out = tmp_path / "rec"
    first = record_and_fetch(emulator, out)
    assert first.skipped == 0
    # simulate an interrupted earlier download of one file: half of it in its .part
    victim = out / first.manifest.tracks[0].path
    data = victim.read_bytes()
    victim.unlink()
    victim.with_name(f".{victim.name}.part").write_bytes(data[: len(data) // 2])

    with client_for(emulator) as client:
        again = remote.fetch(client, first.manifest.recording_id, out, options=QUIET)

    assert again.skipped == len(sample_manifest.tracks) - 1
    assert victim.read_bytes() == data
    assert fetched(again.manifest) == originals(sample_manifest)
    assert leftovers(out) == []


def test_a_rerun_confirms_complete_files_through_expired_urls_and_a_busy_api(
    emulator, sample_manifest, tmp_path, caplog
):
    out = tmp_path / "rec"
    first = record_and_fetch(emulator, out)
    emulator.inject("expired_url")  # the check of each local copy is refused at first
    emulator.inject("server_error")  # and renewing the URLs is answered 503 once

    with client_for(emulator) as client:
        again = remote.fetch(client, first.manifest.recording_id, out, options=QUIET)

    assert again.failures == []
    assert again.skipped == len(sample_manifest.tracks)
    assert fetched(again.manifest) == originals(sample_manifest)
    assert_no_secrets(caplog.text)


def test_a_changed_local_copy_is_fetched_again(emulator, sample_manifest, tmp_path):
    out = tmp_path / "rec"
    first = record_and_fetch(emulator, out)
    victim = out / first.manifest.tracks[0].path
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # same size, wrong bytes

    with client_for(emulator) as client:
        again = remote.fetch(client, first.manifest.recording_id, out, options=QUIET)

    assert victim.read_bytes() == original
    assert again.skipped == len(sample_manifest.tracks) - 1


def with_unreachable_file(recording: Recording, name: str) -> Recording:
    """``recording`` as the API gives it, but storage answers 404 for file ``name``."""
    layers = [
        DownloadLayer(
            layer_name=f.layer,
            download_urls={
                f.name: SignedUrl(
                    download_url=f.url.replace("/files/", "/gone/") if f.name == name else f.url
                )
            },
        )
        for f in recording.files()
    ]
    return recording.model_copy(update={"download_url": layers})


def test_a_rerun_keeps_a_verified_copy_that_storage_cannot_confirm(
    emulator, sample_manifest, tmp_path, caplog
):
    out = tmp_path / "rec"
    first = record_and_fetch(emulator, out)
    real = client_for(emulator).get_recording(first.manifest.recording_id)
    victim = real.files()[0].name
    unreachable = with_unreachable_file(real, victim)

    again = fetch_recording(unreachable, out, refresh=lambda: unreachable, options=QUIET)

    # the copy the first run verified stays in the manifest, with a warning saying why
    assert again.failures == []
    assert Manifest.load(out / "manifest.json") == again.manifest
    assert fetched(again.manifest) == originals(sample_manifest)
    assert f"{victim}: storage answered HTTP 404" in caplog.text
    assert "kept the local copy, which an earlier run verified" in caplog.text

    # a copy changed since then is not vouched for: it is that file's loss, and one for good
    # (storage has no such file), though a copy of it is on disk
    (out / "tracks" / victim).write_bytes(b"changed")
    changed = fetch_recording(unreachable, out, refresh=lambda: unreachable, options=QUIET)
    assert changed.failures == []
    assert [Path(f.path).name for f in changed.missing] == [victim]
    assert "HTTP 404" in changed.missing[0].reason and not changed.missing[0].fetch_again
    assert len(changed.manifest.tracks) == len(sample_manifest.tracks) - 1


def test_file_names_from_the_api_never_leave_the_output_folder(emulator, tmp_path):
    good = record_and_fetch(emulator, tmp_path / "first")
    real = Recording.model_validate(
        client_for(emulator).get_recording(good.manifest.recording_id).model_dump()
    )
    first = real.files()[0]
    hostile = real.model_copy(
        update={
            "download_url": [
                DownloadLayer(
                    layer_name="default",
                    download_urls={f"../../../{first.name}": SignedUrl(download_url=first.url)},
                )
            ]
        }
    )
    out = tmp_path / "deep" / "rec"
    result = fetch_recording(hostile, out, refresh=lambda: real, options=QUIET)
    assert result.failures == []
    assert (out / "tracks" / first.name).is_file()
    assert not (tmp_path / first.name).exists()


def test_api_errors_carry_status_code_and_message_and_are_not_retried(emulator):
    with pytest.raises(RealtimeKitError) as unauthorised:
        client_for(emulator, token="wrong").get_recording("x")
    assert unauthorised.value.status == 401
    assert "Authentication error" in unauthorised.value.message  # gateway envelope

    with client_for(emulator) as client, pytest.raises(RealtimeKitError) as missing:
        client.start_track_recording("no-such-meeting")
    assert missing.value.status == 404  # RealtimeKit's own envelope
    assert missing.value.code == 404 and missing.value.message


@pytest.mark.parametrize(
    ("status", "body", "not_found"),
    [
        (404, {"success": False, "error": {"code": 404, "message": "no such recording"}}, True),
        (403, {"success": False, "error": {"code": 403, "message": "not this app's"}}, True),
        # Cloudflare's gateway: the token may not do this, for any recording alike
        (403, {"success": False, "errors": [{"code": 10000, "message": "Forbidden"}]}, False),
    ],
)
def test_a_recording_the_api_says_is_not_there_is_told_from_a_token_that_may_not_look(
    status, body, not_found
):
    seen: list[str] = []
    with (
        _scripted_client(lambda method, path, count: (status, body), seen) as client,
        pytest.raises(RealtimeKitError) as refused,
    ):
        client.get_recording("r1")
    assert isinstance(refused.value, RecordingNotFoundError) is not_found
    assert refused.value.status == status and seen == ["GET"]  # asked once


@pytest.mark.parametrize(
    ("base_url", "warned"),
    [
        ("http://api.example.internal/client/v4", True),  # a typo of https, or a proxy
        ("http://192.0.2.7:8080/client/v4", True),
        ("https://api.example.internal/client/v4", False),
        ("http://127.0.0.1:8787/client/v4", False),  # the emulator, here
        ("http://[::1]:8787/client/v4", False),
        ("http://localhost:8787/client/v4", False),
    ],
)
def test_a_token_to_be_sent_unencrypted_across_a_network_is_warned_of(caplog, base_url, warned):
    RealtimeKitClient(account_id="a", app_id="b", token=TOKEN, base_url=base_url).close()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(said) is warned
    assert all("the API token is sent unencrypted" in line and TOKEN not in line for line in said)


def test_rate_limits_are_waited_out_as_the_server_asks(sample_dir):
    waits: list[float] = []
    options = EmulatorOptions(token=TOKEN, faults={"rate_limit": 2, "server_error": 1}, **FAST)
    with Emulator(sample_dir, options) as emu:
        client = RealtimeKitClient(
            account_id="a", app_id="b", token=TOKEN, base_url=emu.base_url, sleep=waits.append
        )
        recording = client.start_track_recording(emu.meeting_id)
    assert recording.status in {"INVOKED", "RECORDING"}
    assert all(1.0 <= wait <= 1.1 for wait in waits[:2])  # retry-after: 1, twice (and jitter)
    assert len(waits) == 3


def test_a_start_whose_answer_is_lost_is_not_repeated(emulator):
    emulator.inject("lost_reply")  # the recording starts, and the client is answered 502
    with client_for(emulator) as client:
        recording = client.start_track_recording(emulator.meeting_id)
        assert [r.id for r in client.list_recordings(meeting_id=emulator.meeting_id)] == [
            recording.id
        ]
        assert client.active_recording(emulator.meeting_id).id == recording.id


def test_a_start_whose_answer_is_lost_on_its_last_try_is_still_found(emulator):
    emulator.inject("lost_reply")
    client = RealtimeKitClient(
        account_id="a",
        app_id="b",
        token=TOKEN,
        base_url=emulator.base_url,
        retry=RetryPolicy(attempts=1),
    )
    with client:
        recording = client.start_track_recording(emulator.meeting_id)
        assert client.active_recording(emulator.meeting_id).id == recording.id


def test_a_start_turned_away_by_someone_elses_recording_does_not_take_it(sample_dir):
    options = EmulatorOptions(token=TOKEN, record_seconds=60, start_delay=0.05)
    with Emulator(sample_dir, options) as emu, client_for(emu) as client:
        theirs = client.start_track_recording(emu.meeting_id, user_ids=["user-alice"])
        with pytest.raises(RealtimeKitError) as refused:
            client.start_track_recording(emu.meeting_id, user_ids=["user-bruno"])
        assert refused.value.status == 409 and theirs.id in refused.value.message


def test_pause_resume_stop_and_the_active_recording(emulator):
    with client_for(emulator) as client:
        started = client.start_track_recording(emulator.meeting_id, user_ids=["user-alice"])
        assert client.active_recording(emulator.meeting_id).id == started.id
        while client.get_recording(started.id).status == "INVOKED":
            pass
        assert client.pause(started.id).status == "PAUSED"
        assert client.resume(started.id).status == "RECORDING"
        stopped = client.stop(started.id)
        assert stopped.status in {"UPLOADING", "UPLOADED"}
        assert stopped.stop_reason is not None and stopped.stop_reason.reason == "API_CALL"
        done = client.wait_until_uploaded(started.id, poll=0.05)
        assert [f.name.split("_")[1] for f in done.files()] == ["user-alice"]
        assert client.active_recording(emulator.meeting_id) is None


def test_listing_walks_every_page_with_filters(emulator):
    with client_for(emulator) as client:
        ids = []
        for _ in range(3):
            recording = client.start_track_recording(emulator.meeting_id)
            while client.get_recording(recording.id).status == "INVOKED":
                pass
            client.wait_until_uploaded(recording.id, poll=0.05)
            ids.append(recording.id)
        listed = list(client.list_recordings(meeting_id=emulator.meeting_id, per_page=1))
        assert sorted(r.id for r in listed) == sorted(ids)
        uploaded = list(client.list_recordings(status=["UPLOADED", "ERRORED"], per_page=2))
        assert len(uploaded) == 3
        assert list(client.list_recordings(status=["RECORDING"])) == []


def test_the_older_api_shapes_are_read_too(sample_dir, sample_manifest, tmp_path):
    options = EmulatorOptions(token=TOKEN, shape="string", empty_start_body=True, **FAST)
    with Emulator(sample_dir, options) as emu:
        result = record_and_fetch(emu, tmp_path / "rec", ["user-alice"])
    assert fetched(result.manifest) == originals(sample_manifest, {"user-alice"})


@pytest.mark.parametrize("size", [float("inf"), float("nan")])
def test_a_file_size_that_is_no_number_is_taken_as_unknown(sample_dir, tmp_path, size):
    # Python's JSON reader takes 1e400 as infinity, and NaN as NaN
    options = EmulatorOptions(token=TOKEN, shape="string", **FAST)
    with Emulator(sample_dir, options) as emu, client_for(emu) as client:
        recording = remote.record(client, emu.meeting_id, poll=0.05)
        odd = recording.model_copy(update={"file_size": size})
        result = remote.fetch(client, odd, tmp_path / "rec", options=QUIET)
    assert result.failures == [] and result.missing == []
    assert len(result.manifest.tracks) == 1


def test_a_single_download_url_that_hides_other_files_makes_the_fetch_partial(
    sample_dir, sample_manifest, tmp_path
):
    options = EmulatorOptions(token=TOKEN, shape="string", **FAST)
    with Emulator(sample_dir, options) as emu:
        everyone = record_and_fetch(emu, tmp_path / "all")
        [track] = everyone.manifest.tracks
        asked = record_and_fetch(emu, tmp_path / "two", [track.user_id, "user-bruno"])

    # the one file listed arrives whole; the recording's file_size shows what is missing
    assert fetched(everyone.manifest) == originals(sample_manifest, {track.user_id})
    [hidden] = everyone.missing
    total = sum(t.size for t in sample_manifest.tracks)
    assert "a single URL" in hidden.reason
    assert f"{total:,} bytes by its file_size" in hidden.reason
    # a user asked for whose file cannot be listed is named
    assert [t.user_id for t in asked.manifest.tracks] == [track.user_id]
    [unseen] = asked.missing
    assert unseen.user_id == "user-bruno" and "a single URL" in unseen.reason


def test_a_user_asked_for_who_has_no_file_in_a_full_listing_is_a_warning(
    emulator, tmp_path, caplog
):
    asked = ["user-alice", "user-nobody"]  # someone who never joins while it records
    with client_for(emulator) as client, caplog.at_level(logging.WARNING):
        recording = remote.record(client, emulator.meeting_id, asked, poll=0.05)
        result = remote.fetch(client, recording, tmp_path / "rec", user_ids=asked, options=QUIET)
    assert result.failures == []
    assert [t.user_id for t in result.manifest.tracks] == ["user-alice"]
    assert "lists no file of user-nobody" in caplog.text


class _Errored(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(
            {
                "success": True,
                "data": {
                    "id": "r1",
                    "status": "ERRORED",
                    "stop_reason": {"reason": "INTERNAL_ERROR"},
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_refuses_connections_is_tried_again_then_named():
    with socket.socket() as closed:  # a port nothing listens on once this is closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    waits: list[float] = []
    client = RealtimeKitClient(
        account_id="a",
        app_id="b",
        token=TOKEN,
        base_url=f"http://127.0.0.1:{port}/client/v4",
        retry=RetryPolicy(attempts=3, backoff=0.01),
        sleep=waits.append,
    )
    with pytest.raises(RealtimeKitError) as caught:
        client.get_recording("r1")
    assert len(waits) == 2  # a refused connection never reached the server: safe to repeat
    assert f"(http://127.0.0.1:{port}, 3 attempts)" in str(caught.value)
    assert caught.value.status == 0
    # waiting for an upload outlasts an outage until its deadline, then says what it knows
    with client, pytest.raises(UploadTimeoutError, match=r"r1 no status known after 0\.2 s"):
        client.wait_until_uploaded("r1", timeout=0.2)


class _Endless(BaseHTTPRequestHandler):
    """An API (a proxy, say) that answers with a body that does not end."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(2**40))
        self.end_headers()
        block = b" " * 2**16
        try:
            while True:
                self.wfile.write(block)
        except OSError:  # the client stopped reading
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_an_answer_longer_than_any_api_answer_is_an_error_not_read_to_its_end():
    with serving(_Endless) as root:
        client = RealtimeKitClient(account_id="a", app_id="b", token=TOKEN, base_url=root)
        with client, pytest.raises(RealtimeKitError) as caught:
            client.get_recording("r1")
    assert "the answer is longer than 16 MiB, which no API answer is" in str(caught.value)
    assert "GET" in str(caught.value) and caught.value.status == 200


def test_a_recording_that_ends_errored_raises_with_the_api_reason():
    with serving(_Errored) as root:
        client = RealtimeKitClient(account_id="a", app_id="b", token=TOKEN, base_url=root)
        with pytest.raises(RecordingFailedError, match=r"ERRORED.*INTERNAL_ERROR"):
            client.wait_until_uploaded("r1", poll=0.01)


class _Scripted(BaseHTTPRequestHandler):
    """An API whose answers a test writes: ``answers(method, path, count)`` gives the status
    and body of the ``count``-th request (from 1) of that method."""

    seen: list[str]
    bodies: list[bytes]

    def answers(self, method: str, path: str, count: int) -> tuple[int, dict | None]:
        raise NotImplementedError

    def _answer(self) -> None:
        self.seen.append(self.command)
        self.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        status, body = self.answers(self.command, self.path, self.seen.count(self.command))
        data = b"" if body is None else json.dumps(body).encode()  # None: an empty body
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _scripted_client(answers, seen: list[str], bodies=None) -> Iterator[RealtimeKitClient]:
    handler = type(
        "Api",
        (_Scripted,),
        {
            "answers": staticmethod(answers),
            "seen": seen,
            "bodies": [] if bodies is None else bodies,
        },
    )
    with (
        serving(handler) as root,
        RealtimeKitClient(
            account_id="a",
            app_id="b",
            token=TOKEN,
            base_url=f"{root}/client/v4",
            retry=RetryPolicy(attempts=4, backoff=0.01),
            sleep=lambda _: None,
        ) as client,
    ):
        yield client


@pytest.mark.parametrize(
    ("odd", "expected"),
    [
        ({"session_id": 12345, "file_size": "big"}, ("INVOKED", "12345")),  # read, as it can be
        ({"status": None}, ("RECORDING", None)),  # not read at all: looked up instead
    ],
)
def test_a_start_whose_answer_cannot_be_read_in_full_still_gives_the_recording_it_started(
    odd, expected
):
    # The POST took effect; losing the recording's id here would leave it recording on,
    # unknown to anyone.
    def answers(method: str, path: str, count: int) -> tuple[int, dict]:
        if method == "GET" and "POST" not in seen:  # no recording before the start
            return 404, {"success": False, "error": {"code": 404, "message": "none"}}
        if method == "GET":
            return 200, {"success": True, "data": {"id": "rec-1", "status": "RECORDING"}}
        recording = {"id": "rec-1", "status": "INVOKED", **odd}
        return 201, {"success": True, "data": {"recording": recording}}

    seen: list[str] = []
    with _scripted_client(answers, seen) as client:
        recording = client.start_track_recording("m1")
    assert (recording.id, recording.status, recording.session_id) == ("rec-1", *expected)
    assert seen.count("POST") == 1


_COMPOSITE = {"id": "composite-1", "status": "RECORDING"}  # begun by hand, or on start


def test_a_start_answered_with_no_body_takes_the_recording_it_began_not_one_running_before():
    # The older API form answers a start with an empty body, and the new recording may be
    # listed a moment late: the composite recording already running was taken for it, and the
    # track recording went on unknown to anyone.
    def answers(method: str, path: str, count: int) -> tuple[int, dict | None]:
        if method == "POST":
            return 201, None
        if count <= 3:  # before the start, and the first two looks after it
            return 200, {"success": True, "data": _COMPOSITE}
        return 200, {"success": True, "data": {"id": "track-1", "status": "INVOKED"}}

    seen: list[str] = []
    with _scripted_client(answers, seen) as client:
        recording = client.start_track_recording("m1")
    assert recording.id == "track-1"
    assert Counter(seen) == {"POST": 1, "GET": 4}


def test_a_start_answered_with_no_body_whose_recording_never_shows_says_so_and_what_to_check():
    def answers(method: str, path: str, count: int) -> tuple[int, dict | None]:
        return (201, None) if method == "POST" else (200, {"success": True, "data": _COMPOSITE})

    seen: list[str] = []
    with _scripted_client(answers, seen) as client, pytest.raises(RealtimeKitError) as caught:
        client.start_track_recording("m1")
    message = str(caught.value)
    assert "shows no recording it started" in message
    assert "composite-1 (RECORDING) was already running and is not it" in message
    assert "list_recordings(meeting_id='m1'" in message
    assert seen.count("POST") == 1  # looked for, never started again


def test_a_start_names_the_file_name_prefix_it_reads_the_files_with():
    # The documents fix the prefix ("default") only where no layers are sent, and the older
    # form needs a layer: one sent without a prefix could name files without one.
    def answers(method: str, path: str, count: int) -> tuple[int, dict | None]:
        if method == "GET":
            return 404, {"success": False, "error": {"code": 404, "message": "none"}}
        return 201, {"success": True, "data": {"recording": {"id": "r1", "status": "INVOKED"}}}

    seen: list[str] = []
    bodies: list[bytes] = []
    with _scripted_client(answers, seen, bodies) as client:
        client.start_track_recording("m1", user_ids=["user-alice"])
    [started] = [
        json.loads(body) for method, body in zip(seen, bodies, strict=True) if method == "POST"
    ]
    assert started == {
        "meeting_id": "m1",
        "user_ids": ["user-alice"],
        "layers": {"default": {"file_name_prefix": "default"}},
    }


def test_an_outage_costs_each_try_one_look_at_whether_it_took_effect_not_a_retry_cycle():
    # Under a long outage, the rate limit and the time to give up must not grow sevenfold.
    def answers(method: str, path: str, count: int) -> tuple[int, dict]:
        if method == "GET" and "active-recording" in path and count == 1:
            return 404, {"success": False, "error": {"code": 404, "message": "none"}}
        return 503, {"success": False, "error": {"code": 503, "message": "down"}}

    for call, expected in (
        (lambda client: client.stop("r1"), {"PUT": 4, "GET": 4}),
        (lambda client: client.start_track_recording("m1"), {"POST": 4, "GET": 1 + 4}),
    ):
        seen: list[str] = []
        with _scripted_client(answers, seen) as client, pytest.raises(RealtimeKitError):
            call(client)
        assert Counter(seen) == expected


def test_a_start_whose_answer_was_lost_is_not_repeated_when_nothing_can_tell_if_it_started():
    def answers(method: str, path: str, count: int) -> tuple[int, dict]:
        if method == "GET":  # the active recording cannot be looked at
            return 503, {"success": False, "error": {"code": 503, "message": "busy"}}
        if count == 1:  # the start took effect; the gateway lost its answer
            return 504, {"success": False, "errors": [{"code": 504, "message": "timeout"}]}
        return 409, {"success": False, "error": {"code": 409, "message": "already recording"}}

    seen: list[str] = []
    with _scripted_client(answers, seen) as client, pytest.raises(RealtimeKitError) as caught:
        client.start_track_recording("m1")
    assert seen.count("POST") == 1  # not a second recording, nor a 409 that hides the first
    assert caught.value.status == 504
    assert "may have taken effect all the same" in str(caught.value)


def test_a_recording_that_cannot_be_watched_is_still_stopped_when_asked():
    recording = {"id": "r1", "status": "RECORDING"}

    def answers(method: str, path: str, count: int) -> tuple[int, dict]:
        if method == "POST":
            return 201, {"success": True, "data": {"recording": recording}}
        if method == "GET":  # this token may start and stop, but not look
            return 403, {"success": False, "error": {"code": 403, "message": "forbidden"}}
        return 200, {"success": True, "data": recording | {"status": "UPLOADING"}}

    seen: list[str] = []
    with _scripted_client(answers, seen) as client, pytest.raises(RealtimeKitError) as caught:
        remote.record(client, "m1", stop_after=0.2, poll=0.01)
    assert "PUT" in seen  # stopped at the time asked, not left recording for a day
    assert caught.value.status == 403  # and then the wait for the upload says why it failed


def test_an_answer_that_is_not_a_recording_is_not_waited_on_until_the_deadline():
    def answers(method: str, path: str, count: int) -> tuple[int, dict]:
        return 200, {"success": True, "data": {"recording_id_typo": "r1"}}

    seen: list[str] = []
    with (
        _scripted_client(answers, seen) as client,
        pytest.raises(UnexpectedAnswerError, match=r"unexpected recording.*id"),
    ):
        client.wait_until_uploaded("r1", timeout=5, poll=0.01)
    assert seen == ["GET"]  # asking again gets the same answer


def test_a_recording_id_that_cannot_be_sent_is_not_waited_on_until_the_deadline():
    seen: list[str] = []
    with (
        _scripted_client(lambda method, path, count: (200, {}), seen) as client,
        pytest.raises(RealtimeKitError, match=r"'\.\.' is not a usable") as caught,
    ):
        client.wait_until_uploaded("..", timeout=5, poll=0.01)
    assert not isinstance(caught.value, UploadTimeoutError)  # said at once, not in 5 s
    assert seen == []  # refused before any request


def test_waiting_gives_up_at_the_deadline(emulator):
    with client_for(emulator) as client:
        recording = client.start_track_recording(emulator.meeting_id)
        began = time.monotonic()
        with pytest.raises(UploadTimeoutError) as gave_up:
            client.wait_until_uploaded(recording.id, timeout=0.05, poll=0.01)
        assert time.monotonic() - began >= 0.05  # waited as long as asked, then no longer
    assert gave_up.value.last_status is not None
    assert str(gave_up.value).endswith(
        f": recording {recording.id} still {gave_up.value.last_status} after 0.05 s"
    )


def test_a_server_asking_for_a_longer_wait_than_is_left_is_not_waited_on_past_the_deadline(
    sample_dir,
):
    # retry-after runs past the deadline: waiting it out ran a 60-s wait for over an hour
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(min(seconds, 0.02))

    options = EmulatorOptions(token=TOKEN, faults={"rate_limit": 1000}, **FAST)
    with Emulator(sample_dir, options) as emu:
        client = RealtimeKitClient(
            account_id="a", app_id="b", token=TOKEN, base_url=emu.base_url, sleep=sleep
        )
        with pytest.raises(UploadTimeoutError, match=r"after 0\.3 s"):
            client.wait_until_uploaded("r1", timeout=0.3, poll=0.01)
    assert waits and max(waits) <= 0.3  # the server's retry-after is 1 s


def test_a_recording_to_stop_later_that_ends_first_is_neither_waited_out_nor_stopped(sample_dir):
    steps: list[str] = []
    with Emulator(sample_dir, EmulatorOptions(token=TOKEN, **FAST)) as emu, client_for(emu) as c:
        began = time.monotonic()
        recording = remote.record(c, emu.meeting_id, stop_after=20, poll=0.05, on_step=steps.append)
    assert time.monotonic() - began < 10  # the meeting ended after 0.2 s
    assert recording.status == "UPLOADED" and recording.stop_reason.reason == "ALL_PEERS_LEFT"
    assert not [step for step in steps if step.startswith("stopped")]


def test_a_recording_to_stop_later_is_stopped_when_its_time_comes(sample_dir):
    steps: list[str] = []
    options = EmulatorOptions(token=TOKEN, start_delay=0.05, record_seconds=60, upload_seconds=0.05)
    with Emulator(sample_dir, options) as emu, client_for(emu) as c:
        recording = remote.record(
            c, emu.meeting_id, stop_after=0.3, poll=0.05, on_step=steps.append
        )
    assert recording.status == "UPLOADED" and recording.stop_reason.reason == "API_CALL"
    assert f"stopped recording {recording.id} after 0.3 s" in steps


def test_a_connection_that_keeps_breaking_but_advancing_still_completes(
    sample_dir, sample_manifest, tmp_path
):
    # more cuts than tries: each cut try still brings half of what was left
    options = EmulatorOptions(token=TOKEN, faults={"cut": 40}, **FAST)
    with Emulator(sample_dir, options) as emu:
        result = record_and_fetch(emu, tmp_path / "rec")
    assert result.failures == []
    assert fetched(result.manifest) == originals(sample_manifest)


def test_a_file_that_cannot_be_fetched_is_named_and_costs_nothing_else(
    sample_dir, sample_manifest, tmp_path, caplog
):
    with Emulator(sample_dir, EmulatorOptions(token=TOKEN, **FAST)) as emu:
        with client_for(emu) as client:
            recording = remote.record(client, emu.meeting_id, poll=0.05)
        broken = recording.files()[0]
        # one URL that the storage will always refuse, and an API that cannot renew it
        hostile = recording.model_copy(
            update={
                "download_url": [
                    DownloadLayer(
                        download_urls={
                            f.name: SignedUrl(download_url=f.url + ("x" if f == broken else ""))
                            for f in recording.files()
                        }
                    )
                ]
            }
        )

        def refresh() -> Recording:
            raise RealtimeKitError(503, 503, "temporarily unavailable", call="GET /recordings/x")

        result = fetch_recording(hostile, tmp_path / "rec", refresh=refresh, options=QUIET)

    assert [f.path for f in result.failures] == [f"tracks/{broken.name}"]
    assert broken.name in result.failures[0].reason and "503" in result.failures[0].reason
    assert result.failures[0].fetch_again and result.missing == []  # the API may mend
    assert len(result.manifest.tracks) == len(sample_manifest.tracks) - 1
    assert leftovers(tmp_path / "rec") == []
    assert_no_secrets(caplog.text + result.failures[0].reason)


class _Unavailable(BaseHTTPRequestHandler):
    """Storage that answers every request 503, as one having trouble."""

    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_file_storage_does_not_have_is_lost_for_good_and_one_it_failed_to_send_for_now(
    emulator, sample_manifest, tmp_path
):
    # Whether a fetch again may get a file was told from whether it was on disk: a 404 (S3
    # is strongly consistent, so the same answer comes again) was retried as if it could pass.
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, poll=0.05)
    gone, down, *_ = recording.files()
    with serving(_Unavailable) as storage:

        def url(file: RecordingFile) -> str:
            if file == gone:
                return file.url.replace("/files/", "/gone/")
            return f"{storage}/{down.name}?X-Amz-Signature=s" if file == down else file.url

        layers = [
            DownloadLayer(
                layer_name=f.layer, download_urls={f.name: SignedUrl(download_url=url(f))}
            )
            for f in recording.files()
        ]
        damaged = recording.model_copy(update={"download_url": layers})
        options = FetchOptions(progress=False, retry=RetryPolicy(attempts=3, backoff=0.01))
        result = fetch_recording(
            damaged, tmp_path / "rec", refresh=lambda: damaged, options=options
        )

    [lost] = result.missing
    assert (lost.path, lost.fetch_again) == (f"tracks/{gone.name}", False)
    assert lost.reason.startswith(f"{gone.name}: storage answered HTTP 404")
    [failed] = result.failures
    assert (failed.path, failed.fetch_again) == (f"tracks/{down.name}", True)
    assert "storage answered HTTP 503 (gave up after 3 tries in a row)" in failed.reason
    assert len(result.manifest.tracks) == len(sample_manifest.tracks) - 2


def test_a_local_copy_storage_cannot_confirm_for_now_is_lost_only_for_now(emulator, tmp_path):
    # Not the copy an earlier run verified, and storage busy: on disk, yet a fetch again may
    # get it. Being on disk, it was taken as lost for good.
    out = tmp_path / "rec"
    first = record_and_fetch(emulator, out)
    real = client_for(emulator).get_recording(first.manifest.recording_id)
    victim = real.files()[0].name
    (out / "tracks" / victim).write_bytes(b"changed")
    with serving(_Unavailable) as storage:
        busy = first_file_changed(real, url=f"{storage}/{victim}?X-Amz-Signature=s")
        options = FetchOptions(progress=False, retry=RetryPolicy(attempts=2, backoff=0.01))
        again = fetch_recording(busy, out, refresh=lambda: busy, options=options)

    assert again.missing == []
    [failed] = again.failures
    assert (failed.path, failed.fetch_again) == (f"tracks/{victim}", True)
    assert "storage answered HTTP 503" in failed.reason
    assert (out / "tracks" / victim).read_bytes() == b"changed"  # there, but not vouched for


def test_a_listing_entry_that_cannot_be_read_costs_only_its_own_file(
    emulator, sample_manifest, tmp_path
):
    # As the API might send it: one file listed with a null URL, and a layer that is null.
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, poll=0.05)
    answer = recording.model_dump(mode="json", by_alias=True)
    layer = answer["downloadUrl"][0]
    no_url = next(iter(layer["downloadUrls"]))
    layer["downloadUrls"][no_url] = {"downloadUrl": None}
    answer["downloadUrl"].append(None)
    damaged = Recording.model_validate(answer)

    result = fetch_recording(damaged, tmp_path / "rec", refresh=lambda: damaged, options=QUIET)

    assert result.failures == []  # the same listing again would not do better
    assert [(f.path, f.reason, f.fetch_again) for f in result.missing] == [
        (f"tracks/{no_url}", f"{no_url}: the recording lists it with no download URL", False),
        (
            "",
            f"recording {recording.id}: an entry of its download_url cannot be read; "
            "whatever files it lists cannot be fetched",
            False,
        ),
    ]
    assert len(result.manifest.tracks) == len(sample_manifest.tracks) - 1


def test_times_with_no_zone_cost_only_what_needs_them(emulator, sample_manifest, tmp_path):
    # A time with no zone names no instant. Each file's start is in its name, so the
    # recording is still fetched whole; only a file that needs the recording's start fails.
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, poll=0.05)
    answer = recording.model_dump(mode="json", by_alias=True)
    for field in ("invokedTime", "startedTime", "stoppedTime", "downloadUrlExpiry"):
        answer[field] = "2026-11-20T10:00:00"
    urls = answer["downloadUrl"][0]["downloadUrls"]
    renamed = next(iter(urls))
    urls["odd.webm"] = urls.pop(renamed)
    naive = Recording.model_validate(answer)
    assert (naive.started_time, naive.download_url_expiry) == (None, None)

    result = fetch_recording(naive, tmp_path / "rec", refresh=lambda: naive, options=QUIET)

    assert result.failures == []
    assert [(f.path, f.reason) for f in result.missing] == [
        (
            "tracks/odd.webm",
            "odd.webm: no start time in its name, and the recording's started_time is missing "
            "or cannot be read",
        )
    ]
    assert len(result.manifest.tracks) == len(sample_manifest.tracks) - 1


def test_a_recording_past_its_retention_is_lost_for_good_after_one_renewal_not_a_burst(
    emulator, sample_manifest, tmp_path
):
    # The API hands out URLs that are expired already for a recording whose files are past
    # their 7 days: each try of each file asked it again (about six calls a file), and every
    # file was reported as one a fetch again may get.
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, poll=0.05)
        emulator.inject("expired_url", 1000)
        refreshes = []

        def refresh() -> Recording:
            refreshes.append(1)
            return client.get_recording(recording.id)

        result = fetch_recording(refresh(), tmp_path / "rec", refresh=refresh, options=QUIET)
    assert result.manifest is None and result.failures == []
    assert len(result.missing) == len(sample_manifest.tracks)
    for lost in result.missing:
        assert lost.fetch_again is False
        assert "past RealtimeKit's retention of its files (7 days)" in lost.reason
    assert len(refreshes) == 1 + 3  # the recording as first got, then three renewals in all


def test_ctrl_c_stops_a_fetch_whose_url_renewal_is_told_to_wait(emulator, tmp_path):
    # The API may ask the client to wait minutes (retry-after) while a worker renews expired
    # URLs; a Ctrl-C must not sit that wait out. The emulator asks for 1 s: stretched here.
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, poll=0.05)
    emulator.inject("expired_url")
    with client_for(emulator, sleep=lambda _: time.sleep(30)) as waiting:
        expired = waiting.get_recording(recording.id)
        emulator.inject("rate_limit")
        ctrl_c = (threading.main_thread().ident, signal.SIGINT)
        threading.Timer(0.5, signal.pthread_kill, ctrl_c).start()
        began = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            fetch_recording(
                expired,
                tmp_path / "rec",
                refresh=lambda: waiting.get_recording(recording.id),
                options=QUIET,
            )
    assert time.monotonic() - began < 3


class _StalledStorage(BaseHTTPRequestHandler):
    """Storage that stops sending, keeping the connection open: before its answer's headers,
    or after the first KiB of a 64 KiB body. It holds on until ``released`` is set."""

    released: threading.Event
    stall_before_headers = False

    def do_GET(self) -> None:
        if not self.stall_before_headers:
            self.send_response(200)
            self.send_header("Content-Length", str(64 * 1024))
            self.send_header("ETag", '"v1-2"')
            self.end_headers()
            self.wfile.write(b"x" * 1024)
            self.wfile.flush()
        self.released.wait(30)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("before_headers", [False, True], ids=["mid-body", "before-headers"])
def test_ctrl_c_stops_a_stalled_download_at_once_not_at_its_read_timeout(
    tmp_path, caplog, before_headers
):
    # A worker blocked reading a socket that no byte arrives on saw the cancel only at the
    # read timeout (30 s here; a minute by default).
    released = threading.Event()
    handler = type(
        "Storage",
        (_StalledStorage,),
        {"released": released, "stall_before_headers": before_headers},
    )
    signalled: list[float] = []

    def ctrl_c() -> None:
        signalled.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    options = FetchOptions(progress=False, timeout=30, retry=QUICK_RETRY)
    try:
        with serving(handler) as root:
            recording = _one_file_recording(root)
            threading.Timer(0.5, ctrl_c).start()
            with pytest.raises(KeyboardInterrupt):
                fetch_recording(
                    recording, tmp_path / "rec", refresh=lambda: recording, options=options
                )
            stopped = time.monotonic()
    finally:
        released.set()
    assert stopped - signalled[0] < 1
    part = tmp_path / "rec" / "tracks" / f".{_ONE_FILE}.part"
    assert _size_of(part) == (0 if before_headers else 1024)  # kept, to resume
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no failure


def _size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def test_a_file_listed_twice_is_fetched_once(emulator, sample_manifest, tmp_path, caplog):
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, poll=0.05)
    answer = recording.model_dump(mode="json", by_alias=True)
    answer["downloadUrl"] *= 2  # the same layer, with the same files, twice

    twice = Recording.model_validate(answer)
    result = fetch_recording(twice, tmp_path / "rec", refresh=lambda: twice, options=QUIET)

    assert result.failures == []
    assert fetched(result.manifest) == originals(sample_manifest)
    assert caplog.text.count("listed twice in the recording; fetched once") == len(
        sample_manifest.tracks
    )


def test_the_same_file_name_in_two_layers_gives_two_files(emulator, tmp_path):
    good = record_and_fetch(emulator, tmp_path / "first", ["user-alice"])
    real = client_for(emulator).get_recording(good.manifest.recording_id)
    first = real.files()[0]
    two_layers = real.model_copy(
        update={
            "download_url": [
                DownloadLayer(
                    layer_name=layer, download_urls={first.name: SignedUrl(download_url=first.url)}
                )
                for layer in ("default", "hd")
            ]
        }
    )
    result = fetch_recording(two_layers, tmp_path / "rec", refresh=lambda: real, options=QUIET)
    assert result.failures == []
    assert sorted(Path(t.path).name for t in result.manifest.tracks) == [
        first.name,
        f"hd-{first.name}",
    ]


def test_two_file_names_that_differ_only_in_case_give_two_files(emulator, tmp_path):
    good = record_and_fetch(emulator, tmp_path / "first", ["user-alice"])
    real = client_for(emulator).get_recording(good.manifest.recording_id)
    first = real.files()[0]
    shouted = first.name.replace("peer_audio", "PEER_AUDIO")  # one file on macOS and Windows
    both = real.model_copy(
        update={
            "download_url": [
                DownloadLayer(
                    download_urls={
                        name: SignedUrl(download_url=first.url) for name in (first.name, shouted)
                    }
                )
            ]
        }
    )
    result = fetch_recording(both, tmp_path / "rec", refresh=lambda: real, options=QUIET)
    assert result.failures == []
    names = sorted(p.name.casefold() for p in (tmp_path / "rec" / "tracks").iterdir())
    assert len(names) == len(set(names)) == 2


def test_local_names_do_not_depend_on_the_order_the_api_lists_files_in(emulator, tmp_path):
    # Two names that are one once made safe: which file gets the plain name must not change
    # between fetches, or a re-fetch would take one participant's file for the other's.
    good = record_and_fetch(emulator, tmp_path / "first", ["user-alice", "user-bruno"])
    real = client_for(emulator).get_recording(good.manifest.recording_id)
    alice, bruno = sorted(real.files(), key=lambda f: f.name)[:2]
    spaced = alice.name.replace("peer_audio", "peer audio")
    listed = [(alice.name, alice.url), (spaced, bruno.url)]

    def contents(order: list[tuple[str, str]], folder: Path) -> dict[str, bytes]:
        urls = {name: SignedUrl(download_url=url) for name, url in order}
        one = real.model_copy(update={"download_url": [DownloadLayer(download_urls=urls)]})
        fetch_recording(one, folder, refresh=lambda: real, options=QUIET)
        return {p.name: p.read_bytes() for p in (folder / "tracks").iterdir()}

    assert contents(listed, tmp_path / "a") == contents(listed[::-1], tmp_path / "b")


def test_stopping_a_recording_that_already_ended_is_not_an_error(emulator):
    with client_for(emulator) as client:
        recording = client.start_track_recording(emulator.meeting_id)
        client.wait_until_uploaded(recording.id, poll=0.05)
        assert client.stop(recording.id).status == "UPLOADED"


@pytest.mark.parametrize(
    ("base", "token", "reason"),
    [
        ("ftp://127.0.0.1/client/v4", TOKEN, "http:// or https://"),
        (None, "tok\nsecret-tail", "not valid HTTP"),  # a line break pasted with the token
    ],
    ids=["unsupported-protocol", "illegal-header"],
)
def test_a_request_that_cannot_be_sent_fails_at_once_without_the_token(
    emulator, caplog, base, token, reason
):
    waits: list[float] = []
    client = RealtimeKitClient(
        account_id="a",
        app_id="b",
        token=token,
        base_url=base or emulator.base_url,
        sleep=waits.append,
    )
    with client, caplog.at_level(logging.DEBUG), pytest.raises(RealtimeKitError) as failed:
        client.get_recording("r")
    assert waits == []  # no retry: none could succeed
    assert reason in str(failed.value)
    assert "secret-tail" not in str(failed.value) + caplog.text


def test_account_and_app_ids_stay_path_segments_whatever_they_hold(emulator):
    client = RealtimeKitClient(
        account_id="acct?x=1", app_id="app/../other", token=TOKEN, base_url=emulator.base_url
    )
    with client:  # unquoted, "?" made the rest a query string and ".." climbed a level
        recording = client.start_track_recording(emulator.meeting_id)
        assert client.get_recording(recording.id).id == recording.id


def test_a_download_url_that_cannot_be_sent_fails_its_file_at_once(emulator, tmp_path):
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, poll=0.05)
    first = recording.files()[0]
    odd = first_file_changed(recording, url="file:///etc/passwd?X-Amz-Signature=secret")

    result = fetch_recording(odd, tmp_path / "rec", refresh=lambda: odd, options=QUIET)

    assert result.failures == []  # no fetch again could send it either
    [failure] = result.missing
    assert failure.reason.startswith(f"{first.name}: its URL cannot be fetched")
    assert "gave up after" not in failure.reason  # not tried again and again
    assert "secret" not in failure.reason


def test_a_file_whose_name_has_nothing_usable_is_lost_for_good(emulator, tmp_path):
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, poll=0.05)
    renamed = first_file_changed(recording, name="???")

    result = fetch_recording(renamed, tmp_path / "rec", refresh=lambda: renamed, options=QUIET)

    assert result.failures == []  # the same name comes again
    [lost] = result.missing
    assert lost.reason == "'???': the name has nothing usable as a file name"
    assert not lost.fetch_again


def test_a_file_whose_name_cannot_be_written_in_a_manifest_costs_only_that_file(
    emulator, sample_manifest, tmp_path
):
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, poll=0.05)
    first = recording.files()[0]
    head, _, *rest = first.name.rsplit("_", 4)
    odd = "_".join([head, "peer-\udcff", *rest])  # JSON's "\udcff": not text
    renamed = first_file_changed(recording, name=odd)

    result = fetch_recording(renamed, tmp_path / "rec", refresh=lambda: renamed, options=QUIET)

    assert [f.path for f in result.missing] == [f"tracks/{safe_file_name(odd)}"]
    assert result.missing[0].reason.startswith(f"{odd}: left out of the manifest: its peer_id")
    assert len(result.manifest.tracks) == len(sample_manifest.tracks) - 1


def test_a_file_whose_name_puts_it_weeks_away_is_named_and_costs_only_that_file(
    emulator, sample_manifest, tmp_path
):
    with client_for(emulator) as client:
        recording = remote.record(client, emulator.meeting_id, poll=0.05)
    first = recording.files()[0]
    stem, millis = first.name.removesuffix(".webm").rsplit("_", 1)
    weeks_later = f"{stem}_{int(millis) + 40 * 86_400_000}.webm"  # a device clock gone wrong
    renamed = first_file_changed(recording, name=weeks_later)

    result = fetch_recording(renamed, tmp_path / "rec", refresh=lambda: renamed, options=QUIET)

    assert result.failures == []  # nothing a re-run could fetch better
    assert [f.path for f in result.missing] == [f"tracks/{weeks_later}"]
    assert result.missing[0].reason.startswith(f"{weeks_later}: it starts at 2026-12-30T")
    assert "more than a day from the middle file's (2026-11-20T" in result.missing[0].reason
    assert len(result.manifest.tracks) == len(sample_manifest.tracks) - 1
    assert weeks_later not in {Path(t.path).name for t in result.manifest.tracks}
    assert (tmp_path / "rec/tracks" / weeks_later).is_file()  # kept: its link will not last


def test_a_leftover_part_as_long_as_the_file_is_checked_before_it_is_kept(
    emulator, sample_manifest, tmp_path
):
    out = tmp_path / "rec"
    first = record_and_fetch(emulator, out)
    victim = out / first.manifest.tracks[0].path
    size = victim.stat().st_size
    victim.unlink()
    # a run killed after the last byte came, on a disk that then lost what it had not written
    victim.with_name(f".{victim.name}.part").write_bytes(bytes(size))

    with client_for(emulator) as client:
        again = remote.fetch(client, first.manifest.recording_id, out, options=QUIET)

    assert again.failures == []
    assert fetched(again.manifest) == originals(sample_manifest)
    assert leftovers(out) == []


class _LengthlessStorage(BaseHTTPRequestHandler):
    """Storage that ends a body by closing the connection (HTTP/1.0, no Content-Length), cuts
    every download in half, and sends a multipart ETag, which checks nothing. With
    ``ranges``, it answers a ranged request with the file's length, as S3 does."""

    protocol_version = "HTTP/1.0"
    body = bytes(range(256)) * 64
    ranges = True

    def do_GET(self) -> None:
        if self.ranges and self.headers.get("Range") == "bytes=0-0":
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-0/{len(self.body)}")
            self.send_header("Content-Length", "1")
            self.send_header("ETag", '"0123-2"')
            self.end_headers()
            self.wfile.write(self.body[:1])
            return
        self.send_response(200)
        self.send_header("ETag", '"0123-2"')
        self.end_headers()
        self.wfile.write(self.body[: len(self.body) // 2])

    def log_message(self, *args: object) -> None:
        pass


_ONE_FILE = "default_user-alice_peer-1_peer_audio_1760000000000.webm"


def _one_file_recording(storage: str, signature: str = "s") -> Recording:
    """An uploaded recording of one file, :data:`_ONE_FILE`, kept by the storage at
    ``storage``, its URL signed ``signature``."""
    url = f"{storage}/{_ONE_FILE}?X-Amz-Signature={signature}"
    return Recording(
        id="r1",
        status="UPLOADED",
        download_url=[DownloadLayer(download_urls={_ONE_FILE: SignedUrl(download_url=url)})],
    )


@pytest.mark.parametrize(
    ("ranges", "reason"),
    [
        (True, "got 8192 bytes of 16384"),
        (False, "storage sent neither the file's length nor an MD5 ETag"),
    ],
    ids=["length-asked-for", "length-not-to-be-had"],
)
def test_a_download_cut_short_is_not_taken_as_whole_when_no_length_came_with_it(
    tmp_path, ranges, reason
):
    handler = type("Storage", (_LengthlessStorage,), {"ranges": ranges})
    with serving(handler) as root:
        recording = _one_file_recording(root)
        retry = FetchOptions(progress=False, retry=RetryPolicy(attempts=2, backoff=0.01))
        result = fetch_recording(
            recording, tmp_path / "rec", refresh=lambda: recording, options=retry
        )
    name = _ONE_FILE
    assert result.manifest is None
    (failure,) = result.failures
    assert failure.path == f"tracks/{name}" and reason in failure.reason
    assert not (tmp_path / "rec" / "tracks" / name).exists()


class _ReplacedFile(BaseHTTPRequestHandler):
    """Storage holding a second version of a file (multipart ETag: no MD5 to check it by).
    It answers ranges; with ``if_range``, as RFC 9110 asks, a range whose ``If-Range`` names
    another version gets the whole file instead, and without, the range all the same."""

    body = bytes(range(256)) * 40
    etag = '"v2-2"'
    if_range = True
    ranges_asked: list[tuple[str | None, str | None]]

    def do_GET(self) -> None:
        asked, validator = self.headers.get("Range"), self.headers.get("If-Range")
        self.ranges_asked.append((asked, validator))
        start = int(asked.removeprefix("bytes=").split("-")[0]) if asked else 0
        if asked and self.if_range and validator not in (None, self.etag):
            start = 0
        if start:
            self.send_response(206)
            self.send_header(
                "Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"
            )
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(self.body) - start))
        self.send_header("ETag", self.etag)
        self.end_headers()
        self.wfile.write(self.body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("if_range", "etag_kept"),
    [(True, True), (False, True), (True, False)],
    ids=["storage-honours-if-range", "storage-ignores-if-range", "no-etag-kept"],
)
def test_a_partial_download_of_a_file_since_replaced_is_not_completed_with_the_new_one(
    tmp_path, if_range, etag_kept
):
    asked: list = []
    handler = type("Storage", (_ReplacedFile,), {"if_range": if_range, "ranges_asked": asked})
    tracks = tmp_path / "rec" / "tracks"
    tracks.mkdir(parents=True)
    name = _ONE_FILE
    # An earlier run was stopped 600 bytes into the first version of the file.
    (tracks / f".{name}.part").write_bytes(b"\xff" * 600)
    if etag_kept:
        (tracks / f".{name}.part.etag").write_text('"v1-2"')
    with serving(handler) as root:
        recording = _one_file_recording(root)
        result = fetch_recording(
            recording, tmp_path / "rec", refresh=lambda: recording, options=QUIET
        )
    assert not result.failures
    assert (tracks / name).read_bytes() == _ReplacedFile.body  # the new version, whole
    assert sorted(p.name for p in tracks.iterdir()) == [name]  # no .part, no ETag left
    if etag_kept:
        assert asked[0] == ("bytes=600-", '"v1-2"')  # resumed only if still that version
    else:
        assert asked[0] == (None, None)  # bytes of no known version are not resumed


class _CutThenRanged(BaseHTTPRequestHandler):
    """Storage on a flaky link: the whole file's answer breaks off after 600 bytes, every
    range is answered whole. With ``etag`` an MD5 that is not the file's, no copy checks out;
    with ``from_zero``, a range is answered with the file's first bytes, said so in its
    Content-Range, but not those asked for."""

    body = bytes(range(256)) * 40
    etag = '"v1-2"'
    from_zero = False
    asked: list[str | None]

    def do_GET(self) -> None:
        asked = self.headers.get("Range")
        self.asked.append(asked)
        start = int(asked.removeprefix("bytes=").split("-")[0]) if asked else 0
        sent = 0 if self.from_zero else start
        self.send_response(206 if asked else 200)
        if asked:
            end = sent + len(self.body) - start - 1
            self.send_header("Content-Range", f"bytes {sent}-{end}/{len(self.body)}")
        self.send_header("Content-Length", str(len(self.body) - start))
        self.send_header("ETag", self.etag)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.body[sent : sent + len(self.body) - start][: None if asked else 600])
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("storage", "said"),
    [
        ({"etag": f'"{"0" * 32}"'}, "does not match the storage's checksum (ETag)"),
        ({"from_zero": True}, "asked for the bytes from 600 on, the storage sent 'bytes 0-"),
    ],
    ids=["never-checks-out", "range-from-elsewhere"],
)
def test_a_file_whose_every_copy_is_bad_fails_after_its_tries_and_is_never_kept(
    tmp_path, caplog, storage, said
):
    # Getting the same first bytes again after a bad copy was dropped was taken as progress:
    # the file was fetched for ever. A range from elsewhere was appended, and kept as good.
    asked: list = []
    handler = type("Storage", (_CutThenRanged,), {**storage, "asked": asked})
    with serving(handler) as root:
        recording = _one_file_recording(root)
        options = FetchOptions(progress=False, retry=RetryPolicy(attempts=2, backoff=0.01))
        result = fetch_recording(
            recording, tmp_path / "rec", refresh=lambda: recording, options=options
        )
    (failure,) = result.failures
    assert "gave up after 2 tries in a row" in failure.reason
    assert said in caplog.text  # why each copy was dropped
    assert len(asked) <= 4
    assert not (tmp_path / "rec" / "tracks" / _ONE_FILE).exists()  # (a .part to resume is)


class _EncryptedStorage(BaseHTTPRequestHandler):
    """S3 keeping the file encrypted as ``headers`` say: its ETag is 32 hex digits, as an
    MD5 is, but not the content's MD5 (SSE-KMS, SSE-C); ranges are answered as asked."""

    body = bytes(range(256)) * 40
    headers_sent: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        asked = self.headers.get("Range")
        first, last = 0, len(self.body) - 1
        if asked:
            since, _, until = asked.removeprefix("bytes=").partition("-")
            first, last = int(since), min(int(until or last), last)
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(self.body)}")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("ETag", f'"{"7" * 32}"')
        for name, value in self.headers_sent.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(self.body[first : last + 1])

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    "encryption",
    [
        {"x-amz-server-side-encryption": "aws:kms"},
        {"x-amz-server-side-encryption": "aws:kms:dsse"},
        {"x-amz-server-side-encryption-customer-algorithm": "AES256"},
    ],
    ids=["sse-kms", "dsse-kms", "sse-c"],
)
def test_a_file_whose_etag_is_no_md5_as_its_encryption_says_is_fetched_and_kept(
    tmp_path, encryption
):
    # Checked as an MD5, the ETag of an object encrypted with a KMS key or the customer's
    # own refused every download of such a bucket as corrupt, each try alike.
    handler = type("Storage", (_EncryptedStorage,), {"headers_sent": encryption})
    options = FetchOptions(progress=False, retry=RetryPolicy(attempts=2, backoff=0.01))
    with serving(handler) as root:
        recording = _one_file_recording(root)
        for _ in range(2):  # and a fetch again keeps the copy it has
            result = fetch_recording(
                recording, tmp_path / "rec", refresh=lambda: recording, options=options
            )
            assert result.failures == []
    assert (tmp_path / "rec" / "tracks" / _ONE_FILE).read_bytes() == _EncryptedStorage.body


class _RefusingStorage(BaseHTTPRequestHandler):
    """S3-style storage that refuses every pre-signed URL, fresh or not (403 AccessDenied)."""

    signatures: list[str]

    def do_GET(self) -> None:
        self.signatures.append(parse_qs(urlsplit(self.path).query)["X-Amz-Signature"][0])
        body = b"<Error><Code>AccessDenied</Code></Error>"
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _ExpiredFirst(_RefusingStorage):
    """Storage refusing the first URL (signed ``s0``, past its time) and serving the file
    to any fresh one."""

    body = bytes(range(256)) * 4

    def do_GET(self) -> None:
        signature = parse_qs(urlsplit(self.path).query)["X-Amz-Signature"][0]
        if signature == "s0":
            super().do_GET()
            return
        self.signatures.append(signature)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


def test_an_expired_url_is_renewed_even_under_a_policy_of_one_try(tmp_path):
    signatures: list[str] = []
    handler = type("Storage", (_ExpiredFirst,), {"signatures": signatures})
    result = _fetch_one_try(tmp_path, handler)
    assert result.failures == [] and signatures == ["s0", "s1"]
    assert (tmp_path / "rec" / "tracks" / _ONE_FILE).read_bytes() == _ExpiredFirst.body


class _AnsweredFirst(_RefusingStorage):
    """Storage answering the first URL (signed ``s0``) ``status``, with S3 error ``code`` in
    its XML body (and its ``x-amz-error-code`` header if ``in_header``), and serving the file
    to any fresh one."""

    status = 400
    code = "ExpiredToken"
    in_header = True
    body = bytes(range(256)) * 4

    def do_GET(self) -> None:
        signature = parse_qs(urlsplit(self.path).query)["X-Amz-Signature"][0]
        self.signatures.append(signature)
        status, body = (self.status, b"") if signature == "s0" else (200, self.body)
        if status != 200 and self.code:
            body = f"<Error><Code>{self.code}</Code></Error>".encode()
        self.send_response(status)
        if status != 200 and self.code:
            self.send_header("Content-Type", "application/xml")
            if self.in_header:
                self.send_header("x-amz-error-code", self.code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _fetch_renewing(
    tmp_path: Path, status: int, code: str, *, in_header: bool = True
) -> tuple[FetchResult, list[str]]:
    """Fetch the one file from :class:`_AnsweredFirst`, whose API gives a URL signed ``s1``
    when asked again; and the signatures storage saw."""
    signatures: list[str] = []
    answers = {"signatures": signatures, "status": status, "code": code, "in_header": in_header}
    handler = type("Storage", (_AnsweredFirst,), answers)
    return _fetch_one_try(tmp_path, handler), signatures


def _fetch_one_try(tmp_path: Path, storage: type) -> FetchResult:
    """Fetch, under a policy of one try, the one file ``storage`` serves: its URL first signed
    ``s0``, and ``s1`` when the API is asked again."""
    with serving(storage) as root:
        recording = _one_file_recording(root, signature="s0")
        options = FetchOptions(progress=False, retry=RetryPolicy(attempts=1, backoff=0.01))
        return fetch_recording(
            recording,
            tmp_path / "rec",
            refresh=lambda: _one_file_recording(root, signature="s1"),
            options=options,
        )


@pytest.mark.parametrize(
    ("code", "in_header"),
    [
        ("ExpiredToken", True),
        ("ExpiredToken", False),  # said in the body only, as S3 does for a GET
        ("RequestExpired", True),
        ("TokenRefreshRequired", True),
    ],
)
def test_a_url_whose_credentials_expired_answered_400_is_renewed(tmp_path, code, in_header):
    # S3 answers 400 ExpiredToken for a pre-signed URL whose session credentials ran out: a
    # fresh URL gets the file. It was taken as lost for good, as any 4xx but 403.
    result, signatures = _fetch_renewing(tmp_path, 400, code, in_header=in_header)
    assert (result.failures, result.missing, signatures) == ([], [], ["s0", "s1"])
    assert (tmp_path / "rec" / "tracks" / _ONE_FILE).read_bytes() == _AnsweredFirst.body


@pytest.mark.parametrize(
    ("status", "code"), [(400, "InvalidArgument"), (401, ""), (407, ""), (400, "")]
)
def test_a_4xx_other_than_404_or_410_given_up_on_is_lost_only_for_now(tmp_path, status, code):
    # Every 4xx not retried was lost for good, so no fetch again was asked for: a 401, a
    # proxy's 407, a 400 may pass. Not renewed: no sign that the URL is at fault.
    result, signatures = _fetch_renewing(tmp_path, status, code)
    assert (result.missing, signatures) == ([], ["s0"])
    [failure] = result.failures
    assert (failure.path, failure.fetch_again) == (f"tracks/{_ONE_FILE}", True)
    assert failure.reason == f"{_ONE_FILE}: storage answered HTTP {status}" + (
        f", {code}" if code else ""
    )


def test_a_file_storage_answers_410_gone_is_lost_for_good(tmp_path):
    result, signatures = _fetch_renewing(tmp_path, 410, "")
    assert (result.failures, signatures) == ([], ["s0"])
    [lost] = result.missing
    assert (lost.path, lost.fetch_again) == (f"tracks/{_ONE_FILE}", False)
    assert lost.reason == f"{_ONE_FILE}: storage answered HTTP 410"


def test_a_storage_refusing_every_fresh_url_is_given_up_on_after_the_tries_a_failure_gets(
    tmp_path,
):
    # Refusals were renewed and retried apart from the count of failures: attempts renewals,
    # then as many failed tries again, and a message that did not say fresh URLs were tried.
    signatures: list[str] = []
    handler = type("Storage", (_RefusingStorage,), {"signatures": signatures})
    with serving(handler) as root:
        renewals = iter(range(1, 100))

        def refresh() -> Recording:
            return _one_file_recording(root, signature=f"s{next(renewals)}")

        recording = _one_file_recording(root, signature="s0")
        options = FetchOptions(progress=False, retry=RetryPolicy(attempts=3, backoff=0.01))
        result = fetch_recording(recording, tmp_path / "rec", refresh=refresh, options=options)
    (failure,) = result.failures
    assert failure.reason == (
        f"{_ONE_FILE}: storage refused the pre-signed URL (HTTP 403, AccessDenied) "
        "(gave up after 3 tries in a row, 2 of them with a fresh URL from the API)"
    )
    assert signatures == ["s0", "s1", "s2"]  # each URL tried once; none asked for in vain


@contextmanager
def _unanswered_port() -> Iterator[int]:
    """A loopback port whose connections are never accepted: its backlog is full, so a new
    connection's SYN goes unanswered, as with a storage host out of reach."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        queued = [socket.socket() for _ in range(4)]
        try:
            for waiting in queued:
                waiting.setblocking(False)
                waiting.connect_ex(("127.0.0.1", port))
            time.sleep(0.1)
            yield port
        finally:
            for waiting in queued:
                waiting.close()


def test_a_storage_host_out_of_reach_fails_a_try_at_the_connect_timeout(tmp_path, monkeypatch):
    # The connect timeout was the read timeout (a minute): each try at a host out of reach
    # took that long. 10 s in use; shortened here.
    monkeypatch.setattr(fetch, "_CONNECT_TIMEOUT", 0.3)
    options = FetchOptions(progress=False, timeout=30, retry=RetryPolicy(attempts=2, backoff=0.01))
    with _unanswered_port() as port:
        recording = _one_file_recording(f"http://127.0.0.1:{port}")
        began = time.monotonic()
        result = fetch_recording(
            recording, tmp_path / "rec", refresh=lambda: recording, options=options
        )
    assert time.monotonic() - began < 5
    (failure,) = result.failures
    assert "ConnectTimeout" in failure.reason and "gave up after 2 tries in a row" in (
        failure.reason
    )


class _RateLimited(BaseHTTPRequestHandler):
    """Storage that answers every request 429, asking for ten hours' wait."""

    def do_GET(self) -> None:
        self.send_response(429)
        self.send_header("Retry-After", "36000")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_failure_says_how_long_the_storage_asked_to_wait(tmp_path):
    with serving(_RateLimited) as root:
        recording = _one_file_recording(root)
        options = FetchOptions(progress=False, retry=RetryPolicy(attempts=1))
        result = fetch_recording(
            recording, tmp_path / "rec", refresh=lambda: recording, options=options
        )
    (failure,) = result.failures
    assert "storage answered HTTP 429 (Retry-After: '36000') (gave up after 1 try" in (
        failure.reason
    )


def test_a_storage_asking_for_a_longer_wait_than_a_retry_may_wait_is_not_waited_for(tmp_path):
    # Waiting the longest a retry may (15 min) and trying again before the storage's time
    # only stalled a batch for an hour and more, five refused tries in a row.
    started = time.monotonic()
    with serving(_RateLimited) as root:
        recording = _one_file_recording(root)
        options = FetchOptions(progress=False, retry=RetryPolicy(attempts=5))
        result = fetch_recording(
            recording, tmp_path / "rec", refresh=lambda: recording, options=options
        )
    assert time.monotonic() - started < 10
    (failure,) = result.failures
    assert failure.reason.endswith(
        "storage answered HTTP 429 (Retry-After: '36000'): a longer wait than the 900 s a "
        "retry may wait, so not retried"
    )


class _LongRateLimit(BaseHTTPRequestHandler):
    """An API that answers every request 429, asking for an hour's wait."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = json.dumps({"success": False, "error": {"code": 429, "message": "slow down"}})
        self.send_response(429)
        self.send_header("Retry-After", "3600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def test_an_api_asking_for_a_longer_wait_than_a_retry_may_wait_fails_at_once():
    waits: list[float] = []
    handler = type("Handler", (_LongRateLimit,), {"seen": []})
    with serving(handler) as root:
        client = RealtimeKitClient(
            account_id="a", app_id="b", token=TOKEN, base_url=root, sleep=waits.append
        )
        with client, pytest.raises(RealtimeKitError) as caught:
            client.get_recording("r1")
    assert waits == [] and len(handler.seen) == 1
    assert caught.value.status == 429
    assert "slow down (Retry-After: '3600'): a longer wait than the 900 s a retry may wait" in (
        str(caught.value)
    )


def test_a_start_whose_answer_times_out_is_found_and_not_repeated(sample_dir):
    options = EmulatorOptions(token=TOKEN, faults={"slow_reply": 1}, slow_reply_seconds=1.0)
    with Emulator(sample_dir, options) as emu:
        client = RealtimeKitClient(
            account_id="a",
            app_id="b",
            token=TOKEN,
            base_url=emu.base_url,
            timeout=0.3,  # less than the answer takes: it started, and the client cannot know
            retry=QUICK_RETRY,
        )
        with client:
            recording = client.start_track_recording(emu.meeting_id)
            listed = list(client.list_recordings(meeting_id=emu.meeting_id))
            assert [r.id for r in listed] == [recording.id]
            assert client.active_recording(emu.meeting_id).id == recording.id


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pausing_or_resuming_a_recording_that_has_stopped_fails_at_once(emulator, action):
    waits: list[float] = []
    client = RealtimeKitClient(
        account_id="a", app_id="b", token=TOKEN, base_url=emulator.base_url, sleep=waits.append
    )
    with client:
        recording = client.start_track_recording(emulator.meeting_id)
        client.wait_until_uploaded(recording.id, poll=0.05)
        waits.clear()
        with pytest.raises(RealtimeKitError, match=r"is UPLOADED: it has stopped, and cannot"):
            getattr(client, action)(recording.id)
    assert waits == []  # no 409 waited out: nothing will change it


def test_a_pause_or_resume_whose_answer_is_lost_is_not_an_error(sample_dir):
    options = EmulatorOptions(token=TOKEN, start_delay=0.2, record_seconds=60)
    with Emulator(sample_dir, options) as emu, client_for(emu) as client:
        started = client.start_track_recording(emu.meeting_id)
        # INVOKED: nothing to pause yet (409), which passes as the recording starts
        assert client.pause(started.id).status == "PAUSED"
        assert client.resume(started.id).status == "RECORDING"
        emu.inject("lost_reply")  # paused, answered 502; the repeat is refused with 409
        assert client.pause(started.id).status == "PAUSED"
        assert client.pause(started.id).status == "PAUSED"  # asked twice: it is paused
        emu.inject("lost_reply")
        assert client.resume(started.id).status == "RECORDING"
        assert client.stop(started.id).status in {"UPLOADING", "UPLOADED"}


class _Listing(BaseHTTPRequestHandler):
    """A listing of five recordings that sends at most two a page, whatever was asked, or
    (``broken``) a page of HTML with status 200."""

    broken = False
    total: float = 5

    def do_GET(self) -> None:
        page = int(parse_qs(urlsplit(self.path).query)["page_no"][0])
        data = [{"id": f"r{i}", "status": "UPLOADED"} for i in range(5)][2 * page - 2 : 2 * page]
        body = json.dumps({"success": True, "data": data, "paging": {"total_count": self.total}})
        if self.broken:
            body = "<html>maintenance</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("broken", "total"),
    [(False, 5), (False, 5.0), (True, 5)],
    ids=["capped-pages", "a count sent as a float (the SDK's type)", "html"],
)
def test_listing_follows_the_count_not_the_page_size_and_refuses_an_answer_without_a_list(
    broken, total
):
    with serving(type("L", (_Listing,), {"broken": broken, "total": total})) as root:
        client = RealtimeKitClient(account_id="a", app_id="b", token=TOKEN, base_url=root)
        with client:
            if broken:
                with pytest.raises(RealtimeKitError, match="no list of recordings"):
                    list(client.list_recordings(per_page=10))
            else:
                listed = [r.id for r in client.list_recordings(per_page=10)]
                assert listed == ["r0", "r1", "r2", "r3", "r4"]


@pytest.mark.parametrize(
    "base", ["https://api.example/v4?x=1", "https://api.example/v4#frag", "https://u:pw@h/v4"]
)
def test_a_base_url_with_a_query_fragment_or_credentials_is_refused(base):
    with pytest.raises(ValueError, match="base URL must not hold"):
        RealtimeKitClient(account_id="a", app_id="b", token=TOKEN, base_url=base)


def test_more_user_ids_than_the_api_takes_are_refused_before_any_call(emulator):
    with client_for(emulator) as client:
        with pytest.raises(RealtimeKitError, match=r"101 user ids; .* at most 100"):
            client.start_track_recording(
                emulator.meeting_id, user_ids=[f"u{i}" for i in range(101)]
            )
        assert list(client.list_recordings(meeting_id=emulator.meeting_id)) == []
