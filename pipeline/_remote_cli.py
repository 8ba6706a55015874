"""The commands that talk to RealtimeKit (or its emulator): run, fetch, emulator, webhook, demo.

Kept apart from ``cli`` so each file stays about one thing; ``cli.main`` still owns printing
errors and choosing exit statuses.
"""

import argparse
import json
import os
import secrets
import shlex
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from models import (
    MANIFEST_FILE,
    Manifest,
    Recording,
    RetryPolicy,
    Transcript,
    TranscriptError,
    atomic_write_text,
    describe_error,
    format_utc,
    printable,
    read_regular_file,
)
from stages.export import (
    DEFAULT_FORMATS,
    FORMATS,
    MAX_EXPORT_BYTES,
    BundleError,
    read_bundle,
    to_txt,
)
from stages.fetch import FetchOptions
from stages.record import (
    DEFAULT_UPLOAD_WAIT,
    DEFAULT_WAIT,
    RealtimeKitClient,
    RealtimeKitError,
    RecordingFailedError,
    RecordingNotFoundError,
    UploadTimeoutError,
)
from stages.transcribe import BUNDLED_MODEL, TranscribeOptions, Transcriber

from . import remote
from ._cli_common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_PARTIAL,
    Parser,
    add_model_options,
    add_progress_option,
    emit,
    non_empty_path,
    output_folder,
    pipeline_options,
    ready_output,
    report,
    say,
    show_progress,
    signing_key,
    write_outputs,
)
from ._scratch import scratch_folder
from .checkpoint import WORK_FOLDER, Checkpoints
from .config import ENVIRONMENT, ApiSettings, ConfigError
from .core import NoUsableTrackError
from .demo import sample_meeting
from .emulator import FAULTS, Emulator, EmulatorOptions
from .signing import keep_signed

__all__ = ["add_api_options", "add_remote_commands", "settings_from"]


