"""The whole pipeline on real media: who said what and when, and what bad input costs."""

import hashlib
import io
import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models import ManifestError, Transcript, format_utc
from pipeline import transcribe_tracks
from pipeline._scratch import scratch_folder
from pipeline._worker import (
    WorkerLink,
    interruptible,
    interrupts_held,
    lowest_level,
)
from pipeline.config import ApiSettings
from pipeline.core import bars_wanted, run_meeting
from stages.export._report import to_report
from stages.transcribe import (
    BUNDLED_MODEL,
    ModelError,
    TranscribeOptions,
    Transcriber,
    resolve_model,
)

from .conftest import crash_first_track, silence, words_of, write_webm


def _found(transcript, turn: dict) -> float:
    """Share of a true turn's words that the transcript has on that speaker near that time."""
    said = [
        w
        for u in transcript.utterances
        if u.speaker == turn["speaker"]
        and u.end > turn["start_time"] - 1
        and u.start < turn["end_time"] + 1
        for w in words_of(u.text)
    ]
    expected = words_of(turn["words"])
    return sum(w in said for w in expected) / len(expected)


def test_every_turn_is_found_on_the_right_speaker_at_the_right_time(
    sample_transcript, sample_truth
):
    for turn in sample_truth:
        assert _found(sample_transcript, turn) >= 0.8, turn
        starts = [u.start for u in sample_transcript.utterances if u.speaker == turn["speaker"]]
        assert min(abs(s - turn["start_time"]) for s in starts) < 0.5, turn
    assert len(sample_transcript.utterances) == len(sample_truth)


def test_the_listener_who_never_speaks_has_no_words(sample_transcript):
    assert "user-dana" in [s.user_id for s in sample_transcript.speakers]
    assert [u for u in sample_transcript.utterances if u.speaker == "user-dana"] == []


def test_a_rejoining_user_is_one_speaker_across_both_files(sample_transcript):
    assert [s.display_name for s in sample_transcript.speakers] == [
        "Alice",
        "Bruno",
        "Chen",
        "Dana",
    ]
    bruno = [u for u in sample_transcript.utterances if u.speaker == "user-bruno"]
    assert [round(u.start) for u in bruno] == [6, 15, 40]  # first file, first file, second file


def test_utterances_are_in_time_order_and_real_overlaps_are_marked(sample_transcript):
    starts = [u.start for u in sample_transcript.utterances]
    assert starts == sorted(starts)
    marked = {(u.speaker, tuple(u.overlaps)) for u in sample_transcript.utterances if u.overlaps}
    assert marked == {("user-chen", ("user-bruno",)), ("user-bruno", ("user-chen",))}


