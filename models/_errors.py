"""How problems are told to people: one ``where: what`` per validation problem, no secret in
a message, and which extra installs a library an optional feature needs."""

import importlib
import re
from types import ModuleType

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

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


def describe(exc: ValidationError) -> str:
    """``tracks[0].started_time: Field required; …`` for every problem, in order."""
    lines = []
    for error in exc.errors():
        if not error["loc"] and error["type"] == "value_error":
            # A check across fields (a model's own validator) names where in its message.
            lines.append(error["msg"].removeprefix("Value error, "))
            continue
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        lines.append(f"{where.lstrip('.') or '(top level)'}: {error['msg']}")
    return "; ".join(lines)


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
