"""The local RealtimeKit emulator, as a specification of what a client can rely on.

Every test talks real HTTP over loopback to an emulator backed by the repository's sample
meeting, with timings short enough that a whole recording takes a fraction of a second.
"""

import base64
import contextlib
import hashlib
import json
import logging
import math
import re
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import ValidationError

from models import Manifest, ManifestError, Recording, WebhookEvent, parse_file_name
from pipeline.emulator import FAULTS, Emulator, EmulatorOptions

TOKEN = "test-token-not-a-secret"
FAST = {"start_delay": 0.03, "record_seconds": 0.15, "upload_seconds": 0.03}
INSTANT = {"start_delay": 0, "record_seconds": 0, "upload_seconds": 0}
RECORDINGS = "/accounts/acct-1/realtime/kit/app-1/recordings"
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# One TLS context for every client: making one per client costs ~30 ms, and the tests make many
# (the clients only ever speak plain HTTP to loopback).
TLS = ssl.create_default_context()


class AnyText:
    """Equal to any string: an error's wording is for people, not part of the contract."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)


ANY_TEXT = AnyText()


class Api:
    """The calls a RealtimeKit client makes, against one emulator."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.http = httpx.Client(
            base_url=emulator.base_url + RECORDINGS,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
            verify=TLS,
        )

    def start(self, **body: Any) -> dict[str, Any]:
        response = self.http.post("/track", json={"meeting_id": self.emulator.meeting_id} | body)
        assert response.status_code == 201, response.text
        return response.json()["data"]["recording"]

    def get(self, recording_id: str) -> dict[str, Any]:
        response = self.http.get(f"/{recording_id}")
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def act(self, recording_id: str, action: str) -> httpx.Response:
        return self.http.put(f"/{recording_id}", json={"action": action})

    def wait(self, recording_id: str, status: str, timeout: float = 3.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            recording = self.get(recording_id)
            if recording["status"] == status:
                return recording
            assert time.monotonic() < deadline, f"still {recording['status']}, not {status}"
            time.sleep(0.01)

    def list(self, **params: Any) -> dict[str, Any]:
        response = self.http.get("", params=params)
        assert response.status_code == 200, response.text
        return response.json()


def urls(recording: dict[str, Any]) -> dict[str, str]:
    """File name -> pre-signed URL, read with the project's own Recording model."""
    return {f.name: f.url for f in Recording.model_validate(recording).files()}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def make_api(sample_dir: Path) -> Iterator[Callable[..., Api]]:
    made: list[Api] = []

    def make(**options: Any) -> Api:
        emulator = Emulator(sample_dir, EmulatorOptions(token=TOKEN, **(FAST | options)))
        made.append(Api(emulator.start()))
        return made[-1]

    yield make
    for api in made:
        api.http.close()
        api.emulator.close()


@pytest.fixture(scope="module")
def web() -> Iterator[httpx.Client]:
    """A plain client, with no token: pre-signed URLs are their own credential."""
    with httpx.Client(timeout=5, verify=TLS) as client:
        yield client


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture
def instant_api(make_api: Callable[..., Api]) -> Api:
    """An emulator whose recordings are UPLOADED the moment they are next read."""
    return make_api(**INSTANT)


@pytest.fixture
def uploaded(instant_api: Api) -> dict[str, Any]:
    """A finished recording of the whole sample meeting."""
    return instant_api.wait(instant_api.start()["id"], "UPLOADED")


# -- lifecycle -------------------------------------------------------------------------------


def test_a_track_recording_moves_from_invoked_to_uploaded_on_the_clock(api: Api, sample_dir):
    started = api.start()
    assert started["status"] == "INVOKED"
    assert started["started_time"] is None and started["download_url"] is None

    seen = [started["status"]]
    deadline = time.monotonic() + 3
    while seen[-1] != "UPLOADED" and time.monotonic() < deadline:
        status = api.get(started["id"])["status"]
        if status != seen[-1]:
            seen.append(status)
        time.sleep(0.005)
    assert [s for s in ["INVOKED", "RECORDING", "UPLOADING", "UPLOADED"] if s in seen] == seen
    assert seen[-1] == "UPLOADED"

    done = api.get(started["id"])
    manifest = Manifest.load(sample_dir / "manifest.json")
    assert done["file_size"] == sum(manifest.track_path(t).stat().st_size for t in manifest.tracks)
    assert done["stop_reason"]["reason"] == "ALL_PEERS_LEFT"
    assert done["start_reason"] == {
        "reason": "API_CALL",
        "caller": {"name": "API", "type": "ORGANIZATION"},
    }
    assert done["storage_config"] is None and done["audio_download_url"] is None
    assert "meeting_id" not in done and done["session_id"]  # the documented object has none
    assert isinstance(done["recording_duration"], int)
    for key in ("invoked_time", "started_time", "stopped_time", "download_url_expiry"):
        assert ISO_MS_Z.match(done[key]), key
    invoked, began, stopped = (
        parse_time(done[k]) for k in ("invoked_time", "started_time", "stopped_time")
    )
    assert invoked < began < stopped
    assert abs((stopped - began).total_seconds() - FAST["record_seconds"]) < 0.01
    assert parse_time(done["download_url_expiry"]) > datetime.now(UTC)


def test_the_recording_object_reads_as_the_projects_recording_model(uploaded):
    recording = Recording.model_validate(uploaded)
    assert recording.status == "UPLOADED"
    assert len(recording.files()) == 5


def test_stop_ends_the_recording_at_once_with_reason_api_call(make_api):
    api = make_api(record_seconds=30)
    recording_id = api.start()["id"]
    api.wait(recording_id, "RECORDING")

    stopped = api.act(recording_id, "stop")

    assert stopped.status_code == 200
    assert stopped.json()["data"]["status"] == "UPLOADING"
    assert stopped.json()["data"]["stop_reason"]["reason"] == "API_CALL"
    assert api.wait(recording_id, "UPLOADED")["stopped_time"]
    assert api.act(recording_id, "stop").status_code == 409


def test_stop_before_the_recording_started_ends_it_errored(make_api):
    api = make_api(start_delay=30)
    recording_id = api.start()["id"]

    stopped = api.act(recording_id, "stop").json()["data"]

    assert stopped["status"] == "ERRORED"
    assert stopped["started_time"] is None and stopped["download_url"] is None


def test_pause_stops_the_recording_clock_and_resume_restarts_it(make_api):
    api = make_api(start_delay=0, record_seconds=30)
    recording_id = api.start(max_seconds=0.4)["id"]
    api.wait(recording_id, "RECORDING")

    assert api.act(recording_id, "pause").json()["data"]["status"] == "PAUSED"
    time.sleep(0.5)  # longer than max_seconds: paused time must not count
    assert api.get(recording_id)["status"] == "PAUSED"
    assert api.act(recording_id, "resume").json()["data"]["status"] == "RECORDING"

    done = api.wait(recording_id, "UPLOADED")
    span = parse_time(done["stopped_time"]) - parse_time(done["started_time"])
    assert span.total_seconds() >= 0.4 + 0.5 - 0.01
    assert done["recording_duration"] == 0  # 0.4 s recorded, in whole seconds


def test_a_meeting_that_ends_while_its_recording_is_paused_ends_the_recording(make_api):
    api = make_api(start_delay=0, record_seconds=0.4)
    recording_id = api.start()["id"]
    api.wait(recording_id, "RECORDING")
    assert api.act(recording_id, "pause").json()["data"]["status"] == "PAUSED"

    done = api.wait(recording_id, "UPLOADED")  # the session does not wait for a resume

    span = parse_time(done["stopped_time"]) - parse_time(done["started_time"])
    assert abs(span.total_seconds() - 0.4) < 0.01
    assert done["stop_reason"]["reason"] == "ALL_PEERS_LEFT"


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pause_and_resume_are_refused_while_not_recording_or_paused(make_api, action):
    api = make_api(start_delay=30)
    recording_id = api.start()["id"]  # INVOKED: neither recording nor paused

    refused = api.act(recording_id, action)

    assert refused.status_code == 409
    assert refused.json() == {"success": False, "error": {"code": 409, "message": ANY_TEXT}}


def test_max_seconds_in_the_older_request_form_caps_the_recording(make_api):
    api = make_api(start_delay=0, record_seconds=30)
    layers = {"main": {"file_name_prefix": "old", "outputs": [{"type": "REALTIMEKIT_BUCKET"}]}}
    recording = api.start(layers=layers, max_seconds=0.1)

    done = api.wait(recording["id"], "UPLOADED")

    span = parse_time(done["stopped_time"]) - parse_time(done["started_time"])
    assert abs(span.total_seconds() - 0.1) < 0.01
    assert all(name.startswith("old_") for name in urls(done))


def test_the_active_recording_is_found_until_it_is_uploaded(api: Api):
    recording_id = api.start()["id"]
    meeting = api.emulator.meeting_id

    active = api.http.get(f"/active-recording/{meeting}")
    assert active.status_code == 200 and active.json()["data"]["id"] == recording_id

    api.wait(recording_id, "UPLOADED")
    gone = api.http.get(f"/active-recording/{meeting}")
    assert gone.status_code == 404
    assert gone.json()["success"] is False and gone.json()["error"]["code"] == 404


def test_a_second_recording_while_one_is_active_is_a_conflict(api: Api):
    first = api.start()["id"]

    again = api.http.post("/track", json={"meeting_id": api.emulator.meeting_id})
    assert again.status_code == 409 and first in again.json()["error"]["message"]

    api.wait(first, "UPLOADED")
    assert api.start()["id"] != first  # once finished, the meeting can be recorded again


def test_empty_start_body_answers_201_with_no_body(make_api):
    api = make_api(empty_start_body=True)

    response = api.http.post("/track", json={"meeting_id": api.emulator.meeting_id})

    assert response.status_code == 201 and response.content == b""
    active = api.http.get(f"/active-recording/{api.emulator.meeting_id}").json()["data"]
    assert api.wait(active["id"], "UPLOADED")["download_url"]


# -- files -----------------------------------------------------------------------------------


def test_without_user_ids_every_track_is_a_file_named_as_the_api_names_it(uploaded, sample_dir):
    manifest = Manifest.load(sample_dir / "manifest.json")

    names = list(urls(uploaded))

    # The sample's own files carry RealtimeKit names: prefix, user, peer, kind, start in ms.
    assert names == [Path(t.path).name for t in manifest.tracks]
    assert uploaded["output_file_name"] == names[0]
    assert uploaded["download_url"][0]["layer_name"] == "default"


def test_user_ids_choose_whose_tracks_are_recorded_and_a_rejoin_is_a_second_file(api: Api):
    layers = {"speakers": {"file_name_prefix": "weekly_sync", "media_kind": "audio"}}
    started = api.start(user_ids=["user-bruno", "user-chen"], layers=layers)

    done = api.wait(started["id"], "UPLOADED")

    assert done["download_url"][0]["layer_name"] == "speakers"
    parsed = [parse_file_name(name, prefix="weekly_sync") for name in urls(done)]
    assert [p.user_id for p in parsed] == ["user-bruno", "user-bruno", "user-chen"]
    assert [p.peer_id for p in parsed] == [
        "peer-b2e4d6f8a0c1",
        "peer-b9d7c5a3e1f0",
        "peer-c3a5b7d9e1f2",
    ]
    assert {(p.stream_kind, p.media_kind) for p in parsed} == {("peer", "audio")}
    assert parsed[0].date_time == datetime(2026, 11, 20, 10, 0, 0, 350_000, tzinfo=UTC)


def test_downloads_need_no_token_and_equal_the_files_on_disk_byte_for_byte(
    uploaded, sample_dir, web
):
    on_disk = {Path(p).name: p for p in (sample_dir / "tracks").iterdir()}

    for name, url in urls(uploaded).items():
        response = web.get(url)  # no Authorization header: the URL is the credential
        original = on_disk[name].read_bytes()
        assert response.status_code == 200
        assert response.content == original
        assert response.headers["content-length"] == str(len(original))
        assert response.headers["content-type"] == "audio/webm"
        assert response.headers["accept-ranges"] == "bytes"
        assert response.headers["etag"] == f'"{hashlib.md5(original).hexdigest()}"'


def ranged(
    uploaded: dict[str, Any], header: str, folder: Path, web: httpx.Client
) -> tuple[httpx.Response, bytes]:
    """The first file fetched with a Range header, and the whole file as it is on disk."""
    name, url = next(iter(urls(uploaded).items()))
    return web.get(url, headers={"Range": header}), (folder / "tracks" / name).read_bytes()


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100-", 100, -1),
        ("bytes=-16", -16, -1),
        ("bytes=10-99999999", 10, -1),
    ],
)
def test_a_single_range_is_answered_206_with_its_bytes(
    uploaded, sample_dir, web, header, first, last
):
    response, original = ranged(uploaded, header, sample_dir, web)
    size = len(original)
    start, end = first % size, last % size

    assert response.status_code == 206
    assert response.content == original[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["etag"] == f'"{hashlib.md5(original).hexdigest()}"'


@pytest.mark.parametrize("header", ["bytes=99999999-", "bytes=-0"])
def test_a_range_outside_the_file_is_answered_416(uploaded, sample_dir, web, header):
    response, original = ranged(uploaded, header, sample_dir, web)

    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(original)}"