def test_provenance_records_model_settings_and_the_exact_inputs(sample_transcript, sample_manifest):
    p = sample_transcript.provenance
    assert p.model == "bundled:tiny.en" and p.software.startswith("trackscribe")
    assert p.recording_id == sample_manifest.recording_id is not None  # which recording
    assert p.parameters["vad"]["aggressiveness"] == 2
    assert [(i.path, i.sha256) for i in p.inputs] == [
        (t.path, t.sha256) for t in sample_manifest.tracks
    ]
    assert p.failures == [] and not sample_transcript.partial
    # The weights that ran, by digest, and the versions of what decoded and transcribed.
    weights = Path(resolve_model(BUNDLED_MODEL)) / "model.bin"
    assert p.model_files["model.bin"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert {"config.json", "tokenizer.json", "vocabulary.txt"} <= p.model_files.keys()
    assert "libopus" in p.runtime and "faster-whisper" in p.runtime


def _rewrite(meeting, change):
    path = meeting / "manifest.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))
    return path


def test_a_missing_track_costs_only_that_track(meeting_copy, capsys):
    chen = next((meeting_copy / "tracks").glob("default_user-chen_*"))
    chen.unlink()
    transcript = transcribe_tracks(meeting_copy / "manifest.json")
    assert capsys.readouterr().err == ""  # no bars redrawn into a log nobody watches
    assert transcript.partial
    (failure,) = transcript.provenance.failures
    assert failure.user_id == "user-chen" and failure.path == f"tracks/{chen.name}"
    assert failure.reason == f"tracks/{chen.name}: file not found"  # wherever it was run from
    assert {u.speaker for u in transcript.utterances} == {"user-alice", "user-bruno"}


def test_the_provenance_says_where_a_track_lacks_audio(meeting_copy, sample_speech):
    # A network drop: the file's timestamps jump 2 s at 8 s in. The total was recorded, not
    # where, so no reviewer could tell which words were cut apart by it.
    alice = (
        meeting_copy / json.loads((meeting_copy / "manifest.json").read_text())["tracks"][0]["path"]
    )
    write_webm(alice, sample_speech, gaps={8.0: 2.0})

    def new_bytes(raw):
        raw["tracks"][0]["sha256"] = hashlib.sha256(alice.read_bytes()).hexdigest()
        raw["tracks"][0]["size"] = alice.stat().st_size

    transcript = transcribe_tracks(_rewrite(meeting_copy, new_bytes), progress=False)
    used = next(i for i in transcript.provenance.inputs if i.user_id == "user-alice")
    [(at, seconds)] = used.gaps
    assert at == pytest.approx(8.0, abs=0.03) and seconds == pytest.approx(2.0, abs=0.02)
    assert used.gap_seconds == pytest.approx(2.0, abs=0.02)


def test_a_speaker_on_a_microphone_wired_half_reversed_keeps_their_words(
    meeting_copy, sample_speech, sample_truth
):
    # Its two channels are one voice in opposite phase: mixed down as players mix them,
    # Alice vanished from the transcript, and nothing said she had been there.
    alice = (
        meeting_copy / json.loads((meeting_copy / "manifest.json").read_text())["tracks"][0]["path"]
    )
    write_webm(alice, sample_speech, channels=2, opposite=True)

    def new_bytes(raw):
        raw["tracks"][0]["sha256"] = hashlib.sha256(alice.read_bytes()).hexdigest()
        raw["tracks"][0]["size"] = alice.stat().st_size

    transcript = transcribe_tracks(_rewrite(meeting_copy, new_bytes), progress=False)
    for turn in sample_truth:
        assert _found(transcript, turn) >= 0.8, turn
    used = next(i for i in transcript.provenance.inputs if i.user_id == "user-alice")
    assert used.channels_opposite and not transcript.partial
    assert "channels  opposite in phase" in to_report(transcript)  # the bundle's provenance.txt
    assert not any(i.channels_opposite for i in transcript.provenance.inputs if i is not used)


def test_a_track_whose_start_is_days_off_costs_only_that_track(meeting_copy, sample_transcript):
    def clock_gone_wrong(raw):  # Alice's, the first track: it set the meeting's origin
        raw["tracks"][0]["started_time"] = "2026-11-17T10:00:00.000Z"

    transcript = transcribe_tracks(_rewrite(meeting_copy, clock_gone_wrong), progress=False)
    (failure,) = transcript.provenance.failures
    assert failure.user_id == "user-alice"
    assert failure.reason.startswith(
        f"{failure.path}: tracks[0].started_time 2026-11-17T10:00:00.000Z is more than a day "
        "from the middle track's"
    )
    assert transcript.partial
    assert format_utc(transcript.origin) == "2026-11-20T10:00:00.350Z"  # Bruno's start now
    others = [u for u in sample_transcript.utterances if u.speaker != "user-alice"]
    assert [(u.speaker, u.text) for u in transcript.utterances] == [
        (u.speaker, u.text) for u in others
    ]
    for mine, theirs in zip(transcript.utterances, others, strict=True):
        assert abs((mine.start_time - theirs.start_time).total_seconds()) < 0.05


def test_one_recording_listed_for_two_people_is_not_given_to_both(meeting_copy):
    raw = json.loads((meeting_copy / "manifest.json").read_text())
    alice = raw["tracks"][0]
    copy = f"tracks/copy-of-{Path(alice['path']).name}"
    shutil.copy(meeting_copy / alice["path"], meeting_copy / copy)
    raw["tracks"].append({**alice, "user_id": "user-eve", "display_name": "Eve", "path": copy})
    (meeting_copy / "manifest.json").write_text(json.dumps(raw))

    transcript = transcribe_tracks(meeting_copy / "manifest.json", progress=False)

    (failure,) = transcript.provenance.failures
    assert failure.user_id == "user-eve" and failure.path == copy
    assert failure.reason.startswith(f"{copy}: the same bytes as {alice['path']} (user-alice)")
    assert "user-eve" not in {u.speaker for u in transcript.utterances}
    assert "user-alice" in {u.speaker for u in transcript.utterances}


@pytest.mark.parametrize("cores", [None, 1], ids=["all cores", "one core"])
def test_a_file_that_kills_its_decoder_costs_only_that_track(
    meeting_copy, tmp_path, crashing_decoder_env, cores
):
    # Every process of the run, the workers' too, gets a decoder that crashes on one file.
    # The worker it kills takes down the tracks decoded beside it; they are done again, each
    # in a process of its own, and only the file that kills its decoder is lost. On one core
    # (a container's limit) there is one worker, but one all the same.
    crashing = Path(crash_first_track(meeting_copy))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "transcribe",
            str(meeting_copy / "manifest.json"),
            "-o",
            str(tmp_path / "out"),
            "--no-progress",
            "--formats",
            "json",
        ],
        env=crashing_decoder_env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=(lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
        if cores == 1
        else None,
    )
    assert run.returncode == 1, run.stderr  # partial
    assert "the process decoding it died" in run.stderr
    transcript = Transcript.load(tmp_path / "out" / "transcript.json")
    (failure,) = transcript.provenance.failures
    assert failure.path == f"tracks/{crashing.name}" and "died" in failure.reason
    assert {u.speaker for u in transcript.utterances} == {"user-bruno", "user-chen"}


