"""The command line as users run it: outputs, messages and exit status."""

import contextlib
import fcntl
import json
import os
import pty
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
import zipfile
from pathlib import Path

import pytest

from .conftest import write_key


def trackscribe(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def logged_run(sample_dir, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The sample transcribed as an unattended run does it: stderr a pipe (a log file), -v."""
    out = tmp_path_factory.mktemp("logged") / "out"
    return trackscribe("-v", "transcribe", str(sample_dir / "manifest.json"), "-o", str(out)), out


def test_transcribe_writes_every_format_and_exits_0(logged_run):
    result, out = logged_run
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".trackscribe-exports",
        "transcript.json",
        "transcript.seglst.json",
        "transcript.srt",
        "transcript.txt",
        "transcript.vtt",
    ]
    assert json.loads((out / "transcript.json").read_text())["schema"] == (
        "trackscribe.transcript/1"
    )
    assert "<v Chen>" in (out / "transcript.vtt").read_text()


# export: what a reviewer holding only a transcript.json can make of it.

TEXT_FILES = [
    "transcript.json",
    "transcript.seglst.json",
    "transcript.srt",
    "transcript.txt",
    "transcript.vtt",
]


def held_alone(logged_run, folder: Path) -> Path:
    """The transcript ``transcribe`` wrote, copied alone into ``folder``: no audio, no model
    run, no exports beside it."""
    folder.mkdir()
    return Path(shutil.copy(logged_run[1] / "transcript.json", folder))


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_export_writes_every_format_from_the_transcript_alone_as_transcribe_wrote_them(
    logged_run, tmp_path
):
    held = held_alone(logged_run, tmp_path / "held")
    out = tmp_path / "exported"
    result = trackscribe("export", str(held), "-o", str(out), "--formats", "txt,vtt,json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"wrote {out / name}" for name in ("transcript.txt", "transcript.vtt", "transcript.json")
    ]

    everything = "json,vtt,srt,txt,seglst,bundle"
    result = trackscribe("export", str(held), "-o", str(out), "--formats", everything)
    assert result.returncode == 0, result.stderr
    transcribed = logged_run[1]
    for name in TEXT_FILES:
        assert (out / name).read_bytes() == (transcribed / name).read_bytes(), name
    with zipfile.ZipFile(out / "transcript.bundle.zip") as bundle:
        for name in TEXT_FILES:
            assert bundle.read(name) == (transcribed / name).read_bytes(), name
    assert trackscribe("verify", str(out)).returncode == 0


def test_export_of_a_partial_transcript_says_so_as_transcribe_did(logged_run, tmp_path):
    # It exited 0 without a word: a script exporting for reviewers took it for a whole one.
    held = held_alone(logged_run, tmp_path / "held")
    made = json.loads(held.read_text())
    lost = {"path": "tracks/dana.webm", "user_id": "user-dana", "reason": "not WebM"}
    made["provenance"]["failures"].append(lost)
    held.write_text(json.dumps(made))
    result = trackscribe("export", str(held), "-o", str(tmp_path / "out"), "--formats", "txt")
    assert result.returncode == 1
    assert "partial result" in result.stderr and "  tracks/dana.webm: not WebM" in result.stderr
    assert (tmp_path / "out" / "transcript.txt").exists()  # written all the same


def test_export_into_the_transcripts_own_folder_keeps_the_transcript_as_it_was(
    logged_run, tmp_path
):
    held = held_alone(logged_run, tmp_path / "held")
    source = held.read_bytes()
    result = trackscribe("export", str(held.parent))  # the folder; it is also the default -o
    assert result.returncode == 0, result.stderr
    assert sorted(contents(held.parent)) == [".trackscribe-exports", *TEXT_FILES]
    assert held.read_bytes() == source
    # Other formats only: the transcript is not removed as an earlier run's export would be.
    result = trackscribe("export", str(held), "--formats", "vtt")
    assert result.returncode == 0, result.stderr
    assert sorted(contents(held.parent)) == [
        ".trackscribe-exports",
        "transcript.json",
        "transcript.vtt",
    ]
    assert held.read_bytes() == source
    assert trackscribe("verify", str(held.parent)).returncode == 0


def test_export_into_its_own_folder_refuses_to_lose_fields_it_does_not_know(logged_run, tmp_path):
    # Written again from what this version reads, a reviewer's note (or a later version's
    # field) in the compliance record was gone, and the export said nothing.
    held = held_alone(logged_run, tmp_path / "held")
    noted = json.loads(held.read_text())
    noted["reviewed_by"] = "compliance team"
    noted["utterances"][0]["confidence"] = 0.9
    held.write_text(json.dumps(noted, indent=2))
    source = held.read_bytes()
    result = trackscribe("export", str(held), "--formats", "vtt")
    assert result.returncode == 2
    assert result.stderr == (
        f"trackscribe: {held}: holds fields this version of trackscribe does not know "
        "(utterances[0].confidence, reviewed_by); written again, they would be lost: export "
        "into another folder\n"
    )
    assert held.read_bytes() == source and sorted(contents(held.parent)) == ["transcript.json"]
    other = tmp_path / "review"
    assert trackscribe("export", str(held), "-o", str(other)).returncode == 0
    assert held.read_bytes() == source


def test_export_signs_a_bundle_with_sign_key_that_verify_then_passes(logged_run, tmp_path):
    private, public = write_key(tmp_path, "signer")
    held = held_alone(logged_run, tmp_path / "held")
    result = trackscribe(
        "export", str(held), "--formats", "json,bundle", "--sign-key", str(private)
    )
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(held.parent / "transcript.bundle.zip") as bundle:
        assert "SHA256SUMS.sig" in bundle.namelist()
    checked = trackscribe("verify", str(held.parent), "--public-key", str(public))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "signed with" in checked.stdout


def test_export_without_the_key_refuses_to_replace_a_signed_bundle_and_leaves_it_all(
    logged_run, tmp_path
):
    private, _ = write_key(tmp_path, "signer")
    held = held_alone(logged_run, tmp_path / "held")
    signed = trackscribe(
        "export", str(held), "--formats", "json,bundle", "--sign-key", str(private)
    )
    assert signed.returncode == 0, signed.stderr
    before = contents(held.parent)
    bundle = held.parent / "transcript.bundle.zip"
    for formats in ("json,bundle", "vtt"):  # written over, or removed as another format's
        result = trackscribe("export", str(held), "--formats", formats)
        assert result.returncode == 2, formats
        assert result.stderr == (
            f"trackscribe: {bundle}: signed; with no signing key it would be written again "
            "unsigned, or removed: give the key (--sign-key), or remove the bundle first to do "
            "without\n"
        )
        assert contents(held.parent) == before


def test_a_signed_bundle_received_and_kept_beside_exports_is_left_alone_without_the_key(
    logged_run, tmp_path
):
    # The export neither writes over nor removes a bundle it did not write: refusing, and
    # advising to delete it, was wrong (the notebook's export already went ahead).
    private, _ = write_key(tmp_path, "signer")
    held = held_alone(logged_run, tmp_path / "held")
    signed = trackscribe(
        "export",
        str(held),
        "-o",
        str(tmp_path / "sent"),
        "--formats",
        "bundle",
        "--sign-key",
        str(private),
    )
    assert signed.returncode == 0, signed.stderr
    review = tmp_path / "review"
    review.mkdir()
    received = (tmp_path / "sent" / "transcript.bundle.zip").read_bytes()
    (review / "transcript.bundle.zip").write_bytes(received)
    result = trackscribe("export", str(held), "-o", str(review), "--formats", "vtt")
    assert result.returncode == 0, result.stderr
    assert (review / "transcript.bundle.zip").read_bytes() == received
    assert sorted(contents(review)) == [
        ".trackscribe-exports",
        "transcript.bundle.zip",
        "transcript.vtt",
    ]
    # asked to write the bundle over, it still refuses
    result = trackscribe("export", str(held), "-o", str(review), "--formats", "bundle")
    assert result.returncode == 2 and "signed; with no signing key" in result.stderr


def test_export_of_a_transcript_that_is_not_there_exits_2_naming_it(tmp_path):
    out = tmp_path / "out"
    for given, named in (
        (tmp_path / "gone.json", tmp_path / "gone.json"),
        (tmp_path, tmp_path / "transcript.json"),  # a folder that holds none
    ):
        result = trackscribe("export", str(given), "-o", str(out))
        assert result.returncode == 2
        assert result.stderr == f"trackscribe: {named}: no such transcript file\n"
        assert result.stdout == ""
        assert not out.exists()


def test_verbose_says_what_each_stage_made_of_each_track(
    logged_run, sample_dir, sample_manifest, tmp_path
):
    info, _ = logged_run
    assert "loading model" in info.stderr
    assert "VAD filter" not in info.stderr  # faster-whisper's, about a VAD it is not given
    manifest = str(sample_dir / "manifest.json")
    # -v counts wherever it is put: before the command, after it, or both.
    debug = trackscribe("-v", "transcribe", manifest, "-o", str(tmp_path / "vv"), "-v")
    tracks = [t.path for t in sample_manifest.tracks]
    for said in ("s decoded in", "region(s)"):
        assert sorted(
            line.split(": ")[2] for line in debug.stderr.splitlines() if said in line
        ) == (sorted(tracks))
    transcribed = [line for line in debug.stderr.splitlines() if "segment(s)" in line]
    assert len(transcribed) == 4  # dana never speaks: nothing of hers reaches the model
    assert "user-dana" not in " ".join(transcribed)
    theirs = [line for line in debug.stderr.splitlines() if "VAD filter removed" in line]
    assert theirs and all(line.startswith("trackscribe: INFO: faster_whisper: ") for line in theirs)


def test_a_lost_track_exits_1_and_names_it(meeting_copy, tmp_path):
    lost = next((meeting_copy / "tracks").glob("default_user-chen_*"))
    lost.unlink()
    result = trackscribe(
        "transcribe",
        str(meeting_copy / "manifest.json"),
        "-o",
        str(tmp_path / "out"),
        "--formats",
        "json,txt",
        "--no-progress",
    )
    assert result.returncode == 1
    assert "partial result" in result.stderr and lost.name in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".trackscribe-exports",
        "transcript.json",
        "transcript.txt",
    ]


def _files_of_at_most(size: int) -> None:
    """In the child: files can grow to ``size`` bytes, past that writing fails (EFBIG), as a
    full disk would make it fail (ENOSPC), and as root too."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error to handle, not a signal that kills
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_a_disk_that_fills_up_stops_the_meeting_naming_the_file_not_a_track(sample_dir, tmp_path):
    manifest, out = str(sample_dir / "manifest.json"), str(tmp_path / "out")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "transcribe", manifest, "-o", out, "--no-progress"],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: _files_of_at_most(200_000),  # a decoded track is megabytes
    )
    assert result.returncode == 2, result.stderr
    assert ".pcm" in result.stderr and "cannot write: File too large" in result.stderr
    assert "partial" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written; the folder made for it is gone


