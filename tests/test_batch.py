"""Batch runs: every meeting in its own folder, resumable after anything, the same everywhere."""

import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import av
import pytest
from pydantic import SecretStr

from models import (
    BatchSummary,
    Job,
    JobsError,
    Manifest,
    MeetingResult,
    PcmAudio,
    RetryPolicy,
    Transcript,
    WriteError,
    load_jobs,
    sha256_file,
    temporary_file_for,
)
from pipeline import PipelineOptions, SigningKey, run_batch, verify
from pipeline._dask_runner import dask_outcome, on_dask
from pipeline.batch import _on_processes, _Work, process_meeting
from pipeline.checkpoint import Checkpoints
from pipeline.cli import main
from pipeline.config import ApiSettings
from pipeline.emulator import Emulator, EmulatorOptions
from stages.fetch import FetchOptions
from stages.merge import MergeOptions
from stages.transcribe import BUNDLED_MODEL, ModelError, TranscribeOptions, resolve_model

from .conftest import HalfStored, crash_first_track, serving, write_key


@pytest.fixture(scope="module")
def meetings(tmp_path_factory, sample_dir) -> Path:
    """A JOBS file of three meetings: the sample, two of its participants alone, and the
    sample again under another name."""
    root = tmp_path_factory.mktemp("meetings")
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    pair = root / "pair"
    (pair / "tracks").mkdir(parents=True)
    manifest["tracks"] = [
        t for t in manifest["tracks"] if t["user_id"] in ("user-alice", "user-chen")
    ]
    for track in manifest["tracks"]:
        shutil.copy(sample_dir / track["path"], pair / track["path"])
    (pair / "manifest.json").write_text(json.dumps(manifest))
    jobs = root / "jobs.jsonl"
    jobs.write_text(
        "\n".join(
            json.dumps(job)
            for job in (
                {"id": "sample", "manifest": str(sample_dir / "manifest.json")},
                {"id": "pair", "manifest": "pair/manifest.json"},
                {"id": "again", "manifest": str(sample_dir / "manifest.json")},
            )
        )
        + "\n"
    )
    return jobs


@pytest.fixture(scope="module")
def reference(meetings, tmp_path_factory) -> Path:
    """The batch run once, uninterrupted, one meeting after another."""
    out = tmp_path_factory.mktemp("reference")
    summary = run_batch(meetings, out, progress=False)
    assert [m.status for m in summary.meetings] == ["done", "done", "done"]
    return out


def transcripts(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(out.glob("*/transcript.json"))}


def journal(out: Path, event: str) -> Counter:
    counts: Counter = Counter()
    for path in out.glob("*/.work/journal.jsonl"):
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill

            if entry["event"] == event:
                counts[(path.parent.parent.name, entry["key"])] += 1
    return counts


def test_each_meeting_gets_its_folder_and_the_summary_says_how_it_went(reference):
    summary = BatchSummary.load(reference / "summary.json")
    assert [m.job for m in summary.meetings] == ["sample", "pair", "again"]
    for meeting in summary.meetings:
        assert meeting.duration_s == pytest.approx(50.8, abs=1)
        assert meeting.realtime_factor and meeting.realtime_factor > 1
        assert (reference / meeting.job / "transcript.vtt").exists()
    pair = Transcript.load(reference / "pair" / "transcript.json")
    assert {s.user_id for s in pair.speakers} == {"user-alice", "user-chen"}
    assert transcripts(reference)["sample"] == transcripts(reference)["again"]


def test_a_rerun_redoes_nothing_and_a_changed_setting_only_what_it_changes(
    meetings, tmp_path, caplog
):
    out = tmp_path / "out"
    shutil.copytree(meetings.parent / "pair", tmp_path / "pair")
    jobs = [j for j in load_jobs(meetings) if j.id == "pair"]
    run_batch(jobs, out, progress=False)
    pair_transcript = Transcript.load(out / "pair" / "transcript.json")
    again = run_batch(jobs, out, progress=False)
    assert again.meetings[0].reused
    vtt = (out / "pair" / "transcript.vtt").read_bytes()
    (out / "pair" / "transcript.vtt").unlink()  # an output deleted by hand is made again,
    remade = run_batch(jobs, out, progress=False)
    assert (out / "pair" / "transcript.vtt").read_bytes() == vtt
    assert remade.meetings[0].reused  # from the transcript kept: no audio, no model
    # So is one damaged (cut short by a full disk) or edited since, which is said.
    (out / "pair" / "transcript.vtt").write_bytes(vtt[:100])
    (out / "pair" / "transcript.json").write_text("edited by hand\n")
    mended = run_batch(jobs, out, progress=False)
    assert mended.meetings[0].reused and (out / "pair" / "transcript.vtt").read_bytes() == vtt
    assert Transcript.load(out / "pair" / "transcript.json") == pair_transcript
    for name in ("transcript.vtt", "transcript.json"):
        assert f"{name}: changed since it was written; written again" in caplog.text

    # Other formats are written from it too; those no longer asked for are taken away.
    run_batch(jobs, out, formats=["json", "txt"], progress=False)
    assert sorted(p.name for p in (out / "pair").glob("transcript.*")) == [
        "transcript.json",
        "transcript.txt",
    ]
    run_batch(jobs, out, formats=["srt"], progress=False)
    assert [p.name for p in (out / "pair").glob("transcript.*")] == ["transcript.srt"]
    back = run_batch(jobs, out, progress=False)
    assert back.meetings[0].reused and (out / "pair" / "transcript.vtt").read_bytes() == vtt
    for work in ("analysed", "transcribed"):  # nothing redone: once each, in the first run
        assert set(journal(out, work).values()) == {1}
    assert sum(journal(out, "exported").values()) == 6  # when made, then from the kept one

    merged = PipelineOptions(merge=MergeOptions(join_gap=0.2))
    caplog.clear()
    changed = run_batch(jobs, out, options=merged, progress=False)
    assert not changed.meetings[0].reused
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1  # one line for the whole meeting, not one per file
    assert "inputs or settings changed, so it is done again; removed the earlier" in said[0]
    assert "transcript.json" in said[0] and "transcript.vtt" in said[0]
    assert all(n == 1 for n in journal(out, "transcribed").values())  # merge only: no model
    assert all(n == 1 for n in journal(out, "analysed").values())

    beam = PipelineOptions(transcribe=TranscribeOptions(beam_size=1))
    run_batch(jobs, out, options=beam, progress=False)
    assert len(journal(out, "transcribed")) == 4  # each track twice, once per beam size
    assert all(n == 1 for n in journal(out, "analysed").values())  # decoding kept


def test_the_same_model_installed_again_redoes_nothing(meetings, tmp_path, caplog):
    # pip stamps a model's files with the install time: a venv built again (or another
    # machine of a Dask cluster) has the same model, and every finished meeting was redone.
    model = tmp_path / "model"
    shutil.copytree(resolve_model(BUNDLED_MODEL), model)
    options = PipelineOptions(transcribe=TranscribeOptions(model=str(model)))
    shutil.copytree(meetings.parent / "pair", tmp_path / "pair")
    jobs = [j for j in load_jobs(meetings) if j.id == "pair"]
    run_batch(jobs, tmp_path / "out", options=options, progress=False)
    later = time.time_ns() + 3600 * 10**9
    for path in model.iterdir():
        os.utime(path, ns=(later, later))
    again = run_batch(jobs, tmp_path / "out", options=options, progress=False)
    assert again.meetings[0].reused
    assert "changed" not in caplog.text


def test_the_same_model_at_another_path_redoes_nothing(meetings, tmp_path):
    # Its name or path was in the keys beside what it is: the bundled model copied elsewhere
    # re-transcribed every track, and withdrew every transcript before that.
    model = tmp_path / "model"
    shutil.copytree(resolve_model(BUNDLED_MODEL), model)
    jobs, out = tmp_path / "jobs.csv", tmp_path / "out"
    jobs.write_text(f"id,manifest\npair,{meetings.parent / 'pair' / 'manifest.json'}\n")
    run_batch(jobs, out, progress=False)
    made = transcripts(out)

    command = ["batch", str(jobs), "-o", str(out), "--model", str(model), "--no-progress"]
    assert main(command) == 0
    assert BatchSummary.load(out / "summary.json").meetings[0].reused
    assert transcripts(out) == made
    # Merged again for another setting, each track's segments are taken as they were.
    options = {"transcribe": {"model": str(model)}, "merge": {"join_gap": 0.2}}
    assert not run_batch(jobs, out, options=options, progress=False).meetings[0].reused
    assert set(journal(out, "transcribed").values()) == {1}


def test_other_code_of_the_same_version_number_redoes_the_work(meetings, tmp_path, monkeypatch):
    # A checkout of another commit says "0.1.0" too: what the code made must not be taken
    # for this code's, neither from the checkpoints nor as the finished meeting.
    import pipeline.core

    out = tmp_path / "out"
    jobs = [j for j in load_jobs(meetings) if j.id == "pair"]
    first = run_batch(jobs, out, progress=False)
    made_by = Transcript.load(out / "pair" / "transcript.json").provenance.software
    assert made_by == pipeline.core.software_version() and "(code " in made_by

    monkeypatch.setattr(pipeline.core, "_code_digest", lambda: "0" * 12)
    again = run_batch(jobs, out, progress=False)
    assert first.meetings[0].status == again.meetings[0].status == "done"
    assert not again.meetings[0].reused
    assert set(journal(out, "analysed").values()) == {2}  # each track again, audio and all
    remade = Transcript.load(out / "pair" / "transcript.json").provenance.software
    assert remade.endswith("(code 000000000000)")


def test_a_manifest_that_can_no_longer_be_read_leaves_no_transcript_looking_current(
    meetings, tmp_path, caplog
):
    shutil.copytree(meetings.parent / "pair", tmp_path / "pair")
    manifest = tmp_path / "pair" / "manifest.json"
    jobs, out = [Job(id="pair", manifest=manifest)], tmp_path / "out"
    run_batch(jobs, out, progress=False)
    good = manifest.read_text()
    raw = json.loads(good)
    raw["tracks"][0]["sha_256"] = "x"  # edited since, and wrongly
    manifest.write_text(json.dumps(raw))

    failed = run_batch(jobs, out, progress=False)
    assert failed.meetings[0].status == "failed" and "sha_256" in failed.meetings[0].reason
    assert not list((out / "pair").glob("transcript.*"))
    assert not (out / "pair" / "done.json").exists()
    assert any(
        "can no longer be read; removed the earlier" in r.getMessage() for r in caplog.records
    )

    manifest.write_text(good)  # put right: made again, from the audio kept
    again = run_batch(jobs, out, progress=False)
    assert again.meetings[0].status == "done" and (out / "pair" / "transcript.vtt").exists()