def test_download_urls_are_signed_afresh_on_every_read(instant_api: Api, uploaded, web):
    time.sleep(math.ceil(time.time()) - time.time() + 0.01)  # expiries are whole Unix seconds
    again = instant_api.get(uploaded["id"])

    assert again["download_url_expiry"] > uploaded["download_url_expiry"]
    assert urls(again).keys() == urls(uploaded).keys()
    assert set(urls(again).values()).isdisjoint(urls(uploaded).values())
    # URLs handed out earlier stay good until their own expiry.
    assert all(web.get(url).status_code == 200 for url in urls(uploaded).values())


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda url: url[:-1] + ("0" if url[-1] != "0" else "1"), "SignatureDoesNotMatch"),
        (lambda url: re.sub(r"Expires=\d+", "Expires=4102444800", url), "SignatureDoesNotMatch"),
        (lambda url: url.replace("user-alice", "user-dana"), "SignatureDoesNotMatch"),
        (lambda url: url.split("?")[0], "AccessDenied"),
    ],
    ids=["signature", "expiry", "path", "unsigned"],
)
def test_a_tampered_or_unsigned_url_is_refused_403_in_s3_xml(uploaded, tamper, code, web):
    url = next(iter(urls(uploaded).values()))

    response = web.get(tamper(url))

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/xml"
    assert f"<Code>{code}</Code>" in response.text


