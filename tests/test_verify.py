"""`verify`: a reviewer checks a transcript, afterwards, against its exports, inputs and model."""

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from models import Manifest, TrackFailure, Transcript, TranscriptError
from pipeline import cli
from pipeline.verification import Check, Verification, verify
from stages.export import DEFAULT_FORMATS, FORMATS, export, render
from stages.transcribe import BUNDLED_MODEL, ModelError, model_folder

from .conftest import BUNDLE_MEMBERS


@pytest.fixture
def out(sample_transcript: Transcript, tmp_path: Path) -> Path:
    """The sample's transcript exported in every format, as `transcribe -o` leaves it."""
    folder = tmp_path / "out"
    folder.mkdir()
    export(sample_transcript, folder)
    return folder


def status(result: Verification) -> dict[str, str]:
    return {check.subject: check.status for check in result.checks}


def detail(result: Verification, subject: str) -> str:
    return next(check.detail for check in result.checks if check.subject == subject)


def test_a_transcript_as_written_verifies_with_its_exports_inputs_and_model(out, sample_manifest):
    result = verify(out, sample_manifest)
    assert result.ok
    assert status(result) == {
        "transcript.json": "ok",
        "transcript.vtt": "ok",
        "transcript.srt": "ok",
        "transcript.txt": "ok",
        "transcript.seglst.json": "ok",
        **{track.path: "ok" for track in sample_manifest.tracks},
        "model": "ok",
    }
    assert "each as when it transcribed" in detail(result, "model")
    # printed, or shown in a notebook, it is the table the command prints
    table = str(result).splitlines()
    assert table[0].split() == ["ok", "transcript.json", *detail(result, "transcript.json").split()]
    assert table[-1] == f"verified: {len(result.checks)} ok"


def test_without_a_manifest_the_inputs_are_said_to_be_unchecked_and_do_not_fail_it(out):
    result = verify(out / "transcript.json")
    assert result.ok
    assert status(result)["inputs"] == "unchecked"


def test_a_subtitle_edited_after_export_is_named_with_its_first_changed_line(out):
    vtt = out / "transcript.vtt"
    lines = vtt.read_text().splitlines(keepends=True)
    changed = next(i for i, line in enumerate(lines) if line.startswith("<v Alice>"))
    lines[changed] = lines[changed].replace("<v Alice>", "<v Chen>")
    vtt.write_text("".join(lines))
    result = verify(out)
    assert not result.ok
    assert status(result)["transcript.vtt"] == "differs"
    assert detail(result, "transcript.vtt") == (
        f"not what transcript.json renders to (from line {changed + 1}); "
        "changed since trackscribe wrote it"
    )
    assert status(result)["transcript.json"] == status(result)["transcript.srt"] == "ok"


def test_a_transcript_edited_after_export_is_caught_and_no_longer_matches_its_exports(out):
    raw = json.loads((out / "transcript.json").read_text())
    raw["utterances"][0]["text"] = "Something nobody said."
    (out / "transcript.json").write_text(json.dumps(raw, indent=2))
    result = verify(out)
    assert status(result)["transcript.json"] == "differs"
    assert detail(result, "transcript.json") == "changed since trackscribe wrote it"
    for name in ("transcript.vtt", "transcript.srt", "transcript.txt", "transcript.seglst.json"):
        assert status(result)[name] == "differs"
        assert detail(result, name).endswith(
            "; as trackscribe wrote it, rendered from another transcript"
        )


def test_subtitles_left_from_an_earlier_run_are_caught(sample_transcript, out):
    """An export of some formats keeps the others (no `replace`): those are an earlier
    transcript's, and must not pass for this one's."""
    later = sample_transcript.model_copy(deep=True)
    later.utterances[0].text = "A later run heard this."
    export(later, out, "json")
    result = verify(out)
    assert status(result)["transcript.json"] == "ok"
    assert status(result)["transcript.vtt"] == "differs"
    assert detail(result, "transcript.vtt").endswith(
        "; as trackscribe wrote it, rendered from another transcript"
    )