def test_inputs_gone_since_a_meeting_was_done_keep_what_was_made_of_them(
    meetings, tmp_path, monkeypatch
):
    # A retention policy pruned a track, or the share is not mounted: gone is not changed,
    # and an unattended re-run must not withdraw the transcript, or redo it without them.
    shutil.copytree(meetings.parent / "pair", tmp_path / "pair")
    manifest = tmp_path / "pair" / "manifest.json"
    jobs, out = [Job(id="pair", manifest=manifest)], tmp_path / "out"
    run_batch(jobs, out, progress=False)
    made = transcripts(out)
    track = tmp_path / "pair" / json.loads(manifest.read_text())["tracks"][0]["path"]
    audio = track.read_bytes()

    # Unreadable for a moment (a share's permissions; root reads anything, so it is made so
    # where the batch reads a file's bytes): it was taken for changed, and the transcript
    # withdrawn and made again without that track, partial.
    def refused(path, *args):
        if Path(path) == track:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return sha256_file(path, *args)

    with monkeypatch.context() as patched:
        patched.setattr("pipeline.batch.sha256_file", refused)
        unreadable = run_batch(jobs, out, progress=False).meetings[0]
    assert (unreadable.status, unreadable.reused) == ("done", True)
    assert f"{track.relative_to(tmp_path / 'pair')}: cannot be read now (Permission denied)" in (
        unreadable.reason
    )
    assert transcripts(out) == made

    track.unlink()
    pruned = run_batch(jobs, out, progress=False).meetings[0]
    (tmp_path / "pair").rename(tmp_path / "unmounted")
    unmounted = run_batch(jobs, out, progress=False).meetings[0]

    for result, gone in ((pruned, track.name), (unmounted, "manifest")):
        assert (result.status, result.reused) == ("done", True)
        assert gone in result.reason and "earlier is kept" in result.reason
    kept = [e for e in journal_lines(out / "pair") if e["event"] == "kept"]
    assert len(kept) == 3 and "manifest" in kept[-1]["why"] and track.name in kept[-2]["why"]
    assert transcripts(out) == made and len(list((out / "pair").glob("transcript.*"))) == 5
    # A job pointed since at a manifest that is not there asks for something else.
    elsewhere = [Job(id="pair", manifest=tmp_path / "typo" / "manifest.json")]
    assert run_batch(elsewhere, out, progress=False).meetings[0].status == "failed"
    assert not (out / "pair" / "transcript.json").exists()
    # Back, but changed: that is new input, and the meeting is done again.
    (tmp_path / "unmounted").rename(tmp_path / "pair")
    track.write_bytes(audio[: len(audio) // 2])
    redone = run_batch(jobs, out, progress=False).meetings[0]
    assert (redone.status, redone.reused) == ("partial", False)


def journal_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / ".work" / "journal.jsonl").open()]


def test_the_journal_tells_what_became_of_each_transcript(meetings, tmp_path):
    # It listed each track's work alone: a run that withdrew a transcript and made another
    # (display names changed), or kept one whose input was gone, wrote nothing of it.
    manifest = meetings.parent / "pair" / "manifest.json"
    out, folder = tmp_path / "out", tmp_path / "out" / "pair"
    run_batch([Job(id="pair", manifest=manifest)], out, progress=False)
    before = json.loads((folder / "done.json").read_text())["key"]
    written = len(journal_lines(folder))

    named = Job(id="pair", manifest=manifest, names={"user-alice": "Alice Smith"})
    run_batch([named], out, progress=False)

    story = journal_lines(folder)[written:]
    assert [e["event"] for e in story] == ["withdrawn", "merged", "exported"]
    withdrawn, merged, exported = story
    assert withdrawn["key"] == before
    assert withdrawn["why"] == "its inputs or settings changed, so it is done again"
    assert sorted(withdrawn["files"]) == sorted(p.name for p in folder.glob("transcript.*"))
    key = json.loads((folder / "done.json").read_text())["key"]
    made = sha256_file(folder / "transcript.json")
    assert (merged["key"], merged["sha256"]) == (key, made)
    assert (exported["key"], exported["sha256"], exported["signed_by"]) == (key, made, None)
    assert exported["formats"] == ["json", "seglst", "srt", "txt", "vtt"]


def test_a_work_folder_made_a_file_by_hand_is_named_as_not_a_folder(meetings, tmp_path):
    out = tmp_path / "out"
    (out / "pair").mkdir(parents=True)
    (out / "pair" / ".work").write_text("")
    jobs = [j for j in load_jobs(meetings) if j.id == "pair"]
    result = run_batch(jobs, out, progress=False).meetings[0]
    assert result.status == "failed"
    assert f"{out / 'pair' / '.work'} is not a folder" in result.reason


def test_a_track_left_out_for_its_start_is_not_read_and_its_bytes_redo_nothing(
    meeting_copy, tmp_path
):
    manifest = meeting_copy / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["tracks"][0]["started_time"] = "2026-11-17T10:00:00.000Z"  # Alice's clock gone wrong
    manifest.write_text(json.dumps(raw))
    jobs, out = [Job(id="m", manifest=manifest)], tmp_path / "out"
    first = run_batch(jobs, out, progress=False)
    assert first.meetings[0].status == "partial"
    (meeting_copy / raw["tracks"][0]["path"]).write_bytes(b"not even audio")
    again = run_batch(jobs, out, progress=False)
    assert again.meetings[0].reused  # the run never reads that file: nothing to do again


def test_a_model_that_cannot_be_loaded_keeps_every_finished_transcript(meetings, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(meetings.parent / "pair", tmp_path / "pair")
    jobs = [j for j in load_jobs(meetings) if j.id == "pair"]
    run_batch(jobs, out, progress=False)
    before = sorted(p.name for p in (out / "pair").iterdir())

    # A mistyped path stops the batch before any meeting, with one error.
    mistyped = PipelineOptions(transcribe=TranscribeOptions(model=str(tmp_path / "no-model")))
    with pytest.raises(ModelError, match="no such folder"):
        run_batch(jobs, out, options=mistyped, progress=False)
    # So does a folder that is not a whole model.
    (tmp_path / "empty").mkdir()
    empty = PipelineOptions(transcribe=TranscribeOptions(model=str(tmp_path / "empty")))
    with pytest.raises(ModelError, match="not a whole CTranslate2 Whisper model"):
        run_batch(jobs, out, options=empty, progress=False)
    # A model whose weights are damaged fails each meeting, and takes nothing of it away.
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (damaged / name).symlink_to(Path(resolve_model(BUNDLED_MODEL)) / name)
    (damaged / "model.bin").write_bytes(b"not weights")
    broken = PipelineOptions(transcribe=TranscribeOptions(model=str(damaged)))
    summary = run_batch(jobs, out, options=broken, progress=False)
    assert summary.meetings[0].status == "failed"
    assert summary.meetings[0].reason.startswith("cannot load model")
    assert sorted(p.name for p in (out / "pair").iterdir()) == before
    assert run_batch(jobs, out, progress=False).meetings[0].reused  # still current


def test_a_notebook_may_give_jobs_and_options_as_dicts_and_one_format_by_its_name(
    meetings, tmp_path
):
    shutil.copytree(meetings.parent / "pair", tmp_path / "pair")
    job = {"id": "pair", "manifest": str(tmp_path / "pair" / "manifest.json")}

    summary = run_batch(
        [job], tmp_path / "out", options={"merge": {"join_gap": 0.5}}, formats="txt", progress=False
    )

    assert [m.status for m in summary.meetings] == ["done"]
    assert (tmp_path / "out" / "pair" / "transcript.txt").exists()
    assert not (tmp_path / "out" / "pair" / "transcript.vtt").exists()
    # The dict was taken as these settings: asked for so again, the meeting is already done.
    asked = PipelineOptions(merge=MergeOptions(join_gap=0.5))
    assert asked != PipelineOptions()
    again = run_batch([job], tmp_path / "out", options=asked, formats=["txt"], progress=False)
    assert again.meetings[0].reused


@pytest.mark.parametrize(
    ("given", "refused"),
    [
        ({"formats": "docx"}, r"unknown format\(s\) docx; known: json"),
        ({"formats": ["json", "docx"]}, r"unknown format\(s\) docx"),
        ({"options": {"merge": {"join_gap_s": 1}}}, "join_gap_s"),
        ({"jobs": [{"id": "x"}]}, "job 1: .*give exactly one of manifest"),
        ({"jobs": {"id": "x"}}, "a list of jobs, not dict"),
    ],
)
def test_a_batch_that_cannot_work_as_asked_is_refused_before_any_meeting(
    meetings, tmp_path, given, refused
):
    # Found only after transcribing every meeting, each would have failed in turn.
    shutil.copytree(meetings.parent / "pair", tmp_path / "pair")
    jobs = [{"id": "pair", "manifest": str(tmp_path / "pair" / "manifest.json")}]
    arguments = {"jobs": jobs, "out": tmp_path / "out", "progress": False} | given
    with pytest.raises((ValueError, TypeError), match=refused):
        run_batch(**arguments)
    assert not (tmp_path / "out" / "pair").exists()


def test_a_manifest_given_another_recording_id_is_not_answered_with_the_old_provenance(
    meetings, tmp_path
):
    out = tmp_path / "out"
    shutil.copytree(meetings.parent / "pair", tmp_path / "pair")
    manifest = tmp_path / "pair" / "manifest.json"
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "pair", "manifest": str(manifest)}) + "\n")
    run_batch(jobs, out, progress=False)
    raw = json.loads(manifest.read_text())
    raw["recording_id"] = "rec-corrected"
    manifest.write_text(json.dumps(raw))
    again = run_batch(jobs, out, progress=False)
    assert not again.meetings[0].reused
    transcript = Transcript.load(out / "pair" / "transcript.json")
    assert transcript.provenance.recording_id == "rec-corrected"
    assert set(journal(out, "transcribed").values()) == {1}  # the tracks' work is kept


