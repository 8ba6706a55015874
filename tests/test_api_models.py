"""The RealtimeKit objects and the rules shared by the API client and the downloader."""

import logging
import re
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from models import (
    Recording,
    RetryPolicy,
    WebhookEvent,
    parse_file_name,
    parse_file_names,
    redact_urls,
    safe_file_name,
)
from pipeline.config import ApiSettings, ConfigError
from pipeline.emulator import Emulator, EmulatorOptions
from stages.record import RealtimeKitClient, RealtimeKitError

NAME = "default_user-123_peer-456_peer_audio_1760000000000.webm"


def test_download_url_as_documented_layers_lists_every_file():
    recording = Recording.model_validate(
        {
            "id": "r1",
            "status": "UPLOADED",
            "download_url": [
                {
                    "layer_name": "default",
                    "download_urls": {
                        NAME: {"download_url": "https://s/a?sig=1"},
                        "default_u2_p2_peer_audio_1760000001000.webm": {
                            "download_url": "https://s/b?sig=2"
                        },
                    },
                }
            ],
        }
    )
    assert [(f.layer, f.name, f.url) for f in recording.files()] == [
        ("default", NAME, "https://s/a?sig=1"),
        ("default", "default_u2_p2_peer_audio_1760000001000.webm", "https://s/b?sig=2"),
    ]


def test_download_url_as_sdk_string_is_one_file_named_by_output_file_name_or_url():
    named = Recording.model_validate(
        {
            "id": "r",
            "status": "UPLOADED",
            "download_url": "https://s/x.webm?s=1",
            "output_file_name": NAME,
        }
    )
    assert [f.name for f in named.files()] == [NAME]
    unnamed = Recording.model_validate(
        {"id": "r", "status": "UPLOADED", "download_url": f"https://s/rec/{NAME}?s=1"}
    )
    assert [f.name for f in unnamed.files()] == [NAME]
    assert Recording.model_validate({"id": "r", "status": "RECORDING"}).files() == []


def test_webhook_body_in_camel_case_reads_as_a_recording():
    event = WebhookEvent.model_validate(
        {
            "event": "recording.statusUpdate",
            "recording": {
                "recordingId": "r9",
                "status": "UPLOADED",
                "downloadUrlExpiry": "2026-11-20T10:00:00.000Z",
                "meetingId": "m1",
                "newFieldTheApiAddedLater": 1,
            },
        }
    )
    assert event.recording is not None
    assert event.recording.id == "r9"
    assert event.recording.meeting_id == "m1"
    assert event.recording.download_url_expiry == datetime(2026, 11, 20, 10, tzinfo=UTC)


def test_file_name_parts_are_read_from_the_right_end():
    parsed = parse_file_name(NAME)
    assert parsed is not None
    assert (parsed.prefix, parsed.user_id, parsed.peer_id) == ("default", "user-123", "peer-456")
    assert parsed.date_time == datetime.fromtimestamp(1_760_000_000, UTC)
    odd = "my_prefix_user_with_underscores_peer-1_peer_audio_1760000000000.webm"
    assert parse_file_name(odd, prefix="my_prefix").user_id == "user_with_underscores"
    assert parse_file_name(odd, user_ids=["with_underscores"]).user_id == "with_underscores"
    assert parse_file_name("notes.txt") is None
    assert parse_file_name("default__peer-1_peer_audio_1760000000000.webm") is None  # no user


def _names(*heads: str) -> list[str]:
    return [f"{head}_peer-{i}_peer_audio_176000000{i}000.webm" for i, head in enumerate(heads)]


def _users(parsed: dict) -> list[str | None]:
    return [None if p is None else p.user_id for p in parsed.values()]


def test_a_layers_names_are_read_with_one_prefix_found_from_the_user_ids_asked_for():
    # One name ending in bob's id places the prefix for all: carol (not asked for) is carol,
    # not "meeting_carol", and alice_bob is not taken for bob.
    names = _names("my_meeting_bob", "my_meeting_carol", "my_meeting_alice_bob")
    parsed = parse_file_names(names, user_ids=["bob"])
    assert _users(parsed) == ["bob", "carol", "alice_bob"]
    assert {p.prefix for p in parsed.values()} == {"my_meeting"}
    # Read one by one, each name was a guess of its own.
    assert [parse_file_name(n, user_ids=["bob"]).user_id for n in names] == [
        "bob",
        "meeting_carol",
        "bob",
    ]