def test_subtitles_left_from_a_run_of_another_version_do_not_pass_for_a_later_transcript(
    sample_transcript, tmp_path
):
    """Another version's exports may be rendered otherwise by this one, and are checked
    against the record instead; but the record says that trackscribe wrote the subtitles,
    and now also from which transcript: an earlier one's are not this one's."""
    made = sample_transcript.model_copy(deep=True)
    made.provenance.software = "trackscribe 0.0.9 (code 000000000000)"
    out = tmp_path / "out"
    export(made, out, [*DEFAULT_FORMATS, "bundle"])
    cut = made.model_copy(deep=True)
    cut.utterances = cut.utterances[:3]  # in a notebook, say
    export(cut, out, ["json", "txt"])  # the SRT, VTT and bundle are left as they were

    result = verify(out)
    assert not result.ok
    assert status(result)["transcript.txt"] == "ok"
    assert status(result)["transcript.srt"] == "differs"
    assert detail(result, "transcript.srt").endswith(
        "; as trackscribe wrote it, rendered from another transcript"
    )
    assert status(result)["transcript.bundle.zip:transcript.srt"] == "differs"
    assert "rendered from another transcript" in detail(
        result, "transcript.bundle.zip:transcript.srt"
    )


def test_exports_rendered_again_from_another_transcript_do_not_pass_for_it(sample_transcript, out):
    """A transcript put beside the exports under another name, and the exports rendered
    again from it: each still differs from what trackscribe wrote."""
    forged = sample_transcript.model_copy(deep=True)
    forged.utterances[0].text = "Something nobody said."
    for name in DEFAULT_FORMATS:
        if name != "json":
            (out / FORMATS[name][0]).write_bytes(render(forged, name))
    result = verify(forged.save(out / "forged.json"))
    assert not result.ok
    assert status(result)["forged.json"] == "differs"
    assert detail(result, "forged.json") == "not what trackscribe wrote here as transcript.json"
    for name in ("transcript.vtt", "transcript.srt", "transcript.txt", "transcript.seglst.json"):
        assert status(result)[name] == "differs"
        assert detail(result, name) == (
            "what forged.json renders to; changed since trackscribe wrote it"
        )


def test_a_record_that_cannot_be_read_is_not_taken_for_no_record(out):
    (out / ".trackscribe-exports").unlink()
    (out / ".trackscribe-exports").mkdir()
    result = verify(out)
    assert not result.ok
    assert status(result)[".trackscribe-exports"] == "missing"
    assert status(result)["transcript.json"] == "unchecked"
    assert detail(result, "transcript.json") == (
        "the record of what trackscribe wrote here cannot be read"
    )


def test_an_export_replaced_by_a_link_or_a_folder_differs(out, tmp_path):
    elsewhere = tmp_path / "elsewhere.srt"
    elsewhere.write_bytes((out / "transcript.srt").read_bytes())
    (out / "transcript.srt").unlink()
    (out / "transcript.srt").symlink_to(elsewhere)
    (out / "transcript.txt").unlink()
    (out / "transcript.txt").mkdir()
    result = verify(out)
    assert status(result)["transcript.srt"] == "differs"
    assert detail(result, "transcript.srt") == "a link, not the file trackscribe wrote"
    assert status(result)["transcript.txt"] == "differs"
    assert detail(result, "transcript.txt") == "a folder in place of the file trackscribe writes"


def test_line_endings_changed_are_named_from_the_first_line(out):
    vtt = out / "transcript.vtt"
    vtt.write_bytes(vtt.read_bytes().replace(b"\n", b"\r\n"))
    result = verify(out)
    assert detail(result, "transcript.vtt").startswith(
        "not what transcript.json renders to (from line 1)"
    )


def test_a_file_beside_the_exports_that_trackscribe_did_not_write_is_not_passed_as_checked(out):
    # A reviewer handed transcript.final.srt must not read "verified" as covering it.
    (out / "transcript.final.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nforged\n")
    (out / "notes.txt").write_text("approved\n")
    (out / "photo.png").write_bytes(b"\x89PNG")  # not like an export: not listed
    result = verify(out)
    assert result.ok  # nothing differs: these are no copies of the transcript
    assert status(result)["transcript.final.srt"] == "unchecked"
    assert status(result)["notes.txt"] == "unchecked"
    assert "photo.png" not in status(result)
    assert "not a file trackscribe writes here" in detail(result, "notes.txt")
    assert str(result).splitlines()[-1].startswith("nothing differs, but not everything")


def test_an_export_trackscribe_wrote_that_is_gone_is_missing(out):
    (out / "transcript.srt").unlink()
    result = verify(out)
    assert status(result)["transcript.srt"] == "missing"
    assert not result.ok