def unfinished(path: Path) -> Path:
    """The temporary file a writer of ``path`` killed mid-write leaves."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = temporary_file_for(path)
    os.write(fd, b"half")
    os.close(fd)
    return name


def test_what_a_killed_run_left_half_written_is_removed_even_from_a_finished_meeting(
    meetings, tmp_path
):
    out = tmp_path / "out"
    jobs = [j for j in load_jobs(meetings) if j.id == "pair"]
    run_batch(jobs, out, progress=False)
    folder = out / "pair"
    # What `kill -9` during the writes leaves: temporary files, never renamed into place.
    half = [
        unfinished(out / "summary.json"),
        unfinished(folder / "transcript.json"),
        unfinished(folder / "recording" / "manifest.json"),
        unfinished(folder / ".work" / "vad" / "0123abcd.npz"),
        unfinished(folder / ".work" / "transcribe" / "0123abcd.json"),
        unfinished(folder / ".work" / "decode" / "0123abcd.pcm"),
    ]
    download = folder / "recording" / "tracks" / ".alice.webm.part"  # resumed, so kept
    theirs = out / ".notes.txt.12345678.part"  # OUT may hold the user's own files
    for path in (download, theirs):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")

    again = run_batch(jobs, out, progress=False)

    assert again.meetings[0].reused
    assert [p for p in half if p.exists()] == []
    assert download.exists() and theirs.exists()


def test_a_summary_that_cannot_be_written_stops_no_meeting(
    meetings, reference, tmp_path, monkeypatch
):
    # A full disk, say, when the first result is recorded: the meetings after it still run
    # (they may fit once it has room), and the summary's loss is the run's error at the end.
    out = tmp_path / "out"
    save, saves = BatchSummary.save, []

    def full_after_the_first(summary, path):
        saves.append(path)
        if len(saves) > 1:
            raise WriteError(errno.ENOSPC, "No space left on device", str(path))
        return save(summary, path)

    monkeypatch.setattr(BatchSummary, "save", full_after_the_first)
    with pytest.raises(WriteError, match=r"summary\.json"):
        run_batch(meetings, out, progress=False)
    assert transcripts(out) == transcripts(reference)


def test_a_summary_that_cannot_be_written_at_all_stops_the_run_before_any_work(meetings, tmp_path):
    out = tmp_path / "out"
    (out / "summary.json").mkdir(parents=True)  # in the way of every write of it
    with pytest.raises(WriteError, match=r"summary\.json"):
        run_batch(meetings, out, progress=False)
    assert [p.name for p in out.iterdir() if p.name != ".work"] == ["summary.json"]  # none begun


def test_an_output_folder_that_is_a_file_is_named_as_the_writes_failure(meetings, tmp_path):
    # It was Python's own FileExistsError, "File exists", where a WriteError was promised.
    out = tmp_path / "out"
    out.write_text("a file, not a folder\n")
    with pytest.raises(WriteError, match=rf"summary\.json: cannot write: {out} is not a folder"):
        run_batch(meetings, out, progress=False)


def test_a_meeting_that_fails_gives_back_its_decoded_audio(meetings, tmp_path, monkeypatch):
    # Decoded audio is large and cheap to make again. Kept by a meeting that failed for want
    # of disk space, it would fail every meeting after it for the same want.
    def disk_full(*args, **kwargs):
        raise WriteError(errno.ENOSPC, "No space left on device", "segments")

    monkeypatch.setattr("pipeline.core._transcribe", disk_full)
    summary = run_batch(meetings, tmp_path / "out", progress=False)
    assert {m.status for m in summary.meetings} == {"failed"}
    assert "No space left on device" in summary.meetings[0].reason
    assert list((tmp_path / "out").glob("*/.work/decode/*.pcm*")) == []
    assert list((tmp_path / "out").glob("*/.work/decode/*"))  # only the audio was given back


def _in_the_background() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `trackscribe batch … &` in a script


@pytest.mark.parametrize(
    ("stop", "moment", "started"),
    [
        (signal.SIGTERM, "*/.work/**/*.pcm", None),
        (signal.SIGTERM, "*/.work/**/*.pcm", _in_the_background),
        (signal.SIGINT, "*/.work/**/*.pcm", None),
        (signal.SIGINT, "*/done.json", None),
    ],
    ids=[
        "SIGTERM while decoding",
        "SIGTERM while decoding, run in the background",
        "kill -INT while decoding",
        "kill -INT after a meeting",
    ],
)
def test_a_stop_sent_to_the_batch_alone_stops_the_meetings_running_in_workers(
    meetings, tmp_path, stop, moment, started
):
    # A service manager's stop, `kill -INT` and a notebook's interrupt reach the batch's own
    # process only; its workers must not go on to finish their meetings, and begin others,
    # unseen while the manager waits, then kills; nor leave their scratch folders or decoded
    # audio, also when one worker is between meetings, or done cleaning up first: its pool
    # then ends the others (SIGTERM) while they clean up; nor when Ctrl-C is ignored.
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    command = [sys.executable, "-m", "pipeline", "batch", str(meetings), "-o", str(out)]
    run = subprocess.Popen(
        [*command, "--workers", "2", "--no-progress"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
        preexec_fn=started,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob(moment)) and time.monotonic() < deadline:
        time.sleep(0.02)
    finished = {p.parent.name for p in out.glob("*/done.json")}
    assert run.poll() is None and len(finished) < 3  # the stop comes with meetings to do
    run.send_signal(stop)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 128 + stop, stderr
    assert "leaked semaphore" not in stderr  # the workers made to exit left nothing behind
    assert {p.parent.name for p in out.glob("*/done.json")} == finished  # none went on
    assert not list(scratch.glob("trackscribe-*"))  # each removed its scratch folder
    assert not list(out.glob("*/.work/**/*.pcm*"))  # and its decoded audio
    left = BatchSummary.load(out / "summary.json")  # says the batch did not finish, not less
    assert [m.job for m in left.meetings] == ["sample", "pair", "again"]
    # (A meeting finished as the stop came may be pending still: its result never came back.)
    assert {m.job for m in left.pending} >= {"sample", "pair", "again"} - finished
    assert {m.job for m in left.meetings if m.status == "done"} <= finished
    again = run_batch(meetings, out, progress=False)  # and a re-run does them
    assert [m.status for m in again.meetings] == ["done", "done", "done"]


def test_a_second_batch_into_the_same_folder_is_refused_while_the_first_runs(meetings, tmp_path):
    out = tmp_path / "out"
    (out / ".work").mkdir(parents=True)
    with (out / ".work" / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running batch holds it
        second = subprocess.run(
            [sys.executable, "-m", "pipeline", "batch", str(meetings), "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert second.returncode == 2
    assert f"{out}: another batch is writing its results here" in second.stderr
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_at_random_moments_it_ends_identical_and_never_redoes_a_finished_track(
    meetings, reference, tmp_path, workers
):
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "batch",
        str(meetings),
        "-o",
        str(out),
        "--no-progress",
        "--workers",
        str(workers),
    ]
    # A process killed with SIGKILL cannot remove multiprocessing's own temporary folder
    # (pymp-*, the forkserver's socket): kept here, not left in the machine's /tmp.
    (tmp_path / "tmp").mkdir()
    killed_env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    rng = random.Random(7 + workers)
    for _ in range(4):
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=killed_env
        )
        time.sleep(rng.uniform(2.0, 7.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = subprocess.run(command, capture_output=True, text=True, timeout=600)

    assert final.returncode == 0, final.stderr
    assert transcripts(out) == transcripts(reference)
    assert journal(out, "transcribed") and all(n == 1 for n in journal(out, "transcribed").values())
    leftovers = [
        p
        for p in out.rglob("*")
        if ".work" not in p.parts and p.name.startswith(".") and p.name != ".trackscribe-exports"
    ]
    assert leftovers == []


def test_a_dask_cluster_holds_no_more_meetings_than_it_has_threads_nor_a_result_once_read(
    tmp_path,
):
    # Given every meeting at once, Dask queued more on a worker than it ran: a worker's death
    # then failed the meetings queued behind the one that killed it, though they never began.
    # A result kept after the batch read it was run again when its worker died.
    distributed = pytest.importorskip("distributed")
    jobs = [Job(manifest=tmp_path / f"m{i}" / "manifest.json") for i in range(4)]
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        _HoldingCount.cluster, _HoldingCount.held = cluster, []
        with distributed.Client(cluster) as client:
            done = []
            for result in on_dask(jobs, _HoldingCount(tmp_path), client):  # type: ignore[arg-type]
                done.append(result.job)
                time.sleep(0.1)  # for the scheduler to hear of the release
                tasks = list(cluster.scheduler.tasks)
                assert not [k for k in tasks if k.startswith(f"trackscribe-{result.job}-")]
    assert sorted(done) == sorted(job.folder_name for job in jobs)
    assert max(_HoldingCount.held) <= 2, _HoldingCount.held


class _HoldingCount:
    """A meeting's work that notes how many tasks the cluster holds when it begins."""

    cluster: ClassVar[Any] = None
    held: ClassVar[list[int]] = []

    def __init__(self, out: Path) -> None:
        self.out = out

    def __call__(self, job: Job, decode_workers: int) -> MeetingResult:
        self.held.append(len(self.cluster.scheduler.tasks))
        time.sleep(0.2)
        return MeetingResult(job=job.folder_name, status="done", folder="")


def test_more_workers_and_a_dask_cluster_give_the_same_transcripts(
    meetings, reference, tmp_path, monkeypatch, caplog
):
    distributed = pytest.importorskip("distributed")
    run_batch(meetings, tmp_path / "workers", workers=2, progress=False)
    assert transcripts(tmp_path / "workers") == transcripts(reference)

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        summary = run_batch(
            meetings, tmp_path / "dask", scheduler=cluster.scheduler_address, progress=False
        )
        # The cluster's workers read a signing key from its path, as they see OUT.
        key, public_key = write_key(tmp_path, "signer")
        caplog.set_level(logging.INFO, logger="trackscribe")
        signed = run_batch(
            meetings,
            tmp_path / "dask",
            scheduler=cluster.scheduler_address,
            formats=["json", "bundle"],
            signing_key=SigningKey(key),
            progress=False,
        )
        # A notebook's job as a dict, its manifest relative to the notebook's folder, not the
        # workers': the workers looked for it in theirs, and the failure was lost (pending).
        monkeypatch.chdir(meetings.parent)
        relative = run_batch(
            [{"manifest": "pair/manifest.json"}],
            tmp_path / "relative",
            scheduler=cluster.scheduler_address,
            progress=False,
        )
    assert [m.status for m in relative.meetings] == ["done"]
    pair = Transcript.load(tmp_path / "relative" / relative.meetings[0].job / "transcript.json")
    assert pair.utterances == Transcript.load(reference / "pair" / "transcript.json").utterances
    assert [m.status for m in summary.meetings] == ["done", "done", "done"]
    assert transcripts(tmp_path / "dask") == transcripts(reference)
    assert all(m.reused for m in signed.meetings)
    assert all(verify(tmp_path / "dask" / m.job, public_key=public_key).ok for m in signed.meetings)
    # What a meeting logs on a worker is logged here, at the level asked for here: it went
    # to the worker's stderr, unformatted, and the batch's own output said nothing of it.
    wrote = [r for r in caplog.records if r.getMessage().endswith("from its transcript")]
    assert sorted(r.getMessage() for r in wrote) == sorted(
        f"{tmp_path / 'dask' / job}: wrote bundle, json from its transcript"
        for job in ("sample", "pair", "again")
    )