def test_a_layers_prefix_is_the_one_given_else_default_else_the_shortest_all_names_share():
    names = _names("my_meeting_bob", "my_meeting_carol")
    assert _users(parse_file_names(names, prefix="my_meeting")) == ["bob", "carol"]
    assert _users(parse_file_names(names)) == ["meeting_bob", "meeting_carol"]
    # RealtimeKit's default prefix, even where a user id asked for would suggest another
    default = _names("default_team_bob", "default_carol")
    assert _users(parse_file_names(default, user_ids=["bob"])) == ["team_bob", "carol"]
    # names that are no track file's, or carry no user, are None and sway nothing
    odd = [*_names("my_meeting_bob", "my_meeting_"), "notes.txt"]
    assert _users(parse_file_names(odd, user_ids=["bob"])) == ["bob", None, None]
    # a prefix only some names could have wins no vote, however many they are
    rejoined = _names("p_alice_bob", "p_alice_bob", "p_bob")
    assert _users(parse_file_names(rejoined, user_ids=["bob"])) == ["alice_bob", "alice_bob", "bob"]
    # names with no prefix in common are each read on their own
    assert _users(parse_file_names(_names("a_x_bob", "b_carol"))) == ["x_bob", "carol"]


@pytest.mark.parametrize(
    "stamp", ["176000000000\u00b2", "\u0661\u0667\u0666\u0660" + "0" * 9], ids=["²", "Arabic-Indic"]
)
def test_a_date_time_in_other_than_ascii_digits_is_no_date_time(stamp):
    # Python calls both digits; the API writes Unix milliseconds in ASCII.
    assert parse_file_name(f"default_user-123_peer-456_peer_audio_{stamp}.webm") is None


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("a/b\\c d.webm", "c_d.webm"),
        (".hidden.webm", "hidden.webm"),
        ("trailing.webm.", "trailing.webm"),  # Windows would drop the dot, and miss the file
        ("名前.webm", "_.webm"),
        ("CON", "_CON"),  # device names Windows will not open as files
        ("nul.webm", "_nul.webm"),
        ("Com1.webm", "_Com1.webm"),
        ("console.webm", "console.webm"),
        ("-rf", "_-rf"),  # `rm *` in the folder would take it for an option
        ("--output=x.webm", "_--output_x.webm"),
        (  # too long for most file systems: the middle goes, the start time at the end stays
            "a" * 300 + "_peer_audio_1760000000000.webm",
            "a" * 99 + "-" + "a" * 70 + "_peer_audio_1760000000000.webm",
        ),
        (NAME, NAME),
    ],
)
def test_file_names_from_the_api_are_made_safe(given, safe):
    assert safe_file_name(given) == safe


@pytest.mark.parametrize("given", ["", "..", "/", "...", "a/.."])
def test_a_file_name_with_nothing_usable_is_refused(given):
    with pytest.raises(ValueError, match="file name"):
        safe_file_name(given)


def test_query_strings_and_bearer_tokens_are_redacted():
    text = (
        "GET https://s.example/f.webm?X-Amz-Signature=abc&X-Amz-Credential=k failed; "
        "Authorization: Bearer tok.en-123"
    )
    redacted = redact_urls(text)
    assert "abc" not in redacted and "tok.en-123" not in redacted
    assert "https://s.example/f.webm?REDACTED" in redacted
    assert redact_urls("HTTPS://S.example/f.webm?sig=abc") == "HTTPS://S.example/f.webm?REDACTED"
    # a URL taken for a path, as an error names that path: one slash, and a colon after it
    given = f"{Path('https://s.example/f.webm?sig=abc')}: no such manifest file"
    assert redact_urls(given) == "https:/s.example/f.webm?REDACTED: no such manifest file"
    # a request line as a server logs it: a webhook URL's query may hold its secret
    logged = redact_urls('"POST /hook?token=s3cret HTTP/1.1" 200 -')
    assert logged == '"POST /hook?REDACTED HTTP/1.1" 200 -'


def test_a_user_and_password_in_a_url_are_redacted():
    # A webhook's or a proxy's URL may carry its credentials; a path holds no user.
    assert redact_urls("to http://user:pa55@127.0.0.1:9/hook failed") == (
        "to http://REDACTED@127.0.0.1:9/hook failed"
    )
    assert redact_urls("socks5://u:p@ss@proxy:1080") == "socks5://REDACTED@proxy:1080"
    assert redact_urls("https://host/a@b and x@y") == "https://host/a@b and x@y"


def test_pre_signed_urls_are_not_shown_by_repr():
    signed = "https://s.example/f.webm?X-Amz-Signature=abc"
    recording = Recording.model_validate(
        {
            "id": "r1",
            "status": "UPLOADED",
            "download_url": [
                {"layer_name": "default", "download_urls": {NAME: {"download_url": signed}}}
            ],
            "audio_download_url": signed,
        }
    )
    shown = repr(recording) + repr(recording.files()) + str(recording)
    assert "X-Amz-Signature" not in shown
    assert NAME in repr(recording.files()) and "r1" in repr(recording)
    assert recording.files()[0].url == signed  # still there to be used