def test_an_export_stopped_after_removing_an_earlier_runs_files_still_verifies(
    sample_transcript, out, monkeypatch
):
    """Stopped (Ctrl-C) after the files of formats not asked for are removed and before the
    record is written again without them, the record still names them: they are not lost,
    as the record says they were being removed."""
    unlink = Path.unlink

    def stopped_after_the_vtt(self: Path, *args: object, **kwargs: object) -> None:
        unlink(self, *args, **kwargs)
        if self.name == "transcript.vtt":
            raise KeyboardInterrupt

    monkeypatch.setattr(Path, "unlink", stopped_after_the_vtt)
    with pytest.raises(KeyboardInterrupt):
        export(sample_transcript, out, ["json", "txt"], replace=True)
    monkeypatch.undo()
    assert not (out / "transcript.vtt").exists() and not (out / "transcript.srt").exists()
    result = verify(out)
    assert result.ok
    assert "transcript.vtt" not in status(result) and "transcript.srt" not in status(result)
    # One that is there yet is checked as before; one gone that was not being removed is lost.
    (out / "transcript.txt").unlink()
    assert status(verify(out))["transcript.txt"] == "missing"


def test_a_transcript_saved_without_exporting_has_nothing_to_check_its_bytes_against(
    sample_transcript, tmp_path
):
    result = verify(sample_transcript.save(tmp_path / "transcript.json"))
    assert result.ok
    assert status(result)["transcript.json"] == "unchecked"
    assert "transcript.vtt" not in status(result)


def test_an_input_changed_or_gone_since_it_was_transcribed_is_named(out, meeting_copy):
    manifest = Manifest.load(meeting_copy)
    changed, gone = manifest.tracks[0], manifest.tracks[1]
    with manifest.track_path(changed).open("ab") as file:
        file.write(b"\0")
    manifest.track_path(gone).unlink()
    result = verify(out, manifest)
    assert status(result)[changed.path] == "differs"
    assert "not the bytes transcribed" in detail(result, changed.path)
    assert status(result)[gone.path] == "missing"
    assert "No such file" in detail(result, gone.path)
    assert [s for s in status(result).values() if s != "ok"] == ["differs", "missing"]


def test_a_manifest_that_would_make_another_transcript_differs(out, meeting_copy):
    """A track started elsewhere on the clock, or whose stated SHA-256 is another's, would be
    transcribed differently or refused: the manifest is not the one this was made from."""
    raw = json.loads((meeting_copy / "manifest.json").read_text())
    moved, misstated = raw["tracks"][0], raw["tracks"][1]
    moved["started_time"] = "2026-11-20T10:00:12.000Z"
    misstated["sha256"] = "0" * 64
    (meeting_copy / "manifest.json").write_text(json.dumps(raw))
    result = verify(out, meeting_copy)
    assert status(result)[moved["path"]] == "differs"
    assert "the manifest starts it at 2026-11-20T10:00:12+00:00" in detail(result, moved["path"])
    assert status(result)[misstated["path"]] == "differs"
    assert detail(result, misstated["path"]) == "not the size and SHA-256 the manifest gives"


def test_a_track_path_written_another_way_is_the_same_track(out, meeting_copy):
    raw = json.loads((meeting_copy / "manifest.json").read_text())
    for track in raw["tracks"]:
        track["path"] = "./" + track["path"]
    (meeting_copy / "manifest.json").write_text(json.dumps(raw))
    assert verify(out, meeting_copy).ok


def test_an_input_the_manifest_puts_on_another_participant_differs(out, meeting_copy):
    raw = json.loads((meeting_copy / "manifest.json").read_text())
    first = raw["tracks"][0]
    owner = first["user_id"]
    first["user_id"] = "user-mallory"
    (meeting_copy / "manifest.json").write_text(json.dumps(raw))
    result = verify(out, Manifest.load(meeting_copy))
    assert status(result)[first["path"]] == "differs"
    assert detail(result, first["path"]) == (
        f"the manifest puts it on user-mallory, the transcript on {owner}"
    )


def test_every_track_of_the_manifest_must_be_in_the_transcript_or_said_to_have_failed(
    sample_transcript, meeting_copy, tmp_path
):
    raw = json.loads((meeting_copy / "manifest.json").read_text())
    extra = {**raw["tracks"][0], "path": "tracks/extra.webm"}
    shutil.copy(meeting_copy / raw["tracks"][0]["path"], meeting_copy / extra["path"])
    raw["tracks"].append(extra)
    (meeting_copy / "manifest.json").write_text(json.dumps(raw))
    failed = sample_transcript.model_copy(deep=True)
    lost = failed.provenance.inputs.pop(1)
    reason = "cannot decode: not an Opus stream"
    failed.provenance.failures.append(
        TrackFailure(path=lost.path, user_id=lost.user_id, reason=reason)
    )
    result = verify(failed.save(tmp_path / "transcript.json"), Manifest.load(meeting_copy))
    assert status(result)[lost.path] == "lost"
    assert detail(result, lost.path) == f"not transcribed: {reason}"
    assert result.ok is False  # for the extra track, not for the one it says it lost
    assert status(result)["tracks/extra.webm"] == "missing"
    assert detail(result, "tracks/extra.webm") == (
        "in the manifest, but the transcript neither used it nor says why not"
    )


