"""How problems are told to people: one ``where: what`` per validation problem, and which
extra installs a library an optional feature needs."""

import importlib
from types import ModuleType

from pydantic import ValidationError


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