def test_fields_the_api_adds_are_kept_but_not_shown_by_repr():
    # GET /recordings/{id} sends storage_config, which holds a bucket's credentials.
    storage = {"type": "aws", "host": "s3.example", "username": "u", "access_key": "AKIA-SECRET"}
    event = WebhookEvent.model_validate(
        {
            "event": "recording.statusUpdate",
            "recording": {"id": "r1", "status": "UPLOADED", "storage_config": storage},
            "delivered_with": "AKIA-SECRET",
        }
    )
    recording = event.recording
    shown = repr(event) + str(event) + repr(recording) + str(recording)
    assert "AKIA-SECRET" not in shown and "storage_config" not in shown
    assert "r1" in repr(recording) and "UPLOADED" in str(recording)
    assert recording.storage_config == storage  # still there to be read
    assert recording.model_extra == {"storage_config": storage}


def test_a_token_http_refuses_is_not_shown_even_in_httpcores_debug_log(sample_dir, caplog):
    caplog.set_level(logging.DEBUG)
    with Emulator(sample_dir, EmulatorOptions(token="SeCrEt123")) as emu:
        client = RealtimeKitClient(
            account_id="a",
            app_id="b",
            token="SeCrEt123\r\nX",  # two lines of a file, taken as one
            base_url=emu.base_url,
            retry=RetryPolicy(attempts=1),
        )
        with client, pytest.raises(RealtimeKitError, match="not valid HTTP") as refused:
            list(client.list_recordings(meeting_id=emu.meeting_id))
    assert any(r.name.startswith("httpcore.") for r in caplog.records)
    assert "SeCrEt123" not in caplog.text and "SeCrEt123" not in str(refused.value)


@pytest.mark.parametrize("token", ["SeCrEt 123", "SeCrEt\r123", "SeCrEt\u00e9", " \r\n"])
def test_a_token_no_api_could_take_is_refused_before_any_request(token):
    settings = ApiSettings(account_id="a", app_id="b", api_token=token)
    with pytest.raises(ConfigError, match="api_token") as refused:
        settings.client()
    assert "SeCrEt" not in str(refused.value)


@pytest.mark.parametrize("ids", [("..", "app"), ("acct", ".")])
def test_an_account_or_app_id_that_would_move_up_the_path_is_refused(ids):
    with pytest.raises(RealtimeKitError, match="is not a usable"):
        RealtimeKitClient(account_id=ids[0], app_id=ids[1], token="t")


def test_a_token_keeps_no_line_end_it_was_read_with():
    settings = ApiSettings(account_id="a", app_id="b", api_token="SeCrEt123\r\n")
    with settings.client() as client:
        assert client._http.headers["authorization"] == "Bearer SeCrEt123"


def test_retry_policy_retries_only_transient_answers_and_honours_retry_after():
    policy = RetryPolicy(backoff=1.0, max_delay=10.0, max_retry_after=100.0)
    assert [
        s for s in (400, 401, 403, 404, 408, 409, 422, 429, 500, 503) if policy.should_retry(s)
    ] == [408, 409, 429, 500, 503]
    # Honoured, never shortened, and spread a little so that workers told alike do not
    # all come back at once.
    waits = [policy.delay(1, "3") for _ in range(50)]
    assert all(3.0 <= wait <= 3.3 for wait in waits) and len(set(waits)) > 1
    assert 60.0 <= policy.delay(1, "60") <= 61.0  # honoured beyond the own backoff's cap
    assert policy.delay(1, "100") == 100.0 and policy.refused_wait("100") is None
    assert policy.delay(1, "1200") == 100.0  # a caller with a deadline waits up to it
    assert policy.refused_wait("1200") == (  # the others do not retry at all
        "a longer wait than the 100 s a retry may wait, so not retried"
    )
    # An HTTP date, a minute on (in whole seconds): slack for a slow machine, none for a
    # date read as seconds or as no answer.
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 50.0 < policy.delay(1, later) <= 61.0
    assert 0.75 <= policy.delay(1) <= 1.0 and 3.0 <= policy.delay(3) <= 4.0
    for unusable in ("nan", "-1", "1.5e3", "soon"):  # no answer: the own backoff, not nothing
        assert 0.75 <= policy.delay(1, unusable) <= 1.0


def test_settings_come_from_flags_then_environment_then_config_file(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        '[realtimekit]\naccount_id = "file-acct"\napp_id = "file-app"\napi_token = "file-tok"\n'
    )
    environ = {"CLOUDFLARE_ACCOUNT_ID": "env-acct", "CLOUDFLARE_API_TOKEN": "env-tok"}
    settings = ApiSettings.resolve({"account_id": "flag-acct"}, config_file=config, environ=environ)
    assert settings.account_id == "flag-acct"
    assert settings.api_token.get_secret_value() == "env-tok"
    assert settings.app_id == "file-app"
    assert "env-tok" not in repr(settings)