def test_without_a_manifest_what_the_transcript_says_it_lost_is_still_listed(
    sample_transcript, tmp_path
):
    partial = sample_transcript.model_copy(deep=True)
    lost = partial.provenance.inputs.pop(0)
    partial.provenance.failures.append(
        TrackFailure(path=lost.path, user_id=lost.user_id, reason="cannot decode")
    )
    partial.provenance.inputs[0].problem = "broke off at 12.3 s"
    result = verify(partial.save(tmp_path / "transcript.json"))
    assert result.ok  # nothing differs: it says what it lost
    assert status(result)[lost.path] == "lost"
    assert status(result)[partial.provenance.inputs[0].path] == "lost"
    assert detail(result, partial.provenance.inputs[0].path) == "broke off at 12.3 s"


def test_a_file_the_recording_named_that_was_never_fetched_is_lost_not_missing(
    sample_transcript, sample_dir, tmp_path
):
    """`run` and batch's fetch jobs name such a file by its participant: it is in no manifest."""
    fetched = sample_transcript.model_copy(deep=True)
    reason = "user-erin's file could not be fetched: 403 Forbidden"
    fetched.provenance.failures.append(TrackFailure(path="", user_id="user-erin", reason=reason))
    result = verify(fetched.save(tmp_path / "transcript.json"), sample_dir)
    assert result.ok
    assert status(result)["user-erin"] == "lost"
    assert detail(result, "user-erin") == f"not transcribed: {reason}"


def test_an_input_the_manifest_does_not_list_is_missing(out, meeting_copy):
    raw = json.loads((meeting_copy / "manifest.json").read_text())
    dropped = raw["tracks"].pop()
    (meeting_copy / "manifest.json").write_text(json.dumps(raw))
    result = verify(out, meeting_copy)
    assert status(result)[dropped["path"]] == "missing"
    assert detail(result, dropped["path"]) == (
        "the transcript was made from it; the manifest does not list it"
    )


def test_a_failed_track_the_manifest_puts_on_another_participant_differs(
    sample_transcript, sample_dir, tmp_path
):
    failed = sample_transcript.model_copy(deep=True)
    lost = failed.provenance.inputs.pop(0)
    failed.provenance.failures.append(
        TrackFailure(path=lost.path, user_id="user-mallory", reason="cannot decode")
    )
    result = verify(failed.save(tmp_path / "transcript.json"), sample_dir)
    assert status(result)[lost.path] == "differs"
    assert detail(result, lost.path) == (
        f"the manifest puts it on {lost.user_id}, the transcript on user-mallory"
    )


@pytest.mark.parametrize("given", ["rec-other", None])
def test_a_manifest_of_another_recording_or_of_none_differs(out, meeting_copy, given):
    raw = json.loads((meeting_copy / "manifest.json").read_text())
    recording = raw.pop("recording_id")
    if given is not None:
        raw["recording_id"] = given
    (meeting_copy / "manifest.json").write_text(json.dumps(raw))
    result = verify(out, meeting_copy)
    assert not result.ok
    assert status(result)["meeting"] == "differs"
    assert detail(result, "meeting") == f"recording {given} in the manifest, {recording} here"


def test_a_manifest_of_another_meeting_differs(out, meeting_copy):
    raw = json.loads((meeting_copy / "manifest.json").read_text())
    raw["meeting_id"] = "another-meeting"
    (meeting_copy / "manifest.json").write_text(json.dumps(raw))
    result = verify(out, Manifest.load(meeting_copy))
    assert not result.ok
    assert status(result)["meeting"] == "differs"
    assert detail(result, "meeting").startswith("meeting another-meeting in the manifest, ")


def test_model_files_not_those_that_transcribed_differ(sample_transcript, tmp_path):
    other = sample_transcript.model_copy(deep=True)
    name = sorted(other.provenance.model_files)[0]
    other.provenance.model_files[name] = "0" * 64
    result = verify(other.save(tmp_path / "transcript.json"))
    assert status(result)["model"] == "differs"
    assert detail(result, "model") == f"bundled:tiny.en: {name} is not as when it transcribed"


def test_a_model_the_reviewer_names_that_is_not_here_is_refused(sample_transcript, tmp_path):
    saved = sample_transcript.save(tmp_path / "transcript.json")
    for nowhere in (str(tmp_path / "no-model-here"), ""):
        with pytest.raises(ModelError, match="no such model folder"):
            verify(saved, model=nowhere)


