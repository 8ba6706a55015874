"""What a batch's meetings log on the workers of a Dask cluster is handled in the batch's
process, as a worker process's is (:class:`pipeline._worker.WorkerLink`): by the logger of the
same name, with its levels, filters and handlers. Without it, a meeting's warnings (outputs
withdrawn, a track refused, a bundle signed again with another key) went to the worker's
stderr, unformatted, and ``-v`` showed nothing of a meeting at all.

It is distributed's own forwarding (``Client.forward_logging``), with three differences:

- A batch gets only what its own tasks log. A worker's ``trackscribe`` logger is one for every
  batch on the cluster, and each batch's forwarding handler on it saw every record: two
  batches on one cluster printed each other's meetings' warnings and errors (another user's
  paths; a batch that went well showed another's failures). Each task the batch submits is
  wrapped (:func:`logs_from_workers` gives the wrapper) to run with the batch's topic in a
  context variable, and the batch's handler passes only records logged under it. The threads
  the pipeline starts for a meeting (downloads, model batches, a decode pool's log listener)
  are started in the context of the thread that starts them (``models.in_this_context``), so
  what they log is their meeting's batch's too.
- Its own topic, so that two batches neither end each other's forwarding nor share a level:
  each gets records at or above its own level (``-v``, ``-vv``) only.
- The worker's logger (at the root's WARNING there) is lowered to the lowest level a batch on
  it asks for, else it never made ``-v``'s records; and set back as each batch's forwarding
  ends, to its own level once none is left, not left at a ``-vv`` batch's DEBUG for good.

Imported to run on Dask only: it needs the ``distributed`` package.
"""

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import FrameType
from typing import Any, Generic, ParamSpec, TypeVar

from distributed import Client, Worker
from distributed.diagnostics.plugin import ForwardLoggingPlugin

from ._worker import lowest_level

__all__ = ["logs_from_workers", "reconnection_unsaid"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_LOGGER = "trackscribe"

_batch: ContextVar[str | None] = ContextVar("trackscribe_dask_batch", default=None)
"""On a worker, the topic of the batch whose task is running in this context, if any."""


class _ForBatch(Generic[_P, _T]):
    """A batch's task: its work, run with the batch's topic set (picklable, for Dask)."""

    def __init__(self, work: Callable[_P, _T], topic: str) -> None:
        self.work = work
        self.topic = topic

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        token = _batch.set(self.topic)
        try:
            return self.work(*args, **kwargs)
        finally:
            _batch.reset(token)


@contextlib.contextmanager
def logs_from_workers(
    client: Client,
) -> Iterator[Callable[[Callable[_P, _T]], Callable[_P, _T]]]:
    """While in it, what trackscribe logs in the tasks of ``client``'s cluster that run work
    wrapped by the function given (``client.submit(own(work), ...)``) is logged here; what
    other tasks log (another batch's) is not."""
    topic = f"trackscribe-logs-{os.urandom(6).hex()}"
    client.subscribe_topic(topic, _hand_on)
    client.register_plugin(_Forwarding(_LOGGER, lowest_level(), topic), name=topic)

    def own(work: Callable[_P, _T]) -> Callable[_P, _T]:
        return _ForBatch(work, topic)

    try:
        yield own
    finally:
        # A scheduler lost cannot be asked (asking waits for it to come back): the workers
        # keep the plugin, and the level it asked for, until they restart; its topic goes
        # unread, as that of a batch killed outright.
        if client.status == "running":
            with contextlib.suppress(Exception):  # it may be going just now
                client.unregister_worker_plugin(topic)
            client.unsubscribe_topic(topic)


def _hand_on(event: tuple[float, dict[str, Any]]) -> None:
    record = logging.makeLogRecord(event[1])
    if record.process == os.getpid():
        return  # a worker in this process (a notebook's threads-only cluster): handled here
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


class _Forwarding(ForwardLoggingPlugin):
    """Forwards what the batch's own tasks log, at or above its level (its handler's), and
    has the worker's logger make records that low while it is there."""

    def setup(self, worker: Worker) -> None:
        super().setup(worker)
        assert self.handler is not None  # made by the setup above
        self.handler.addFilter(self._ours)
        _levels.ask(id(self), self.level)

    def teardown(self, worker: Worker) -> None:
        super().teardown(worker)
        _levels.drop(id(self))

    def _ours(self, record: logging.LogRecord) -> bool:
        # Called in the thread that logs (or hands on a worker process's record), whose
        # context says which batch's task, if any, it is working for.
        return _batch.get() == self.topic


class _Levels:
    """The level of a worker's ``trackscribe`` logger: the lowest that a batch forwarding
    from it asks for, where that is below its own; its own again once no batch is left."""

    def __init__(self) -> None:
        self._asked: dict[int, int] = {}  # a batch's forwarding (its id) -> its level
        self._own: int | None = None  # the logger's level before any batch lowered it
        self._lock = threading.Lock()  # workers of one process share the logger

    def ask(self, key: int, level: int) -> None:
        with self._lock:
            self._asked[key] = level
            self._apply()

    def drop(self, key: int) -> None:
        with self._lock:
            self._asked.pop(key, None)
            self._apply()

    def _apply(self) -> None:
        logger = logging.getLogger(_LOGGER)
        if not self._asked:
            if self._own is not None:
                logger.setLevel(self._own)
                self._own = None
            return
        if self._own is None:
            self._own = logger.level
        parent = logger.parent.getEffectiveLevel() if logger.parent else logging.WARNING
        own_effective = self._own or parent  # NOTSET: the root's level counts
        logger.setLevel(min(own_effective, *self._asked.values()))


_levels = _Levels()


@contextlib.contextmanager
def reconnection_unsaid(client: Client) -> Iterator[None]:
    """While in it, what distributed logs of ``client``'s attempts to reconnect to a lost
    scheduler is not logged. The batch says in one line that the scheduler was lost, and
    closes the client; distributed then logged the cancelled attempts as an error with a
    traceback, or said it had given up "after 30.00 seconds" when it had not. Other clients'
    records are left alone, and the filter goes with the block."""
    logger = logging.getLogger("distributed.client")
    unsaid = _Reconnecting(client)
    logger.addFilter(unsaid)
    try:
        yield
    finally:
        logger.removeFilter(unsaid)


class _Reconnecting(logging.Filter):
    """Passes every record but those logged by one client's reconnection (``_reconnect``):
    from it (on the stack) or of an error raised in it (in the record's traceback)."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self._client = client

    def filter(self, record: logging.LogRecord) -> bool:
        frames: list[FrameType] = []
        frame: FrameType | None = sys._getframe()
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
        trace = record.exc_info[2] if record.exc_info else None
        while trace is not None:
            frames.append(trace.tb_frame)
            trace = trace.tb_next
        return not any(
            f.f_code.co_name == "_reconnect" and f.f_locals.get("self") is self._client
            for f in frames
        )
