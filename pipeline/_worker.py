"""What ties worker processes to this one: what they log is handled here, and they stop when
this process stops, however it stops.

Workers come from a fork server, and neither holds by itself:
- A worker has no logging set up: its warnings (a truncated file, a track refused) went to
  its stderr unformatted, ignored ``-v``, and never reached a log file or a notebook's
  handlers. Workers put their records on a queue instead, and a thread here hands each one
  to the logger of the same name, with its filters, levels and handlers.
- A process killed (``kill -9``, an out-of-memory kill, a scheduler's timeout) never shuts its
  pool down, and its workers waited for work forever, the fork server with them: a few
  hundred MB each, for every run killed. Each worker holds the reading end of a pipe whose
  only writing end is this process's; when this process is gone, however it went, the pipe
  reads as closed and the worker exits. (The kernel's parent-death signal does not do it: a
  worker's parent is the fork server, which outlives us.)
"""

import contextlib
import logging
import logging.handlers
import multiprocessing.process
import multiprocessing.util
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.queues import Queue
from queue import SimpleQueue
from types import FrameType, TracebackType
from typing import NoReturn

from tqdm import tqdm

from models import in_this_context, stop_within

__all__ = [
    "Terminated",
    "WorkerLink",
    "guard_hint",
    "interruptible",
    "interrupts_held",
    "lowest_level",
    "stops_unwrapped",
    "unrunnable_script",
]

log = logging.getLogger(f"trackscribe.{__name__}")


class Terminated(KeyboardInterrupt):
    """A stop that reached this process only (SIGTERM from a service manager or ``kill``, as
    the command line raises it): taken the way Ctrl-C is, so that the same clean-up runs
    (workers stopped, scratch audio removed, no half-written output)."""


@contextlib.contextmanager
def stops_unwrapped() -> Iterator[None]:
    """Raise a stop that came wrapped as the stop it is: pydantic turns whatever a serializer
    raises, a Ctrl-C or a SIGTERM's :class:`Terminated` too, into an error of its own, and
    code that takes an ``Exception`` as one meeting's failure would then go on after it."""
    try:
        yield
    except Exception as exc:
        stop = stop_within(exc)
        if stop is None:
            raise
        if not isinstance(stop, Terminated) and stop.args == ("Terminated",):
            raise Terminated from exc  # only its name was left (the JSON writer's message)
        raise stop from exc


class WorkerLink:
    """A context manager for the life of the pools it makes (:meth:`pool`). With
    ``ignore_interrupt``, Ctrl-C is left to this process, which stops the pool; without, it
    stops each worker as it stops this process."""

    def __init__(self, context: BaseContext, *, ignore_interrupt: bool = True) -> None:
        self._context = context
        self._queue: Queue = context.Queue()
        # In the context of whoever made the link: the workers' records are that work's (a
        # Dask task's, whose batch alone is to get them), though handed on from this thread.
        self._listener = threading.Thread(
            target=in_this_context(self._hand_on), name="trackscribe-worker-logs", daemon=True
        )
        self._lifeline, self._alive = context.Pipe(duplex=False)
        self._ended = threading.Event()  # the listener took the last record (the None)
        self._ignore_interrupt = ignore_interrupt

    def pool(self, workers: int) -> ProcessPoolExecutor:
        """A pool of ``workers`` processes, each tied to this one (see :func:`start_worker`);
        shut down before this link is left."""
        return ProcessPoolExecutor(
            workers,
            mp_context=self._context,
            initializer=start_worker,
            initargs=(self._queue, lowest_level(), self._lifeline, self._ignore_interrupt),
        )

    def __enter__(self) -> "WorkerLink":
        self._listener.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # The pool is shut down by now: its workers have stopped, or are to stop now.
        self.cut()
        self._lifeline.close()
        # What is still queued is handed on first. A worker killed while writing to the
        # queue can leave its lock taken for good: then this waits a little, not forever.
        self._queue.put(None)
        self._listener.join(timeout=_LAST_RECORDS_WAIT)
        self._queue.close()
        if not self._ended.is_set():  # the None never came through: the feeder may wait on
            self._queue.cancel_join_thread()  # a lock a killed worker holds, or a full pipe
        else:
            # Its feeder thread ends now, not as the interpreter exits: the lock it holds
            # last, freed then, told the resource tracker only half ("leaked semaphore").
            self._queue.join_thread()

    def stop(self, pool: ProcessPoolExecutor) -> None:
        """Stop ``pool`` early: no job not yet begun is begun, and the running ones stop.

        Whether the stop reached the workers too is not known here. Ctrl-C at a terminal
        does; SIGTERM, ``kill -INT`` and a notebook's interrupt reach this process alone, and
        the workers went on with their meetings, and began those the pool had queued. So
        every worker is told (:meth:`cut`); a second Ctrl-C does a job no harm."""
        self.cut()
        _unjam(pool)
        pool.shutdown(cancel_futures=True)

    def cut(self) -> None:
        """Make every worker exit now: no one wants its work. A job that Ctrl-C stops
        (:func:`interruptible`) is stopped that way first, so that it cleans up (its scratch
        audio, its temporary outputs); anything else ends where it is."""
        self._alive.close()

    def _hand_on(self) -> None:
        """Each record, to the logger of its name, until the end (or a queue a killed worker
        left broken)."""
        while True:
            try:
                record = self._queue.get()
            except Exception:  # half a record from a worker killed mid-write
                return
            if record is None:
                self._ended.set()
                return
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)


