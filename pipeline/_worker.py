"""What worker processes log reaches this process's logging, as if logged here.

A worker started by a fork server has no logging set up: its warnings (a truncated file, a
track refused) went to its stderr unformatted, ignored ``-v``, and never reached a log file
or a notebook's handlers. Workers instead put their records on a queue, and a thread here
hands each one to the logger of the same name, with its filters, levels and handlers.
"""

import logging
import logging.handlers
import signal
from multiprocessing.context import BaseContext
from multiprocessing.queues import Queue
from types import TracebackType

__all__ = ["WorkerLogs", "start_worker"]


class WorkerLogs:
    """The queue workers log into, and the thread that hands their records on; a context
    manager. ``initargs`` are what :func:`start_worker` takes in each worker."""

    def __init__(self, context: BaseContext) -> None:
        self._queue: Queue = context.Queue()
        self._listener = logging.handlers.QueueListener(self._queue, _HandOn())

    @property
    def initargs(self) -> tuple[Queue, int]:
        # The level our own loggers log at: a worker need not send what would be dropped.
        return self._queue, logging.getLogger("stages").getEffectiveLevel()

    def __enter__(self) -> "WorkerLogs":
        self._listener.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._listener.stop()  # hands on what is still queued first
        self._queue.close()


def start_worker(queue: Queue, level: int, ignore_interrupt: bool = True) -> None:
    """Run first in each worker: its log records go to ``queue``; Ctrl-C is left to the
    parent, which stops the pool (otherwise every worker prints a traceback)."""
    if ignore_interrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(queue))
    root.setLevel(level)


class _HandOn(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