def test_a_model_file_gone_from_the_folder_is_missing(sample_transcript, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for file in model_folder(BUNDLED_MODEL).iterdir():
        if file.name != "vocabulary.txt":
            (folder / file.name).symlink_to(file)
    result = verify(sample_transcript.save(tmp_path / "transcript.json"), model=str(folder))
    assert status(result)["model"] == "missing"
    assert detail(result, "model") == f"{folder}: vocabulary.txt is not there"


def test_a_model_folder_the_transcript_names_is_looked_for_only_where_the_reviewer_says(
    sample_transcript, tmp_path, monkeypatch
):
    """A folder named in a transcript is a folder of the machine that made it (relative to
    where it ran): here, only ``--model`` says where that model is."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(model_folder(BUNDLED_MODEL))
    made_here = sample_transcript.model_copy(deep=True)
    made_here.provenance.model = "models/tiny"
    saved = made_here.save(tmp_path / "transcript.json")
    monkeypatch.chdir(tmp_path)
    unfound = verify(saved)
    assert status(unfound)["model"] == "unchecked"
    assert detail(unfound, "model") == (
        "models/tiny is not on this machine as a downloaded model: give --model"
    )
    found = verify(saved, model=str(tmp_path / "models" / "tiny"))
    assert status(found)["model"] == "ok"


def test_a_model_folder_with_a_file_the_transcript_does_not_name_differs(
    sample_transcript, tmp_path
):
    folder = tmp_path / "model"
    folder.mkdir()
    for file in model_folder(BUNDLED_MODEL).iterdir():
        (folder / file.name).symlink_to(file)
    (folder / "added.json").write_text("{}")  # a new file: not written through a link
    result = verify(sample_transcript.save(tmp_path / "transcript.json"), model=str(folder))
    assert status(result)["model"] == "differs"
    assert "added.json not among the files it transcribed with" in detail(result, "model")


def test_a_file_that_is_not_a_transcript_is_refused_naming_it(tmp_path):
    (tmp_path / "transcript.json").write_text('{"schema": "something else"}')
    with pytest.raises(TranscriptError, match=r"transcript\.json"):
        verify(tmp_path)


def test_a_folder_of_exports_without_its_transcript_is_refused_saying_why(
    sample_transcript, tmp_path
):
    export(sample_transcript, tmp_path, ["vtt", "txt"])
    with pytest.raises(TranscriptError, match=r"has exports but no transcript\.json"):
        verify(tmp_path)


def test_a_batch_output_folder_is_refused_pointing_at_its_meetings(sample_transcript, tmp_path):
    export(sample_transcript, tmp_path / "meeting-1")
    with pytest.raises(TranscriptError, match="its folders do: verify each of those"):
        verify(tmp_path)


def test_a_batch_meeting_folder_exported_without_json_is_not_sent_to_its_work_folder(
    sample_transcript, tmp_path
):
    meeting = tmp_path / "meeting-1"
    export(sample_transcript, meeting, ["vtt"])
    (meeting / ".work").mkdir()
    sample_transcript.save(meeting / ".work" / "transcript.json")  # batch's own copy
    with pytest.raises(TranscriptError, match=r"has exports but no transcript\.json"):
        verify(meeting)


def test_the_public_api_gives_the_function(out):
    import pipeline
    import pipeline.verification

    assert pipeline.verify(out).ok


def test_the_command_exits_0_when_all_is_as_written_and_1_naming_what_is_not(
    out, sample_dir, sample_manifest, capsys
):
    assert cli.main(["verify", str(out), "--manifest", str(sample_dir)]) == 0
    checked = 5 + len(sample_manifest.tracks) + 1  # the exports, the inputs, the model
    table = capsys.readouterr().out.splitlines()
    assert table[-1] == f"verified: {checked} ok"
    assert table[0].split() == ["ok", "transcript.json", "as", "trackscribe", "wrote", "it"]
    assert cli.main(["verify", str(out)]) == 0  # no manifest: its inputs are not checked
    last = capsys.readouterr().out.splitlines()[-1]
    exports_and_model = checked - len(sample_manifest.tracks)
    assert last == (
        f"nothing differs, but not everything could be checked: {exports_and_model} ok, 1 unchecked"
    )
    (out / "transcript.txt").write_text("nothing to see here\n")
    assert cli.main(["verify", str(out), "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] is False
    txt = next(check for check in found["checks"] if check["subject"] == "transcript.txt")
    assert txt["status"] == "differs"


def test_the_command_refuses_a_manifest_that_is_not_there_with_exit_2(out, tmp_path, capsys):
    assert cli.main(["verify", str(out), "--manifest", str(tmp_path / "nothing.json")]) == 2
    assert f"{tmp_path / 'nothing.json'}: no such manifest file" in capsys.readouterr().err


def test_the_command_refuses_a_transcript_that_is_not_there_with_exit_2(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path / "nothing.json")]) == 2
    said = capsys.readouterr().err
    assert f"{tmp_path / 'nothing.json'}: no such transcript file" in said


# The compliance bundle: one zip a reviewer is sent, checked on its own or in its folder.


@pytest.fixture
def bundle(sample_transcript: Transcript, tmp_path: Path) -> Path:
    """The sample's transcript exported as a bundle alone, as `--formats bundle` leaves it."""
    return export(sample_transcript, tmp_path / "sent", "bundle")["bundle"]


def rezip(path: Path, members: dict[str, bytes]) -> None:
    """The bundle at ``path`` packed again with ``members``, as someone altering it would."""
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)