def test_a_file_that_is_not_audio_is_reported_and_the_rest_transcribed(meeting_copy):
    alice = next((meeting_copy / "tracks").glob("default_user-alice_*"))
    alice.write_text("not audio at all\n" * 100)

    def drop_checksums(raw):
        for t in raw["tracks"]:
            t.pop("sha256"), t.pop("size")

    transcript = transcribe_tracks(_rewrite(meeting_copy, drop_checksums), progress=False)
    (failure,) = transcript.provenance.failures
    assert failure.user_id == "user-alice" and "not a readable audio file" in failure.reason
    assert {u.speaker for u in transcript.utterances} == {"user-bruno", "user-chen"}


def test_a_changed_file_is_refused_by_its_checksum(meeting_copy):
    alice = next((meeting_copy / "tracks").glob("default_user-alice_*"))
    shutil.copy(next((meeting_copy / "tracks").glob("default_user-dana_*")), alice)
    transcript = transcribe_tracks(meeting_copy / "manifest.json", progress=False)
    (failure,) = transcript.provenance.failures
    assert failure.user_id == "user-alice" and "the manifest says" in failure.reason
    assert "user-alice" not in {u.speaker for u in transcript.utterances}


def test_a_truncated_track_keeps_what_it_holds_and_says_where_it_broke(
    meeting_copy, sample_truth, caplog
):
    alice = next((meeting_copy / "tracks").glob("default_user-alice_*"))
    data = alice.read_bytes()
    alice.write_bytes(data[: len(data) // 2])

    def forget_checksum(raw):
        raw["tracks"][0].pop("sha256"), raw["tracks"][0].pop("size")

    transcript = transcribe_tracks(_rewrite(meeting_copy, forget_checksum), progress=False)
    assert transcript.partial and transcript.provenance.failures == []
    # Said in this process's log, though a decode worker found it.
    (warning,) = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert warning.name == "trackscribe.stages.decode" and warning.levelname == "WARNING"
    assert alice.name in warning.getMessage()
    (broken,) = [i for i in transcript.provenance.inputs if i.problem]
    assert broken.user_id == "user-alice" and "truncated" in broken.problem
    assert 20 < broken.decoded_seconds < 30
    first_turn = sample_truth[0]
    assert _found(transcript, first_turn) >= 0.8  # what came before the break is kept
    assert all(
        u.start < broken.decoded_seconds for u in transcript.utterances if u.speaker == "user-alice"
    )


def test_speech_too_quiet_for_the_transcript_is_listed_in_its_provenance(
    meeting_copy, sample_speech
):
    # A reviewer must be able to find what was heard and left out, not only leakage.
    speech = sample_speech[int(0.8 * 48_000) : int(5.3 * 48_000)]
    level = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2))
    quiet = np.concatenate([silence(2), speech * 10 ** ((-53 - level) / 20), silence(2)])
    write_webm(meeting_copy / "tracks" / "far.webm", quiet.astype(np.float32))

    def add_track(raw):
        raw["tracks"].append(
            {
                "user_id": "user-eve",
                "path": "tracks/far.webm",
                "started_time": "2026-11-20T10:01:00.000Z",
            }
        )

    transcript = transcribe_tracks(_rewrite(meeting_copy, add_track), progress=False)
    assert not [u for u in transcript.utterances if u.speaker == "user-eve"]
    (left_out,) = [d for d in transcript.provenance.dropped if d.user_id == "user-eve"]
    assert left_out.path == "tracks/far.webm" and 61 < left_out.start < left_out.end < 68
    assert left_out.reason.startswith("near-silence (audio at -5")
    assert "morning" in left_out.reason and left_out.attributed_to is None


def test_a_silent_track_adds_a_speaker_and_no_words(meeting_copy):
    write_webm(meeting_copy / "tracks" / "quiet.webm", silence(20))

    def add_track(raw):
        raw["tracks"].append(
            {
                "user_id": "user-eve",
                "path": "tracks/quiet.webm",
                "started_time": "2026-11-20T10:00:05.000Z",
            }
        )

    transcript = transcribe_tracks(_rewrite(meeting_copy, add_track), progress=False)
    assert "user-eve" in [s.user_id for s in transcript.speakers]
    assert not [u for u in transcript.utterances if u.speaker == "user-eve"]
    assert not transcript.partial


def test_an_invalid_manifest_is_an_error_naming_the_field(meeting_copy):
    path = _rewrite(meeting_copy, lambda raw: raw["tracks"][2].pop("user_id"))
    with pytest.raises(ManifestError, match=r"tracks\[2\]\.user_id: missing"):
        transcribe_tracks(path, progress=False)