def test_two_batches_on_one_dask_cluster_each_log_only_their_own_meetings(sample_dir, tmp_path):
    # Each batch forwarded everything the workers' shared "trackscribe" logger saw: a batch
    # printed another's meetings' errors (its user's paths), and one that went well (exit 0)
    # showed another's failures. A -vv batch also left the workers' logger at DEBUG for good.
    distributed = pytest.importorskip("distributed")
    mine, theirs = tmp_path / "mine.jsonl", tmp_path / "theirs.jsonl"
    theirs.write_text(
        json.dumps({"id": "theirs", "manifest": str(tmp_path / "private" / "manifest.json")}) + "\n"
    )
    with (
        # Recording until the test stops it: this batch's meeting waits on the worker.
        Emulator(sample_dir, _quick_meeting(record_seconds=600)) as emu,
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        mine.write_text(
            json.dumps({"id": "mine", "meeting_id": emu.meeting_id, "user_ids": ["user-chen"]})
            + "\n"
        )
        level_before = client.run(lambda: logging.getLogger("trackscribe").level)
        env = {
            **os.environ,
            "REALTIMEKIT_BASE_URL": emu.base_url,
            "CLOUDFLARE_ACCOUNT_ID": "a",
            "REALTIMEKIT_APP_ID": "b",
            "CLOUDFLARE_API_TOKEN": _TOKEN,
        }

        def batch(jobs: Path, *flags: str) -> subprocess.Popen:
            out = ["-o", str(tmp_path / jobs.stem), "--scheduler", cluster.scheduler_address]
            return subprocess.Popen(
                [sys.executable, "-m", "pipeline", "batch", str(jobs), *out, *flags],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )

        first = batch(mine)
        deadline = time.monotonic() + 120
        while not any(
            key.startswith("trackscribe-mine-") and task.state == "processing"
            for key, task in list(cluster.scheduler.tasks.items())
        ):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        # The other batch's meeting fails on the worker while this one's runs beside it.
        _, their_log = batch(theirs, "-vv").communicate(timeout=300)
        emu.inject("cut")  # this meeting's own warning, from a download thread of its task
        recording = _recordings(_api(emu), emu)[0].id
        with _api(emu).client() as api:
            api.stop(recording)
        _, my_log = first.communicate(timeout=600)
        level_after = client.run(lambda: logging.getLogger("trackscribe").level)

    assert first.returncode == 0, my_log
    assert "retrying in" in my_log  # logged on the worker, in a thread the meeting started
    assert "theirs" not in my_log and "private" not in my_log
    assert f"ERROR: theirs: failed: {tmp_path / 'private' / 'manifest.json'}" in their_log
    ours = [line for line in their_log.splitlines() if line.startswith("trackscribe: ")]
    assert not [line for line in ours if "mine" in line or recording in line]
    assert level_after == level_before  # not left at the -vv batch's DEBUG


def test_a_file_that_kills_its_decoder_costs_its_track_not_the_meetings_beside_it(
    meetings, sample_dir, tmp_path, crashing_decoder_env
):
    crashing = tmp_path / "crashing"
    shutil.copytree(sample_dir, crashing)
    renamed = crash_first_track(crashing)
    raw = json.loads((crashing / "manifest.json").read_text())
    alone = tmp_path / "alone"  # a meeting of that one file: no process to spare it
    shutil.copytree(crashing, alone)
    (alone / "manifest.json").write_text(json.dumps({**raw, "tracks": raw["tracks"][:1]}))
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        meetings.read_text().replace(
            "pair/manifest.json", str(meetings.parent / "pair" / "manifest.json")
        )
        + "".join(
            json.dumps({"id": m.name, "manifest": str(m / "manifest.json")}) + "\n"
            for m in (crashing, alone)
        )
    )
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "pipeline", "batch", str(jobs), "-o", str(out), "--workers=2"],
        env=crashing_decoder_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stderr  # a meeting lost input
    summary = {m.job: m for m in BatchSummary.load(out / "summary.json").meetings}
    assert {job: m.status for job, m in summary.items()} == {
        "sample": "done",
        "pair": "done",
        "again": "done",
        "crashing": "partial",
        "alone": "failed",
    }
    for job in ("crashing", "alone"):  # each names the file and what became of it
        assert (
            renamed in summary[job].reason and "the process decoding it died" in summary[job].reason
        )
    transcript = Transcript.load(out / "crashing" / "transcript.json")
    assert {u.speaker for u in transcript.utterances} == {"user-bruno", "user-chen"}


@dataclass(frozen=True)
class _DyingWork(_Work):
    """Kills the worker doing a meeting whose id starts "dies", on every try, as a meeting
    the out-of-memory killer takes each time would; finishes any other at once."""

    def __call__(self, job, decode_workers=1, decode_apart=False):
        if job.folder_name.startswith("dies"):
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.2)
        return MeetingResult(job=job.folder_name, status="done", folder=job.folder_name)


def test_workers_that_die_cost_only_the_meetings_they_were_doing(tmp_path, caplog):
    # Before, a second death failed every meeting not yet done, begun or not.
    names = ["a", "dies-1", "b", "c", "dies-2", "d", "e", "f", "g"]
    jobs = [Job(id=name, manifest=Path(f"{name}/manifest.json")) for name in names]
    work = _DyingWork(tmp_path, PipelineOptions(), None, ("json",), None, False)
    with caplog.at_level(logging.WARNING, "trackscribe"):
        results = {r.job: r for r in _on_processes(jobs, work, 2)}
    assert sorted(results) == sorted(names)
    for name, result in results.items():
        if name.startswith("dies"):
            assert result.status == "failed"
            assert result.reason.startswith("the worker doing it was lost: BrokenProcessPool")
        else:
            assert result.status == "done", result
    for name in ("dies-1", "dies-2"):  # each had one more try, in a worker of its own
        assert f"{name}: the worker doing it died; it gets another try" in caplog.text


@dataclass(frozen=True)
class _DyingBetweenWork(_Work):
    """Finishes every meeting, but the worker that finished "then-dies" is killed soon after,
    while it waits for its next meeting."""

    def __call__(self, job, decode_workers=1, decode_apart=False):
        if job.folder_name == "then-dies":
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGKILL)).start()
        return MeetingResult(job=job.folder_name, status="done", folder=job.folder_name)


def test_a_worker_that_dies_between_meetings_costs_none(tmp_path):
    names = ["then-dies", "a", "b", "c"]
    jobs = [Job(id=name, manifest=Path(f"{name}/manifest.json")) for name in names]
    work = _DyingBetweenWork(tmp_path, PipelineOptions(), None, ("json",), None, False)
    results = []
    for result in _on_processes(jobs, work, 2):
        results.append(result)
        time.sleep(1)  # writing the summary, say: meanwhile, the worker dies
    assert sorted(r.job for r in results) == sorted(names)
    assert {r.status for r in results} == {"done"}


def test_a_script_without_a_main_guard_is_told_to_add_one(meetings, tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from pipeline import run_batch\n"
        f"summary = run_batch({str(meetings)!r}, {str(tmp_path / 'out')!r}, workers=2,"
        " progress=False)\n"
        "print('\\n'.join(m.status + ': ' + (m.reason or '') for m in summary.meetings))\n"
    )
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    lines = run.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:  # every worker re-ran the script and broke: the summary says why
        assert line.startswith("failed: the worker doing it was lost: BrokenProcessPool")
        assert 'put that call under `if __name__ == "__main__":`' in line
    # and so does each worker, not by trying a second batch in the same output folder
    assert "run_batch was called by the top level of a script that a worker" in run.stderr
    assert "Traceback" not in run.stderr  # a line from each worker, not a page
    assert "another batch is writing" not in run.stderr


def test_a_script_read_from_standard_input_does_its_meetings_here_without_tracebacks(
    meetings, tmp_path
):
    # A worker runs the script that started it again, from its file; `python - < script.py`
    # has none (it is named <stdin>), so every worker would print a traceback and die.
    script = (
        "from pipeline import run_batch\n"
        'if __name__ == "__main__":\n'
        f"    summary = run_batch({str(meetings)!r}, {str(tmp_path / 'out')!r}, workers=2,"
        " progress=False)\n"
        "    print(*(m.status for m in summary.meetings))\n"
    )
    run = subprocess.run(
        [sys.executable, "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["done"] * 3
    assert "Traceback" not in run.stderr
    said = [line for line in run.stderr.splitlines() if "(<stdin>)" in line]
    assert len(said) == 2, run.stderr  # once for the meetings, once for their tracks
    assert "doing the meetings here, one at a time" in said[0]
    assert "decoding here, not in worker processes" in said[1]
    assert "save it to a file and run that" in said[1]


def test_only_a_script_with_no_file_to_run_again_is_unrunnable_in_a_worker(monkeypatch, tmp_path):
    import types

    from pipeline._worker import unrunnable_script

    def running(**names) -> str | None:
        monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(**names))
        return unrunnable_script()

    script = tmp_path / "transcribe_all.py"
    script.write_text("")
    assert running() is None  # a notebook, python -c
    assert running(__file__=str(script), __spec__=None) is None
    assert running(__file__="/usr/lib/x/__main__.py", __spec__=object()) is None  # -m x
    assert "(<stdin>) is not a file" in running(__file__="<stdin>", __spec__=None)
    script.unlink()  # removed since it started
    assert running(__file__=str(script), __spec__=None) is not None


def test_the_main_guard_hint_is_for_scripts_only(monkeypatch):
    import types

    from pipeline._entry import main as command_line
    from pipeline._worker import guard_hint

    def running(**names) -> str:
        monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(**names))
        return guard_hint()

    assert running() == ""  # a notebook, python -c
    assert running(__file__="/usr/bin/trackscribe", main=command_line) == ""  # the command
    assert "__main__" in running(__file__="/home/me/transcribe_all.py")