def test_head_on_a_download_url_answers_the_headers_of_get_without_the_body(
    make_api, sample_dir, web
):
    api = make_api(faults={"corrupt": 1}, **INSTANT)
    name, url = next(iter(urls(api.wait(api.start()["id"], "UPLOADED")).items()))
    original = (sample_dir / "tracks" / name).read_bytes()

    head = web.head(url)
    ranged_head = web.head(url, headers={"Range": "bytes=0-9"})
    refused = web.head(url[:-1] + ("0" if url[-1] != "0" else "1"))
    got = web.get(url)  # on the same connection: no stray body was left on it

    assert head.status_code == 200 and head.content == b""
    for header in ("content-length", "content-type", "accept-ranges", "etag"):
        assert head.headers[header] == got.headers[header]
    assert ranged_head.status_code == 206 and ranged_head.headers["content-length"] == "10"
    assert refused.status_code == 403 and refused.content == b""
    # HEAD sent no file, so it used up no download fault: the GET after it is the one hit.
    assert len(got.content) == len(original) and got.content != original
    assert web.get(url).content == original


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_on_a_download_url_are_refused_405_in_s3_xml(uploaded, web, method):
    url = next(iter(urls(uploaded).values()))

    response = web.request(method, url)

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.headers["content-type"] == "application/xml"
    assert "<Code>MethodNotAllowed</Code>" in response.text