def test_bad_input_exits_2_with_the_reason(meeting_copy, tmp_path):
    manifest = meeting_copy / "manifest.json"
    raw = json.loads(manifest.read_text())
    del raw["tracks"][0]["started_time"]
    raw["tracks"][0]["path"] = "tracks/alice.webm"  # a name with no time in it either
    manifest.write_text(json.dumps(raw))
    result = trackscribe("transcribe", str(manifest), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "tracks[0].started_time: missing" in result.stderr
    assert not (tmp_path / "out").exists()


def test_eval_of_a_file_that_is_not_there_names_it_in_plain_words(tmp_path):
    result = trackscribe("eval", str(tmp_path / "transcript.json"), str(tmp_path))
    assert result.returncode == 2
    assert f"trackscribe: {tmp_path / 'transcript.json'}: No such file or directory" in (
        result.stderr
    )
    assert "Errno" not in result.stderr


def test_an_output_that_cannot_be_written_exits_2_naming_it(sample_dir, tmp_path):
    (tmp_path / "transcript.srt").mkdir()
    result = trackscribe(
        "transcribe", str(sample_dir / "manifest.json"), "-o", str(tmp_path), "--no-progress"
    )
    assert result.returncode == 2
    assert "transcript.srt: a folder is in the way" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["transcript.srt"]  # nothing else written
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"manifest": str(sample_dir / "manifest.json")}) + "\n")
    for command in (["batch", str(jobs)], ["fetch", "--recording-id", "r"], ["demo"]):
        result = trackscribe(*command, "-o", str(blocked))
        assert result.returncode == 2, command
        assert f"{blocked} as the output folder: it is a file" in result.stderr