def test_a_failed_meeting_is_listed_exits_1_and_is_picked_up_by_retry_failed(
    meetings, sample_dir, tmp_path
):
    broken = tmp_path / "broken"
    broken.mkdir()
    jobs = tmp_path / "jobs.csv"
    pair = meetings.parent / "pair" / "manifest.json"
    jobs.write_text(f"id,manifest\nfine,{pair}\nbad,broken/manifest.json\n")
    out = tmp_path / "out"

    first = subprocess.run(
        [sys.executable, "-m", "pipeline", "batch", str(jobs), "-o", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 1  # one failed, one done: 2 only when every one failed
    assert "bad: failed:" in first.stderr and "no such manifest file" in first.stderr
    summary = BatchSummary.load(out / "summary.json")
    assert [(m.job, m.status) for m in summary.meetings] == [("fine", "done"), ("bad", "failed")]

    shutil.copytree(meetings.parent / "pair", broken, dirs_exist_ok=True)
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "batch",
            str(jobs),
            "-o",
            str(out),
            "--no-progress",
            "--retry-failed",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    summary = BatchSummary.load(out / "summary.json")
    assert [(m.job, m.status) for m in summary.meetings] == [("fine", "done"), ("bad", "done")]
    assert all(n == 1 for n in journal(out, "transcribed").values())
    fine, bad = summary.meetings
    # "fine" was not run again: it reads as an earlier run's, with no timing of this run's
    assert fine.reused and fine.wall_s is None and fine.realtime_factor is None
    assert not bad.reused and bad.wall_s
    assert "fine     done (earlier run)" in again.stdout
    assert again.stdout == f"{summary}\n"  # a script's print(summary) shows the same table


def test_retry_failed_redoes_a_done_meeting_whose_folder_was_removed_since(meetings, tmp_path):
    # The summary says done; the folder says otherwise, and the folder is what is delivered.
    out = tmp_path / "out"
    jobs = [j for j in load_jobs(meetings) if j.id == "pair"]
    run_batch(jobs, out, progress=False)
    shutil.rmtree(out / "pair")
    again = run_batch(jobs, out, retry_failed=True, progress=False)
    assert again.meetings[0].status == "done" and not again.meetings[0].reused
    assert (out / "pair" / "transcript.json").exists()


def test_retry_failed_into_a_moved_output_folder_names_the_folders_where_they_are_now(
    meetings, tmp_path
):
    # The summary gave every meeting done last time the folder of the run that did it: after
    # `mv out7 out8`, the new summary pointed into out7, which is no longer there.
    jobs = [j for j in load_jobs(meetings) if j.id == "pair"]
    run_batch(jobs, tmp_path / "out7", progress=False)
    (tmp_path / "out7").rename(tmp_path / "out8")
    again = run_batch(jobs, tmp_path / "out8", retry_failed=True, progress=False)
    [pair] = again.meetings
    assert pair.reused and pair.folder == str((tmp_path / "out8" / "pair").resolve())
    saved = BatchSummary.load(tmp_path / "out8" / "summary.json").meetings[0]
    assert saved.folder == pair.folder


def test_retry_failed_says_which_meetings_it_leaves_done_otherwise_than_asked_now(
    meetings, tmp_path, caplog
):
    # It reads no input, so it does not redo them; but it must not let them pass for done
    # as asked: another beam size, or the job pointed at another manifest.
    out = tmp_path / "out"
    jobs = [j for j in load_jobs(meetings) if j.id in ("pair", "sample")]
    run_batch(jobs, out, progress=False)
    other = {"transcribe": {"beam_size": 1}}
    run_batch(jobs, out, options=other, retry_failed=True, progress=False)
    moved = [jobs[0], jobs[1].model_copy(update={"manifest": jobs[0].manifest})]
    run_batch(moved, out, retry_failed=True, progress=False)
    warned = [m for r in caplog.records if "another job or with other" in (m := r.getMessage())]
    assert [w.split(" as they were: ")[1].split(";")[0] for w in warned] == [
        "sample, pair",
        "pair",
    ]


def test_retry_failed_over_a_damaged_summary_says_so_and_touches_nothing(
    meetings, tmp_path, capsys
):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"id,manifest\nfine,{meetings.parent / 'pair' / 'manifest.json'}\n")
    out = tmp_path / "out"
    out.mkdir()
    damaged = '{"meetings": [{"job": "fine"}]}'
    (out / "summary.json").write_text(damaged)

    status = main(["batch", str(jobs), "-o", str(out), "--retry-failed", "--no-progress"])

    err = capsys.readouterr().err
    assert status == 2
    assert "summary.json: not a batch summary: meetings[0].status: missing" in err
    assert "without --retry-failed" in err and "jobs file" not in err
    assert not (out / "fine").exists()  # no meeting was begun
    assert (out / "summary.json").read_text() == damaged


class _Connection:
    """What ``dask_outcome`` asks of a Dask client: whether it is still connected."""

    def __init__(self, status: str) -> None:
        self.status = status


def test_a_result_lost_with_the_scheduler_is_not_taken_for_a_lost_worker(tmp_path):
    # Every meeting read "the worker doing it was lost", with distributed's two lines of text.
    distributed = pytest.importorskip("distributed")
    lost: Future[MeetingResult] = Future()
    lost.set_exception(
        distributed.client.FutureCancelledError(
            "trackscribe-m-1", "scheduler-connection-lost", "Client lost the connection.\nRe-run."
        )
    )
    job = Job(id="m", manifest=tmp_path / "m.json")

    assert dask_outcome(lost, job, tmp_path, _Connection("running")) is None  # left pending


def test_a_meeting_that_failed_stays_failed_when_the_scheduler_goes_just_after(tmp_path):
    # A failure read just before the connection went was put down as the scheduler's loss,
    # its own reason replaced, and the meeting left pending: its failure did come.
    came = MeetingResult(
        job="m", status="failed", folder=str(tmp_path / "m"), reason="tracks/a.webm: not WebM"
    )
    future: Future[MeetingResult] = Future()
    future.set_result(came)
    job = Job(id="m", manifest=tmp_path / "m.json")

    assert dask_outcome(future, job, tmp_path, _Connection("connecting")) == came


def test_a_batch_whose_dask_scheduler_is_lost_leaves_its_unfinished_meetings_pending_at_once(
    meetings, tmp_path
):
    # Every meeting not finished read as failed, or the batch ended in an error of its own,
    # and only after half a minute of waiting for the scheduler, under distributed's
    # reconnection tracebacks; the workers may well finish those meetings, and a re-run does.
    distributed = pytest.importorskip("distributed")
    dask = pytest.importorskip("dask")
    out = tmp_path / "out"
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "2s"}),  # its own close, after
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
    ):
        address = cluster.scheduler_address
        command = [sys.executable, "-m", "pipeline", "batch", str(meetings), "-o", str(out)]
        batch = subprocess.Popen(
            [*command, "--scheduler", address, "--no-progress"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 300
        while not any(  # the first meeting done, the second on the worker
            key.startswith("trackscribe-pair-") and task.state == "processing"
            for key, task in list(cluster.scheduler.tasks.items())
        ):
            assert time.monotonic() < deadline and batch.poll() is None
            time.sleep(0.1)
        lost = time.monotonic()
        cluster.sync(cluster.scheduler.close)
        _, err = batch.communicate(timeout=120)
        took = time.monotonic() - lost

    assert batch.returncode == 1, err  # not all done; not "nothing was made"
    summary = BatchSummary.load(out / "summary.json")
    assert [m.status for m in summary.meetings] == ["done", "pending", "pending"]
    assert took < 10, err
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert errors == [
        f"trackscribe: ERROR: the Dask scheduler at {address} was lost: 2 meeting(s) not "
        "finished are left pending; run the batch again to do them (it reuses what the "
        "workers finish meanwhile)"
    ]
    assert "Traceback" not in err and "distributed" not in err


def test_the_batch_table_keeps_one_line_per_meeting_whatever_the_reason_holds():
    long_reason = "tracks/b.webm: not WebM\x1b[2J\nsecond line " + "x" * 100
    summary = BatchSummary(
        meetings=[
            MeetingResult(job="a", status="done", folder="a"),
            MeetingResult(job="b", status="failed", folder="b", reason=long_reason),
            MeetingResult(job="c\x1b[2J", status="done", folder="c"),  # a jobs file's name
        ]
    )

    lines = str(summary).splitlines()

    assert len(lines) == 4 and lines[3].startswith("c\\x1b[2J  ")
    row = lines[2]
    assert row.startswith("b ") and "\\x1b[2J\\nsecond line" in row
    assert "\x1b" not in row and row.endswith("x…")  # cut, and seen to be cut
    assert len(row[row.index("tracks/b.webm") :]) == 80


_TOKEN = "batch-token"


def _quick_meeting(**changes: object) -> EmulatorOptions:
    """A meeting whose recording starts, ends and is uploaded within a second."""
    quick = {"start_delay": 0.05, "record_seconds": 0.2, "upload_seconds": 0.05}
    return EmulatorOptions(token=_TOKEN, **quick | changes)


def _api(emu: Emulator) -> ApiSettings:
    return ApiSettings(base_url=emu.base_url, account_id="a", app_id="b", api_token=_TOKEN)


def _recordings(api: ApiSettings, emu: Emulator) -> list:
    with api.client() as client:
        return list(client.list_recordings(meeting_id=emu.meeting_id))


def test_jobs_that_record_a_meeting_start_one_recording_however_often_they_run(
    sample_dir, tmp_path, capsys
):
    options = _quick_meeting()
    jobs = tmp_path / "jobs.jsonl"
    with Emulator(sample_dir, options) as emu:
        jobs.write_text(
            json.dumps(
                {
                    "id": "live",
                    "meeting_id": emu.meeting_id,
                    "user_ids": ["user-bruno"],
                    "names": {"user-bruno": "Bruno"},
                }
            )
            + "\n"
        )
        api = _api(emu)
        first = run_batch(jobs, tmp_path / "out", api=api, progress=False)
        (tmp_path / "out" / "live" / "done.json").unlink()  # as if killed before the end
        second = run_batch(jobs, tmp_path / "out", api=api, progress=False)
        recordings = _recordings(api, emu)
    assert first.meetings[0].status == second.meetings[0].status == "done"
    assert len(recordings) == 1
    transcript = Transcript.load(tmp_path / "out" / "live" / "transcript.json")
    assert {u.speaker for u in transcript.utterances} == {"user-bruno"}
    assert transcript.speaker_name("user-bruno") == "Bruno"
    assert "fetch" not in capsys.readouterr().err  # no progress asked for, none shown


def test_a_meeting_to_record_is_recorded_from_the_start_of_the_batch_not_from_its_turn(
    meetings, sample_dir, tmp_path
):
    options = _quick_meeting()
    jobs = tmp_path / "jobs.jsonl"
    out = tmp_path / "out"
    with Emulator(sample_dir, options) as emu:
        jobs.write_text(
            json.dumps(
                {"id": "earlier", "manifest": str(meetings.parent / "pair" / "manifest.json")}
            )
            + "\n"
            + json.dumps({"id": "live", "meeting_id": emu.meeting_id})
            + "\n"
        )
        api = _api(emu)
        summary = run_batch(jobs, out, api=api, progress=False)
        recordings = _recordings(api, emu)
    assert [m.status for m in summary.meetings] == ["done", "done"]
    assert len(recordings) == 1  # started once: its turn took the recording already going
    started = (out / "live" / "recording.json").stat().st_mtime_ns
    assert started < (out / "earlier" / "transcript.json").stat().st_mtime_ns


def test_a_recording_that_cannot_start_early_is_started_in_its_turn(sample_dir, tmp_path, caplog):
    options = _quick_meeting()
    jobs = tmp_path / "jobs.jsonl"
    with Emulator(sample_dir, options) as emu:
        jobs.write_text(json.dumps({"id": "live", "meeting_id": emu.meeting_id}) + "\n")
        emu.inject("rate_limit", 2)  # the early look at the active recording, and the start
        api = _api(emu)
        summary = run_batch(jobs, tmp_path / "out", api=api, progress=False)
        recordings = _recordings(api, emu)
    assert "live: recording not started yet: RealtimeKit POST /recordings/track: HTTP 429" in (
        caplog.text
    )
    assert summary.meetings[0].status == "done", summary.meetings[0].reason
    assert len(recordings) == 1


def test_a_batch_whose_cluster_cannot_be_reached_starts_no_recording(
    sample_dir, tmp_path, monkeypatch
):
    def out_of_reach(scheduler, **_):
        raise OSError(f"Timed out trying to connect to {scheduler} after 30 s")

    monkeypatch.setattr("distributed.Client", out_of_reach)
    jobs = tmp_path / "jobs.jsonl"
    with Emulator(sample_dir, EmulatorOptions(token=_TOKEN)) as emu:
        jobs.write_text(json.dumps({"id": "live", "meeting_id": emu.meeting_id}) + "\n")
        api = _api(emu)
        with pytest.raises(ConnectionError):
            run_batch(jobs, tmp_path / "out", api=api, scheduler="tcp://nowhere:8786")
        assert _recordings(api, emu) == []


def test_a_port_that_takes_the_connection_and_never_answers_is_no_scheduler(tmp_path, monkeypatch):
    # A Dask dashboard's port, one off the scheduler's: Client() waited there for ever,
    # holding OUT's lock, with no summary written and no exit.
    pytest.importorskip("distributed")
    monkeypatch.setattr("pipeline._dask_runner._CONNECT_S", 2.0)
    jobs = [Job(id="m", manifest=tmp_path / "manifest.json")]
    with socket.create_server(("127.0.0.1", 0)) as silent:
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=rf"at {address} did not answer as one within"):
            run_batch(jobs, tmp_path / "out", scheduler=address, progress=False)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("address", ["tcp://", "scheduler:port"])
def test_a_mistyped_scheduler_address_is_named_as_such(tmp_path, address):
    jobs = [Job(id="m", manifest=tmp_path / "manifest.json")]
    with pytest.raises(ConnectionError, match=rf"'{address}' is not a Dask scheduler's address"):
        run_batch(jobs, tmp_path / "out", scheduler=address, progress=False)


def test_a_batch_whose_every_meeting_failed_exits_2_whatever_its_terminal_shows(tmp_path):
    # The table shortens a long reason with "…"; on an ASCII-only stdout, a finished batch
    # must still exit as it went (here: every meeting, its one, failed), not as an error of
    # ours.
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "m", "manifest": str(tmp_path / ("x" * 90))}) + "\n")
    command = [sys.executable, "-m", "pipeline", "batch", str(jobs), "-o", str(tmp_path / "o")]
    done = subprocess.run(
        [*command, "--no-progress"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
    )
    assert done.returncode == 2, done.stderr
    assert "\\u2026" in done.stdout  # the ellipsis, written escaped


def test_a_recording_with_one_download_url_is_done_in_part_and_says_what_it_lacks(
    sample_dir, tmp_path
):
    options = _quick_meeting(shape="string")
    jobs = tmp_path / "jobs.jsonl"
    with Emulator(sample_dir, options) as emu:
        jobs.write_text(json.dumps({"id": "one-url", "meeting_id": emu.meeting_id}) + "\n")
        api = _api(emu)
        first = run_batch(jobs, tmp_path / "out", api=api, progress=False)
        again = run_batch(jobs, tmp_path / "out", api=api, progress=False, retry_failed=True)
    for summary in (first, again):  # a retry cannot get more, and still says so
        [meeting] = summary.meetings
        assert meeting.status == "partial", meeting.reason
        assert "a single URL" in meeting.reason and "cannot be listed" in meeting.reason
    transcript = Transcript.load(tmp_path / "out" / "one-url" / "transcript.json")
    assert transcript.partial
    assert len({u.speaker for u in transcript.utterances}) == 1  # the one file it could fetch


def test_a_file_that_cannot_be_fetched_costs_the_meeting_only_that_file(
    meeting_copy, sample_manifest, tmp_path, monkeypatch
):
    # A file gone from storage (here: moved away while the service runs) must not keep the
    # files that did arrive from their transcript; --retry-failed fetches it and completes it.
    quick = functools.partial(FetchOptions, retry=RetryPolicy(attempts=2, backoff=0))
    monkeypatch.setattr("pipeline.batch.FetchOptions", quick)
    lost = meeting_copy / sample_manifest.tracks[0].path
    options = _quick_meeting(upload_seconds=0)
    jobs = tmp_path / "jobs.jsonl"
    with Emulator(meeting_copy, options) as emu:
        jobs.write_text(json.dumps({"id": "gone", "meeting_id": emu.meeting_id}) + "\n")
        api = _api(emu)
        lost.rename(tmp_path / "away.webm")
        first = run_batch(jobs, tmp_path / "out", api=api, progress=False)
        partial = Transcript.load(tmp_path / "out" / "gone" / "transcript.json")
        (tmp_path / "away.webm").rename(lost)
        again = run_batch(jobs, tmp_path / "out", api=api, progress=False, retry_failed=True)
    [meeting_then] = first.meetings
    assert meeting_then.status == "partial"
    assert sample_manifest.tracks[0].user_id in meeting_then.reason
    assert "--retry-failed" in meeting_then.reason
    [meeting_now] = again.meetings
    assert meeting_now.status == "done", meeting_now.reason
    complete = Transcript.load(tmp_path / "out" / "gone" / "transcript.json")
    assert partial.partial and not complete.partial
    speakers = {u.speaker for u in complete.utterances}
    assert sample_manifest.tracks[0].user_id in speakers
    assert {u.speaker for u in partial.utterances} == speakers - {sample_manifest.tracks[0].user_id}


def test_only_a_file_a_fetch_again_may_get_is_said_to_be_fetched_by_retry_failed(
    sample_manifest, tmp_path, monkeypatch
):
    # A file storage does not have (404) was said to be fetched by --retry-failed, as one
    # whose storage was having trouble (503) is.
    quick = functools.partial(FetchOptions, retry=RetryPolicy(attempts=2, backoff=0))
    monkeypatch.setattr("pipeline.batch.FetchOptions", quick)
    first = {t.user_id: t for t in reversed(sample_manifest.tracks)}
    kept, gone, down = (first[user] for user in ("user-bruno", "user-chen", "user-dana"))
    stored = {
        Path(t.path).name: sample_manifest.track_path(t).read_bytes() for t in (kept, gone, down)
    }
    storage = type(
        "Api",
        (HalfStored,),
        {"stored": stored, "gone": {Path(gone.path).name}, "down": {Path(down.path).name}},
    )
    with serving(storage) as root:
        api = ApiSettings(
            base_url=f"{root}/client/v4", account_id="a", app_id="b", api_token=_TOKEN
        )
        summary = run_batch(
            [Job(id="m", recording_id="r1")], tmp_path / "out", api=api, progress=False
        )
    [meeting] = summary.meetings
    assert meeting.status == "partial", meeting.reason
    transcript = Transcript.load(tmp_path / "out" / "m" / "transcript.json")
    failures = {f.path: f for f in transcript.provenance.failures}
    assert failures.keys() == {gone.path, down.path}
    assert "HTTP 404" in failures[gone.path].reason
    assert "--retry-failed" not in failures[gone.path].reason
    assert not failures[gone.path].fetch_again
    assert failures[down.path].reason.endswith("(not fetched: --retry-failed tries again)")
    assert failures[down.path].fetch_again


def test_a_finished_job_pointed_at_another_meeting_is_done_again_for_it(sample_dir, tmp_path):
    options = _quick_meeting()
    jobs = tmp_path / "jobs.jsonl"
    with Emulator(sample_dir, options) as emu:
        jobs.write_text(json.dumps({"id": "live", "meeting_id": emu.meeting_id}) + "\n")
        api = _api(emu)
        run_batch(jobs, tmp_path / "out", api=api, progress=False)
        # As if the folder's finished meeting were another one: the job names this meeting.
        fetched = tmp_path / "out" / "live" / "recording" / "manifest.json"
        for kept in (fetched, tmp_path / "out" / "live" / "recording.json"):
            kept.write_text(kept.read_text().replace(emu.meeting_id, "another-meeting"))
        again = run_batch(jobs, tmp_path / "out", api=api, progress=False)
        recordings = _recordings(api, emu)
    assert again.meetings[0].status == "done"
    assert len(recordings) == 2  # this meeting recorded, not the other one's files kept
    assert Manifest.load(fetched).meeting_id == emu.meeting_id


def _run_job(jobs: Path, out: Path, api: ApiSettings, job: dict) -> list[MeetingResult]:
    """Run a batch of the one ``job`` (written to ``jobs``) into ``out``; its meetings."""
    jobs.write_text(json.dumps(job) + "\n")
    return run_batch(jobs, out, api=api, progress=False).meetings


@contextmanager
def _done_for_everyone(
    sample_dir: Path, tmp_path: Path
) -> Iterator[tuple[Emulator, ApiSettings, dict]]:
    """A meeting job done once for every participant, into ``tmp_path / "out"`` from
    ``tmp_path / "jobs.jsonl"``: the emulator, its API settings and the job."""
    with Emulator(sample_dir, _quick_meeting()) as emu:
        api = _api(emu)
        whole = {"id": "m1", "meeting_id": emu.meeting_id}
        _run_job(tmp_path / "jobs.jsonl", tmp_path / "out", api, whole)
        yield emu, api, whole


def test_a_meeting_job_narrowed_to_fewer_users_is_done_again_without_the_others(
    sample_dir, tmp_path
):
    # The recording fetched for everyone was taken as done for the job narrowed since to
    # one user: a plain re-run kept the transcript of all four, against the job's consent.
    out = tmp_path / "out"
    jobs = tmp_path / "jobs.jsonl"
    with _done_for_everyone(sample_dir, tmp_path) as (emu, api, whole):
        everyone = Transcript.load(out / "m1" / "transcript.json")
        [alone] = _run_job(jobs, out, api, whole | {"user_ids": ["user-alice"]})
        transcript = Transcript.load(out / "m1" / "transcript.json")
        fetched = Manifest.load(out / "m1" / "recording" / "manifest.json")
        emu.inject("rate_limit", 100)  # done as asked now: the API is not asked again
        [again] = _run_job(jobs, out, api, whole | {"user_ids": ["user-alice"]})
        emu.disarm("rate_limit")
        # Marked done by an earlier version, which noted only the job as a whole: a job
        # asked otherwise since is fetched again too (here widened back to everyone).
        done = json.loads((out / "m1" / "done.json").read_text())
        (out / "m1" / "done.json").write_text(json.dumps(done | {"users": None}))
        _run_job(jobs, out, api, whole)
        recordings = _recordings(api, emu)
    assert len({s.user_id for s in everyone.speakers}) == 4
    assert (alone.status, alone.reused) == ("done", False)
    assert {s.user_id for s in transcript.speakers} == {"user-alice"}
    assert {t.user_id for t in fetched.tracks} == {"user-alice"}
    assert (again.status, again.reused) == ("done", True)
    widened = Transcript.load(out / "m1" / "transcript.json")
    assert widened.speakers == everyone.speakers
    assert len(recordings) == 1  # the recording of everyone, fetched for alice alone, and back


def test_a_meeting_job_narrowed_to_fewer_users_keeps_no_audio_or_words_of_the_others(
    sample_dir, tmp_path
):
    # The transcript left them out, but their downloaded audio, an interrupted download of
    # theirs and the segments (their words) kept for re-runs stayed in the meeting's folder.
    out = tmp_path / "out"
    jobs = tmp_path / "jobs.jsonl"
    with _done_for_everyone(sample_dir, tmp_path) as (_, api, whole):
        tracks = out / "m1" / "recording" / "tracks"
        everyone = sorted(path.name for path in tracks.iterdir())
        bruno = next(name for name in everyone if "user-bruno" in name)
        (tracks / f".{bruno}.part").write_bytes(b"half of it")  # as a killed run leaves it
        (tracks / f".{bruno}.part.etag").write_text('"v1"')
        work = out / "m1" / ".work"
        words_of_all = {p.name for p in (work / "transcribe").iterdir()}
        [alone] = _run_job(jobs, out, api, whole | {"user_ids": ["user-alice"]})
    assert alone.status == "done"
    fetched = Manifest.load(out / "m1" / "recording" / "manifest.json")
    [alice] = fetched.tracks
    assert len(everyone) == 5 and sorted(p.name for p in tracks.iterdir()) == [
        Path(alice.path).name
    ]
    kept = {
        stage: sorted(p.name for p in (work / stage).iterdir()) for stage in ("vad", "transcribe")
    }
    assert len(kept["vad"]) == 1 and len(kept["transcribe"]) == 1  # alice's track's, alone
    assert set(kept["transcribe"]) < words_of_all  # taken from the first run, not redone
    said = [json.loads(line) for line in (work / "journal.jsonl").read_text().splitlines()]
    [dropped] = [entry for entry in said if entry["event"] == "dropped"]
    stages = Counter(name.split("/")[0] for name in dropped["files"])
    assert stages["decode"] == stages["vad"] == 4  # the other four tracks'
    assert stages["transcribe"] >= 3  # their words (a file with no speech has none)


def test_a_narrowed_meeting_job_that_then_fails_leaves_no_transcript_of_those_left_out(
    sample_dir, tmp_path
):
    # The earlier transcript was withdrawn only once the fetch for the users asked now had
    # worked: with the API out of reach, the words of a participant left out since stayed,
    # marked done.
    out = tmp_path / "out"
    with _done_for_everyone(sample_dir, tmp_path) as (_, api, whole):
        refused = api.model_copy(update={"api_token": SecretStr("revoked")})
        narrowed = whole | {"user_ids": ["user-alice"]}
        [failed] = _run_job(tmp_path / "jobs.jsonl", out, refused, narrowed)
    assert failed.status == "failed" and "401" in (failed.reason or "")
    left = {path.name for path in (out / "m1").iterdir()}
    assert not left & {"done.json", "transcript.json", "transcript.txt", "transcript.vtt"}


def test_a_ctrl_c_that_pydantic_wrapped_stops_the_batch_not_only_its_meeting(
    sample_dir, tmp_path, monkeypatch
):
    # A Ctrl-C while a model is written comes out of pydantic as an error of its own: taken
    # for the meeting's failure, the batch went on to the next meeting, the stop lost.
    from pydantic import BaseModel, field_serializer

    class Stamped(BaseModel):
        at: int

        @field_serializer("at")
        def _at(self, value: int) -> int:
            raise KeyboardInterrupt

    def exporting(*args, **kwargs):
        Stamped(at=1).model_dump_json()

    monkeypatch.setattr("pipeline.batch.export", exporting)
    job = Job(id="m", manifest=str(sample_dir / "manifest.json"))
    with pytest.raises(KeyboardInterrupt):
        process_meeting(job, tmp_path / "m", PipelineOptions())


def test_a_meeting_job_without_an_id_keeps_its_folder_whatever_the_order_of_its_users(
    sample_dir, tmp_path
):
    # Named after its user ids in the order given, the job got a new folder when that order
    # changed, and its meeting a second recording; so would one named so by an earlier
    # version, were the folder not found under that name.
    out = tmp_path / "out"
    jobs = tmp_path / "jobs.jsonl"

    def run(*users: str) -> BatchSummary:
        jobs.write_text(json.dumps({"meeting_id": emu.meeting_id, "user_ids": users}) + "\n")
        return run_batch(jobs, out, api=api, progress=False)

    with Emulator(sample_dir, _quick_meeting()) as emu:
        api = _api(emu)
        first = run("user-bruno", "user-alice")
        swapped = run("user-alice", "user-bruno", "user-alice")
        digest = hashlib.sha256(b"user-bruno-user-alice").hexdigest()[:8]
        older = f"meeting-{emu.meeting_id}-{digest}"  # as versions before this one named it
        (out / first.meetings[0].job).rename(out / older)
        upgraded = run("user-bruno", "user-alice")
        recordings = _recordings(api, emu)
    assert first.meetings[0].job == swapped.meetings[0].job != older
    assert swapped.meetings[0].reused
    assert (upgraded.meetings[0].job, upgraded.meetings[0].reused) == (older, True)
    assert [p.name for p in out.glob("meeting-*")] == [older]
    assert len(recordings) == 1


def test_a_job_pointed_at_another_meeting_records_that_meeting(sample_dir, tmp_path):
    options = _quick_meeting()
    folder = tmp_path / "out" / "live"
    folder.mkdir(parents=True)
    # An earlier run of this job, when it named another meeting, started a recording of it.
    (folder / "recording.json").write_text(
        json.dumps({"recording_id": "rec-of-another", "meeting_id": "another-meeting"})
    )
    jobs = tmp_path / "jobs.jsonl"
    with Emulator(sample_dir, options) as emu:
        jobs.write_text(json.dumps({"id": "live", "meeting_id": emu.meeting_id}) + "\n")
        api = _api(emu)
        summary = run_batch(jobs, tmp_path / "out", api=api, progress=False)
        with api.client() as client:
            (recording,) = client.list_recordings(meeting_id=emu.meeting_id)
    assert summary.meetings[0].status == "done"
    remembered = json.loads((folder / "recording.json").read_text())
    assert remembered == {"recording_id": recording.id, "meeting_id": emu.meeting_id}


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ('{"manifest": "a.json", "recording_id": "r"}\n', ".jsonl", "line 1: .*exactly one of"),
        ('{"recording_id": "r", "user_ids": ["u"]}\n', ".jsonl", "line 1: .*user_ids only"),
        ("{nope\n", ".jsonl", "line 1: not valid JSON"),
        ("id,manifest\nx,a.json\nx,b.json\n", ".csv", "share the output folder 'x'"),
        ("id,manifest\nx,a.json\nX,b.json\n", ".csv", "jobs 1 and 2 would share the output"),
        # one live meeting has one recording at a time: a second job's would fail, or miss
        # what was said before it began
        (
            '{"meeting_id": "m"}\n{"id": "again", "meeting_id": "m", "user_ids": ["u"]}\n',
            ".jsonl",
            "jobs 1 and 2 would both record meeting m, which has one recording at a time",
        ),
        ("id,meeting_id,user_ids\nx,m,alice,bob\n", ".csv", "line 2: 1 more cell.*'bob'"),
        ("id,manifest,language\nx,a.json,en\n", ".csv", "line 2: language: unknown field"),
        (
            "id,manifest,names\nx,a.json,alice\n",
            ".csv",
            "line 2: names: 'alice' is not USER_ID=NAME",
        ),
        # the line the row begins on, past blank lines
        ('id,manifest\n\n"a,b",a.json\n\nx,b.json,c\n', ".csv", "line 5: 1 more cell"),
        # Read leniently, a quote left open took every line after it into one cell: meetings
        # b and c were never done, and Alice's name was the rest of the file.
        (
            'id,manifest,names\na,a.json,"alice=Alice Smith\nb,b.json\nc,c.json\n',
            ".csv",
            "line 2: a quoted cell is not closed by the end of the file",
        ),
        (
            'id,manifest,names\na,a.json,"alice=Alice Smith\nb,b.json,"bob=Bob"\n',
            ".csv",
            "line 2: a quoted cell goes on after its closing quote, on line 3",
        ),
        # a quote closed where a cell ends: still no cell of a jobs file holds a line break
        (
            'id,manifest,names\na,a.json,"alice=Alice Smith\nb,b.json,bob=Bob"\n',
            ".csv",
            "line 2: names: a line break inside a quoted cell",
        ),
        ('id,manifest\n"a\nb",a.json\n', ".csv", "line 2: id: a line break"),
        ('manifest\n"a\nb.json"\n', ".csv", "line 2: manifest: a line break"),
        ('meeting_id,user_ids\nm,"alice;\nbob"\n', ".csv", "line 2: user_ids: a line break"),
        # csv's own limit, named by line rather than failing the batch as an internal error
        (
            "id,manifest\nx,a.json\ny," + "b" * 140_000 + "\n",
            ".csv",
            "line 3: a cell of more than 131,072 characters",
        ),
        ("", ".jsonl", "no jobs"),
        # not the jobs file's folder, whose manifest.json no line of JOBS names
        ('{"manifest": ""}\n', ".jsonl", "line 1: manifest: .*empty path names no manifest"),
        ('{"id": "a", "manifest": " "}\n', ".jsonl", "line 1: manifest: .*empty path"),
        ('id,manifest\na," "\n', ".csv", "line 2: manifest: .*empty path"),
        # the batch's own summary file must not be made a meeting's folder
        ('{"id": "Summary.json", "manifest": "a.json"}\n', ".jsonl", "line 1: id: .*summary file"),
        # a JSON escape that is not text: no result could be written with it
        (
            '{"manifest": "a.json", "names": {"u": "A\\udcff"}}\n',
            ".jsonl",
            "line 1: names.u: .*surr",
        ),
    ],
)
def test_bad_jobs_files_are_refused_naming_the_line(tmp_path, text, suffix, message):
    path = tmp_path / f"jobs{suffix}"
    path.write_text(text)
    with pytest.raises(JobsError, match=message):
        load_jobs(path)