def test_a_manifest_changed_in_place_since_it_was_read_is_checked_again_before_a_run(
    sample_manifest,
):
    # A notebook's object, its list of tracks changed in place: the same file twice would
    # have every word it holds said twice.
    twice = sample_manifest.model_copy(deep=True)
    twice.tracks.append(twice.tracks[0])
    with pytest.raises(ManifestError, match=r"tracks\[5\] is the same file as tracks\[0\]"):
        transcribe_tracks(twice, progress=False)
    with pytest.raises(ManifestError, match="List should have at least 1 item"):
        transcribe_tracks(twice.model_copy(update={"tracks": []}), progress=False)


def test_a_meeting_too_late_for_its_times_to_be_held_is_refused_before_any_work(meeting_copy):
    # The meeting's times run on past its starts; at the end of year 9999, past the last time
    # there is, the run failed after the whole transcription, on the first time it could not
    # hold. A month before that, it has room (a recording runs a day at most).
    def moved(latest: str):
        def change(raw):
            starts = [datetime.fromisoformat(t["started_time"]) for t in raw["tracks"]]
            shift = datetime.fromisoformat(latest) - max(starts)
            for track, start in zip(raw["tracks"], starts, strict=True):
                track["started_time"] = format_utc(start + shift)

        return change

    at_the_end = _rewrite(meeting_copy, moved("9999-12-31T23:59:58Z"))
    with pytest.raises(ManifestError, match=r"tracks\[0\]\.started_time: .*9999-12-3.* too late"):
        transcribe_tracks(at_the_end, progress=False)
    in_time = _rewrite(meeting_copy, moved("9999-11-30T23:59:59.999Z"))
    transcript = transcribe_tracks(in_time, progress=False)
    assert not transcript.partial and transcript.utterances[-1].end_time.year == 9999


def test_a_track_the_model_fails_on_is_listed_and_the_others_are_transcribed_once(
    meeting_copy, monkeypatch, capsys
):
    batches = []
    run_batch = Transcriber._run_batch

    def failing_on_chen(self, batch, tracks):
        source = tracks[batch[0].track][0].source.name
        batches.append((source, tuple(p.track_start for w in batch for p in w.pieces)))
        if "user-chen" in source:
            raise MemoryError("out of memory")  # what a model can raise on one track's batch
        return run_batch(self, batch, tracks)

    monkeypatch.setattr(Transcriber, "_run_batch", failing_on_chen)
    transcript = transcribe_tracks(meeting_copy / "manifest.json", progress=True)
    (failure,) = transcript.provenance.failures
    assert failure.user_id == "user-chen" and "MemoryError: out of memory" in failure.reason
    assert {u.speaker for u in transcript.utterances} == {"user-alice", "user-bruno"}
    assert len(batches) == len(set(batches))  # no track's batch decoded twice
    # The progress bar ends full (the run is over) and says that a track failed.
    last = capsys.readouterr().err.split("\r")[-1]
    assert last.startswith("transcribe: 100%") and "1 track failed" in last


_SCRATCH_OWNER = """
import sys, time
from pathlib import Path
from pipeline._scratch import scratch_folder

with scratch_folder(parent=Path(sys.argv[1])) as folder:
    (folder / "0.pcm").write_bytes(bytes(1000))
    print(folder, flush=True)
    time.sleep(600)
"""


