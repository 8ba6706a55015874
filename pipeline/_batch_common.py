"""What both of a batch's runners need: the local-process one (:mod:`pipeline.batch`) and the
Dask one (:mod:`pipeline._dask_runner`). Apart from both, so the Dask runner does not import
the batch module that imports it.
"""

from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from models import Job, MeetingResult

from ._worker import guard_hint


def one_line(text: str) -> str:
    """A message of several lines (one per track, say) as one, its lines apart by "; "."""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    joined = lines[0] if lines else ""
    for line in lines[1:]:
        joined += (" " if joined.endswith(":") else "; ") + line
    return joined


def worker_lost(job: Job, out: Path, exc: Exception) -> MeetingResult:
    reason = f"the worker doing it was lost: {type(exc).__name__}: {str(exc).rstrip('.')}"
    reason += guard_hint() if isinstance(exc, BrokenProcessPool) else ""
    return MeetingResult(
        job=job.folder_name,
        status="failed",
        folder=str(out / job.folder_name),
        reason=one_line(reason),
    )