def test_a_file_in_the_way_of_an_output_is_named_before_any_work(sample_dir, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    manifest, truth = str(sample_dir / "manifest.json"), str(sample_dir / "truth.json")
    image = blocked / "timeline.png"
    for command, message in (
        (
            ["transcribe", manifest, "-o", str(blocked / "out")],
            f"cannot use {blocked / 'out'} as the output folder: {blocked} is not a folder",
        ),
        (["eval", truth, truth, "--plot", str(image)], f"cannot write {image}: {blocked} is not a"),
        (
            ["bench", manifest, "--plot", str(image)],
            f"cannot write {image}: {blocked} is not a folder",
        ),
        (["eval", truth, truth, "--plot", str(tmp_path)], f"cannot write {tmp_path}: it is a"),
        (
            ["bench", manifest, "--plot", str(tmp_path / "timeline.docx")],
            "timeline.docx: cannot draw a .docx file; use one of",
        ),
    ):
        result = trackscribe(*command)
        assert result.returncode == 2, command
        assert message in result.stderr, command
        assert "bench: running" not in result.stderr  # refused before anything ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_an_error_of_trackscribe_itself_exits_3_in_one_line(monkeypatch, tmp_path, capsys):
    from pipeline import cli

    def broken(args):
        raise RuntimeError("a bug near https://bucket.example/t.webm?X-Amz-Signature=s3cr3t")

    monkeypatch.setattr(cli, "_run_eval", broken)
    assert cli.main(["eval", str(tmp_path / "t.json"), str(tmp_path / "u.json")]) == 3
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: a bug near https://bucket.example/t.webm?REDACTED" in err
    assert "s3cr3t" not in err


def test_a_ctrl_c_that_pydantic_wrapped_exits_as_an_interrupt(monkeypatch, tmp_path, capsys):
    from pydantic import BaseModel, field_serializer

    from pipeline import cli

    class Stamped(BaseModel):
        at: int

        @field_serializer("at")
        def _at(self, value: int) -> int:
            raise KeyboardInterrupt  # the Ctrl-C came while a model was written

    monkeypatch.setattr(cli, "_run_eval", lambda args: Stamped(at=1).model_dump_json())
    assert cli.main(["eval", str(tmp_path / "t.json"), str(tmp_path / "u.json")]) == 130
    assert capsys.readouterr().err == "trackscribe: interrupted\n"


def test_a_ctrl_c_that_comes_while_a_finalizer_runs_still_stops_the_command(
    monkeypatch, tmp_path, capsys
):
    # Raised in a finalizer (a progress bar's __del__), Python printed the KeyboardInterrupt
    # and went on: the command ran to its end and exited 0 (seen in CI, on `run`).
    from pipeline import cli

    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:  # the handler runs in here
                pass

    def command(args: object) -> int:
        Finalized()  # dropped at once: its __del__ runs here
        time.sleep(5)
        return 0

    monkeypatch.setattr(cli, "_run_eval", command)
    began = time.monotonic()
    assert cli.main(["eval", str(tmp_path / "t.json"), str(tmp_path / "u.json")]) == 130
    assert time.monotonic() - began < 4
    assert capsys.readouterr().err.endswith("trackscribe: interrupted\n")


def test_a_traceback_shown_with_vv_holds_no_secret(tmp_path):
    # An error whose text holds a pre-signed URL, shown with its traceback at -vv.
    script = (
        "import sys\n"
        "from pipeline import cli\n"
        "def broken(args):\n"
        "    raise RuntimeError('GET https://bucket.example/t.webm?X-Amz-Signature=s3cr3t')\n"
        "cli._run_eval = broken\n"
        "sys.exit(cli.main(['-vv', 'eval', 'a.json', 'b.json']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 3
    assert "Traceback" in result.stderr and "RuntimeError" in result.stderr
    assert "s3cr3t" not in result.stderr


def test_main_called_where_logging_is_set_up_keeps_to_it_and_to_no_secret(tmp_path):
    # A script that logs to a file of its own: main() adds no console output of its own, and
    # what reaches the script's handlers is redacted too.
    log = tmp_path / "script.log"
    script = (
        "import logging, sys\n"
        f"logging.basicConfig(filename={str(log)!r}, level=logging.INFO)\n"
        "from pipeline import cli\n"
        "def fetching(args):\n"
        "    logging.getLogger('trackscribe.stages.fetch').warning(\n"
        "        'retrying https://bucket.example/t.webm?X-Amz-Signature=s3cr3t')\n"
        "    return 0\n"
        "cli._run_eval = fetching\n"
        "sys.exit(cli.main(['eval', 'a.json', 'b.json']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "retrying https://bucket.example/t.webm" in log.read_text()
    assert "s3cr3t" not in log.read_text()


@pytest.mark.parametrize(
    "args",
    [
        ["transcribe", "m.json"],
        ["transcribe", "m.json", "-o", "x", "--formats", "docx"],
        ["nonsense"],
    ],
)
def test_bad_usage_exits_2(args):
    result = trackscribe(*args)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_a_misspelt_option_is_refused_with_the_usage_of_its_command():
    result = trackscribe("eval", "t.json", "truth.json", "--jsn")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: trackscribe eval ")
    assert "trackscribe eval: error: unrecognized arguments: --jsn" in result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["batch", "jobs.jsonl", "-o", "out", "--workers", "0"], "--workers: must be 1 or more"),
        (["transcribe", "m.json", "-o", "x", "--threads", "two"], "--threads: not a whole number"),
        (["bench", "m.json", "--beam-size", "0"], "--beam-size: must be 1 or more, not 0"),
        (["emulator", "--meeting", ".", "--fault", "cut=-1"], "--fault: fault count must be 0"),
        (["emulator", "--meeting", ".", "--url-ttl", "0"], "--url-ttl: must be more than 0"),
    ],
)
def test_a_number_out_of_range_is_refused_naming_its_flag(args, said):
    result = trackscribe(*args)
    assert result.returncode == 2 and said in result.stderr