def read_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as bundle:
        return {name: bundle.read(name) for name in bundle.namelist()}


def test_a_bundle_verifies_on_its_own_with_its_inputs_and_model(bundle, sample_manifest):
    result = verify(bundle, sample_manifest)
    assert result.ok
    assert status(result) == {
        "transcript.bundle.zip": "ok",
        **{f"transcript.bundle.zip:{name}": "ok" for name in BUNDLE_MEMBERS},
        **{track.path: "ok" for track in sample_manifest.tracks},
        "model": "ok",
    }
    assert detail(result, "transcript.bundle.zip:provenance.txt") == (
        "what transcript.bundle.zip:transcript.json renders to"
    )
    bundled = 1 + len(BUNDLE_MEMBERS)
    assert (
        verify(bundle.parent).checks
        == [  # the folder it was written to, no manifest
            *result.checks[:bundled],
            Check(subject="inputs", status="unchecked", detail="no manifest given"),
            result.checks[-1],
        ]
    )


def test_a_bundle_sent_away_from_its_record_says_its_own_bytes_are_unchecked(bundle, tmp_path):
    """Sent on its own, a bundle made again from an altered transcript would pass member by
    member: a reviewer is told that its bytes were checked against nothing."""
    sent = shutil.copy(bundle, tmp_path / "meeting-42.zip")
    result = verify(sent)
    assert result.ok
    assert status(result)["meeting-42.zip"] == "unchecked"
    assert detail(result, "meeting-42.zip") == "no record of trackscribe writing it here"
    assert status(result)["meeting-42.zip:transcript.vtt"] == "ok"


def test_a_member_edited_in_the_bundle_is_named_with_its_first_changed_line(bundle):
    members = read_members(bundle)
    lines = members["transcript.txt"].decode().splitlines(keepends=True)
    changed = next(i for i, line in enumerate(lines) if "] Alice: " in line)
    lines[changed] = lines[changed].replace("] Alice: ", "] Chen: ")
    members["transcript.txt"] = "".join(lines).encode()
    rezip(bundle, members)
    result = verify(bundle)
    assert not result.ok
    assert status(result)["transcript.bundle.zip"] == "differs"
    assert detail(result, "transcript.bundle.zip").endswith("; changed since trackscribe wrote it")
    assert detail(result, "transcript.bundle.zip:transcript.txt") == (
        f"not what transcript.bundle.zip:transcript.json renders to (from line {changed + 1})"
    )
    assert status(result)["transcript.bundle.zip:SHA256SUMS"] == "ok"


def test_a_bundle_made_again_from_an_altered_transcript_differs_from_what_was_written(
    sample_transcript, bundle
):
    forged = sample_transcript.model_copy(deep=True)
    forged.utterances[0].text = "Something nobody said."
    bundle.write_bytes(render(forged, "bundle"))
    result = verify(bundle)
    assert not result.ok
    assert status(result)["transcript.bundle.zip"] == "differs"
    assert all(
        outcome == "ok" for subject, outcome in status(result).items() if ":" in subject
    )  # consistent in itself: the record is what tells


