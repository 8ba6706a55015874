"""trackscribe bench: every approach measured in one run, with ratios to the pipeline."""

import json
import logging
import multiprocessing
import subprocess
import sys
import weakref
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from models import SAMPLE_RATE, Manifest
from pipeline._worker import WorkerLink
from pipeline.bench import (
    Approach,
    ApproachFailed,
    _add_ratios,
    _alternative,
    _in_meeting,
    _Mix,
    _owners,
    _peak_rss_mb,
    _pieces,
    _score,
    bench,
)
from pipeline.cli import _bench_status, _bench_table, main
from pipeline.core import PipelineOptions
from pipeline.evaluate import Turn, TurnFile, read_turns
from stages.transcribe._model import _forget_models

from .conftest import words_of


def _bench_json(manifest: Path, approaches: str) -> subprocess.CompletedProcess:
    """`trackscribe bench MANIFEST --approaches APPROACHES --json`, as a user runs it."""
    command = ["bench", str(manifest), "--approaches", approaches, "--json"]
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *command], capture_output=True, text=True, timeout=600
    )


def test_bench_reports_each_approach_with_ratios_to_the_pipeline(sample_dir):
    result = _bench_json(sample_dir / "manifest.json", "pipeline,mix,oracle")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(report) == ["mix", "oracle", "pipeline"]
    for entry in report.values():
        assert entry["wall_s"] > 0 and entry["realtime_factor"] > 0 and entry["peak_rss_mb"] > 50
    pipeline = report["pipeline"]
    assert pipeline["ratios"]["wall_s"] == 1.0
    for name in ("mix", "oracle"):  # each figure over the pipeline's, from the same run
        entry = report[name]
        for key in ("wall_s", "realtime_factor", "peak_rss_mb"):
            assert entry["ratios"][key] == pytest.approx(entry[key] / pipeline[key], abs=0.01)
    oracle = report["oracle"]
    assert oracle["ratios"]["cpwer"] == pytest.approx(oracle["cpwer"] / pipeline["cpwer"], abs=0.01)
    # Each true turn cut out of its own track: scored as the pipeline is; cut from the wrong
    # place, it would be mostly wrong words.
    assert pipeline["cpwer"] < 15 and 0 < oracle["cpwer"] < 40
    assert report["mix"]["cpwer"] is None and report["mix"]["orcwer"] is not None
    assert report["pipeline"]["evaluation"]["silent_track_words"] == 0
    stages = pipeline["details"]["stages_s"]
    assert stages["transcribe (model)"] > 0 and stages["decode (sum over tracks)"] > 0
    assert stages["start decode workers"] >= 0  # counted in its wall time, not left out
    # The alternatives' one model worker has the threads of all the pipeline's together.
    details = pipeline["details"]
    threads = details["model_workers"] * details["model_threads_each"]
    assert report["mix"]["details"] == {
        "meeting_s": report["mix"]["details"]["meeting_s"],
        "model_workers": 1,
        "model_threads_each": threads,
    }
    assert 0 < pipeline["details"]["speech_share"] < 0.6  # only speech reached the model


def test_bench_lists_a_lost_track_for_every_approach_and_exits_partial(meeting_copy):
    # One unreadable track failed a whole alternative, though the pipeline loses just it.
    lost = next((meeting_copy / "tracks").glob("*user-chen*"))
    lost.unlink()
    result = _bench_json(meeting_copy / "manifest.json", "pipeline,mix")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    pipeline, mix = report["pipeline"], report["mix"]
    assert len(pipeline["lost"]) == 1 and lost.name in pipeline["lost"][0]
    assert "file not found" in pipeline["lost"][0]
    assert mix["lost"] == [f"tracks/{lost.name}: No such file or directory"]
    for entry in (pipeline, mix):  # their figures are kept
        assert entry["failed"] is None and entry["wall_s"] > 0
    assert pipeline["cpwer"] is not None and mix["orcwer"] is not None
    assert f"pipeline: tracks/{lost.name}" in result.stderr
    assert f"mix: tracks/{lost.name}" in result.stderr