@pytest.mark.parametrize(
    ("flag", "said"),
    [
        ("--beam-size", "argument --beam-size: must be 100 or less, not 100000"),
        ("--threads", "argument --threads: must be 1024 or less, not 100000"),
    ],
)
def test_a_number_too_large_for_the_model_is_refused_before_it_runs(
    sample_dir, tmp_path, flag, said
):
    # 100000 made CTranslate2 exhaust memory (beams) or OpenMP crash the process (threads)
    result = trackscribe("transcribe", str(sample_dir), "-o", str(tmp_path), flag, "100000")
    assert result.returncode == 2 and said in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_folder_where_an_output_goes_is_found_before_any_work(sample_dir, tmp_path):
    # Found when writing, it cost the whole transcription first (minutes for a meeting).
    meeting = tmp_path / "meeting"
    shutil.copytree(sample_dir, meeting)
    for track in (meeting / "tracks").iterdir():
        track.unlink()  # any work at all would fail on these first
    out = tmp_path / "out"
    (out / "transcript.vtt").mkdir(parents=True)
    result = trackscribe("transcribe", str(meeting), "-o", str(out))
    assert result.returncode == 2
    assert result.stderr == f"trackscribe: {out / 'transcript.vtt'}: a folder is in the way\n"


def test_an_empty_path_is_refused_not_taken_for_the_current_folder(sample_dir, tmp_path):
    # -o "$OUT" with OUT unset wrote into the folder the script ran in (removing there what
    # an earlier export had recorded); an empty manifest path read ./manifest.json.
    for args in (["transcribe", str(sample_dir), "-o", ""], ["export", "", "-o", "x"]):
        result = trackscribe(*args, cwd=tmp_path)
        assert result.returncode == 2
        assert "an empty path (an unset variable?)" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_abbreviated_flag_is_refused_not_taken_for_the_flag_it_begins(sample_dir, tmp_path):
    # A script's --form would become another flag's the day one of the same start is added.
    result = trackscribe(
        "transcribe", str(sample_dir), "-o", str(tmp_path / "out"), "--form", "json"
    )
    assert result.returncode == 2 and "unrecognized arguments: --form" in result.stderr


