"""JSON that people give (a manifest, a transcript, a line of a jobs file), read strictly.

Python's ``json`` takes the last of a key given twice in one object: ``"sha256": "…",
"sha256": null`` would turn a track's checksum off without a word, and a hand-merged file
could say two things of one field and be read as saying the second. Such text is refused,
naming where.
"""

import json
from collections.abc import Iterator


class JsonTextError(ValueError):
    """JSON text that cannot be taken as it is. The message says where in it (as
    ``tracks[0].sha256``, as validation errors do) but not the file: the caller adds that."""


def loads(text: str) -> object:
    """``json.loads(text)``, refusing a key given twice in one object (:class:`JsonTextError`).

    Errors ``json`` raises itself (text that is not JSON, nesting too deep) are raised as it
    raises them, for the caller to word as it already does."""
    repeated: list[tuple[dict[str, object], str]] = []  # kept, so that their ids stay theirs

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        obj: dict[str, object] = {}
        twice = None
        for key, value in items:
            if key in obj and twice is None:
                twice = key
            obj[key] = value
        if twice is not None:
            repeated.append((obj, twice))
        return obj

    value = json.loads(text, object_pairs_hook=pairs)
    if repeated:
        keys = {id(obj): key for obj, key in repeated}
        where = next(
            (_field(path, keys[id(node)]) for path, node in _walk(value) if id(node) in keys),
            # Only in a value a repeated key replaced: that key is found first, so not reached.
            repeated[0][1],
        )
        raise JsonTextError(
            f"{where}: given more than once in the same object; only one can count, and "
            "which was meant cannot be told"
        )
    return value


def _walk(value: object) -> Iterator[tuple[str, object]]:
    """Every object and array in ``value`` with where it is, in the order the text has them.
    Not recursive: the text may nest as deep as ``json`` reads."""
    stack = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            yield path, node
            stack.extend(reversed([(_field(path, k), v) for k, v in node.items()]))
        elif isinstance(node, list):
            yield path, node
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(node)]))


def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