def test_every_approach_leaves_out_a_track_whose_start_is_days_off(meeting_copy):
    manifest = meeting_copy / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["tracks"][0]["started_time"] = "2026-11-17T10:00:00.000Z"  # Alice's clock gone wrong
    manifest.write_text(json.dumps(raw))
    result = _bench_json(manifest, "pipeline,mix")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    for entry in report.values():
        (line,) = entry["lost"]
        assert line.startswith(f"{raw['tracks'][0]['path']}: tracks[0].started_time 2026-11-17")
        assert entry["failed"] is None
    # Mixed on the other tracks' clock: a minute of meeting, not three days of silence.
    assert 50 < report["mix"]["details"]["meeting_s"] < 70
    assert report["mix"]["realtime_factor"] == pytest.approx(
        report["pipeline"]["details"]["meeting_s"] / report["mix"]["wall_s"], rel=0.01
    )


def test_the_mix_cuts_the_silence_between_tracks_hours_apart_and_keeps_their_times(
    meeting_copy,
):
    """A track placed 20 hours after the others (a clock gone wrong, but within a day): laid
    out as it is, the mix would be 4.6 GB of silence."""
    import tracemalloc

    manifest_path = meeting_copy / "manifest.json"
    raw = json.loads(manifest_path.read_text())
    chen = next(t for t in raw["tracks"] if t["user_id"] == "user-chen")
    chen["started_time"] = "2026-11-21T06:00:21.700Z"  # 72,000 s later than it was
    manifest_path.write_text(json.dumps(raw))
    manifest = Manifest.load(manifest_path)
    assert not manifest.unplaced_tracks()  # placed: a mix must lay it out

    tracemalloc.start()
    try:
        result = _alternative("mix", manifest, [], PipelineOptions())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200e6
    # Whisper starts a segment where the one before it ended, so the ends say where it heard
    for turn in result["turns"]:
        chen_said = "train" in turn["text"] or "search page" in turn["text"]
        assert (72_022 < turn["end"] < 72_065) if chen_said else (turn["end"] < 50), turn
    assert sum("train" in t["text"] or "search page" in t["text"] for t in result["turns"]) == 2
    assert 72_040 < result["details"]["meeting_s"] < 72_070


@pytest.mark.parametrize("name", ["full", "batched", "mix", "oracle"])
def test_an_alternative_holds_one_track_at_a_time_as_its_users_would(sample_dir, monkeypatch, name):
    # Every track read before the first was transcribed charged the alternatives with
    # memory a user of faster-whisper alone never holds: their peak flattered the pipeline.
    import pipeline.bench

    read, held = pipeline.bench._decode, []

    def reading(path):
        held.append(sum(ref() is not None for ref in alive))  # of the tracks read before
        samples = read(path)
        alive.append(weakref.ref(samples))
        return samples

    alive: list[weakref.ref] = []
    monkeypatch.setattr(pipeline.bench, "_decode", reading)
    manifest = Manifest.load(sample_dir / "manifest.json")
    truth = read_turns(sample_dir / "truth.json").turns
    result = _alternative(name, manifest, truth, PipelineOptions())
    assert len(held) == len(manifest.tracks)
    # Only the oracle holds two: one user's two files (a rejoin), to cut a turn across both.
    assert max(held) == (1 if name == "oracle" else 0), held
    assert result["turns"] and not result["lost"]


def test_the_batched_alternative_is_faster_whispers_own_batched_path_on_every_track(sample_dir):
    manifest = Manifest.load(sample_dir / "manifest.json")
    result = _alternative("batched", manifest, [], PipelineOptions())
    assert result["details"]["batch_size"] == 8
    said: dict[str, list[str]] = {}
    for turn in result["turns"]:
        said.setdefault(turn["speaker"], []).extend(words_of(turn["text"]))
        assert 0 <= turn["start"] < turn["end"]
    assert {"user-alice", "user-bruno", "user-chen"} <= said.keys()
    assert "billing" in said["user-bruno"]  # placed on Bruno's track, at its start time