def lowest_level() -> int:
    """The lowest level any of our loggers logs at here: a worker need not send what every
    one of them would drop, and must send what one set lower (``trackscribe.stages.decode``
    at DEBUG, say) would keep."""
    known = list(logging.Logger.manager.loggerDict)  # at once: other threads add loggers
    names = ["trackscribe", *(name for name in known if name.startswith("trackscribe."))]
    return min(logging.getLogger(name).getEffectiveLevel() for name in names)


def _unjam(pool: ProcessPoolExecutor) -> None:
    """After :meth:`WorkerLink.cut`, once the workers have exited: close this process's end
    of ``pool``'s result pipe for writing. A worker cut off while it wrote a result leaves
    half a message there, and the pool's reader waits for the rest for ever: this process
    holds a writing end too, so no end of file comes, and the pool's shutdown, then Python's
    exit, would hang. Its end closed, the reader gets one, and takes the pool as broken,
    which a pool being stopped is. The pool has no public way to do this; where its
    internals are not as here, this does nothing."""
    processes = getattr(pool, "_processes", None)
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if not isinstance(processes, dict) or writer is None:
        return
    deadline = time.monotonic() + _CLEAN_UP_WAIT + _LOG_SEND_WAIT + 1.0  # what cut allows
    for process in list(processes.values()):
        process.join(max(0.0, deadline - time.monotonic()))
    with contextlib.suppress(OSError):
        writer.close()