@pytest.mark.parametrize("workers", [0, -3, 1.5, True])
def test_a_number_of_workers_that_is_not_one_or_more_is_refused(meetings, tmp_path, workers):
    # the command line refuses `--workers 0`; a notebook got one worker for it
    with pytest.raises(
        ValueError, match=f"workers must be a whole number, 1 or more, not {workers}"
    ):
        run_batch(meetings, tmp_path / "out", workers=workers, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path("/dev/fd").is_dir(), reason="no /dev/fd to name a pipe by")
def test_relative_paths_in_piped_jobs_are_found_from_the_current_folder(
    meetings, tmp_path, monkeypatch
):
    # `batch <(make-jobs)` reads /dev/fd/63, a link to /proc/PID/fd/63: found from there,
    # every manifest was missing, and a meeting's folder name changed with the pid.
    line = json.dumps({"manifest": "pair/manifest.json"}) + "\n"
    (meetings.parent / "one.jsonl").write_text(line)
    (from_file,) = load_jobs(meetings.parent / "one.jsonl")
    monkeypatch.chdir(meetings.parent)
    read, write = os.pipe()
    try:
        os.write(write, line.encode())
        os.close(write)
        (piped,) = load_jobs(f"/dev/fd/{read}")
    finally:
        os.close(read)
    assert piped.manifest == from_file.manifest == meetings.parent / "pair" / "manifest.json"
    assert piped.folder_name == from_file.folder_name