def test_the_mix_lays_out_tracks_with_long_silences_cut_to_two_seconds():
    # Tracks are added in the order of their start: two that overlap, then one an hour on.
    mix = _Mix()
    for start, seconds, level in [(0.0, 5.0, 0.1), (4.0, 6.0, 0.2), (3600.0, 10.0, 0.4)]:
        mix.add(start, np.full(round(seconds * SAMPLE_RATE), level, np.float32))
    assert mix.samples.size == 22 * SAMPLE_RATE  # 10 s covered, then 2 s of gap, then 10 s
    assert mix.samples[[0, 4 * SAMPLE_RATE + 1, 9 * SAMPLE_RATE, 11 * SAMPLE_RATE]] == (
        pytest.approx([0.1, 0.3, 0.2, 0.0])
    )
    assert mix.samples[12 * SAMPLE_RATE] == pytest.approx(0.4)
    assert mix.shifts == [(12.0, 3588.0)]
    assert _in_meeting(4.5, mix.shifts) == 4.5
    assert _in_meeting(13.0, mix.shifts) == 3601.0
    # silences no longer than the gap are kept as they are
    kept = _Mix()
    kept.add(0.0, np.zeros(5 * SAMPLE_RATE, np.float32))
    kept.add(6.5, np.ones(SAMPLE_RATE, np.float32))
    assert kept.shifts == [] and kept.samples.size == round(7.5 * SAMPLE_RATE)
    assert kept.samples[round(6.5 * SAMPLE_RATE)] == 1.0


def test_the_bench_table_shows_lost_input_and_failed_approaches(capsys):
    results = {"full": Approach(failed="tracks/chen.webm: No such file or directory")}
    assert "full      failed: tracks/chen.webm: No such file or directory" in _bench_table(
        results, None
    )
    # Every approach failed: nothing was measured, which is no partial result.
    assert _bench_status(results) == 2
    said = capsys.readouterr().err
    assert "every approach failed" in said and "full: failed: tracks/chen.webm" in said
    assert _bench_status({**results, "mix": Approach(wall_s=1)}) == 1
    assert "partial result" in capsys.readouterr().err
    assert _bench_status({"mix": Approach(wall_s=1, lost=["tracks/chen.webm: cut off"])}) == 1
    assert _bench_status({"mix": Approach(wall_s=1)}) == 0


def test_the_bench_table_gives_every_figure_as_a_ratio_to_the_pipeline_too():
    pipeline = Approach(wall_s=10.0, realtime_factor=20.0, peak_rss_mb=500.0, cpwer=10.0)
    full = Approach(wall_s=45.0, realtime_factor=4.44, peak_rss_mb=400.0, cpwer=150.0)
    mix = Approach(wall_s=20.0, realtime_factor=10.0, peak_rss_mb=450.0, orcwer=30.0)
    results = {"pipeline": pipeline, "full": full, "mix": mix}
    _add_ratios(results)
    rows = {line.split()[0]: line.split() for line in _bench_table(results, None).splitlines()[1:4]}
    assert rows["pipeline"][-4:] == ["1.00", "1.00", "1.00", "1.00"]
    assert rows["full"][-4:] == ["4.50", "0.22", "0.80", "15.00"]
    # ORC WER ignores who spoke: no ratio to a cpWER
    assert rows["mix"][5:10] == ["30.00", "2.00", "0.50", "0.90", "-"]
    assert "(ORC WER: no speakers)" in " ".join(rows["mix"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--approaches", "oracle"], "the oracle approach needs the truth"),
        (["--approaches", "pipeline", "--plot", "timeline.png"], "--plot needs the truth"),
    ],
)
def test_bench_refuses_work_that_needs_a_truth_it_does_not_have(
    meeting_copy, capsys, args, message
):
    (meeting_copy / "truth.json").unlink()
    assert main(["bench", str(meeting_copy / "manifest.json"), *args]) == 2
    assert message in capsys.readouterr().err


def test_bench_without_the_scoring_extra_says_so_before_running_anything(
    sample_dir, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "meeteval", None)  # as after a plain `pip install .`
    assert main(["bench", str(sample_dir / "manifest.json"), "--approaches", "pipeline"]) == 2
    out, err = capsys.readouterr()
    assert "meeteval is needed here: pip install 'trackscribe[eval]'" in err
    assert "bench: running" not in err and out == ""


def test_bench_refuses_a_truth_of_more_speakers_than_it_can_score_before_running_anything(
    meeting_copy, capsys
):
    crowd = [
        {"session_id": "m", "speaker": f"s{i}", "start_time": i, "end_time": i + 1, "words": "hi"}
        for i in range(21)
    ]
    (meeting_copy / "truth.json").write_text(json.dumps(crowd))
    assert main(["bench", str(meeting_copy / "manifest.json"), "--json"]) == 2
    out, err = capsys.readouterr()
    assert "at most 20 speakers on either side: the truth has 21" in err
    assert "bench: running" not in err and out == ""