_LAST_RECORDS_WAIT = 5.0
"""Seconds the end of a pool waits for its workers' last log records."""


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back while worker processes start, and raised after.

    A Ctrl-C reaches every process of the terminal's group. The fork server is a new Python
    process that imports for a good part of a second before it ignores Ctrl-C, and each worker
    takes it until :func:`start_worker` runs: either printed a traceback of its own, and this
    process, stopped half-way through starting a worker, left it to fail reading what it was
    sent. A process inherits the signal mask of the thread that starts it, so processes
    started in here start with Ctrl-C blocked, until :func:`start_worker` decides; and this
    process's own Ctrl-C (which Python raises in its main thread, whichever thread the signal
    reached) waits until they are started. (The fork server keeps the mask it started with:
    other processes it forks later start with Ctrl-C blocked too.)

    A SIGTERM to this process alone (``kill``, the command line's :class:`Terminated`) waits
    too: raised half-way through a start, it ended the run before the pool knew of the new
    worker, so nothing waited for it, and the worker, still reading what it was sent, found
    the pool's semaphores removed and printed the fork server's traceback. It is not blocked
    in the mask: a worker must still die of one sent to the whole group.
    """
    if not hasattr(signal, "pthread_sigmask"):  # no fork server there either
        yield
        return
    caught: list[tuple[int, FrameType | None]] = []
    main = threading.current_thread() is threading.main_thread()
    # Ignored, a signal stays ignored, and Ctrl-C is inherited so (a handler of ours is not).
    swapped = {
        number: handler
        for number in (signal.SIGINT, signal.SIGTERM)
        if main and (handler := signal.getsignal(number)) not in (None, signal.SIG_IGN)
    }
    for number in swapped:
        signal.signal(number, lambda number, frame: caught.append((number, frame)))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for number, handler in swapped.items():
            signal.signal(number, handler)
        for signum, frame in caught[:1]:  # the first stop is the one raised
            handler = swapped[signal.Signals(signum)]
            if callable(handler):
                handler(signum, frame)  # Python's own Ctrl-C raises KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


_held_back: list[int] = []
"""In a worker that Ctrl-C stops: a Ctrl-C it got, while no job ran or during one; every
job it begins after that stops at once."""

_terminating: list[int] = []
"""In a worker that Ctrl-C stops: a SIGTERM it got; it exits once its job has cleaned up."""

_idle = threading.Event()
"""Clear while a job that Ctrl-C stops runs: a worker told to exit stops it first."""
_idle.set()

_CLEAN_UP_WAIT = 30.0
"""Seconds a worker told to exit gives its job to clean up (the model's batches in flight
finish first)."""


class _Ending:
    """How a worker ends: at the first of the ways it is asked to, once its last log
    records have been sent, or have stopped being read.

    A worker ends when it gets SIGTERM, when its parent is gone or done with it, or when its
    pool shuts down, and a stop sets off two or all three at once: every one of them only
    asks (:meth:`ask`, a put on a :class:`SimpleQueue`, safe anywhere, in a signal handler
    too), and one thread, started with the worker, acts on the first request. ``os._exit``
    drops what the queue's feeder thread has not sent yet, and the records of a job's
    clean-up (a scratch folder it could not remove, say) were lost with it; so they are sent
    first, from a thread of their own (the main thread may hold the queue's lock,
    interrupted), unless the main thread's normal ending is sending them already. Nothing
    here starts a thread once the worker runs: a signal can come while the main thread holds
    the lock that takes.
    """

    def __init__(self) -> None:
        self._codes: SimpleQueue[int] = SimpleQueue()
        self._records: Queue | None = None
        # Taken by the one ending that sends the last records, the normal one or the asked
        # one: two at once cut the sending off half-way, with the queue's lock (the parent's
        # too) taken.
        self._sending = threading.Lock()
        self._normal_begun = threading.Event()
        self._send_now = threading.Event()
        self._sent = threading.Event()

    @property
    def started(self) -> bool:
        """Whether this process is a worker (:func:`start_worker` ran in it)."""
        return self._records is not None

    def start(self, records: Queue) -> None:
        """Ready to end the worker whose log records go to ``records``."""
        self._records = records
        threading.Thread(target=self._act, daemon=True).start()
        threading.Thread(target=self._send, daemon=True).start()

    def ask(self, code: int) -> None:
        """End the worker with status ``code``. The main thread waits here for it to, unless
        it is ending normally: a signal handler returns to that."""
        self._codes.put(code)
        if (
            threading.current_thread() is threading.main_thread()
            and not self._normal_begun.is_set()
        ):
            _park()

    def begin_normally(self) -> None:
        """As the main thread returns: multiprocessing sends the last records next, unless an
        ending asked for is sending them already (then that one ends the worker)."""
        self._normal_begun.set()  # first: a SIGTERM from now on returns to this ending
        if not self._sending.acquire(blocking=False):
            _park()

    def records_sent(self) -> None:
        """The last records are sent (run by multiprocessing's finalizers, after the queue's)."""
        self._sent.set()

    def _act(self) -> None:
        code = self._codes.get()
        logging.raiseExceptions = False  # a record logged after the queue closed is lost anyway
        if self._sending.acquire(blocking=False):  # else the normal ending is sending them
            self._send_now.set()
        unsent = self._unsent()
        while not self._sent.wait(_LOG_SEND_WAIT):
            before, unsent = unsent, self._unsent()
            if unsent is None or before is None or unsent >= before:
                break  # none sent for a while: the parent is gone, or the queue's lock is held
        os._exit(code)

    def _send(self) -> None:
        self._send_now.wait()
        assert self._records is not None  # started with them
        self._records.close()
        self._records.join_thread()
        self._sent.set()

    def _unsent(self) -> int | None:
        """How many of this worker's records are still to be sent; None if that cannot be
        told. Only the queue's own buffer knows (``qsize`` counts every process's records, and
        another worker that logs faster than the parent reads would hide this one's
        progress), and it has no public name."""
        buffer = getattr(self._records, "_buffer", None)
        return len(buffer) if buffer is not None else None


_LOG_SEND_WAIT = 2.0
"""Seconds a worker's last log records may go without being read before it exits anyway: a
parent that is gone reads none, and a worker killed mid-write holds the queue's lock for good."""

