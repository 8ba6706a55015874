"""The official `cloudflare` Python SDK (5.x), pointed at the emulator: every recordings call
whose types match the documentation succeeds, so the emulator speaks the real API."""

import time

import pytest

from pipeline.emulator import Emulator, EmulatorOptions

cloudflare = pytest.importorskip("cloudflare")

TOKEN = "sdk-token"
ACCOUNT, APP = "0123456789abcdef0123456789abcdef", "app-1"


@pytest.fixture
def sdk(sample_dir):
    options = EmulatorOptions(
        token=TOKEN, start_delay=0.05, record_seconds=0.3, upload_seconds=0.05
    )
    with Emulator(sample_dir, options) as emu:
        client = cloudflare.Cloudflare(api_token=TOKEN, base_url=emu.base_url, max_retries=0)
        yield client.realtime_kit.recordings, emu


def test_the_sdk_records_follows_and_lists_a_track_recording(sdk):
    recordings, emu = sdk
    started = recordings.start_track_recording(
        APP, account_id=ACCOUNT, meeting_id=emu.meeting_id, user_ids=["user-alice", "user-chen"]
    )
    assert started.success and started.data is not None
    recording_id = started.data.recording.id
    assert started.data.recording.status == "INVOKED"

    active = recordings.get_active_recordings(emu.meeting_id, account_id=ACCOUNT, app_id=APP)
    assert active.data.id == recording_id

    while (
        one := recordings.get_one_recording(recording_id, account_id=ACCOUNT, app_id=APP)
    ).data.status == "INVOKED":
        time.sleep(0.02)
    assert one.data.status == "RECORDING" and one.data.started_time is not None

    paused = recordings.pause_resume_stop_recording(
        recording_id, account_id=ACCOUNT, app_id=APP, action="pause"
    )
    assert paused.data.status == "PAUSED"
    recordings.pause_resume_stop_recording(
        recording_id, account_id=ACCOUNT, app_id=APP, action="resume"
    )
    stopped = recordings.pause_resume_stop_recording(
        recording_id, account_id=ACCOUNT, app_id=APP, action="stop"
    )
    assert stopped.data.status in {"UPLOADING", "UPLOADED"}
    assert stopped.data.stop_reason.reason == "API_CALL"

    while (
        done := recordings.get_one_recording(recording_id, account_id=ACCOUNT, app_id=APP)
    ).data.status != "UPLOADED":
        time.sleep(0.02)
    assert done.data.download_url_expiry is not None
    assert done.data.file_size and done.data.file_size > 0

    listed = recordings.get_recordings(
        APP,
        account_id=ACCOUNT,
        meeting_id=emu.meeting_id,
        status=["UPLOADED"],
        sort_order="DESC",
        per_page=10,
        page_no=1,
    )
    assert listed.success
    assert [r.id for r in listed.data] == [recording_id]
    assert listed.paging.total_count == 1


def test_sdk_errors_come_back_as_the_sdk_s_own_exceptions(sdk):
    recordings, emu = sdk
    with pytest.raises(cloudflare.NotFoundError):
        recordings.get_one_recording("no-such-recording", account_id=ACCOUNT, app_id=APP)
    with pytest.raises(cloudflare.NotFoundError):
        recordings.get_active_recordings(emu.meeting_id, account_id=ACCOUNT, app_id=APP)
    wrong = cloudflare.Cloudflare(api_token="wrong", base_url=emu.base_url, max_retries=0)
    with pytest.raises(cloudflare.AuthenticationError):
        wrong.realtime_kit.recordings.get_one_recording("x", account_id=ACCOUNT, app_id=APP)
