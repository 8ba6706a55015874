"""A transcript's provenance as a reviewer reads it: ``provenance.txt`` in the bundle.

``transcript.json`` holds the provenance for tools; this says the same for people, in the
order a reviewer asks: what was lost, what was transcribed (each input's bytes and where it
lies on the clock), what speech was kept from the model and why, and how the clocks were
corrected. Every value that came from outside (a path, a user id, a reason) is shown on one
line, so none can forge a line of the report.
"""

import json
from pathlib import PurePosixPath
from typing import Any

from models import TrackFailure, Transcript, format_clock, format_utc, one_line

_TITLE = "trackscribe provenance"


def to_report(transcript: Transcript) -> str:
    """The provenance of ``transcript``, as plain text."""
    p = transcript.provenance
    names = transcript.speaker_names()
    lines = [_TITLE, "=" * len(_TITLE), ""]
    if transcript.partial:
        lines += [f"PARTIAL: {len(transcript.problems())} inputs lost, in whole or in part:"]
        lines += [f"  {one_line(problem)}" for problem in transcript.problems()]
        lines.append("")
    lines += [
        f"meeting      {one_line(transcript.meeting_id)}",
        f"recording    {one_line(p.recording_id) if p.recording_id else 'not known'}",
        f"time zero    {format_utc(transcript.origin)} (times below are from it)",
        f"software     {one_line(p.software)}",
        f"runtime      {one_line(p.runtime) if p.runtime else 'not recorded'}",
        f"model        {one_line(p.model)}",
    ]
    models = sorted(p.model_files.items())
    lines += [f"  SHA-256 {digest}  {one_line(name)}" for name, digest in models]
    lines += ["", "parameters"]
    lines += [
        f"  {one_line(key)} = {one_line(json.dumps(value, ensure_ascii=False))}"
        for key, value in sorted(_flat(p.parameters).items())
    ]
    if not p.parameters:
        lines.append("  none recorded")
    spoken = len(transcript.utterances)
    lines += ["", f"speakers ({len(transcript.speakers)}), utterances ({spoken})"]
    for speaker in transcript.speakers:
        said = sum(u.speaker == speaker.user_id for u in transcript.utterances)
        shown = f"{one_line(speaker.user_id)}  {one_line(names[speaker.user_id])}"
        lines.append(f"  {shown}: {said} utterances")
    lines += ["", f"inputs transcribed ({len(p.inputs)})"]
    origin = transcript.origin
    for used in p.inputs:
        lines += [
            f"  {one_line(used.path)}",
            f"    speaker   {one_line(used.user_id)}",
            f"    bytes     {used.size}",
            f"    SHA-256   {used.sha256}",
            f"    starts    {format_utc(used.started_time)} "
            f"({(used.started_time - origin).total_seconds():+.3f} s)",
        ]
        if used.decoded_seconds is not None:
            lines.append(f"    decoded   {used.decoded_seconds:.3f} s of audio")
        if used.gap_seconds:
            lines.append(f"    gaps      {used.gap_seconds:.3f} s of silence written for them")
            lines += [
                f"      at {at:.3f} s into the file: {seconds:.3f} s missing"
                for at, seconds in used.gaps[:_GAPS_LISTED]
            ]
            if len(used.gaps) > _GAPS_LISTED:
                lines.append(f"      and {len(used.gaps) - _GAPS_LISTED} more (transcript.json)")
        if used.dropped_seconds:
            lines.append(f"    dropped   {used.dropped_seconds:.3f} s where timestamps went back")
        if used.channels_opposite:
            lines.append("    channels  opposite in phase: half their difference was transcribed")
        if used.problem:
            lines.append(f"    PROBLEM   {one_line(used.problem)}")
    lines += ["", f"tracks lost ({len(p.failures)})"]
    lines += [_lost(failure) for failure in p.failures]
    lines += ["", f"speech kept from the model, or its text left out ({len(p.dropped)})"]
    for kept in p.dropped:
        owner = f"; judged {one_line(kept.attributed_to)}'s voice" if kept.attributed_to else ""
        lines.append(
            f"  {format_clock(kept.start, '.')}-{format_clock(kept.end, '.')}  "
            f"{one_line(kept.path)} ({one_line(kept.user_id)}): {one_line(kept.reason)}{owner}"
        )
    lines += ["", f"clock estimates ({len(p.clock)})"]
    for estimate in p.clock:
        if estimate.unmeasured:
            where = f"{one_line(estimate.path)} ({one_line(estimate.user_id)})"
            lines.append(f"  {where}: NOT MEASURED: {one_line(estimate.unmeasured)}")
            continue
        rate = "drift not measured"
        if estimate.drift_ppm is not None:
            applied = "applied" if estimate.drift_applied else "not applied"
            rate = f"drift {estimate.drift_ppm:+.1f} ppm, {applied}"
        echo = ""
        if estimate.echo_s:
            applied = "applied" if estimate.echo_applied else "not applied"
            echo = f"; others heard {estimate.echo_s:.3f} s late (echo), {applied}"
        lines.append(
            f"  {one_line(estimate.path)} ({one_line(estimate.user_id)}): "
            f"{estimate.correction_s:+.3f} s from {estimate.pairs} other tracks "
            f"(correlation {estimate.correlation:.2f}), "
            f"{'applied' if estimate.applied else 'not applied'}; {rate}{echo}"
        )
    return "\n".join(lines) + "\n"


_GAPS_LISTED = 10
"""Gaps of one file listed in the report; the transcript's provenance holds them all."""


def _lost(failure: TrackFailure) -> str:
    """A lost track's line, its file named once: most reasons start with it already (its path,
    or the name it had in the recording)."""
    reason = failure.reason
    if failure.path:
        for said in (f"{failure.path}: ", f"{PurePosixPath(failure.path).name}: "):
            if reason.startswith(said):
                reason = reason.removeprefix(said)
                break
    return (
        f"  {one_line(failure.path or '(no file)')} ({one_line(failure.user_id)}): "
        f"{one_line(reason)}"
    )


def _flat(parameters: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"vad": {"padding": 0.2}}`` as ``{"vad.padding": 0.2}``: one setting a line."""
    flat: dict[str, Any] = {}
    for key, value in parameters.items():
        if isinstance(value, dict) and value:
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