def test_the_expired_url_fault_issues_urls_already_expired(make_api, web):
    api = make_api(faults={"expired_url": 1}, **INSTANT)
    recording_id = api.start()["id"]

    expired = api.wait(recording_id, "UPLOADED")  # the first read that carries URLs
    assert parse_time(expired["download_url_expiry"]) < datetime.now(UTC)
    refused = web.get(next(iter(urls(expired).values())))
    assert refused.status_code == 403 and "<Code>AccessDenied</Code>" in refused.text

    fresh = api.get(recording_id)  # the fault has fired once: URLs work again
    assert parse_time(fresh["download_url_expiry"]) > datetime.now(UTC)
    assert web.get(next(iter(urls(fresh).values()))).status_code == 200


def test_download_urls_name_the_host_the_client_used(instant_api: Api, uploaded, web):
    port = httpx.URL(instant_api.emulator.base_url).port
    by_name = {"Host": f"emulator.example:{port}"}
    recording_id = uploaded["id"]

    got = instant_api.http.get(f"/{recording_id}", headers=by_name).json()["data"]
    listed = instant_api.http.get("", headers=by_name).json()["data"]
    ipv6 = instant_api.http.get(f"/{recording_id}", headers={"Host": "[fd00::5]:8787"})

    files = sorted(urls(got))
    assert files and sorted(urls(listed[0])) == files  # every file has its URL, both ways
    for url in [*urls(got).values(), *urls(listed[0]).values()]:
        assert url.startswith(f"http://emulator.example:{port}/files/{recording_id}/")
    assert ipv6.status_code == 200
    ipv6_urls = urls(ipv6.json()["data"])
    assert sorted(ipv6_urls) == files
    assert all(url.startswith("http://[fd00::5]:8787/files/") for url in ipv6_urls.values())
    # The signature does not cover the host: the same URL works at the address bound.
    first = httpx.URL(next(iter(urls(got).values())))
    assert web.get(str(first.copy_with(host="127.0.0.1"))).status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example/path?", "user@evil.example", "a b", "evil.example:99999999", "ex_ample"]
)
def test_a_host_header_unfit_for_a_url_gives_urls_at_the_address_bound(
    instant_api: Api, uploaded, host
):
    origin = instant_api.emulator.base_url.removesuffix("/client/v4")

    answer = instant_api.http.get(f"/{uploaded['id']}", headers={"Host": host})

    assert answer.status_code == 200
    got = urls(answer.json()["data"])
    assert sorted(got) == sorted(urls(uploaded))  # every file's URL is still given
    assert all(url.startswith(f"{origin}/files/") for url in got.values())


@pytest.mark.parametrize(("wildcard", "loopback"), [("0.0.0.0", "127.0.0.1"), ("::", "[::1]")])
def test_bound_to_every_interface_the_emulator_names_a_usable_address(
    sample_dir, web, wildcard, loopback
):
    try:
        emulator = Emulator(sample_dir, EmulatorOptions(token=TOKEN, **INSTANT), host=wildcard)
    except OSError as exc:
        pytest.skip(f"cannot listen on {wildcard}: {exc}")
    with emulator:
        port = httpx.URL(emulator.base_url).port
        assert emulator.base_url == f"http://{loopback}:{port}/client/v4"
        api = Api(emulator)
        done = api.wait(api.start()["id"], "UPLOADED")
        api.http.close()

        for url in urls(done).values():
            assert url.startswith(f"http://{loopback}:{port}/files/")
            assert web.get(url).status_code == 200


def test_string_shape_carries_the_first_file_only(make_api, sample_dir, web):
    api = make_api(shape="string", **INSTANT)

    done = api.wait(api.start()["id"], "UPLOADED")

    assert isinstance(done["download_url"], str)
    only = Recording.model_validate(done).files()
    assert [f.name for f in only] == [done["output_file_name"]]
    body = web.get(done["download_url"]).content
    assert body == (sample_dir / "tracks" / done["output_file_name"]).read_bytes()


# -- auth and errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
    ids=["missing", "wrong", "no-scheme", "basic"],
)
def test_without_the_right_bearer_token_the_gateway_answers_401(api: Api, headers, web):
    for method, path in (("GET", ""), ("POST", "/track"), ("GET", "/nope/nope")):
        response = web.request(
            method, api.emulator.base_url + RECORDINGS + path, headers=headers, json={}
        )
        assert response.status_code == 401
        assert response.json() == {
            "success": False,
            "errors": [{"code": 10000, "message": "Authentication error"}],
            "messages": [],
            "result": None,
        }