def test_exports_another_version_rendered_otherwise_are_unchecked_while_as_written(
    sample_transcript, tmp_path, monkeypatch
):
    # An archived bundle of an older trackscribe, whose text export had no header, say, must
    # not read as tampered with: it is checked against what was recorded as written instead.
    from stages.export import _text

    older = sample_transcript.model_copy(deep=True)
    older.provenance.software = "trackscribe 0.0.9 (code 000000000000)"
    as_it_was = ("transcript.txt", lambda t: "[00:00:01] Alice: as an older version wrote it\n")
    monkeypatch.setitem(_text.TEXT_FORMATS, "txt", as_it_was)
    monkeypatch.setitem(FORMATS, "txt", as_it_was)
    out = tmp_path / "out"
    export(older, out, ["json", "txt", "bundle"])
    monkeypatch.undo()

    result = verify(out)
    assert result.ok and status(result)["transcript.txt"] == "unchecked"
    assert "trackscribe 0.0.9 (code 000000000000) made it" in detail(result, "transcript.txt")
    assert detail(result, "transcript.txt").endswith("; as trackscribe wrote it")
    # A record an earlier version wrote does not say which transcript it was rendered from.
    record = (out / ".trackscribe-exports").read_text().splitlines(keepends=True)
    (out / ".trackscribe-exports").write_text("".join(x for x in record if x[0] != "#"))
    earlier = verify(out)
    assert earlier.ok and status(earlier)["transcript.txt"] == "unchecked"
    assert detail(earlier, "transcript.txt").endswith(
        "; as trackscribe wrote it (the record does not say from which transcript)"
    )
    for member in ("transcript.txt", "provenance.txt", "SHA256SUMS"):
        assert status(result)[f"transcript.bundle.zip:{member}"] in ("ok", "unchecked")
    assert status(result)["transcript.bundle.zip:transcript.txt"] == "unchecked"
    # What was changed since it was written still differs.
    (out / "transcript.txt").write_text("[00:00:01] Chen: I never said that.\n")
    assert status(verify(out))["transcript.txt"] == "differs"
    members = read_members(out / "transcript.bundle.zip")
    members["transcript.txt"] = b"[00:00:01] Chen: I never said that.\n"
    rezip(out / "transcript.bundle.zip", members)
    assert (
        status(verify(out / "transcript.bundle.zip"))["transcript.bundle.zip:transcript.txt"]
        == "differs"
    )


def test_an_export_from_an_earlier_versions_transcript_file_is_of_that_file(
    sample_transcript, tmp_path, monkeypatch
):
    """A format added, from its transcript.json, to a folder an older version wrote: the
    export shows that file as it is, not this version's JSON for it (with the fields added
    since). Named as that, a later version took it for another transcript's."""
    older = sample_transcript.model_copy(deep=True)
    older.provenance.software = "trackscribe 0.0.9 (code 000000000000)"

    def without_clock(transcript: Transcript) -> str:  # written before clocks were measured
        raw = json.loads(transcript.to_json())
        del raw["provenance"]["clock"]
        return json.dumps(raw, indent=2, ensure_ascii=False) + "\n"

    out = tmp_path / "out"
    monkeypatch.setitem(FORMATS, "json", ("transcript.json", without_clock))
    export(older, out, ["json"])  # the older version
    monkeypatch.undo()
    monkeypatch.setitem(FORMATS, "txt", ("transcript.txt", lambda t: "rendered otherwise\n"))
    export(out / "transcript.json", out, ["txt"])  # a version since, in a notebook
    monkeypatch.undo()

    result = verify(out)  # this version, which renders the TXT otherwise again
    assert result.ok and status(result)["transcript.txt"] == "unchecked"
    assert detail(result, "transcript.txt").endswith("; as trackscribe wrote it")


def test_a_member_missing_or_added_is_said(bundle):
    members = read_members(bundle)
    del members["provenance.txt"]
    members["notes.txt"] = b"approved by nobody\n"
    rezip(bundle, members)
    result = verify(bundle)
    assert status(result)["transcript.bundle.zip:provenance.txt"] == "missing"
    assert status(result)["transcript.bundle.zip:notes.txt"] == "differs"
    assert detail(result, "transcript.bundle.zip:notes.txt") == (
        "not among what trackscribe puts in a bundle"
    )


def test_a_bundle_beside_a_later_transcript_is_caught(sample_transcript, tmp_path):
    """A bundle left from an earlier run must not pass for the transcript beside it."""
    export(sample_transcript, tmp_path, ["json", "bundle"])
    later = sample_transcript.model_copy(deep=True)
    later.utterances[0].text = "A later run heard this."
    export(later, tmp_path, "json")
    result = verify(tmp_path)
    assert status(result)["transcript.json"] == "ok"
    assert status(result)["transcript.bundle.zip"] == "ok"  # as written, but of another run
    assert status(result)["transcript.bundle.zip:transcript.json"] == "differs"
    assert status(result)["transcript.bundle.zip:transcript.vtt"] == "differs"


