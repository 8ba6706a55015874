"""How problems are told to people: one ``where: what`` per validation problem, no secret in
a message, and which extra installs a library an optional feature needs."""

import difflib
import importlib
import re
from types import ModuleType

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticSerializationError

from ._json import LONE_SURROGATE, lone_surrogate_at
from .http import redact_urls

_UNEXPECTED = re.compile(
    r"Expected `(?P<wanted>\w+)`.*?field_name='(?P<field>\w+)'.*?input_type=(?P<got>\w+)"
)
"""pydantic's warning that a list holds a value of another kind than its field's."""


class RedactedError(Exception):
    """An error whose message carries no URL's query string or other secret.

    Messages name the files a caller gave, and a pre-signed download URL passed where a path
    belongs (an easy slip in a notebook) is a credential: it must not reach the traceback, a
    log or a batch summary through the message that says it is not a file.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_urls(a) if isinstance(a, str) else a for a in args))


def describe(exc: ValidationError, *, at_most: int | None = None) -> str:
    """``tracks[0].started_time: missing; …`` for every problem (``at_most`` the first so many),
    in order, in words a person reads without knowing pydantic: a field misspelt is named with
    the one it was most likely meant to be, which is then missing."""
    errors = exc.errors()
    missing = {
        (e["loc"][:-1], str(e["loc"][-1])) for e in errors if e["type"] == "missing" and e["loc"]
    }
    lines = []
    for error in errors:
        loc = error["loc"]
        if not loc and error["type"] == "value_error":
            # A check across fields (a model's own validator) names where in its message.
            lines.append(_said(error))
            continue
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        what = _said(error)
        if error["type"] == "extra_forbidden" and loc:
            meant = [name for parent, name in missing if parent == loc[:-1]]
            close = difflib.get_close_matches(str(loc[-1]), meant, n=1, cutoff=0.6)
            what = f"unknown field (misspelt {close[0]}?)" if close else "unknown field"
        lines.append(f"{where.lstrip('.') or '(top level)'}: {what}")
    return "; ".join(lines[:at_most])


def _said(error: ErrorDetails) -> str:
    """pydantic's message for one problem, without what only pydantic's readers need."""
    if error["type"] == "missing":
        return "missing"
    if error["type"] in ("model_type", "dict_type", "model_attributes_type"):
        return f"a JSON object belongs here, not {_kind(error['input'])}"
    return error["msg"].removeprefix("Value error, ")


def _kind(value: object) -> str:
    """What a JSON value is, as a person calls it."""
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else f"a {type(value).__name__}"


def problems_now(model: BaseModel, /, **given: object) -> str | None:
    """What would make ``model``, as it now is, fail to load from its file; None if nothing.

    Setting a field is checked as it is made, but changing a list in place (appending a
    dict where an utterance belongs, clearing the tracks) is checked by nothing. So what is
    about to be written or run is checked again, in the form it would be read back in; and
    for a lone surrogate (a notebook's ``"\\udcff"``), which a plain str field takes and no
    file can hold. ``given`` are fields the file does not hold (a manifest's folder).
    """
    try:
        held = model.model_dump(by_alias=True, mode="json", warnings="error")
    except PydanticSerializationError as exc:  # a value of the wrong kind put in a list
        if stop := stop_within(exc):
            raise stop from None  # Ctrl-C while a field was written: no fault of the data
        text = " ".join(str(exc).split())
        if said := _UNEXPECTED.search(text):
            return f"{said['field']}: holds a {said['got']} where a {said['wanted']} belongs"
        return f"cannot be written as JSON: {text}"
    except ValueError as exc:  # bytes that are not UTF-8, put in a free-form field
        return f"cannot be written as JSON: {exc}"
    try:
        type(model).model_validate({**held, **given})
    except ValidationError as exc:
        return describe(exc)
    if (where := lone_surrogate_at(held)) is not None:
        return f"{where}: {LONE_SURROGATE}"
    return None


def stop_within(exc: BaseException) -> BaseException | None:
    """The Ctrl-C (or exit) that ``exc`` was made of, if any: pydantic turns whatever a
    serializer raises, KeyboardInterrupt too, into PydanticSerializationError, so a Ctrl-C that
    comes while a model is written reads as a broken model, and its exit status as an error.
    Written to JSON text, the error keeps only the stop's class name in its message: a
    KeyboardInterrupt holding that name stands for it then."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if not isinstance(cause, Exception):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, PydanticSerializationError) and (said := _WRAPPED_STOP.search(str(exc))):
        return KeyboardInterrupt(said["name"])
    return None


_WRAPPED_STOP = re.compile(
    r"Error calling function `[^`]*`: (?P<name>KeyboardInterrupt|Terminated)"
)
"""How pydantic's JSON writer says a serializer was stopped (SIGTERM is trackscribe's
``Terminated``, a KeyboardInterrupt)."""


def import_optional(module: str, extra: str) -> ModuleType:
    """``module``, imported; if it is not installed, a ModuleNotFoundError that says which
    extra of trackscribe brings it, for a notebook user who gets no CLI to say so."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or module.split(".")[0] != exc.name.split(".")[0]:
            raise  # something the library itself failed to import: not ours to explain
        raise ModuleNotFoundError(
            f"{exc.name} is needed here: pip install 'trackscribe[{extra}]'", name=exc.name
        ) from None
