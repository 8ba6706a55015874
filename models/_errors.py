"""How validation problems are told to people: one ``where: what`` per problem."""

from pydantic import ValidationError


def describe(exc: ValidationError) -> str:
    """``tracks[0].started_time: Field required; …`` for every problem, in order."""
    lines = []
    for error in exc.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        lines.append(f"{where.lstrip('.') or '(top level)'}: {error['msg']}")
    return "; ".join(lines)