@pytest.mark.parametrize("given", ["pipe", "file"])
def test_a_batch_of_jobs_on_stdin_finds_its_meetings_from_the_current_folder(
    meetings, tmp_path, given
):
    # `make-jobs | trackscribe batch /dev/stdin`, or `trackscribe batch /dev/stdin < FILE`:
    # /dev/stdin is in no folder of meetings, whatever it stands for.
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "pair", "manifest": "pair/manifest.json"}) + "\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline", "batch", "/dev/stdin", "-o", str(out)]
    with jobs.open() as file:
        run = subprocess.run(
            [*command, "--no-progress"],
            **({"input": jobs.read_text()} if given == "pipe" else {"stdin": file}),
            cwd=meetings.parent,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert run.returncode == 0, run.stderr
    (meeting,) = BatchSummary.load(out / "summary.json").meetings
    assert meeting.status == "done"


def test_jobs_given_as_a_list_may_not_share_a_folder_either(tmp_path):
    path = tmp_path / "jobs.csv"
    path.write_text("id,manifest\nx,a.json\ny,b.json\n")
    first, second = load_jobs(path)
    twin = second.model_copy(update={"id": "x"})
    with pytest.raises(JobsError, match="share the output folder 'x'"):
        run_batch([first, twin], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything is done


@pytest.mark.parametrize("end", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_a_spreadsheets_csv_is_read_as_written(tmp_path, end):
    # Saved by a spreadsheet: a byte-order mark, its own line ends, a quoted cell, the rows
    # numbered by the line each begins on.
    path = tmp_path / "jobs.csv"
    rows = ["id,meeting_id,names", 'x,m-1,"alice=Alice Smith"', "y,m-2,bob=Bob,extra"]
    path.write_bytes(b"\xef\xbb\xbf" + end.join(rows[:2]).encode() + end.encode())
    (job,) = load_jobs(path)
    assert (job.id, job.meeting_id, job.names) == ("x", "m-1", {"alice": "Alice Smith"})
    path.write_bytes(b"\xef\xbb\xbf" + end.join(rows).encode() + end.encode())
    with pytest.raises(JobsError, match="line 3: 1 more cell"):
        load_jobs(path)
    # A name typed on two lines in its cell is refused as a quote left open would be: its
    # CR ends are line breaks too.
    broken = [rows[0], 'x,m-1,"alice=Alice', 'Smith"']
    path.write_bytes(b"\xef\xbb\xbf" + end.join(broken).encode() + end.encode())
    with pytest.raises(JobsError, match="line 2: names: a line break inside a quoted cell"):
        load_jobs(path)


def test_an_audio_file_given_as_jobs_is_named_as_binary_data(tmp_path):
    path = tmp_path / "meeting.webm"
    path.write_bytes(b"\x1aE\xdf\xa3\x9fB\x86\x81\x01\x00\x00")
    with pytest.raises(
        JobsError, match=r"meeting\.webm: binary data, not text \(byte 0x9f at offset 4\)"
    ):
        load_jobs(path)


def test_ids_in_other_scripts_keep_their_letters_in_their_folders_names():
    # Made all "_", two different meetings' ids would read the same, and one alone nothing.
    ids = ["会議-A", "打合-A", "会議", "réunion du lundi", "../../etc"]
    folders = [Job(id=i, manifest=Path("m.json")).folder_name for i in ids]
    assert folders == ["会議-A", "打合-A", "会議", "réunion_du_lundi", "etc"]
    long = Job(id="会" * 100, manifest=Path("m.json")).folder_name
    assert len(long.encode()) <= 200 and long.startswith("会") and long.endswith("会")


def test_csv_jobs_with_user_ids_and_names(tmp_path):
    path = tmp_path / "jobs.csv"
    path.write_text(
        "meeting_id,user_ids,names\nm-1,alice;bob,alice=Alice Smith; bob = Bob\nm-2,,\n"
    )
    jobs = load_jobs(path)
    assert [(j.meeting_id, j.user_ids) for j in jobs] == [("m-1", ("alice", "bob")), ("m-2", ())]
    assert jobs[0].names == {"alice": "Alice Smith", "bob": "Bob"} and not jobs[1].names


def test_a_transcript_shows_itself_in_a_notebook(reference):
    transcript = Transcript.load(reference / "sample" / "transcript.json")
    frame = transcript.to_dataframe()
    assert list(frame["name"][:2]) == ["Alice", "Bruno"]
    assert frame["start"].is_monotonic_increasing
    html = transcript._repr_html_()
    assert "<table>" in html and "Alice" in html and "9 utterances" in html
    summary = BatchSummary.load(reference / "summary.json")
    assert list(summary.to_dataframe()["status"]) == ["done"] * 3
    table = summary._repr_html_()
    assert "<th>wall s</th><th>x real time</th>" in table
    printed = str(summary).splitlines()
    assert printed[0].split() == [
        "meeting",
        "status",
        "length",
        "s",
        "wall",
        "s",
        "x",
        "real",
        "time",
        "reason",
    ]
    assert len(printed) == 1 + len(summary.meetings)
    first = summary.meetings[0]
    assert f"<td>{first.wall_s:.1f}</td><td>{first.realtime_factor:.1f}</td>" in table


def test_a_notebook_without_pandas_is_told_how_to_install_it(reference, monkeypatch):
    transcript = Transcript.load(reference / "sample" / "transcript.json")
    summary = BatchSummary.load(reference / "summary.json")
    monkeypatch.setitem(sys.modules, "pandas", None)
    for shown in (transcript, summary):
        with pytest.raises(ModuleNotFoundError, match=r"pip install 'trackscribe\[pandas\]'"):
            shown.to_dataframe()
        assert "<table>" in shown._repr_html_()  # the notebook's own view needs no pandas


def test_audio_a_killed_decoder_left_half_written_is_removed_and_finished_audio_kept(tmp_path):
    store = Checkpoints(tmp_path / ".work")
    half = store.pcm_path("k1")  # a decoder killed while writing leaves this
    whole = store.pcm_path("k2")
    whole.write_bytes(b"\0\0" * 16_000)
    audio = PcmAudio(
        source=Path("a.webm"),
        source_sha256="0" * 64,
        source_size=1,
        pcm_path=whole,
        num_samples=16_000,
        first_packet_time=0.0,
    )
    finished = store.save_decoded("k2", audio)
    store.drop_partial()
    assert not half.exists()
    assert finished.pcm_path.exists() and store.decoded("k2") is not None


def test_a_checkpoint_that_cannot_be_read_for_a_moment_is_kept_one_damaged_is_removed(
    reference, tmp_path, monkeypatch
):
    store = Checkpoints(tmp_path / ".work")
    store.save_transcript(Transcript.load(reference / "sample" / "transcript.json"))
    kept = tmp_path / ".work" / "transcript.json"
    read_bytes = Path.read_bytes

    def too_many_open_files(self: Path) -> bytes:
        raise OSError(errno.EMFILE, "Too many open files", str(self))

    monkeypatch.setattr(Path, "read_bytes", too_many_open_files)
    assert store.transcript() is None  # redone now,
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert kept.exists() and store.transcript() is not None  # and there for the next run
    kept.write_text('{"schema": "trackscribe.tr')  # as a lost write would leave it
    assert store.transcript() is None and not kept.exists()


def test_a_changed_file_or_a_damaged_checkpoint_is_redone_not_trusted(meetings, tmp_path):
    shutil.copytree(meetings.parent / "pair", tmp_path / "pair")
    manifest = tmp_path / "pair" / "manifest.json"
    jobs = [j for j in load_jobs(meetings) if j.id == "pair"]
    jobs = [jobs[0].model_copy(update={"manifest": manifest})]
    out = tmp_path / "out"
    run_batch(jobs, out, progress=False)

    for segments in (out / "pair" / ".work" / "transcribe").glob("*.json"):
        segments.write_text('[{"start": 1')  # as a lost write would leave it
    (out / "pair" / "done.json").unlink()
    again = run_batch(jobs, out, progress=False)
    assert again.meetings[0].status == "done"
    assert len(journal(out, "transcribed")) == 2  # redone under the same keys
    assert sum(journal(out, "transcribed").values()) == 4

    chen = next((tmp_path / "pair" / "tracks").glob("*chen*"))
    alice = next((tmp_path / "pair" / "tracks").glob("*alice*"))
    # Chen's file now holds other bytes than the manifest says: Alice's audio, muxed anew
    # (her very bytes under another user would be refused as one recording listed twice).
    with av.open(str(alice)) as source, av.open(str(chen), "w", "webm") as muxed:
        stream = muxed.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux(source.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                muxed.mux(packet)
    data = json.loads(manifest.read_text())
    for track in data["tracks"]:
        track.pop("sha256", None)
        track.pop("size", None)
    manifest.write_text(json.dumps(data))
    changed = run_batch(jobs, out, progress=False)
    assert not changed.meetings[0].reused
    transcript = Transcript.load(out / "pair" / "transcript.json")
    chen_words = " ".join(u.text for u in transcript.utterances if u.speaker == "user-chen")
    assert "morning" in chen_words.lower()  # Alice's words, now in Chen's file


def test_a_track_that_is_a_pipe_is_a_lost_track_not_a_batch_that_waits(meeting_copy, tmp_path):
    chen = next((meeting_copy / "tracks").glob("*user-chen*"))
    chen.unlink()
    os.mkfifo(chen)  # reading it would wait for a writer that never comes
    summary = run_batch([Job(manifest=meeting_copy / "manifest.json")], tmp_path, progress=False)
    (meeting,) = summary.meetings
    assert meeting.status == "partial"
    assert (
        "not a file but a pipe"
        in Transcript.load(Path(meeting.folder) / "transcript.json").problems()[0]
    )


def test_a_meeting_whose_inputs_changed_and_now_fail_keeps_no_transcript_of_the_old_ones(
    meetings, tmp_path
):
    meeting = tmp_path / "meeting"
    shutil.copytree(meetings.parent / "pair", meeting)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "m", "manifest": str(meeting / "manifest.json")}) + "\n")
    out = tmp_path / "out"
    assert run_batch(jobs, out, progress=False).meetings[0].status == "done"
    (out / "m" / "notes.txt").write_text("a reviewer's own file")

    for track in (meeting / "tracks").iterdir():  # new recordings, every one of them unusable
        track.write_bytes(b"not audio")
    raw = json.loads((meeting / "manifest.json").read_text())
    for entry in raw["tracks"]:
        entry.pop("sha256", None), entry.pop("size", None)
    (meeting / "manifest.json").write_text(json.dumps(raw))

    again = run_batch(jobs, out, progress=False)
    assert again.meetings[0].status == "failed"
    assert sorted(p.name for p in (out / "m").iterdir() if p.name != ".work") == ["notes.txt"]
    # one line, each track named once, "; " between them: not a type name and a path twice
    reason = again.meetings[0].reason
    assert reason.startswith("no track of meeting ") and "\n" not in reason
    for track in (meeting / "tracks").iterdir():
        assert reason.count(track.name) == 1
    assert reason.count("; ") == len(raw["tracks"]) - 1