@pytest.mark.parametrize(
    "truth",
    ["[]", '[{"speaker": "a", "start_time": 0, "end_time": 1, "words": ""}]'],
)
def test_bench_refuses_a_truth_without_words_before_running_anything(meeting_copy, capsys, truth):
    (meeting_copy / "truth.json").write_text(truth)
    assert main(["bench", str(meeting_copy / "manifest.json"), "--json"]) == 2
    out, err = capsys.readouterr()
    assert "truth.json: the truth has no words to score against" in err
    assert "bench: running" not in err and out == ""


def test_an_approach_that_cannot_be_scored_keeps_its_other_figures():
    truth = TurnFile([Turn(speaker="a", start=0.0, end=1.0, text="hello there")], None, [])
    # faster-whisper on full tracks puts leaked words on every track: more than cpWER takes
    crowd = [Turn(speaker=f"u{i}", start=0.0, end=1.0, text="hello") for i in range(21)]
    full = Approach(wall_s=2.0)
    _score(full, truth, TurnFile(crowd, None, []), by_orcwer=False)
    assert full.wall_s == 2.0 and full.cpwer is None and full.evaluation is None
    assert "takes at most 20 speakers on either side: the transcript has 21" in full.unscored
    table = _bench_table({"full": full}, Path("truth.json"))
    assert "full was not scored: cpWER is scored with meeteval" in table
    # the mix heard nothing: every true word missed, not an internal error
    mix = Approach(wall_s=1.0)
    _score(mix, truth, TurnFile([], None, []), by_orcwer=True)
    assert mix.orcwer == 100.0 and mix.unscored is None


def test_the_oracle_finds_each_true_speakers_track_by_user_id_or_display_name(sample_dir):
    manifest = Manifest.load(sample_dir / "manifest.json")

    def said_by(*speakers: str) -> list[Turn]:
        return [Turn(speaker=s, start=0.0, end=1.0, text="hi") for s in speakers]

    assert _owners(manifest, said_by("user-alice", "user-chen")) == {
        "user-alice": "user-alice",
        "user-chen": "user-chen",
    }
    assert _owners(manifest, said_by("Alice", "Chen")) == {
        "Alice": "user-alice",
        "Chen": "user-chen",
    }
    # A speaker of no track: no utterance of theirs could be cut, so no practical limit.
    with pytest.raises(ApproachFailed, match="no track is the truth's speaker spk0, by user id"):
        _owners(manifest, said_by("Alice", "spk0"))


def test_bench_without_a_truth_runs_every_approach_but_the_oracle(meeting_copy, monkeypatch):
    import pipeline.cli

    asked: list[tuple[str, ...]] = []

    def record(manifest, *, approaches, **_):
        asked.append(approaches)
        return {name: Approach(wall_s=1.0) for name in approaches if name != "pipeline"}

    monkeypatch.setattr(pipeline.cli, "bench", record)
    (meeting_copy / "truth.json").unlink()
    assert main(["bench", str(meeting_copy / "manifest.json")]) == 0
    assert asked == [("pipeline", "full", "silero", "batched", "mix")]


@pytest.mark.parametrize(("flags", "said"), [([], True), (["--no-progress"], False)])
def test_bench_says_which_approach_runs_unless_asked_not_to(
    meeting_copy, monkeypatch, capsys, flags, said
):
    # --no-progress, as every long command takes it: scripts pass it to all of them
    import pipeline.cli

    def run_each(manifest, *, approaches, on_start, **_):
        for name in approaches:
            if on_start is not None:
                on_start(name)
        return {name: Approach(wall_s=1.0) for name in approaches}

    monkeypatch.setattr(pipeline.cli, "bench", run_each)
    args = ["bench", str(meeting_copy / "manifest.json"), "--approaches", "pipeline", *flags]
    assert main(args) == 0
    assert ("bench: running pipeline ..." in capsys.readouterr().err) is said


