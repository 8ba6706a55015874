"""A batch's meetings as tasks on a Dask cluster: connecting to its scheduler, handing it no
more meetings than it has threads, and what a meeting's result is once its worker or the
scheduler is lost. :func:`pipeline.batch.run_batch` calls it with ``--scheduler``.

``distributed`` is imported only when a cluster is used (it is an optional dependency), so
importing this module needs none of it.
"""

import logging
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from models import Job, MeetingResult

from ._batch_common import worker_lost

if TYPE_CHECKING:
    import distributed

    from .batch import _Work

# The batch's logger: what a run on Dask says is the batch's, filtered by the same name.
log = logging.getLogger("trackscribe.pipeline.batch")


@contextmanager
def dask_client(scheduler: str) -> Iterator["distributed.Client"]:
    """A client of the Dask cluster at ``scheduler``, connected (one out of reach stops the
    batch before anything is begun), and closed at the end."""
    client = _connected(scheduler)
    from ._dask_logs import reconnection_unsaid

    with reconnection_unsaid(client), client:
        yield client


def _connected(scheduler: str) -> "distributed.Client":
    """A client connected to ``scheduler``; one that cannot be had is a :class:`ConnectionError`
    that says why (out of reach, not a scheduler, not an address)."""
    try:
        from distributed import Client
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "running on Dask needs the distributed package: pip install 'trackscribe[dask]'",
            name="distributed",
        ) from None
    made: queue.Queue[distributed.Client | Exception] = queue.Queue()

    def connect() -> None:
        try:
            made.put(Client(scheduler, timeout=_CONNECT_S))
        except Exception as exc:
            made.put(exc)

    # A port that takes the connection and never answers as a scheduler (its dashboard's,
    # 8787, one off 8786) holds Client() for ever, its own time limit notwithstanding
    # (dask/distributed#8071): it is waited for in a thread of its own, for a time of ours.
    threading.Thread(target=connect, name="trackscribe-dask-connect", daemon=True).start()
    try:
        client = made.get(timeout=_CONNECT_S + 5)
    except queue.Empty:
        raise ConnectionError(
            f"the Dask scheduler at {scheduler} did not answer as one within "
            f"{_CONNECT_S + 5:.0f} s (a dashboard's port, such as 8787, and not the "
            "scheduler's?)"
        ) from None
    if isinstance(client, OSError):
        raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler}: {client}")
    if isinstance(client, ValueError | TypeError):  # an address mistyped: "tcp://", "host:port"
        raise ConnectionError(
            f"{scheduler!r} is not a Dask scheduler's address (tcp://HOST:PORT): {client}"
        )
    if isinstance(client, Exception):
        raise client
    return client


_CONNECT_S = 30.0
"""Seconds given to reach the Dask scheduler (and a few more for it to answer)."""


def on_dask(
    jobs: Sequence[Job], work: "_Work", client: "distributed.Client"
) -> Generator[MeetingResult, None, None]:
    """The same work as tasks on a Dask cluster; every worker must see ``out`` at the same
    path (a shared file system), as the outputs are written where the work is done.

    No more meetings are in the cluster's hands than it has threads (counted again as each
    one ends, for a cluster that grows or shrinks): Dask queues more on each worker than it
    runs, and a worker's death counts against every meeting queued on it, so a meeting that
    never began failed with one that killed its worker. A meeting's result is let go once
    read: the scheduler otherwise runs a finished meeting again when the worker holding its
    result dies, after the batch has said it was done.

    Once the scheduler is lost, no result comes: every meeting not finished is pending, at
    once, said in one error. The workers may well finish those they have (a re-run reuses
    that), and the rest were never begun: they read as failed before, after half a minute of
    waiting for the scheduler to come back.
    """
    from distributed import as_completed as dask_completed

    from ._dask_logs import logs_from_workers

    address = client.scheduler.address
    waiting = list(reversed(jobs))
    running: dict[distributed.Future[MeetingResult], Job] = {}
    finished = dask_completed()

    def threads() -> int | None:
        """How many threads the cluster has; None once its scheduler is lost (the client is
        then reconnecting). Asked a little at a time: a scheduler lost as it was asked held
        the question for half a minute, the client's time to connect."""
        while client.status == "running":
            try:
                return sum(client.nthreads(callback_timeout=_ASK_S).values())
            except TimeoutError:  # slow to answer, or gone just now: the status tells
                continue
            except OSError:
                return None
        return None

    def fill(own: "Callable[[_Work], Callable[..., MeetingResult]]") -> bool:
        """Hand the cluster what it has room for; False if its scheduler is lost."""
        if not waiting:
            return True
        if (count := threads()) is None:
            return False
        for _ in range(min(max(1, count) - len(running), len(waiting))):
            job = waiting.pop()
            # One process's decode is all a Dask worker may run: its processes are daemons.
            future = client.submit(
                own(work),
                job,
                1,
                key=f"trackscribe-{job.folder_name}-{os.urandom(4).hex()}",
                pure=False,
            )
            running[future] = job
            finished.add(future)
        return True

    with logs_from_workers(client) as own:  # only what this batch's tasks log
        connected = fill(own)
        for future in finished if connected else ():
            result = dask_outcome(future, running[future], work.out, client)
            if result is None:  # left pending, below, with the meetings not finished
                connected = False
                break
            del running[future]
            future.release()
            yield result
            if not fill(own):
                connected = False
                break
        if connected:
            return
        unfinished = [*running.values(), *reversed(waiting)]
        log.error(
            "the Dask scheduler at %s was lost: %d meeting(s) not finished are left pending; "
            "run the batch again to do them (it reuses what the workers finish meanwhile)",
            address,
            len(unfinished),
        )
        for job in unfinished:
            yield _pending(job, work.out)


_ASK_S = 2.0
"""Seconds the Dask scheduler is given to answer at a time, before the batch looks again at
whether it is still connected."""


def dask_outcome(
    future: "distributed.Future[MeetingResult]", job: Job, out: Path, client: "distributed.Client"
) -> MeetingResult | None:
    """As :func:`.batch._outcome`, on Dask; None when the result could not be had as the scheduler
    was lost: whether the meeting finished is then not known here (a worker may finish it; a
    re-run reuses what it finished). A result that came is the meeting's, whatever the
    connection did after."""
    try:
        return future.result()
    except Exception as exc:
        # distributed's word for it; or an error of the connection going as it was read
        if getattr(exc, "reason", None) == "scheduler-connection-lost" or (
            client.status != "running"
        ):
            return None
        return worker_lost(job, out, exc)


def _pending(job: Job, out: Path) -> MeetingResult:
    """A meeting whose result never came, the Dask scheduler having been lost."""
    return MeetingResult(
        job=job.folder_name,
        status="pending",
        folder=str(out / job.folder_name),
        reason="the Dask scheduler was lost before the meeting's result came",
    )