def add_remote_commands(commands: "argparse._SubParsersAction[Parser]") -> None:
    run = commands.add_parser(
        "run",
        help="record chosen participants of a live meeting, then transcribe",
        description="Start RealtimeKit track recording for the chosen users (all without "
        "--user-id), wait until the files are uploaded, fetch them into OUT/recording, "
        "transcribe, and write the transcript to OUT.",
    )
    run.add_argument("--meeting-id", required=True, help="the live meeting to record")
    run.add_argument(
        "--user-id", action="append", default=[], metavar="U", help="a user to record; repeat"
    )
    run.add_argument("-o", "--out", type=non_empty_path, required=True, help="output folder")
    run.add_argument(
        "--stop-after",
        type=_non_negative_seconds,
        metavar="S",
        help="stop the recording after S seconds (default: when the meeting ends)",
    )
    run.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_WAIT,
        metavar="S",
        help="give up waiting for the upload after S s (default: %(default)g, a day and an "
        "hour: the longest recording and its upload)",
    )
    _add_names(run)
    add_api_options(run)
    add_model_options(run)
    run.set_defaults(run=_run_command)

    fetch = commands.add_parser(
        "fetch",
        help="fetch an uploaded recording's files into a manifest folder",
        description="Download every file of a RealtimeKit track recording (resuming, "
        "verifying size and checksum, renewing expired URLs) and write DIR/manifest.json.",
    )
    fetch.add_argument("--recording-id", required=True, help="an UPLOADED track recording")
    fetch.add_argument(
        "--meeting-id",
        help="the meeting, for the manifest (default: the one the API names for the recording, "
        "else the recording id)",
    )
    fetch.add_argument(
        "-o",
        "--out",
        type=non_empty_path,
        required=True,
        metavar="DIR",
        help="manifest folder to write (DIR/manifest.json, DIR/tracks/); files there are resumed",
    )
    fetch.add_argument(
        "--user-id",
        action="append",
        default=[],
        metavar="U",
        help="only this user; repeat (needed to read file names whose prefix or user id has _)",
    )
    add_progress_option(fetch)
    _add_names(fetch)
    add_api_options(fetch)
    fetch.set_defaults(run=_fetch_command)

    emulator = commands.add_parser(
        "emulator",
        help="serve a meeting folder as a local RealtimeKit recording API",
        description="A real HTTP server on loopback with RealtimeKit's recording endpoints, "
        "backed by a meeting folder (manifest.json and its tracks): the recording lifecycle, "
        "pre-signed URLs that expire, Range requests, signed webhooks and fault switches.",
    )
    emulator.add_argument(
        "--meeting",
        type=non_empty_path,
        required=True,
        metavar="DIR",
        help="meeting folder to serve (manifest.json and its tracks)",
    )
    emulator.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface: download "
        "URLs then name the host each client reached the emulator by)",
    )
    emulator.add_argument(
        "--port", type=_port, default=8787, help="port (default %(default)s; 0: any free one)"
    )
    emulator.add_argument("--token", help="bearer token to accept (default: $CLOUDFLARE_API_TOKEN)")
    emulator.add_argument(
        "--start-delay",
        type=_non_negative_seconds,
        metavar="S",
        default=EmulatorOptions.model_fields["start_delay"].default,
        help="seconds from the start call to RECORDING (default %(default)g)",
    )
    emulator.add_argument(
        "--record-seconds",
        type=_non_negative_seconds,
        metavar="S",
        default=EmulatorOptions.model_fields["record_seconds"].default,
        help="seconds the meeting goes on after recording starts (default %(default)g)",
    )
    emulator.add_argument(
        "--upload-seconds",
        type=_non_negative_seconds,
        metavar="S",
        default=EmulatorOptions.model_fields["upload_seconds"].default,
        help="seconds from UPLOADING to UPLOADED (default %(default)g)",
    )
    emulator.add_argument(
        "--url-ttl",
        type=_positive_seconds,
        metavar="S",
        default=EmulatorOptions.model_fields["url_ttl"].default,
        help="seconds a pre-signed URL lives (default %(default)g)",
    )
    emulator.add_argument(
        "--shape",
        choices=["layers", "string"],
        default="layers",
        help="download_url as a map of file names to URLs (default) or as one URL",
    )
    emulator.add_argument(
        "--empty-start-body",
        action="store_true",
        help="answer POST /recordings/track with an empty body (older API)",
    )
    emulator.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault,
        metavar="NAME[=N]",
        help=f"inject a fault N times (default 1); NAME one of {', '.join(FAULTS)}",
    )
    emulator.add_argument(
        "--webhook-url", help="deliver signed recording.statusUpdate webhooks here"
    )
    emulator.add_argument(
        "--webhook-key",
        type=non_empty_path,
        help="file of the PEM RSA private key to sign webhooks with (default: a new key)",
    )
    emulator.add_argument(
        "--public-key-out", type=non_empty_path, help="write the webhook public key (PEM) here"
    )
    emulator.set_defaults(run=_emulator_command)

    webhook = commands.add_parser(
        "webhook",
        help="receive recording webhooks; fetch and transcribe each uploaded recording",
        description="Listen for RealtimeKit recording.statusUpdate webhooks, verify their "
        "rtk-signature, ignore repeated deliveries (rtk-uuid), and fetch and transcribe each "
        "recording that reaches UPLOADED into OUT/RECORDING_ID.",
    )
    webhook.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    webhook.add_argument("--port", type=_port, required=True, help="0: any free port")
    webhook.add_argument(
        "-o",
        "--out",
        type=non_empty_path,
        required=True,
        help="output folder: one folder per recording, failed.json in it when one cannot be done",
    )
    webhook.add_argument(
        "--upload-timeout",
        type=_positive_seconds,
        default=DEFAULT_UPLOAD_WAIT,
        metavar="S",
        help="a recording announced UPLOADED that the API does not show so yet is looked at "
        "again (others are handled meanwhile) until S s have passed, then left in failed.json "
        "(default: %(default)g, the hour `run --timeout` allows an upload)",
    )
    add_api_options(webhook)
    webhook.add_argument(
        "--public-key",
        metavar="PEM",
        help="RealtimeKit's webhook public key, a file or PEM text; required unless "
        f"${ENVIRONMENT['webhook_public_key']} or webhook_public_key in the config file gives "
        "it. Deliveries not signed with it are refused",
    )
    add_model_options(webhook)
    webhook.set_defaults(run=_webhook_command)

    demo = commands.add_parser(
        "demo",
        help="the sample meeting, end to end through the local emulator",
        description="Start the RealtimeKit emulator on the sample meeting that ships with "
        "trackscribe, then do exactly what a real run does: start track recording, wait for "
        "the upload, fetch, transcribe; print each step and the merged transcript. No "
        "network, no credentials.",
    )
    demo.add_argument(
        "-o",
        "--out",
        type=non_empty_path,
        help="keep the outputs (in --formats) in this folder; without it, nothing is written",
    )
    add_model_options(demo)
    demo.set_defaults(run=_demo_command)