def test_a_run_removes_the_scratch_folders_of_killed_runs_and_of_no_other(tmp_path):
    owner = subprocess.Popen(
        [sys.executable, "-c", _SCRATCH_OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        theirs = Path(owner.stdout.readline().strip())
        assert theirs.name.startswith("trackscribe-")
        unknown = tmp_path / "trackscribe-by-an-older-version"  # nothing says if it is in use
        unknown.mkdir()

        with scratch_folder(parent=tmp_path) as mine:  # while the other run is alive
            assert mine.is_dir() and (theirs / "0.pcm").exists()
        assert not mine.exists()
    finally:
        owner.kill()  # as kill -9 or the out-of-memory killer would: no cleanup of its own
        owner.wait()
    assert (theirs / "0.pcm").exists()
    elsewhere = tmp_path / "elsewhere"  # a link by that name leads out of the folder: not ours
    shutil.copytree(theirs, elsewhere)
    (tmp_path / "trackscribe-link").symlink_to(elsewhere)
    with scratch_folder(parent=tmp_path):
        assert not theirs.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "elsewhere",
        "trackscribe-by-an-older-version",
        "trackscribe-link",
    ]
    assert (elsewhere / "0.pcm").exists()


def test_a_stop_that_comes_as_the_scratch_folder_is_made_leaves_no_folder(tmp_path, monkeypatch):
    # A folder with no owner file yet is never taken for abandoned: left, it stays for good.
    make = os.mkdir

    def made_then_stopped(path: object, mode: int = 0o777, **kwargs: object) -> None:
        make(path, mode, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C, or a batch worker told to stop

    monkeypatch.setattr(os, "mkdir", made_then_stopped)
    with pytest.raises(KeyboardInterrupt), scratch_folder(parent=tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []


_KILLED_PARENT = """
import os, sys, threading, time
from pipeline.core import _analysis_pool

def pid_after(seconds):
    time.sleep(seconds)  # long enough for the other job to go to the other worker
    if sys.argv[1] == "ending":  # a thread the job left keeps the worker from ending
        threading.Thread(target=time.sleep, args=(600,)).start()
    return os.getpid()

if __name__ == "__main__":
    with _analysis_pool(tracks=2, workers=2) as workers:
        jobs = [workers.pool.submit(pid_after, 0.5) for _ in range(2)]
        pids = {job.result() for job in jobs}
        if sys.argv[1] == "ending":
            workers.pool.shutdown(wait=False)
            time.sleep(1)  # the workers are ending now
        print(*pids, flush=True)
        time.sleep(600)  # killed here, pool and all
"""


@pytest.mark.parametrize("when", ["idle", "ending"], ids=["idle", "ending but stuck"])
def test_decode_workers_stop_when_the_run_that_started_them_is_killed(tmp_path, when):
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_PARENT)
    run = subprocess.Popen([sys.executable, str(script), when], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in run.stdout.readline().split()]
    assert workers and run.pid not in workers
    run.kill()  # SIGKILL: no cleanup of its own runs
    run.wait()
    deadline = time.monotonic() + 8  # they wait 2 s for a reader at most (10 s before)
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"  # a zombie is gone but not reaped
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return False


def _interrupt_state(report, name: str) -> None:
    """In a child: whether Ctrl-C is blocked, and whether it is ignored."""
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    report.send((name, blocked, signal.getsignal(signal.SIGINT) == signal.SIG_IGN))


def test_a_ctrl_c_while_workers_start_waits_until_they_are_started_and_never_reaches_them():
    # A Ctrl-C reaches every process of the terminal's group: a fork server or worker still
    # starting printed a traceback, and this process, stopped while starting one, broke it.
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    with WorkerLink(context) as link, link.pool(1) as pool:
        with pytest.raises(KeyboardInterrupt), interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # were it not held, it would have been raised by now
            child = context.Process(target=_interrupt_state, args=(send, "process"))
            child.start()
            pool.submit(_interrupt_state, send, "worker").result(timeout=60)
            started = True
        assert started  # the Ctrl-C came only after everything in the block had run
        child.join()
        states = {
            name: (blocked, ignored) for name, blocked, ignored in (receive.recv(), receive.recv())
        }
        assert states["process"] == (True, False)  # started with Ctrl-C blocked
        assert states["worker"] == (False, True)  # once started: unblocked, and ignored


def test_a_sigterm_while_workers_start_waits_until_they_are_started():
    # Raised half-way through a start, the run ended before the pool knew of the worker, and
    # the worker, still reading what it was sent, printed the fork server's traceback.
    class Stopped(Exception):
        pass

    def stop(number, frame):
        raise Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped), interrupts_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # were it not held, it would have been raised by now
            finished = True
        assert finished
        assert signal.getsignal(signal.SIGTERM) is stop
    finally:
        signal.signal(signal.SIGTERM, previous)


_HALF_A_RESULT = """
import multiprocessing, os, struct
from pipeline._analysis import ready
from pipeline._worker import WorkerLink

if __name__ == "__main__":
    context = multiprocessing.get_context("forkserver")
    with WorkerLink(context) as link, link.pool(1) as pool:
        pool.submit(ready).result()
        # What a worker cut off in the middle of writing its result leaves: a length, and
        # less than that of the message.
        os.write(pool._result_queue._writer.fileno(), struct.pack("!i", 1000) + b"x")
        link.stop(pool)
    print("stopped")
"""


def test_a_pool_stopped_with_half_a_result_in_its_pipe_does_not_hang(tmp_path):
    # A stop (SIGTERM) that cut a worker off while it wrote its result hung the command for
    # good: the pool's reader waited for the rest of the message.
    script = tmp_path / "half_a_result.py"
    script.write_text(_HALF_A_RESULT)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert done.returncode == 0 and done.stdout == "stopped\n", done.stderr


def _ctrl_c_outside_and_inside_a_job() -> list[str]:

    os.kill(os.getpid(), signal.SIGINT)  # while no job runs: held back, no traceback
    time.sleep(0.1)
    outcomes = []
    for _ in range(2):
        try:
            with interruptible():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.1)
                outcomes.append("ran on")
        except KeyboardInterrupt:
            outcomes.append("stopped")
    os.kill(os.getpid(), signal.SIGINT)  # idle again
    time.sleep(0.1)
    return outcomes