_ending = _Ending()
"""In a worker: how it ends (see :func:`start_worker`)."""


def _park() -> NoReturn:
    """Wait for the worker to be ended (:class:`_Ending`): the main thread must begin no other
    job."""
    while True:
        time.sleep(3600)


def _hold_back(signum: int, _frame: FrameType | None) -> None:
    _held_back.append(signum)


def _stop_job(signum: int, _frame: FrameType | None) -> None:
    """Ctrl-C during a job: the first stops it; later ones (the terminal's and the parent's
    both, or a key pressed twice) are only noted, so as not to break off its clean-up."""
    first = not _held_back
    _held_back.append(signum)
    if first:
        raise KeyboardInterrupt


def _terminated(signum: int, frame: FrameType | None) -> None:
    """SIGTERM in a worker: it exits, as SIGTERM has it, once its log records are sent; a job
    under way that Ctrl-C stops (:func:`interruptible`) is first stopped that way, so that it
    cleans up (its scratch folder, its half-written files) rather than leave them. SIGTERM
    comes from the pool itself when the run stops: every worker is told to exit then
    (:meth:`WorkerLink.cut`), and as soon as one has (an idle one does at once), the pool
    sends SIGTERM to the others. A service manager may send it too. The worker still dies,
    so that its pool takes the job for lost with it (a batch tries such a meeting again),
    not for one stopped on purpose."""
    _terminating.append(signum)
    if _idle.is_set():
        _ending.ask(128 + signum)
        return  # it came during the normal ending, which goes on
    _stop_job(signum, frame)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C let through for the length of a job, in a worker that otherwise holds it back
    (see :func:`start_worker`; anywhere else this changes nothing): the job stops, its
    clean-up runs, and its caller is told (after a SIGTERM, the worker exits instead: see
    :func:`_terminated`). A Ctrl-C once received, during a job or while none
    ran, stops every job the worker begins after it: the parent got it too, and wants no more
    work done."""
    held = signal.getsignal(signal.SIGINT)
    if (
        threading.current_thread() is not threading.main_thread()
        or not _ending.started
        or held not in (_hold_back, signal.SIG_IGN)
    ):
        yield
        return
    # Run in the background (Ctrl-C ignored from the start), a Ctrl-C at the terminal is
    # still not this worker's; a SIGTERM, or its parent gone, still stops the job first.
    ignored = held is signal.SIG_IGN
    try:
        if not ignored:
            signal.signal(signal.SIGINT, _stop_job)
        _idle.clear()
        if _held_back:
            raise KeyboardInterrupt
        yield
    except KeyboardInterrupt:
        # Every job this worker begins from now on stops at once too: one the pool had
        # already handed it when the parent stopped would otherwise run to its end.
        _held_back.append(signal.SIGINT)
        raise
    finally:
        # Each step also when a stop breaks off the one before: a worker left busy would
        # take every later SIGTERM as noted only, and its pool wait for it for ever.
        try:
            signal.signal(signal.SIGINT, held)
        finally:
            try:
                _idle.set()
            finally:
                if _terminating:
                    _ending.ask(128 + _terminating[0])


def start_worker(queue: Queue, level: int, lifeline: Connection, ignore_interrupt: bool) -> None:
    """Run first in each worker: its log records go to ``queue``, and it exits when
    ``lifeline`` closes. With ``ignore_interrupt``, Ctrl-C is left to the parent, which stops
    the pool (otherwise every worker prints a traceback). Without, it stops the jobs that run
    :func:`interruptible`, and is held back while none does: an idle worker has nothing to
    stop, and printed a traceback. A worker whose Ctrl-C was ignored when it started (a
    command run in the background) keeps ignoring it."""
    _ending.start(queue)  # first: a SIGTERM from here on asks it to end
    if ignore_interrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # first: one held back is dropped
    elif signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _hold_back)
    # Every worker, as the pool sends SIGTERM to the others once one has exited: killed
    # then, they were cut off sending their records, and the parent waited 5 s for them.
    signal.signal(signal.SIGTERM, _terminated)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # see interrupts_held
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(queue))
    # Run as the main thread returns: before the queue's own finalizers close it (priority
    # 10) and send what is left (-5), and after.
    multiprocessing.util.Finalize(None, _ending.begin_normally, exitpriority=100)
    multiprocessing.util.Finalize(None, _ending.records_sent, exitpriority=-10)
    root.setLevel(level)
    # A worker's bars are its own, so a thread lock will do. tqdm's default also makes a
    # multiprocessing lock, and the named semaphore behind it, left when the worker is made
    # to exit (below), drew a warning about leaked semaphores when the run ended.
    tqdm.set_lock(threading.RLock())
    threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True).start()


def _exit_with_parent(lifeline: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()  # nothing is ever sent: this returns when the pipe closes
    if not _idle.is_set():  # a job that Ctrl-C stops: stopped so, it leaves nothing behind
        main = threading.main_thread().ident
        assert main is not None  # the main thread has started: it started this one
        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # run in the background
        signal.pthread_kill(main, signal.SIGTERM if ignored else signal.SIGINT)
        _idle.wait(_CLEAN_UP_WAIT)
    _ending.ask(1)  # whoever wanted the work is gone


def guard_hint() -> str:
    """What to tell a script whose workers were lost: a worker first runs the top level of
    the script that started it, so a script that calls trackscribe there, unguarded, breaks
    every pool. Empty in a notebook, under ``python -c`` and for the command line."""
    main = sys.modules.get("__main__")
    if main is None or not getattr(main, "__file__", None):
        return ""
    from ._entry import main as command_line  # what `trackscribe` and `python -m pipeline` run

    if getattr(main, "main", None) is command_line:
        return ""
    return (
        "; if the script calls trackscribe at its top level, put that call under "
        '`if __name__ == "__main__":` (each worker process runs the top level again)'
    )


def unrunnable_script() -> str | None:
    """Why a worker process could not start here, or None: a worker first runs the script
    that started this process again, from its file, and a script read from standard input
    (``python - < script.py``, a heredoc) is named ``<stdin>`` and has none. Started anyway,
    each worker would print a traceback and die."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:  # `-m`: found by name
        return None
    path = getattr(main, "__file__", None)
    if not path:  # a notebook, the interactive prompt, `python -c`: nothing is run again
        return None
    # Where multiprocessing itself looks for a relative one: the folder the process began in
    # (an attribute typeshed does not list).
    began_in = getattr(multiprocessing.process, "ORIGINAL_DIR", None) or ""
    if os.path.isfile(os.path.join(began_in, path)):
        return None
    return (
        f"the script that started this process ({path}) is not a file a worker process can "
        "run again (a script read from standard input is not): save it to a file and run that"
    )


def refuse_in_rerun_script(what: str) -> None:
    """End the worker process that is running a script again (as it starts, to find the
    script's functions) when ``what`` is called by that script's top level: unguarded, the
    call would start a second run inside each worker, whose errors (a batch's output folder
    is busy: the first run holds it) would hide what is wrong.

    The worker cannot start whatever is done, and its pool tells the run that started it,
    which goes on without it and says why. So it says what to change in one line and exits
    (SystemExit, which a script's ``except Exception`` does not catch), rather than raise
    an error that multiprocessing prints as a traceback from each worker.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
            log.error(
                "%s was called by the top level of a script that a worker process runs again "
                'as it starts: put that call under `if __name__ == "__main__":`',
                what,
            )
            raise SystemExit(1)
        frame = frame.f_back