def _run_command(args: argparse.Namespace) -> int:
    key = signing_key(args)
    out = ready_output(args.out, args.formats, key)
    started: list[Recording] = []
    with settings_from(args).client() as client:
        try:
            transcript = remote.run(
                client,
                args.meeting_id,
                out,
                args.user_id,
                options=pipeline_options(args),
                fetch_options=FetchOptions(progress=show_progress(args)),
                display_names=dict(args.name),
                stop_after=args.stop_after,
                timeout=args.timeout,
                progress=show_progress(args),
                on_step=say,
                on_started=started.append,
            )
        except (KeyboardInterrupt, UploadTimeoutError) as exc:
            # Ctrl-C or --timeout stop this process, not the recording: it goes on until the
            # meeting ends, and a second `run` meets it as a 409. Say which one it is and how
            # to finish it.
            if started:
                known = exc.last_status if isinstance(exc, UploadTimeoutError) else None
                status = known or started[-1].status
                _say_how_to_finish(args, started[0], out, status)
            raise
        except RecordingFailedError:
            raise  # it ended ERRORED: there is nothing left to finish
        except Exception:
            # Anything else after the start (the API unreachable while waiting, a fetch that
            # failed) leaves a recording that can still be fetched and transcribed by hand.
            if started:
                _say_how_to_finish(args, started[0], out, None)
            raise
    write_outputs(transcript, out, args.formats, key)
    return report(transcript)


def _say_how_to_finish(
    args: argparse.Namespace, recording: Recording, out: Path, status: str | None
) -> None:
    """``status``: the recording's last known one (None: not known, it may be over)."""
    fetch_flags = [arg for user in args.user_id for arg in ("--user-id", user)]
    fetch_flags += [arg for user, name in args.name for arg in ("--name", f"{user}={name}")]
    if status is None:
        state = "was started, and may still be going (it ends with the meeting)"
    elif status == "UPLOADING":
        state = "is uploading"
    elif status == "UPLOADED":
        state = "is uploaded"
    else:
        state = "is still going (it ends with the meeting)"
    when = "" if status == "UPLOADED" else "once it is UPLOADED, "
    say(
        f"recording {recording.id} of meeting {args.meeting_id} {state}; {when}finish it with:"
        "\n  "
        + _by_hand(
            recording.id,
            out,
            args.meeting_id,
            fetch_flags=fetch_flags + _api_flags(args),
            transcribe_flags=_model_flags(args),
        )
    )


def _api_flags(args: argparse.Namespace) -> list[str]:
    """The account flags this command was given, to repeat; never the token (a secret)."""
    given = [
        ("--base-url", args.base_url),
        ("--account-id", args.account_id),
        ("--app-id", args.app_id),
        ("--config", args.config),
    ]
    return [arg for flag, value in given if value is not None for arg in (flag, str(value))]


def _model_flags(args: argparse.Namespace) -> list[str]:
    """The model and output flags this command was given that differ from the defaults."""
    flags: list[str] = []
    if args.model != BUNDLED_MODEL:
        flags += ["--model", args.model]
    if args.beam_size != TranscribeOptions().beam_size:
        flags += ["--beam-size", str(args.beam_size)]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    if args.formats != list(DEFAULT_FORMATS):
        flags += ["--formats", ",".join(args.formats)]
    if args.sign_key is not None:
        flags += ["--sign-key", str(args.sign_key)]
    return flags