def _job_that_cleans_up(marker: Path, cleaned: Path, records: int) -> None:
    with interruptible():
        marker.write_text("scratch audio")
        try:
            _under_way(marker).touch()  # a signal from now on finds the clean-up armed
            time.sleep(600)
        finally:
            time.sleep(0.5)  # a clean-up that takes a while: a second Ctrl-C must not cut it
            marker.unlink()
            cleaned.touch()
            for _ in range(records):
                logging.getLogger("trackscribe.tests").warning("cleaned up %s", marker.name)


def _cleaning_up_job(
    pool: ProcessPoolExecutor, marker: Path, cleaned: Path, records: int = 1
) -> Future:
    """:func:`_job_that_cleans_up` started in ``pool``, once it is under way; it logs
    ``records`` lines as it cleans up."""
    running = pool.submit(_job_that_cleans_up, marker, cleaned, records)
    deadline = time.monotonic() + 60
    # Not the marker itself: it exists as soon as it is opened, before the job is in its
    # `try`, and a signal then would find no clean-up to run.
    while not _under_way(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return running


def _under_way(marker: Path) -> Path:
    return marker.with_name(f"{marker.name}.under-way")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_that_reached_only_this_process_stops_the_workers_jobs_and_lets_them_clean_up(
    tmp_path, caplog, workers
):
    # SIGTERM from a service manager, `kill -INT` and a notebook's interrupt reach the parent
    # alone: its workers went on with their meetings (minutes, in a bench approach), or were
    # made to exit with their scratch audio left behind.
    caplog.set_level(logging.WARNING, logger="trackscribe")
    context = multiprocessing.get_context("spawn")
    marker, cleaned = tmp_path / "scratch", tmp_path / "cleaned"
    with WorkerLink(context, ignore_interrupt=False) as link, link.pool(workers) as pool:
        list(pool.map(time.sleep, [0.2] * workers))  # every worker started
        running = _cleaning_up_job(pool, marker, cleaned, records=2000)
        started = time.monotonic()
        link.stop(pool)
    assert time.monotonic() - started < 30  # not left running for ten minutes
    assert running.done()
    assert not marker.exists() and cleaned.exists()  # its clean-up ran, whole
    # What it logged meanwhile reached this process, all of it: the worker is ended in one
    # way only, after its records were sent (two at once cut the sending off).
    assert caplog.messages.count("cleaned up scratch") == 2000


def test_a_second_ctrl_c_does_not_break_off_a_jobs_clean_up(tmp_path):
    # At a terminal, Ctrl-C reaches the workers and the parent, which then tells them too.
    context = multiprocessing.get_context("spawn")
    marker, cleaned = tmp_path / "scratch", tmp_path / "cleaned"
    with WorkerLink(context, ignore_interrupt=False) as link, link.pool(1) as pool:
        worker = pool.submit(os.getpid).result(timeout=60)
        running = _cleaning_up_job(pool, marker, cleaned)
        os.kill(worker, signal.SIGINT)
        time.sleep(0.1)  # in its clean-up now
        os.kill(worker, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            running.result(timeout=60)
        assert not marker.exists() and cleaned.exists()
        assert pool.submit(os.getpid).result(timeout=60) == worker  # and it lives on


@pytest.mark.parametrize("second", [False, True], ids=["SIGTERM", "SIGTERM during a Ctrl-C"])
def test_a_worker_sent_sigterm_lets_its_job_clean_up_then_dies_as_lost(tmp_path, caplog, second):
    # A process pool sends SIGTERM to every worker as soon as one exits unasked, as each does
    # when the run stops: they died mid-clean-up, leaving scratch folders. Still a worker
    # lost (a batch does its meeting again), not a meeting interrupted, which stops a batch.
    caplog.set_level(logging.WARNING, logger="trackscribe")
    context = multiprocessing.get_context("spawn")
    marker, cleaned = tmp_path / "scratch", tmp_path / "cleaned"
    with WorkerLink(context, ignore_interrupt=False) as link, link.pool(1) as pool:
        worker = pool.submit(os.getpid).result(timeout=60)
        running = _cleaning_up_job(pool, marker, cleaned)
        if second:
            os.kill(worker, signal.SIGINT)
            time.sleep(0.1)  # in its clean-up now
        os.kill(worker, signal.SIGTERM)
        with pytest.raises(BrokenProcessPool):
            running.result(timeout=60)
    assert not marker.exists() and cleaned.exists()  # its clean-up ran, whole
    assert "cleaned up scratch" in caplog.messages  # and what it logged was not lost


@contextmanager
def _parent_logs_slowly(seconds_per_record: float) -> Iterator[None]:
    """This process writes our tests' records slowly (a log on a network share, say), so that
    a worker's last ones take seconds to send."""

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            time.sleep(seconds_per_record)

    slow = Slow()
    logging.getLogger("trackscribe.tests").addHandler(slow)
    try:
        yield
    finally:
        logging.getLogger("trackscribe.tests").removeHandler(slow)


def _log_records(count: int) -> int:
    for _ in range(count):
        logging.getLogger("trackscribe.tests").warning("one of many")
    return os.getpid()


@pytest.mark.parametrize("when", ["idle", "ending"], ids=["idle", "as its pool shuts down"])
def test_a_worker_sent_sigterm_sends_what_it_logged_first(caplog, when):
    # A worker sends its last records as it ends, for as long as that takes. SIGTERM (from
    # the pool, as a batch stops) ended it half-way through, after 2 or 3 s, the queue's
    # lock taken: the rest was lost, and the parent waited 5 s for it in vain.
    caplog.set_level(logging.WARNING, logger="trackscribe")
    context = multiprocessing.get_context("spawn")
    with (
        _parent_logs_slowly(0.0005),
        WorkerLink(context, ignore_interrupt=False) as link,
        link.pool(1) as pool,
    ):
        worker = pool.submit(_log_records, 8000).result(timeout=60)
        shutting_down = threading.Thread(target=pool.shutdown)  # waits for the worker
        if when == "ending":
            shutting_down.start()
            time.sleep(0.3)  # it is ending now, sending
        os.kill(worker, signal.SIGTERM)
        if when == "ending":
            shutting_down.join()
    assert caplog.messages.count("one of many") == 8000


def _log_then_wait(count: int) -> None:
    _log_records(count)
    time.sleep(600)  # decoding a long track, say


def _wait_for_records_from(caplog, workers: int) -> None:
    """Until records have come from ``workers`` processes (a loaded machine takes seconds to
    import a test module in a new one)."""
    deadline = time.monotonic() + 60
    while len({record.process for record in caplog.records}) < workers:
        assert time.monotonic() < deadline, "the workers never logged"
        time.sleep(0.05)


def test_decode_workers_that_a_stop_ends_send_what_they_logged_first(caplog):
    # Decode workers leave Ctrl-C to the run. When it stops, the first to exit makes the pool
    # send SIGTERM to the others, which died of it mid-way through sending their records.
    caplog.set_level(logging.WARNING, logger="trackscribe")
    context = multiprocessing.get_context("spawn")
    with _parent_logs_slowly(0.001), WorkerLink(context) as link, link.pool(2) as pool:
        list(pool.map(time.sleep, [0.2, 0.2]))  # both started
        for _ in range(2):
            pool.submit(_log_then_wait, 1500)
        _wait_for_records_from(caplog, workers=2)  # both have logged, and wait
        link.stop(pool)
    assert caplog.messages.count("one of many") == 3000


def test_a_worker_that_ctrl_c_stops_takes_it_only_while_it_runs_a_job():
    # an idle batch worker has nothing to stop: it printed a traceback and broke the pool

    context = multiprocessing.get_context("spawn")
    with WorkerLink(context, ignore_interrupt=False) as link, link.pool(1) as pool:
        # the first job stops at once for the Ctrl-C held back; the second on its own
        assert pool.submit(_ctrl_c_outside_and_inside_a_job).result(timeout=60) == [
            "stopped",
            "stopped",
        ]
        assert pool.submit(os.getpid).result(timeout=60)  # the worker lives on


def test_workers_send_what_any_of_our_loggers_would_keep(caplog):

    caplog.set_level(logging.WARNING, logger="trackscribe")  # each restored after the test
    caplog.set_level(logging.NOTSET, logger="trackscribe.stages.decode")
    assert lowest_level() == logging.WARNING  # nothing below that would be kept

    caplog.set_level(logging.DEBUG, logger="trackscribe.stages.decode")
    assert lowest_level() == logging.DEBUG  # a decode worker's debug lines are wanted


def test_a_model_loaded_with_other_settings_than_the_options_is_refused(sample_manifest):
    # provenance and checkpoints are written from the options: they must name what ran
    loaded = Transcriber(TranscribeOptions(beam_size=1))
    with pytest.raises(ValueError, match=r"beam_size 1 \(asked: 5\)"):
        run_meeting(sample_manifest, transcriber=loaded, progress=False)
    threads_apart = Transcriber(TranscribeOptions(cpu_threads=1))  # runtime only: any will do
    run = run_meeting(sample_manifest, transcriber=threads_apart, progress=False)
    assert run.transcript.provenance.parameters["transcribe"]["beam_size"] == 5


def test_the_time_spent_starting_the_decode_workers_is_counted_in_the_wall_time(
    sample_manifest,
):
    # It was counted nowhere: not in the model load, not in any stage.
    loaded = Transcriber(TranscribeOptions())  # given: no load to overlap the start with
    stats = run_meeting(sample_manifest, transcriber=loaded, workers=2, progress=False).stats
    assert stats.model_load_s == 0 and stats.workers_start_s > 0
    parts = ("workers_start_s", "analyse_s", "attribute_s", "transcribe_s", "merge_s")
    assert stats.wall_s == pytest.approx(sum(getattr(stats, part) for part in parts))


def test_the_decode_workers_start_while_the_model_loads(sample_manifest, monkeypatch):
    import pipeline.core

    real = Transcriber(TranscribeOptions())
    began: dict[str, float] = {}
    pool = pipeline.core._analysis_pool

    def slow_load(options: TranscribeOptions) -> Transcriber:
        began["load"] = time.perf_counter()
        time.sleep(3)  # a large model's load
        return real

    @contextmanager
    def timed_pool(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with pool(*args, **kwargs) as workers:
            began["ready"] = time.perf_counter()
            yield workers

    monkeypatch.setattr(pipeline.core, "Transcriber", slow_load)
    monkeypatch.setattr(pipeline.core, "_analysis_pool", timed_pool)
    stats = run_meeting(sample_manifest, workers=2, progress=False).stats
    assert began["load"] < began["ready"]  # the load began before the workers were ready
    assert stats.model_load_s >= 3
    assert stats.workers_start_s == 0  # the workers were ready before the model was


def test_ctrl_c_while_the_model_loads_does_not_wait_for_the_load(sample_manifest, monkeypatch):
    import pipeline.core

    release, finished = threading.Event(), threading.Event()

    def endless_load(options: TranscribeOptions) -> Transcriber:
        release.wait(120)  # CTranslate2's load cannot be interrupted
        finished.set()
        raise RuntimeError("released")

    monkeypatch.setattr(pipeline.core, "Transcriber", endless_load)
    threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_meeting(sample_manifest, workers=2, progress=False)
        assert time.perf_counter() - started < 30 and not finished.is_set()
    finally:
        release.set()


def test_a_model_that_cannot_load_stops_the_run_with_its_own_error(sample_manifest, tmp_path):
    # Loaded on a thread of its own: its error is raised here, as if it had loaded here.
    options = {"transcribe": {"model": str(tmp_path / "nowhere")}}
    with pytest.raises(ModelError, match=r"cannot load model '.*nowhere': no such folder"):
        run_meeting(sample_manifest, options=options, workers=2, progress=False)


@pytest.mark.parametrize(
    ("options", "misspelt"),
    [
        ({"transcribe": {"beamsize": 1}}, "beamsize"),
        ({"vadd": {"aggressiveness": 3}}, "vadd"),
        ({"vad": {"aggressivenes": 3}}, "aggressivenes"),
    ],
)
def test_a_misspelt_setting_is_refused_by_name_instead_of_running_with_the_default(
    sample_manifest, options, misspelt
):
    # In a notebook, a setting that is quietly ignored is an experiment that measured nothing.
    with pytest.raises(ValueError, match=misspelt):
        transcribe_tracks(sample_manifest, options=options, progress=False)
    with pytest.raises(ValueError, match="api_tokn"):
        ApiSettings(api_tokn="secret")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"progress": "no"}, "progress must be True, False or None, not 'no'"),
        ({"workdir": "/nonexistent/scratch"}, "workdir /nonexistent/scratch: no such folder"),
        ({"workdir": __file__}, f"workdir {__file__}: is not a folder"),
        ({"manifest": 42}, "manifest must be a Manifest, or the path of a manifest.json or "),
    ],
)
def test_arguments_that_would_be_misread_are_refused_before_any_work(
    sample_manifest, arguments, message, monkeypatch
):
    monkeypatch.setattr(Transcriber, "__init__", _no_model_needed)
    with pytest.raises((TypeError, OSError), match=message):
        transcribe_tracks(**({"manifest": sample_manifest} | arguments))


def test_a_notebook_is_offered_the_public_names_and_only_those():
    import pipeline

    public = [name for name in dir(pipeline) if not name.startswith("_")]
    assert public == sorted(pipeline.__all__)
    assert all(getattr(pipeline, name) is not None for name in public)


def _no_model_needed(self, *args, **kwargs):
    raise AssertionError("the arguments were not checked first")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stderr", "kernel", "asked", "drawn"),
    [
        (_Terminal(), False, None, True),  # someone watches a terminal
        (io.StringIO(), False, None, False),  # a log file: nobody watches the redraws
        (io.StringIO(), True, None, True),  # a notebook: no terminal, but it shows bars
        (None, False, None, False),  # pythonw, a service: no stderr at all
        (io.StringIO(), False, True, True),  # asked for, drawn anyway
        (_Terminal(), True, False, False),  # asked not to, never drawn
    ],
)
def test_progress_bars_are_drawn_where_someone_watches(monkeypatch, stderr, kernel, asked, drawn):
    monkeypatch.setattr(sys, "stderr", stderr)
    if kernel:
        monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    else:
        monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert bars_wanted(asked) is drawn