def test_with_stderr_closed_messages_do_not_land_in_the_output_a_script_reads(sample_dir):
    truth = str(sample_dir / "truth.json")
    result = subprocess.run(  # `trackscribe eval … --json 2>&-`
        ["sh", "-c", f'exec "{sys.executable}" -m pipeline eval "{truth}" /nope --json 2>&-'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_result_that_cannot_be_written_to_stdout_exits_2_saying_so(sample_dir):
    truth = str(sample_dir / "truth.json")
    result = subprocess.run(  # `trackscribe eval … --json >/dev/full`: a full disk
        [
            "sh",
            "-c",
            f'exec "{sys.executable}" -m pipeline eval "{truth}" "{truth}" --json >/dev/full',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "trackscribe: cannot write the result to standard output: No space left on device"
    ]


def test_a_reader_that_stops_early_ends_the_command_quietly(sample_dir):
    truth = str(sample_dir / "truth.json")
    result = subprocess.run(  # `trackscribe eval … --json | head -c 1`
        ["sh", "-c", f'"{sys.executable}" -m pipeline eval "{truth}" "{truth}" --json | head -c 1'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout == "{" and result.stderr == ""


def test_demo_prints_the_meeting_in_time_order(sample_truth):
    result = trackscribe("demo", "--no-progress")
    assert result.returncode == 0, result.stderr
    about, said = result.stdout.split("\n\n", 1)  # the text export, as written to a file
    assert about.startswith("# Meeting ") and "# Made by trackscribe " in about
    lines = said.splitlines()
    assert len(lines) == len(sample_truth)
    speakers = [line.split("] ")[1].split(":")[0] for line in lines]
    assert speakers == [
        "Alice",
        "Bruno",
        "Alice",
        "Bruno",
        "Chen",
        "Alice",
        "Chen",
        "Bruno",
        "Alice",
    ]
    assert lines == sorted(lines)


def test_progress_bars_stay_out_of_a_log_file(logged_run):
    result, out = logged_run  # stderr is a pipe there, as it is for a run writing to a log
    assert result.returncode == 0, result.stderr
    assert "%|" not in result.stderr  # no bar (text mode has turned any \r into \n)
    assert f"wrote {out / 'transcript.json'}" in result.stderr  # what it did is still said


def test_on_a_terminal_a_line_logged_while_a_bar_is_drawn_starts_a_line_of_its_own(
    meeting_copy, tmp_path
):
    next((meeting_copy / "tracks").glob("default_user-chen_*")).unlink()  # logged when found
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"manifest": str(meeting_copy / "manifest.json")}) + "\n")
    ours, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    command = [sys.executable, "-m", "pipeline", "batch", str(jobs), "-o", str(tmp_path / "o")]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    screen = b""
    with contextlib.suppress(OSError):  # EIO once the run has closed the terminal
        while chunk := os.read(ours, 65536):
            screen += chunk
    os.close(ours)
    assert run.wait(timeout=300) == 1
    assert b"%|" in screen  # bars were drawn
    logged = re.findall(rb"(.)trackscribe: (?:WARNING|ERROR)", screen, flags=re.DOTALL)
    assert logged and set(logged) <= {b"\r", b"\n"}  # not written onto a bar's end


def test_every_command_has_help():
    commands = [
        "transcribe",
        "demo",
        "eval",
        "bench",
        "run",
        "fetch",
        "emulator",
        "webhook",
        "batch",
        "verify",
        "export",
    ]
    for args in (["--help"], *([c, "--help"] for c in commands)):
        result = trackscribe(*args)
        assert result.returncode == 0 and "usage: trackscribe" in result.stdout


def test_ctrl_c_while_the_libraries_load_ends_quietly_with_130():
    # Ctrl-C lands during the first second, while the model's libraries are imported.
    script = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'faster_whisper':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "import runpy\n"
        "runpy.run_module('pipeline', run_name='__main__')\n"  # python -m pipeline
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 130
    assert result.stderr == "trackscribe: interrupted\n"


def _until_decoding_starts(scratch: Path) -> None:
    """Wait until a run using ``scratch`` as its temporary folder writes decoded audio."""
    deadline = time.monotonic() + 60
    while not list(scratch.glob("trackscribe-*/*.pcm")) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_run_stopped_by_sigterm_cleans_up_as_after_ctrl_c(sample_dir, tmp_path):
    # A service manager's stop, or `kill`: the decoded audio in the scratch folder, the
    # workers and the new output folder go, as they do after Ctrl-C; the exit status says so.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    manifest, out = str(sample_dir / "manifest.json"), str(tmp_path / "out")
    run = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "transcribe", manifest, "-o", out, "--no-progress"],
        env=os.environ | {"TMPDIR": str(scratch)},
        stderr=subprocess.PIPE,
        text=True,
    )
    _until_decoding_starts(scratch)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGTERM, stderr
    assert "trackscribe: terminated" in stderr and "Traceback" not in stderr
    assert list(scratch.iterdir()) == [] and not (tmp_path / "out").exists()