def _by_hand(
    recording_id: str,
    out: Path,
    meeting_id: str | None,
    *,
    fetch_flags: list[str] | None = None,
    transcribe_flags: list[str] | None = None,
) -> str:
    """The shell commands that fetch an uploaded recording into ``out/recording`` and
    transcribe it into ``out``: what a `run` or a webhook would have done."""
    fetched = out / remote.RECORDING_FOLDER
    fetch = ["trackscribe", "fetch", "--recording-id", recording_id, "-o", str(fetched)]
    fetch += ["--meeting-id", meeting_id] if meeting_id else []
    transcribe = ["trackscribe", "transcribe", str(fetched / MANIFEST_FILE), "-o", str(out)]
    return (
        shlex.join(fetch + (fetch_flags or []))
        + " && "
        + shlex.join(transcribe + (transcribe_flags or []))
    )


def add_api_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "RealtimeKit account",
        "Each setting is taken from the flag, else the environment variable, else the config "
        "file ([realtimekit] in --config, $TRACKSCRIBE_CONFIG or "
        "$XDG_CONFIG_HOME/trackscribe/config.toml, by default ~/.config/...).",
    )
    group.add_argument(
        "--base-url",
        help="API base (default $REALTIMEKIT_BASE_URL, else https://api.cloudflare.com/client/v4)",
    )
    group.add_argument("--account-id", help="default $CLOUDFLARE_ACCOUNT_ID")
    group.add_argument("--app-id", help="default $REALTIMEKIT_APP_ID")
    group.add_argument(
        "--api-token",
        help="default $CLOUDFLARE_API_TOKEN (prefer the variable: flags show in process lists)",
    )
    group.add_argument("--config", type=non_empty_path, help="TOML config file")


def _add_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        action="append",
        default=[],
        type=_name,
        metavar="USER=NAME",
        help="display name of a user (in the manifest and so in the transcript); repeat",
    )


def _name(value: str) -> tuple[str, str]:
    user, sep, name = value.partition("=")
    if not sep or not user or not name:
        raise argparse.ArgumentTypeError(f"expected USER=NAME, got {value!r}")
    return user, name