def test_a_config_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    # As Notepad and PowerShell 5 save it; manifests and jobs files are read so too.
    config = tmp_path / "config.toml"
    config.write_bytes(b"\xef\xbb\xbf" + b'[realtimekit]\naccount_id = "acct"\n')
    assert ApiSettings.resolve({}, config_file=config, environ={}).account_id == "acct"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[realtimkit]\naccount_id = "a"\n', "unknown table(s) or setting(s) realtimkit"),
        ('account_id = "a"\n[realtimekit]\napp_id = "b"\n', "setting(s) account_id: trackscr"),
        ("[realtimekit]\naccount_id = 123\napp_id = true\n", "account_id, app_id: must be text"),
    ],
    ids=["a misspelt section", "a setting above the section", "numbers for ids"],
)
def test_a_config_file_whose_settings_would_not_be_read_as_meant_is_refused(tmp_path, text, said):
    # Ignored, they would be said to be missing though they are in the file; a number would
    # be sent as the text Python spells it (app "True").
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{config}: ") + ".*" + re.escape(said)):
        ApiSettings.resolve({}, config_file=config, environ={})


def test_a_key_file_the_config_file_names_is_found_beside_it_from_any_folder(tmp_path, monkeypatch):
    # A receiver started by a service manager runs in "/": a relative path was looked for
    # there, and the receiver did not start. Given on the command line, it is the shell's.
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "rtk.pem").write_text("the key\n")
    config = tmp_path / "etc" / "config.toml"
    config.write_text('[realtimekit]\nwebhook_public_key = "rtk.pem"\n')
    monkeypatch.chdir("/")
    assert ApiSettings.resolve({}, config_file=config, environ={}).public_key_pem() == b"the key\n"
    config.write_text('[realtimekit]\nwebhook_public_key = "keys/gone.pem"\n')
    missing = re.escape(f"webhook public key {tmp_path / 'etc' / 'keys' / 'gone.pem'}: No such")
    with pytest.raises(ConfigError, match=missing):
        ApiSettings.resolve({}, config_file=config, environ={}).public_key_pem()
    pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    config.write_text(f'[realtimekit]\nwebhook_public_key = """{pem}"""\n')
    assert ApiSettings.resolve({}, config_file=config, environ={}).public_key_pem() == pem.encode()
    monkeypatch.chdir(tmp_path / "etc")
    flag = ApiSettings.resolve({"webhook_public_key": "rtk.pem"}, config_file=config, environ={})
    assert flag.public_key_pem() == b"the key\n"


def test_a_token_in_a_config_file_others_can_read_is_warned_of(tmp_path, caplog):
    config = tmp_path / "config.toml"
    config.write_text('[realtimekit]\napi_token = "tok"\n')
    config.chmod(0o644)
    ApiSettings.resolve({}, config_file=config, environ={})
    assert "can be read by other accounts here (chmod 600 it)" in caplog.text
    caplog.clear()
    config.chmod(0o600)
    ApiSettings.resolve({}, config_file=config, environ={})
    assert caplog.text == ""


def test_missing_settings_are_named_with_where_to_give_them(tmp_path):
    settings = ApiSettings.resolve({}, environ={"HOME": str(tmp_path)})
    where = r"account_id \(--account-id, \$CLOUDFLARE_ACCOUNT_ID or account_id in the config"
    with pytest.raises(ConfigError, match=where):
        settings.client()
    with pytest.raises(ConfigError, match=where):
        settings.check()  # the same, before any work
    with_query = ApiSettings(
        base_url="https://api.example/v4?x=1", account_id="a", app_id="b", api_token="t"
    )
    with pytest.raises(ConfigError, match="base URL must not hold a query"):
        with_query.client()
    bad = tmp_path / "bad.toml"
    bad.write_text('[realtimekit]\naccount = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown setting.*account"):
        ApiSettings.resolve({}, config_file=bad, environ={})
    bad.write_text("x = " + "[" * 100_000)  # TOML's parser gives up with a RecursionError
    with pytest.raises(ConfigError, match=r"bad\.toml: cannot read config"):
        ApiSettings.resolve({}, config_file=bad, environ={})


def test_a_short_look_gives_up_at_its_time_limit_after_one_try():
    # The webhook's look at a recording announced ERRORED: an API that does not answer must
    # not hold the worker for the client's usual 30 s a try, six tries.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections are accepted by the system, and never answered
        base = f"http://127.0.0.1:{silent.getsockname()[1]}/client/v4"
        settings = ApiSettings(base_url=base, account_id="a", app_id="b", api_token="t")
        started = time.monotonic()
        with (
            settings.client(retry=RetryPolicy(attempts=1), timeout=0.5) as client,
            pytest.raises(RealtimeKitError),
        ):
            client.get_recording("r1")
    assert time.monotonic() - started < 5
