"""Work handed to another thread, run in the context (:mod:`contextvars`) of the thread that
handed it over."""

import contextvars
from collections.abc import Callable
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


def in_this_context(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """``fn``, to be run in another thread with the context variables this thread has now.

    A thread starts with an empty context, so what identifies the caller's work there (the
    batch a Dask task runs for, which picks the batch its log records go to) was lost on the
    threads the pipeline starts for that work (downloads, model batches, a worker pool's log
    listener). One call per thread or job: a context cannot be entered by two threads at once.
    """
    context = contextvars.copy_context()

    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return context.run(fn, *args, **kwargs)

    return run