def test_a_zip_that_is_not_a_bundle_is_refused_naming_it(tmp_path):
    broken = tmp_path / "sent.zip"
    broken.write_bytes(b"PK\x03\x04 and then nothing")
    with pytest.raises(TranscriptError, match=r"sent\.zip: not a readable zip"):
        verify(broken)
    rezip(broken, {"minutes.txt": b"hello\n"})
    with pytest.raises(TranscriptError, match=r"sent\.zip: holds no transcript\.json"):
        verify(broken)
    rezip(broken, {"transcript.json": b'{"schema": "other"}'})
    with pytest.raises(TranscriptError, match=r"sent\.zip:transcript\.json: "):
        verify(broken)


def test_a_bundle_under_any_name_is_read_as_one(bundle, tmp_path):
    renamed = shutil.copy(bundle, tmp_path / "evidence.bin")
    assert status(verify(renamed))["evidence.bin:provenance.txt"] == "ok"


def test_the_command_verifies_a_bundle_and_exits_1_when_a_member_differs(
    bundle, sample_dir, sample_manifest, capsys
):
    assert cli.main(["verify", str(bundle), "--manifest", str(sample_dir)]) == 0
    checked = 1 + len(BUNDLE_MEMBERS) + len(sample_manifest.tracks) + 1
    assert capsys.readouterr().out.splitlines()[-1] == f"verified: {checked} ok"
    members = read_members(bundle)
    members["transcript.srt"] += b"\n99\n00:09:00,000 --> 00:09:01,000\nAlice: Yes.\n"
    rezip(bundle, members)
    assert cli.main(["verify", str(bundle), "--json"]) == 1
    found = {
        check["subject"]: check["status"] for check in json.loads(capsys.readouterr().out)["checks"]
    }
    assert found["transcript.bundle.zip:transcript.srt"] == "differs"


def test_a_folder_written_as_a_bundle_and_subtitles_checks_both(sample_transcript, tmp_path):
    """`--formats vtt,bundle` leaves no transcript.json: the subtitles beside the bundle are
    checked against the transcript in it, and one trackscribe wrote that is gone is said."""
    export(sample_transcript, tmp_path, ["json", "vtt", "bundle"])
    (tmp_path / "transcript.json").unlink()
    vtt = tmp_path / "transcript.vtt"
    vtt.write_text(vtt.read_text().replace("<v Alice>", "<v Chen>", 1))
    result = verify(tmp_path)
    assert not result.ok
    assert status(result)["transcript.bundle.zip"] == "ok"
    assert status(result)["transcript.json"] == "missing"
    assert status(result)["transcript.vtt"] == "differs"
    assert detail(result, "transcript.vtt").startswith(
        "not what transcript.bundle.zip:transcript.json renders to (from line"
    )


def test_a_comment_added_to_a_bundle_differs_even_where_nothing_else_is_checked(bundle, tmp_path):
    data = bundle.read_bytes()
    end = data.rindex(b"PK\x05\x06")
    said = b"VERIFIED OK by trackscribe verify"
    sent = tmp_path / "sent.zip"
    sent.write_bytes(data[: end + 20] + len(said).to_bytes(2, "little") + said)
    result = verify(sent)
    assert not result.ok
    assert status(result)["sent.zip"] == "differs"
    assert detail(result, "sent.zip") == (
        "not laid out byte for byte as trackscribe writes a bundle of what it holds: a zip tool "
        "could show other than what is checked here; no record of trackscribe writing it here"
    )
    assert status(result)["sent.zip:transcript.txt"] == "ok"  # as Python reads it


def test_a_bundle_with_its_members_in_another_order_is_another_file_and_differs(bundle, tmp_path):
    """It shows the same, but a SHA-256 kept of the bundle sent would not match it."""
    members = read_members(bundle)
    sent = tmp_path / "sent.zip"
    with zipfile.ZipFile(sent, "w") as reordered:  # dated and stored as trackscribe does
        for name in reversed(members):
            member = zipfile.ZipInfo(name, date_time=(2026, 11, 20, 10, 0, 0))
            member.create_system, member.external_attr = 3, 0o100644 << 16
            reordered.writestr(member, members[name])
        reordered.comment = zipfile.ZipFile(bundle).comment
    assert read_members(sent) == members
    result = verify(sent)
    assert status(result)["sent.zip"] == "differs"
    assert detail(result, "sent.zip").startswith("not laid out byte for byte as trackscribe")


def test_a_damaged_bundle_beside_its_transcript_differs_and_the_rest_is_still_checked(
    sample_transcript, tmp_path
):
    export(sample_transcript, tmp_path, ["json", "txt", "bundle"])
    (tmp_path / "transcript.bundle.zip").write_bytes(b"PK\x03\x04 broken")
    result = verify(tmp_path)
    assert [c.status for c in result.checks if c.subject == "transcript.bundle.zip"] == [
        "differs",
        "differs",
    ]
    assert status(result)["transcript.txt"] == "ok"