def _seconds(value: str, *, zero: bool) -> float:
    """A number of seconds, checked when the command line is read: a bad one found later
    would be found after a recording had started, and leave it running."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if problem := remote.seconds_problem(seconds, zero=zero):
        raise argparse.ArgumentTypeError(problem)
    return seconds


def _non_negative_seconds(value: str) -> float:
    return _seconds(value, zero=True)


def _positive_seconds(value: str) -> float:
    return _seconds(value, zero=False)


def _port(value: str) -> int:
    """A TCP port (0: any free one); the socket layer's own refusal is an OverflowError."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def _fault(value: str) -> tuple[str, int]:
    name, _, count = value.partition("=")
    name = name.replace("-", "_")
    if name not in FAULTS:
        raise argparse.ArgumentTypeError(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")
    try:
        times = int(count or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"fault count must be a whole number: {value!r}") from None
    if times < 0:
        raise argparse.ArgumentTypeError(f"fault count must be 0 or more: {value!r}")
    return name, times


def settings_from(args: argparse.Namespace) -> ApiSettings:
    return ApiSettings.resolve(
        {
            "base_url": args.base_url,
            "account_id": args.account_id,
            "app_id": args.app_id,
            "api_token": args.api_token,
            "webhook_public_key": getattr(args, "public_key", None),
        },
        config_file=args.config,
    )


def _fetch_command(args: argparse.Namespace) -> int:
    output_folder(args.out)
    with settings_from(args).client() as client:
        result = remote.fetch(
            client,
            args.recording_id,
            args.out,
            meeting_id=args.meeting_id,
            user_ids=args.user_id,
            display_names=dict(args.name),
            options=FetchOptions(progress=show_progress(args)),
        )
    if result.manifest is not None:
        print(
            f"wrote {args.out / 'manifest.json'} ({len(result.manifest.tracks)} tracks, "
            f"{result.skipped} already complete)",
            file=sys.stderr,
        )
    if result.lost:
        print(
            "trackscribe: partial result; these files were not fetched or cannot be used:"
            if result.manifest is not None
            else "trackscribe: no file could be fetched, and no manifest was written:",
            file=sys.stderr,
        )
        for failure in result.lost:
            again = " (a fetch again may get it)" if failure.fetch_again else ""
            print(f"  {printable(failure.reason)}{again}", file=sys.stderr)
        # Nothing at all is not "some tracks failed, the rest written": as `run` says it.
        return EXIT_PARTIAL if result.manifest is not None else EXIT_BAD_INPUT
    return EXIT_OK


def _emulator_command(args: argparse.Namespace) -> int:
    variable = ENVIRONMENT["api_token"]
    token = args.token or os.environ.get(variable)
    if not token:
        raise ConfigError(f"the emulator needs a token: --token T or ${variable}")
    options = EmulatorOptions(
        token=token,
        start_delay=args.start_delay,
        record_seconds=args.record_seconds,
        upload_seconds=args.upload_seconds,
        url_ttl=args.url_ttl,
        shape=args.shape,
        empty_start_body=args.empty_start_body,
        faults=dict(args.fault),
        webhook_url=args.webhook_url,
        webhook_key=args.webhook_key,
    )
    emulator = Emulator(args.meeting, options, host=args.host, port=args.port)
    # Ctrl-C and SIGTERM (raised here as Terminated) are how this command ends: closing on
    # the way out is what gives the webhooks still queued their last try.
    try:
        if args.public_key_out:
            # Another process (a webhook receiver) reads it: it must never see half a key.
            atomic_write_text(args.public_key_out, emulator.public_key_pem)
        print(
            f"RealtimeKit emulator for meeting {emulator.meeting_id} at {emulator.base_url} "
            "(any account and app id; Ctrl-C stops)",
            file=sys.stderr,
        )
        emulator.serve_forever()
    finally:
        emulator.close()
    return EXIT_OK


def _webhook_command(args: argparse.Namespace) -> int:
    from .webhook import NotRetried, PartialTranscript, RecordingErrored, WebhookReceiver

    # Everything that would make every recording fail is checked before listening: the key,
    # the output folder, the settings and the model.
    settings = settings_from(args)
    public_key = _webhook_public_key(settings)
    key = signing_key(args)
    output_folder(args.out)
    client = settings.client()
    # A recording announced ERRORED is looked up once, briefly: the answer only says what
    # failed.json should (or whether it is this app's at all); a worker must not wait long.
    look = settings.client(retry=RetryPolicy(attempts=1), timeout=_LOOK_SECONDS)
    transcriber = Transcriber(pipeline_options(args).transcribe)

    def on_uploaded(recording: Recording) -> None:
        out = args.out / recording.id
        if _transcribed(out, recording.id):
            # An announcement delivered again after a restart: the work is not paid twice.
            say(
                f"recording {recording.id}: {out / 'transcript.json'} is there already; "
                "remove it to transcribe the recording again"
            )
            return
        keep_signed(out, key)  # failed.json says so, before anything is fetched
        uploaded = _uploaded(client, recording)
        say(f"recording {recording.id} uploaded; fetching and transcribing into {out}")
        (out / FAILED_FILE).unlink(missing_ok=True)  # an earlier failure is being retried
        # A try again, after a file that could not be fetched for now, transcribes only the
        # tracks whose speech that file changes: the others' segments are kept here.
        work = Checkpoints(out / WORK_FOLDER)
        work.drop_partial()
        try:
            transcript = remote.transcribe_recording(
                client,
                uploaded,
                out,
                meeting_id=recording.meeting_id,
                options=pipeline_options(args),
                fetch_options=FetchOptions(progress=show_progress(args)),
                progress=False,
                transcriber=transcriber,
                checkpoints=work,
            )
        except NoUsableTrackError as exc:  # tried again by the receiver, then failed.json
            say(str(exc))
            if not any(failure.fetch_again for failure in exc.failures):
                raise NotRetried(str(exc)) from exc  # every file lost for good: failed.json now
            raise
        finally:
            work.drop_pcm()  # large, and cheap to make again
        write_outputs(transcript, out, args.formats, key)  # what there is, even if partial
        status = report(transcript)
        if lost := remote.lost_for_now(transcript, out):
            # Written, but not done: the receiver tries again (resuming the fetch), and after
            # its last try failed.json names the files; an announcement again retries it.
            say(
                f"recording {recording.id}: wrote the transcript without {len(lost)} file(s) "
                "that could not be fetched; to be tried again"
            )
            raise PartialTranscript(recording.id, lost)
        shutil.rmtree(work.folder, ignore_errors=True)  # done: nothing is tried again
        # Given up on by a stop that came while this ran, and done after all.
        (out / FAILED_FILE).unlink(missing_ok=True)
        say(f"recording {recording.id}: done (exit status {status})")

    def on_failed(recording: Recording, error: BaseException) -> None:
        by_hand = None
        if isinstance(error, RecordingErrored):
            by_hand = _errored_by_hand(look, recording)
        elif isinstance(error, NotRetried) and error.__cause__ is not None:
            # No fetch can get any of its files: the commands would fail as the receiver did.
            error, by_hand = error.__cause__, _LOST_BY_HAND
        _record_failure(args, recording, error, by_hand=by_hand)

    receiver = WebhookReceiver(
        public_key,
        on_uploaded,
        on_failed=on_failed,
        host=args.host,
        port=args.port,
        upload_timeout=args.upload_timeout,
    )
    say(f"listening for RealtimeKit webhooks at {receiver.url} (Ctrl-C stops)")
    try:
        receiver.serve_forever()
    finally:
        client.close()
        look.close()
    return EXIT_OK


FAILED_FILE = "failed.json"
_LOOK_SECONDS = 5.0
_ERRORED_BY_HAND = "nothing: RealtimeKit ended the recording ERRORED and has no files of it"
_LOST_BY_HAND = (
    "nothing a fetch again can mend: each of its files is lost for good (see error); ask "
    "RealtimeKit what became of them"
)


def _uploaded(client: RealtimeKitClient, recording: Recording) -> Recording:
    """``recording`` as the API shows it, when that is ``UPLOADED``: RealtimeKit's webhook
    may come before the API says so. One look (``wait_until_uploaded`` with no time to
    wait): the receiver waits between looks, handling other recordings meanwhile, and a stop
    does not wait for a poll. Not uploaded yet (or the API could not be asked for now):
    :class:`UploadTimeoutError`, which the receiver waits out; ended ``ERRORED``:
    :class:`RecordingErrored`, which it gives up on at once."""
    from .webhook import RecordingErrored

    try:
        return client.wait_until_uploaded(recording.id, timeout=0)
    except UploadTimeoutError:  # a RecordingFailedError too, but not an ended recording
        raise
    except RecordingFailedError as exc:
        raise RecordingErrored(f"{exc.message}: it has no files to transcribe") from exc


def _errored_by_hand(client: RealtimeKitClient, recording: Recording) -> str | None:
    """What failed.json says to do by hand for a recording announced ERRORED: nothing, when
    the API confirms it has no files; None (the usual commands) when it has some, or cannot
    be asked. Raises RecordingNotFoundError when it is not this app's: no failed.json then."""
    try:
        found = client.get_recording(recording.id)
    except RecordingNotFoundError:
        raise  # another app's: the receiver leaves it, and failed.json is not written
    except RealtimeKitError as exc:
        say(f"recording {recording.id}: cannot look it up ({exc}); failed.json says how to fetch")
        return None
    return None if found.files() or found.unreadable_layers else _ERRORED_BY_HAND


def _transcribed(out: Path, recording_id: str) -> bool:
    """Whether ``out`` holds a transcript of this recording already: its ``transcript.json``,
    or the one in its bundle (``--formats`` may have asked for the bundle alone). Formats
    without the provenance (TXT, WebVTT) cannot say, and are made again. One that lacks
    files that could not be fetched for now (marked so in its provenance, or, in one written
    before that mark, not on disk: see :func:`remote.lost_for_now`) is not done: an
    announcement again (after a restart, say) retries them. One that lacks only files lost
    for good (storage has no such file, say) is done: fetching again would only fail again."""
    try:
        made = Transcript.load(out / "transcript.json")
    except (OSError, TranscriptError):
        try:
            bundle = out / FORMATS["bundle"][0]
            members = read_bundle(read_regular_file(bundle, MAX_EXPORT_BYTES), str(bundle))
            made = Transcript.from_json(members["transcript.json"], str(bundle))
        except (OSError, BundleError, KeyError, TranscriptError):
            return False
    return made.provenance.recording_id == recording_id and not remote.lost_for_now(made, out)


def _webhook_public_key(settings: ApiSettings) -> bytes:
    """The webhook public key, refused now (naming where it came from) if it is not one: the
    receiver would otherwise refuse it as an error of trackscribe's own."""
    from .webhook import load_public_key

    pem = settings.public_key_pem()
    try:
        load_public_key(pem)
    except ValueError as exc:
        value = settings.webhook_public_key or ""
        source = "given as text" if value.lstrip().startswith("-----BEGIN") else value
        raise ConfigError(f"webhook public key {source}: {exc}") from None
    return pem


def _record_failure(
    args: argparse.Namespace,
    recording: Recording,
    error: BaseException,
    *,
    by_hand: str | None = None,
) -> None:
    """Leave ``OUT/<recording>/failed.json`` saying why a recording could not be handled: a
    webhook server runs unattended, and a sweep over the output folders must find what needs
    a hand. Its commands repeat the account and model flags the server was given (never the
    token): without them, they would ask another API, or transcribe with other settings.
    ``by_hand`` says what to do instead of those commands; a partial transcript's record
    names the files it lacks (the commands resume the fetch, and transcribe again)."""
    from .webhook import PartialTranscript, ReceiverStopped

    out = args.out / recording.id
    if by_hand is None:
        by_hand = _by_hand(
            recording.id,
            out,
            recording.meeting_id,
            fetch_flags=_api_flags(args),
            transcribe_flags=_model_flags(args),
        )
    record: dict[str, object] = {
        "recording_id": recording.id,
        "meeting_id": recording.meeting_id,
        "failed_at": format_utc(datetime.now(UTC)),
        "error": describe_error(error),
        "by_hand": by_hand,
    }
    # A stop between two tries gives the last try's failure as the stop's cause.
    partial = error.__cause__ if isinstance(error, ReceiverStopped) else error
    if isinstance(partial, PartialTranscript):
        record["missing"] = [failure.describe() for failure in partial.missing]
    # Said first: the disk that could not take the transcript may not take failed.json.
    say(f"recording {recording.id}: failed; by hand: {record['by_hand']}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / FAILED_FILE, json.dumps(record, indent=2) + "\n")
    say(f"recording {recording.id}: wrote {out / FAILED_FILE}")


def _demo_command(args: argparse.Namespace) -> int:
    if args.sign_key is not None and args.out is None:
        args.command_parser.error("--sign-key signs the bundle the demo keeps: add -o FOLDER")
    key = signing_key(args)
    if args.out is not None:
        keep_signed(output_folder(args.out), key)
    meeting = sample_meeting()
    names = {t.user_id: t.label for t in Manifest.load(meeting / MANIFEST_FILE).tracks}
    token = secrets.token_urlsafe(24)
    options = EmulatorOptions(token=token, start_delay=0.3, record_seconds=1.0, upload_seconds=0.3)
    with scratch_folder("demo-") as scratch:
        out = args.out or scratch
        with Emulator(meeting, options) as emulator:
            say(f"emulator serving the sample meeting at {emulator.base_url}")
            settings = ApiSettings(
                base_url=emulator.base_url,
                account_id="demo-account",
                app_id="demo-app",
                api_token=token,
            )
            with settings.client() as client:
                transcript = remote.run(
                    client,
                    emulator.meeting_id,
                    out,
                    options=pipeline_options(args),
                    fetch_options=FetchOptions(progress=show_progress(args)),
                    display_names=names,
                    poll=0.2,
                    progress=show_progress(args),
                    on_step=say,
                )
        if args.out is not None:
            write_outputs(transcript, args.out, args.formats, key)
        emit(to_txt(transcript), end="")
    return report(transcript)