def test_a_user_asked_for_who_never_joins_is_accepted_and_gets_no_file(api: Api):
    # The service cannot refuse a user id it has not seen: that user may join later.
    some = api.wait(api.start(user_ids=["user-alice", "user-zoe"])["id"], "UPLOADED")
    none = api.wait(api.start(user_ids=["user-zoe"])["id"], "UPLOADED")

    assert [parse_file_name(name).user_id for name in urls(some)] == ["user-alice"]
    assert none["download_url"] == [{"layer_name": "default", "download_urls": {}}]
    assert none["output_file_name"] is None and none["file_size"] == 0


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        (b"{not json", 400, "JSON"),
        (b"[]", 400, "object"),
        (b"{}", 400, "meeting_id"),
        (b'{"meeting_id": "not-this-meeting"}', 404, "not-this-meeting"),
        (b'{"meeting_id": "MEETING", "user_ids": "user-alice"}', 400, "user_ids"),
        (b'{"meeting_id": "MEETING", "user_ids": []}', 400, "user_ids"),
        (b'{"meeting_id": "MEETING", "layers": ["a"]}', 400, "layers"),
        (b'{"meeting_id": "MEETING", "layers": {"a": {"media_kind": "video"}}}', 400, "media_kind"),
        (b'{"meeting_id": "MEETING", "max_seconds": -1}', 400, "max_seconds"),
    ],
    ids=[
        "not-json",
        "not-object",
        "no-meeting",
        "unknown-meeting",
        "user_ids-not-list",
        "user_ids-empty",
        "layers-not-object",
        "video",
        "max_seconds",
    ],
)
def test_a_bad_start_request_is_refused_naming_what_is_wrong(api: Api, body, status, named):
    body = body.replace(b"MEETING", api.emulator.meeting_id.encode())

    response = api.http.post("/track", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == status
    error = response.json()
    assert error["success"] is False and error["error"]["code"] == status
    assert named in error["error"]["message"]


def raw_request(emulator: Emulator, request: str) -> tuple[int, bytes]:
    """Send ``request`` as written (a client library would refuse to) and read the answer:
    its status and body. The request's own ``Host`` is added."""
    url = httpx.URL(emulator.base_url)
    head, _, rest = request.partition("\r\n")
    with socket.create_connection((url.host, url.port), timeout=5) as s:
        s.sendall(f"{head}\r\nHost: {url.host}:{url.port}\r\n{rest}".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
            header, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *([0-9]+)", header)
            if length and len(body) >= int(length[1]):
                break
    return int(header.split()[1]), body


def test_a_burst_of_requests_that_come_before_the_emulator_takes_any_is_answered_in_full(
    sample_dir,
):
    # The emulator takes one connection at a time: the system must hold the rest meanwhile,
    # not drop or reset them (socketserver holds 5 by default).
    emulator = Emulator(sample_dir, EmulatorOptions(token=TOKEN))  # listening, not serving
    url = httpx.URL(emulator.base_url)
    clients: list[socket.socket] = []
    try:
        for _ in range(40):
            client = socket.create_connection((url.host, url.port), timeout=5)
            clients.append(client)
            client.sendall(
                f"GET {url.path}{RECORDINGS} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
                f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode()
            )
        emulator.start()
        answers = []
        for client in clients:
            with client.makefile("rb") as answer:
                answers.append(answer.readline())
    finally:
        for client in clients:
            client.close()
        emulator.close()
    assert [answer.split()[1] for answer in answers] == [b"200"] * 40, answers


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "+5", "1_0", "5, 5"])
def test_a_content_length_that_is_not_a_whole_number_is_refused_400(api: Api, length):
    status, body = raw_request(
        api.emulator,
        f"POST /client/v4{RECORDINGS}/track HTTP/1.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {length}\r\n\r\n",
    )

    assert status == 400
    assert json.loads(body) == {"success": False, "error": {"code": 400, "message": ANY_TEXT}}


def test_a_body_over_one_mib_is_refused_413(api: Api):
    status, body = raw_request(
        api.emulator,
        f"POST /client/v4{RECORDINGS}/track HTTP/1.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {(1 << 20) + 1}\r\n\r\n",
    )

    assert status == 413 and json.loads(body)["error"]["code"] == 413


