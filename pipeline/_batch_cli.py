"""``trackscribe batch``: many meetings, resumable, on local processes or a Dask cluster."""

import argparse
import sys

from models import BATCH_SUMMARY, load_jobs, printable

from ._cli_common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_PARTIAL,
    Parser,
    add_model_options,
    count_at_least,
    emit,
    non_empty_path,
    output_folder,
    pipeline_options,
    show_progress,
    signing_key,
)
from ._remote_cli import add_api_options, settings_from
from .batch import run_batch

__all__ = ["add_batch_command"]


def add_batch_command(commands: "argparse._SubParsersAction[Parser]") -> None:
    batch = commands.add_parser(
        "batch",
        help="transcribe many meetings, resumably",
        description="Transcribe every meeting listed in JOBS (JSON Lines or CSV, one meeting per "
        'line: {"manifest": PATH}, {"recording_id": R} or {"meeting_id": M, "user_ids": [...]}, '
        'optionally with "id" for the folder name) into OUT/<meeting>. Work is checkpointed '
        "per meeting, per stage and per track: a re-run (after a crash, a kill, or a changed "
        "setting) redoes only what is missing or stale. Writes OUT/summary.json; exit status 1 "
        "when a meeting failed, lost input or was left pending (its Dask scheduler lost). One "
        "batch at a time writes into OUT: a second one is refused while the first runs.",
    )
    batch.add_argument("jobs", type=non_empty_path, help="JOBS file (.jsonl or .csv)")
    batch.add_argument("-o", "--out", type=non_empty_path, required=True, help="output folder")
    batch.add_argument(
        "--workers",
        type=count_at_least(1),
        default=1,
        help="meetings at once, each in its own process with its own model (default 1)",
    )
    batch.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run on this Dask cluster instead (OUT must be on a file system that all workers and "
        "this machine share, at the same path)",
    )
    batch.add_argument(
        "--retry-failed",
        action="store_true",
        help="do only the meetings that failed, lost input or were left pending in the last "
        "run (a plain re-run also redoes failed ones, but keeps a meeting done with input lost)",
    )
    add_api_options(batch)
    add_model_options(batch)
    batch.set_defaults(run=_batch_command)


def _batch_command(args: argparse.Namespace) -> int:
    key = signing_key(args)
    jobs = load_jobs(args.jobs)
    output_folder(args.out)
    api = settings_from(args) if any(j.manifest is None for j in jobs) else None
    if api is not None:
        api.check()  # missing settings are the command's mistake, not every meeting's failure
    summary = run_batch(
        jobs,
        args.out,
        options=pipeline_options(args),
        workers=args.workers,
        scheduler=args.scheduler,
        api=api,
        formats=args.formats,
        signing_key=key,
        retry_failed=args.retry_failed,
        progress=show_progress(args),
    )
    emit(str(summary))
    print(f"wrote {args.out / BATCH_SUMMARY}", file=sys.stderr)
    lost = [m for m in summary.meetings if m.status != "done"]
    if not lost:
        return EXIT_OK
    print(
        "trackscribe: these meetings failed, lost input or were left pending (re-run, or "
        "--retry-failed):",
        file=sys.stderr,
    )
    for meeting in lost:
        reason = printable(meeting.reason or "")
        print(f"  {meeting.job}: {meeting.status}: {reason}", file=sys.stderr)
    # Nothing made at all is told apart from a batch that nearly worked: an alert or a
    # scheduler acts on the first, and need not on the second.
    if all(m.status == "failed" for m in summary.meetings):
        return EXIT_BAD_INPUT
    return EXIT_PARTIAL
