"""What a batch's meetings log on the workers of a Dask cluster is handled in the batch's
process, as a worker process's is (:class:`pipeline._worker.WorkerLink`): by the logger of the
same name, with its levels, filters and handlers. Without it, a meeting's warnings (outputs
withdrawn, a track refused, a bundle signed again with another key) went to the worker's
stderr, unformatted, and ``-v`` showed nothing of a meeting at all.

It is distributed's own forwarding (``Client.forward_logging``), with two differences: a
topic of the batch's own, so that two batches on one cluster neither get each other's records
nor end each other's forwarding; and the level asked for here, which the workers' loggers
(at the root's WARNING there) are set to, else they never made ``-v``'s records.

Imported to run on Dask only: it needs the ``distributed`` package.
"""

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from distributed import Client, Worker
from distributed.diagnostics.plugin import ForwardLoggingPlugin

from ._worker import lowest_level

__all__ = ["logs_from_workers"]


@contextlib.contextmanager
def logs_from_workers(client: Client) -> Iterator[None]:
    """While in it, what trackscribe logs in the tasks of ``client``'s cluster is logged here."""
    topic = f"trackscribe-logs-{os.urandom(6).hex()}"
    client.subscribe_topic(topic, _hand_on)
    client.register_plugin(_Forwarding("trackscribe", lowest_level(), topic), name=topic)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # the scheduler may be gone by now
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
    """Forwards the logger, and lowers its level on the worker to the one asked for."""

    def setup(self, worker: Worker) -> None:
        super().setup(worker)
        logger = logging.getLogger(self.logger_name)
        if logger.getEffectiveLevel() > self.level:
            logger.setLevel(self.level)