def test_an_unknown_action_is_refused_naming_the_field(api: Api):
    recording_id = api.start()["id"]

    response = api.act(recording_id, "rewind")

    assert response.status_code == 400 and "action" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", RECORDINGS + "/00000000-0000-4000-8000-000000000000"),
        ("GET", RECORDINGS + "/active-recording/not-this-meeting"),
        ("GET", RECORDINGS + "/a/b/c"),
        ("GET", "/accounts/a/realtime/kit/b/meetings"),
        ("GET", "/elsewhere"),
    ],
)
def test_unknown_recordings_and_paths_are_404_in_realtimekit_envelope(api: Api, method, path):
    response = api.http.request(method, api.emulator.base_url + path)

    assert response.status_code == 404
    assert response.json() == {"success": False, "error": {"code": 404, "message": ANY_TEXT}}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", RECORDINGS, "GET, POST"),
        ("GET", RECORDINGS + "/track", "POST"),
        ("POST", RECORDINGS + "/00000000-0000-4000-8000-000000000000", "GET, PUT"),
        ("PATCH", RECORDINGS + "/00000000-0000-4000-8000-000000000000", "GET, PUT"),
        ("OPTIONS", RECORDINGS, "GET, POST"),
        ("OPTIONS", RECORDINGS + "/track", "POST"),
        ("PROPFIND", RECORDINGS + "/active-recording/m", "GET"),  # no method http.server knows
    ],
)
def test_a_method_an_endpoint_does_not_take_is_405_naming_those_it_does(
    api: Api, method, path, allowed
):
    response = api.http.request(method, api.emulator.base_url + path)

    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json() == {"success": False, "error": {"code": 405, "message": ANY_TEXT}}
    assert response.json()["error"]["message"].endswith(f"(allowed: {allowed})")


def test_head_on_an_endpoint_is_405_with_the_envelope_s_headers_and_no_body(api: Api):
    envelope = api.http.request("OPTIONS", "")

    head = api.http.head("")
    after = api.http.get("")  # on the same connection: no stray body was left on it

    assert head.status_code == 405 and head.content == b""
    assert head.headers["allow"] == "GET, POST"
    assert head.headers["content-type"] == "application/json"
    assert head.headers["content-length"] == str(len(envelope.content.replace(b"OPTIONS", b"HEAD")))
    assert after.status_code == 200 and after.json()["success"] is True


def test_post_recordings_a_composite_recording_is_501_not_emulated(api: Api):
    response = api.http.post("", json={"meeting_id": api.emulator.meeting_id})

    assert response.status_code == 501
    assert response.json() == {"success": False, "error": {"code": 501, "message": ANY_TEXT}}
    assert "composite" in response.json()["error"]["message"]
    assert api.list()["data"] == []  # nothing was started


def test_the_public_key_document_takes_get_only(api: Api, web):
    origin = api.emulator.base_url.removesuffix("/client/v4")

    response = web.post(f"{origin}/.well-known/webhooks.json")

    assert response.status_code == 405 and response.headers["allow"] == "GET"


def test_a_manifest_with_a_missing_track_file_is_refused(meeting_copy: Path):
    next((meeting_copy / "tracks").iterdir()).unlink()

    with pytest.raises(ManifestError, match=r"tracks\[\d\]\.path"):
        Emulator(meeting_copy, EmulatorOptions(token=TOKEN))


def test_unknown_faults_are_refused(api: Api):
    with pytest.raises(ValidationError):
        EmulatorOptions(token=TOKEN, faults={"meteor": 1})
    with pytest.raises(ValueError, match="meteor"):
        api.emulator.inject("meteor")
    assert set(FAULTS) == {
        "rate_limit",
        "server_error",
        "lost_reply",
        "slow_reply",
        "cut",
        "expired_url",
        "corrupt",
    }


# -- faults ----------------------------------------------------------------------------------


def test_the_rate_limit_fault_answers_429_with_retry_after_n_times_then_stops(make_api, web):
    api = make_api(faults={"rate_limit": 2})
    unauthorised = web.get(api.emulator.base_url + RECORDINGS)  # a 401 uses up no fault

    answers = [api.http.get("") for _ in range(4)]

    assert unauthorised.status_code == 401

    assert [r.status_code for r in answers] == [429, 429, 200, 200]
    assert answers[0].headers["retry-after"] == "1"
    assert answers[0].json() == {
        "success": False,
        "errors": [
            {"code": 971, "message": "Please wait and consider throttling your request speed"}
        ],
        "messages": [],
        "result": None,
    }


def test_the_server_error_fault_answers_503_n_times_also_when_injected_later(api: Api):
    assert api.http.get("").status_code == 200

    api.emulator.inject("server_error", 2)
    answers = [api.http.get("") for _ in range(3)]

    assert [r.status_code for r in answers] == [503, 503, 200]
    assert answers[0].json() == {"success": False, "error": {"code": 503, "message": ANY_TEXT}}


def test_the_lost_reply_fault_does_what_was_asked_and_answers_502(api: Api):
    api.emulator.inject("lost_reply")
    assert api.http.get("").status_code == 200  # reads are answered as ever
    lost = api.http.post("/track", json={"meeting_id": api.emulator.meeting_id})
    assert lost.status_code == 502
    (recording,) = api.http.get("").json()["data"]  # started all the same
    again = api.http.post("/track", json={"meeting_id": api.emulator.meeting_id})
    assert again.status_code == 409 and recording["id"] in again.json()["error"]["message"]