@pytest.mark.parametrize("missing", ["the folder", "its tokenizer"])
def test_a_model_that_cannot_be_loaded_is_said_before_any_approach_runs(
    meeting_copy, tmp_path, capsys, missing
):
    # The alternatives loaded the model as faster-whisper does, unchecked: a folder that was
    # not there was an internal error, one without its tokenizer half a minute of asking
    # the hub for one.
    from stages.transcribe import BUNDLED_MODEL, resolve_model

    model = tmp_path / "model"
    if missing == "its tokenizer":
        model.mkdir()
        bundled = Path(resolve_model(BUNDLED_MODEL))
        for name in ("model.bin", "config.json", "vocabulary.txt"):
            (model / name).symlink_to(bundled / name)
    args = ["bench", str(meeting_copy / "manifest.json"), "--approaches", "full"]
    assert main([*args, "--model", str(model), "--no-progress"]) == 2
    said = capsys.readouterr().err
    assert said.startswith(f"trackscribe: cannot load model '{model}'")


def test_an_approach_named_twice_runs_once_and_none_named_is_said(
    meeting_copy, monkeypatch, capsys
):
    import pipeline.cli

    asked: list[tuple[str, ...]] = []

    def record(manifest, *, approaches, **_):
        asked.append(tuple(approaches))
        return {name: Approach(wall_s=1.0) for name in approaches}

    monkeypatch.setattr(pipeline.cli, "bench", record)
    manifest = str(meeting_copy / "manifest.json")
    assert main(["bench", manifest, "--approaches", "pipeline,full,pipeline"]) == 0
    assert asked == [("pipeline", "full")]
    with pytest.raises(SystemExit):
        main(["bench", manifest, "--approaches", " , "])
    assert "no approach given; choose from pipeline" in capsys.readouterr().err


def test_bench_says_a_plot_it_cannot_draw_was_not_drawn(
    meeting_copy, monkeypatch, capsys, tmp_path
):
    import pipeline.cli

    def failed(manifest, *, approaches, **_):
        return {"pipeline": Approach(failed="no track of meeting m could be used")}

    monkeypatch.setattr(pipeline.cli, "bench", failed)
    plot = tmp_path / "timeline.png"
    args = ["bench", str(meeting_copy / "manifest.json"), "--approaches", "pipeline"]
    assert main([*args, "--plot", str(plot), "--no-progress"]) == 2  # nothing measured
    said = capsys.readouterr().err
    assert f"plot not drawn: the pipeline failed; {plot} was not written" in said
    assert not plot.exists()