def test_decoded_audio_a_killed_run_left_behind_is_removed_by_the_next_run(sample_dir, tmp_path):
    # kill -9, the out-of-memory killer, a scheduler's time limit: the run cannot clean up.
    # What it left must not pile up in the temporary folder, run after run.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "-v",
        "transcribe",
        str(sample_dir / "manifest.json"),
    ]
    environment = os.environ | {"TMPDIR": str(scratch)}
    killed = subprocess.Popen(
        [*command, "-o", str(tmp_path / "killed"), "--no-progress"], env=environment
    )
    _until_decoding_starts(scratch)
    killed.kill()
    killed.wait()
    left = list(scratch.glob("trackscribe-*"))
    assert len(left) == 1 and list(left[0].glob("*.pcm"))

    result = subprocess.run(
        [*command, "-o", str(tmp_path / "out"), "--no-progress"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert list(scratch.glob("trackscribe-*")) == []
    assert f"removed {left[0]}, left behind by a run that was killed" in result.stderr


def test_options_that_do_not_go_together_are_a_bad_option_not_a_crash(capsys):
    # Such an error names no one field, and reading its field raised inside the handler.
    import argparse

    from pipeline import cli
    from pipeline.core import PipelineOptions

    def run(args: argparse.Namespace) -> int:
        longer_than_a_window = {"vad": {"max_region": 25}, "transcribe": {"max_window": 20}}
        PipelineOptions.model_validate(longer_than_a_window)
        return 0

    assert cli._run(argparse.Namespace(run=run)) == 2
    said = capsys.readouterr().err
    assert said.startswith("trackscribe: bad option: ") and "max_region" in said