def test_the_cut_fault_drops_the_connection_after_half_the_body_n_times(make_api, sample_dir, web):
    api = make_api(faults={"cut": 1}, **INSTANT)
    done = api.wait(api.start()["id"], "UPLOADED")
    name, url = next(iter(urls(done).items()))
    original = (sample_dir / "tracks" / name).read_bytes()

    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError), web.stream("GET", url) as response:
        assert response.headers["content-length"] == str(len(original))
        for chunk in response.iter_raw():
            received += chunk
    assert bytes(received) == original[: len(original) // 2]

    assert web.get(url).content == original  # fired once, then downloads are whole


def test_the_corrupt_fault_sends_the_right_length_with_wrong_bytes_n_times(
    make_api, sample_dir, web
):
    api = make_api(faults={"corrupt": 2}, **INSTANT)
    done = api.wait(api.start()["id"], "UPLOADED")
    name, url = next(iter(urls(done).items()))
    original = (sample_dir / "tracks" / name).read_bytes()

    bad = [web.get(url) for _ in range(2)]
    good = web.get(url)

    for response in bad:
        assert response.status_code == 200
        assert len(response.content) == len(original) != 0
        assert response.content != original
        assert response.headers["etag"] == f'"{hashlib.md5(original).hexdigest()}"'
    assert good.content == original


def test_faults_never_touch_the_files_on_disk(make_api, sample_dir, web):
    api = make_api(faults={"cut": 3, "corrupt": 3}, **INSTANT)
    done = api.wait(api.start()["id"], "UPLOADED")
    for url in urls(done).values():
        with contextlib.suppress(httpx.RemoteProtocolError):
            web.get(url)

    manifest = Manifest.load(sample_dir / "manifest.json")
    for track in manifest.tracks:
        digest = hashlib.sha256(manifest.track_path(track).read_bytes()).hexdigest()
        assert digest == track.sha256


# -- listing ---------------------------------------------------------------------------------


@pytest.fixture
def three(make_api) -> tuple[Api, list[str]]:
    """Three recordings, oldest first: two UPLOADED, the newest still RECORDING."""
    api = make_api(start_delay=0, record_seconds=60, upload_seconds=0)
    ids = []
    for n in range(3):
        ids.append(api.start()["id"])
        if n < 2:
            assert api.act(ids[-1], "stop").status_code == 200
            api.wait(ids[-1], "UPLOADED")
        time.sleep(0.01)  # distinct invoked times
    return api, ids


def listed(api: Api, **params: Any) -> list[str]:
    return [r["id"] for r in api.list(**params)["data"]]


def test_the_list_is_newest_first_and_pages_say_where_they_are(three):
    api, (a, b, c) = three

    first = api.list(per_page=2)
    second = api.list(per_page=2, page_no=2)
    beyond = api.list(per_page=2, page_no=3)

    assert [r["id"] for r in first["data"]] == [c, b]
    assert first["paging"] == {"start_offset": 0, "end_offset": 1, "total_count": 3}
    assert [r["id"] for r in second["data"]] == [a]
    assert second["paging"] == {"start_offset": 2, "end_offset": 2, "total_count": 3}
    assert beyond["data"] == [] and beyond["paging"]["total_count"] == 3
    assert listed(api, sort_by="invokedTime", sort_order="ASC") == [a, b, c]


def test_the_list_filters_by_status_with_the_key_repeated(three):
    api, (a, b, c) = three

    assert listed(api, status="UPLOADED") == [b, a]
    assert listed(api, status=["RECORDING", "UPLOADED"]) == [c, b, a]
    assert listed(api, status="PAUSED") == []


def test_the_list_filters_by_meeting_search_and_invoked_time(three):
    api, (a, b, c) = three
    meeting = api.emulator.meeting_id
    invoked_b = api.get(b)["invoked_time"]

    assert listed(api, meeting_id=meeting) == [c, b, a]
    assert listed(api, meeting_id="another-meeting") == []
    assert listed(api, search=b[4:16].upper()) == [b]
    assert listed(api, search=meeting[:8]) == [c, b, a]
    assert listed(api, start_time=invoked_b) == [c, b]
    assert listed(api, end_time=invoked_b) == [b, a]


def test_the_list_search_also_matches_the_meeting_title_ignoring_case(sample_dir, tmp_path):
    # The API reference: "You can search using the meeting ID or title". The emulator's
    # meeting is titled with its folder's name, as its webhooks say.
    folder = tmp_path / "Weekly Design Review"
    shutil.copytree(sample_dir, folder)
    with Emulator(folder, EmulatorOptions(token=TOKEN, **FAST)) as emulator:
        api = Api(emulator)
        recording_id = api.start()["id"]

        assert listed(api, search="design REVIEW") == [recording_id]
        assert listed(api, search="Weekly Design Review") == [recording_id]
        assert listed(api, search="retrospective") == []
        api.http.close()


def test_the_list_filters_by_whether_the_last_urls_issued_expired(three):
    api, (_, b, _) = three
    assert listed(api, expired="true") == []

    api.emulator.inject("expired_url")
    api.get(b)  # issued b's URLs already expired

    assert listed(api, expired="true") == [b]  # listing issues fresh ones...
    assert listed(api, expired="true") == []  # ...so now none has expired
    assert len(listed(api, expired="false")) == 3


@pytest.mark.parametrize(
    "params",
    [
        {"page_no": 0},
        {"per_page": "many"},
        {"per_page": "\u00b2"},  # a digit to str.isdigit, not to int()
        {"per_page": "9" * 5000},  # more digits than int() reads
        {"status": "DONE"},
        {"sort_order": "UP"},
        {"sort_by": "size"},
        {"start_time": "yesterday"},
        {"expired": "maybe"},
    ],
)
def test_bad_list_filters_are_refused_naming_the_filter(api: Api, params):
    response = api.http.get("", params=params)

    assert response.status_code == 400
    assert next(iter(params)) in response.json()["error"]["message"]


# -- webhooks --------------------------------------------------------------------------------


class Receiver:
    """A webhook endpoint that keeps every delivery and answers from a script, then 200."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.deliveries: list[tuple[Message, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.deliveries.append((self.headers, body))
                self.send_response(receiver.answers.pop(0) if receiver.answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/rtk?key=abc"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def statuses(self) -> list[str]:
        return [WebhookEvent.model_validate_json(b).recording.status for _, b in self.deliveries]

    def wait_for(self, count: int, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            assert time.monotonic() < deadline, f"only {len(self.deliveries)} deliveries"
            time.sleep(0.01)


@pytest.fixture
def receiver() -> Iterator[Callable[[list[int]], Receiver]]:
    made: list[Receiver] = []

    def make(answers: list[int]) -> Receiver:
        made.append(Receiver(answers))
        return made[-1]

    yield make
    for r in made:
        r.server.shutdown()
        r.server.server_close()


def verify(public_pem: str, signature: str, body: bytes) -> None:
    key = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(base64.b64decode(signature), body, padding.PKCS1v15(), hashes.SHA256())


def test_every_status_change_is_posted_in_order_signed_over_the_raw_body(make_api, receiver):
    hook = receiver([])
    api = make_api(webhook_url=hook.url)

    recording_id = api.start()["id"]
    hook.wait_for(4)  # no polling: the emulator's own clock moves the recording on

    assert hook.statuses() == ["INVOKED", "RECORDING", "UPLOADING", "UPLOADED"]
    for headers, body in hook.deliveries:
        verify(api.emulator.public_key_pem, headers["rtk-signature"], body)
        assert headers["Content-Type"] == "application/json"
    assert len({h["rtk-uuid"] for h, _ in hook.deliveries}) == 4
    assert len({h["rtk-webhook-id"] for h, _ in hook.deliveries}) == 1
    last = WebhookEvent.model_validate_json(hook.deliveries[-1][1])
    assert last.event == "recording.statusUpdate"
    assert (
        last.recording.id == recording_id and last.recording.meeting_id == api.emulator.meeting_id
    )
    assert len(last.recording.files()) == 5
    assert last.meeting["id"] == api.emulator.meeting_id and last.meeting["sessionId"]


def test_a_webhook_answered_5xx_is_retried_with_the_same_rtk_uuid(make_api, receiver):
    hook = receiver([500, 503])
    api = make_api(webhook_url=hook.url)

    api.start()
    hook.wait_for(6)

    assert hook.statuses()[:4] == ["INVOKED"] * 3 + ["RECORDING"]
    assert len({h["rtk-uuid"] for h, _ in hook.deliveries[:3]}) == 1
    assert hook.deliveries[0][1] == hook.deliveries[2][1]


def test_a_webhook_answered_4xx_is_given_up_not_retried(make_api, receiver):
    hook = receiver([400])
    api = make_api(webhook_url=hook.url)

    api.start()
    hook.wait_for(4)

    assert hook.statuses() == ["INVOKED", "RECORDING", "UPLOADING", "UPLOADED"]


def test_a_webhook_urls_user_password_and_query_stay_out_of_the_log(sample_dir, caplog):
    # Each may be the webhook's secret. (urllib does not deliver to such a URL: it fails.)
    url = "http://user:pa55word@127.0.0.1:9/hook?key=s3cret"
    options = EmulatorOptions(token=TOKEN, webhook_url=url, **INSTANT)
    with (
        caplog.at_level(logging.DEBUG, logger="trackscribe"),
        Emulator(sample_dir, options) as emulator,
        httpx.Client() as web,
    ):
        started = web.post(
            emulator.base_url + RECORDINGS + "/track",
            json={"meeting_id": emulator.meeting_id},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert started.status_code == 201
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "pa55word" not in said and "s3cret" not in said
    assert "to http://127.0.0.1:9/hook failed" in said


def test_the_public_key_is_served_where_realtimekit_serves_it(api: Api, web):
    origin = api.emulator.base_url.removesuffix("/client/v4")

    served = web.get(f"{origin}/.well-known/webhooks.json")

    assert served.status_code == 200
    assert served.json() == {"data": {"publicKey": api.emulator.public_key_pem}}


def test_a_given_webhook_key_is_the_one_used(sample_dir, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "key.pem").write_bytes(pem)
    options = EmulatorOptions(token=TOKEN, webhook_key=tmp_path / "key.pem")

    with Emulator(sample_dir, options) as emulator:
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert emulator.public_key_pem == public.decode()


def test_a_closed_emulator_refuses_connections(sample_dir, web):
    with Emulator(sample_dir, EmulatorOptions(token=TOKEN)) as emulator:
        assert emulator.base_url.startswith("http://127.0.0.1:")
        url = emulator.base_url + RECORDINGS

    with pytest.raises(httpx.ConnectError):
        web.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