def test_an_approach_measures_its_own_peak_memory_not_its_parents(tmp_path):
    # Started by fork and exec, a process's ru_maxrss begins at its parent's high-water mark:
    # every approach showed at least the bench process's size.
    held = np.ones(600 * 2**20 // 8)  # 600 MB here, touched
    here = _peak_rss_mb()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        theirs = child.submit(_peak_rss_mb).result()
    assert here > 600 and 10 < theirs < here - 450, (here, theirs)
    del held


def test_the_oracle_cuts_a_turn_across_a_rejoin_from_both_files_and_lists_what_none_holds(
    sample_dir,
):
    # Bruno's first file ends at 21.0 s, his second (after he rejoined) starts at 34.8 s.
    manifest = Manifest.load(sample_dir / "manifest.json")
    across = Turn(speaker="user-bruno", start=15.6, end=43.393, text="")
    between = Turn(speaker="user-bruno", start=25.0, end=30.0, text="")
    result = _alternative("oracle", manifest, [across, between], PipelineOptions())
    (turn,) = result["turns"]
    assert (turn["speaker"], turn["start"], turn["end"]) == ("user-bruno", 15.6, 43.393)
    said = " ".join(words_of(turn["text"]))
    assert "all of them" in said and "afternoon right after lunch" in said  # from each file
    assert result["lost"] == [
        "truth turn of user-bruno at 25.00-30.00 s: no file of theirs holds it; not transcribed"
    ]


def test_the_oracle_takes_each_stretch_of_a_turn_once_from_the_files_that_hold_it():
    # (start, duration): overlapping files give the overlap from the earlier-starting one
    assert _pieces(8.0, 12.0, [(5.0, 15.0), (0.0, 10.0)]) == [(1, 8.0, 10.0), (0, 10.0, 12.0)]
    assert _pieces(6.0, 7.0, [(0.0, 20.0), (5.0, 3.0)]) == [(0, 6.0, 7.0)]  # held whole by one
    # a gap between the files: each gives its part; a turn in the gap, no file holds
    assert _pieces(4.0, 9.0, [(0.0, 5.0), (7.0, 13.0)]) == [(0, 4.0, 5.0), (1, 7.0, 9.0)]
    assert _pieces(5.5, 6.5, [(0.0, 5.0), (7.0, 13.0)]) == []
    # a few hundredths at a file's edge hold no word: not cut (Whisper would invent one)
    assert _pieces(4.98, 9.0, [(0.0, 5.0), (7.0, 13.0)]) == [(1, 7.0, 9.0)]


def test_an_unreadable_track_is_lost_and_the_alternative_goes_on(meeting_copy, caplog):
    tracks = meeting_copy / "tracks"
    alice = next(tracks.glob("*user-alice*"))
    alice.unlink()
    chen = next(tracks.glob("*user-chen*"))
    chen.write_bytes(b"not a WebM file")
    manifest = Manifest.load(meeting_copy / "manifest.json")
    truth = [Turn(speaker="user-bruno", start=6.2, end=10.8, text="")]
    # The model loaded as one worker with all the pipeline's threads (here 2 x 3).
    options = PipelineOptions(transcribe={"cpu_threads": 3, "parallel": 2})
    _forget_models()  # loaded here, not taken from an earlier test
    with caplog.at_level(logging.INFO, logger="trackscribe"):
        result = _alternative("oracle", manifest, truth, options)
    assert "(cpu, int8, 1 x 6 threads)" in caplog.text
    assert result["details"]["model_threads_each"] == 6
    assert len(result["lost"]) == 2
    assert result["lost"][0] == f"tracks/{alice.name}: No such file or directory"
    assert result["lost"][1].startswith(f"tracks/{chen.name}: ")
    (turn,) = result["turns"]
    assert "billing migration" in " ".join(words_of(turn["text"]))
    # Only a meeting none of whose tracks can be read fails the approach.
    for path in tracks.iterdir():
        path.unlink()
    with pytest.raises(ApproachFailed, match=r"^no track could be read: tracks/.*: No such file"):
        _alternative("oracle", manifest, truth, options)


def test_an_oracle_of_speakers_without_tracks_fails_before_any_approach_runs(sample_dir):
    started: list[str] = []
    truth = TurnFile([Turn(speaker="spk0", start=1.0, end=2.0, text="hi")], None, [])
    results = bench(
        sample_dir / "manifest.json",
        truth=truth,
        approaches=("oracle",),
        on_start=started.append,
    )
    assert results["oracle"].failed.startswith("no track is the truth's speaker spk0")
    assert started == []  # decided from the inputs: no process started to find it out


def test_a_truth_of_another_meeting_is_warned_of_before_the_runs(sample_dir, caplog):
    class Stop(Exception):
        pass

    warned: list[bool] = []

    def first_run(name: str) -> None:
        warned.append("the truth is of meeting other-meeting" in caplog.text)
        raise Stop

    turns = [Turn(speaker="user-alice", start=1.0, end=2.0, text="good morning")]
    truth = TurnFile(turns, None, [], meeting="other-meeting")
    with caplog.at_level(logging.WARNING, logger="trackscribe"), pytest.raises(Stop):
        bench(sample_dir / "manifest.json", truth=truth, approaches=("full",), on_start=first_run)
    assert warned == [True]
    assert "and the manifest of 5a3c1f0e-7d2b-4c6a-9e8f-0b1d2c3e4f50" in caplog.text


def test_an_approach_that_fails_is_not_stopped_as_an_interrupt_is(meeting_copy, monkeypatch):
    # An approach's own failure went through the interrupt's path: its worker cut off.
    stopped: list[object] = []
    real_stop = WorkerLink.stop

    def stop(self, pool):
        stopped.append(pool)
        real_stop(self, pool)

    monkeypatch.setattr(WorkerLink, "stop", stop)
    for path in (meeting_copy / "tracks").iterdir():
        path.unlink()
    results = bench(meeting_copy / "manifest.json", approaches=("full",))
    assert results["full"].failed.startswith("no track could be read: tracks/")
    assert stopped == []


def test_bench_from_a_script_read_from_standard_input_is_refused_before_any_run(
    sample_dir, monkeypatch
):
    import types

    # Each approach runs in a fresh process, which runs the script again from its file.
    monkeypatch.setitem(
        sys.modules, "__main__", types.SimpleNamespace(__file__="<stdin>", __spec__=None)
    )
    started = []
    with pytest.raises(RuntimeError, match=r"process of its own, but .*\(<stdin>\) is not a file"):
        bench(sample_dir / "manifest.json", approaches=("pipeline",), on_start=started.append)
    assert started == []
