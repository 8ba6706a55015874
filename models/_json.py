"""JSON that people give (a manifest, a transcript, a line of a jobs file), read strictly,
and told about in their terms.

Python's ``json`` takes the last of a key given twice in one object: ``"sha256": "…",
"sha256": null`` would turn a track's checksum off without a word, and a hand-merged file
could say two things of one field and be read as saying the second. Such text is refused,
naming where. So is a number too long for Python to read, whose own message tells a
command-line user to call ``sys.set_int_max_str_digits()``.
"""

import codecs
import json
import re
from collections.abc import Iterator


class JsonTextError(ValueError):
    """JSON text that cannot be taken as it is. The message says where in it (as
    ``tracks[0].sha256``, as validation errors do) but not the file: the caller adds that."""


class NotText(JsonTextError):
    """Bytes that are no text at all: most likely an audio file, given by mistake."""


def decode_text(data: bytes) -> str:
    """The text of a file people give (a manifest, a transcript, a truth): UTF-8, after a
    byte-order mark if it has one (Notepad and PowerShell 5 write one).

    Bytes that are not UTF-8 are named with the first bad one and where it is in the file, as
    an editor counts: text saved as Latin-1 (one "é"), told from binary data (:class:`NotText`),
    which holds a zero byte where no text does."""
    mark = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[mark:].decode("utf-8")
    except UnicodeDecodeError as exc:
        where = mark + exc.start
        byte = f"byte 0x{data[where]:02x} at offset {where}"
        if b"\0" in data:
            raise NotText(f"binary data, not text ({byte})") from None
        raise JsonTextError(f"not UTF-8 text ({byte})") from None


class _TooLong:
    """A number with more digits than Python reads (``sys.get_int_max_str_digits()``), held
    where it was until it is found and named."""

    def __init__(self, text: str) -> None:
        self.digits = sum(c.isdigit() for c in text)


def loads(text: str) -> object:
    """``json.loads(text)``, refusing a key given twice in one object and a number too long to
    read. Every reason the text cannot be taken, text that is not JSON and nesting too deep
    for ``json`` too, is one :class:`JsonTextError`, saying where: each caller names its
    file once, in one clause."""
    repeated: dict[int, str] = {}  # id of an object -> the first key it was given twice
    kept: list[object] = []  # each of those objects, so that no other takes its id
    too_long: list[_TooLong] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        obj: dict[str, object] = {}
        for key, value in items:
            if key in obj and id(obj) not in repeated:
                repeated[id(obj)] = key
                kept.append(obj)
            obj[key] = value
        return obj

    def whole(number: str) -> object:
        try:
            return int(number)
        except ValueError:
            too_long.append(_TooLong(number))
            return too_long[-1]

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_int=whole)
    except json.JSONDecodeError as exc:
        if not text.strip():
            raise JsonTextError("empty: no JSON in it") from None
        # One line (a line of a jobs file, whose number the caller gives): its column only.
        where = f"line {exc.lineno} column {exc.colno}" if "\n" in text else f"column {exc.colno}"
        raise JsonTextError(f"not valid JSON: {exc.msg}: {where}") from None  # as json says it
    except RecursionError:
        raise JsonTextError("not valid JSON: nested too deep to read") from None
    except ValueError as exc:  # none known; worded alike should one come
        raise JsonTextError(f"not valid JSON: {exc}") from None
    if repeated or too_long or _SURROGATE_ESCAPE.search(text):
        for path, node in _walk(value):  # the first problem, in the order of the text
            if isinstance(node, _TooLong):
                raise JsonTextError(
                    f"{path or '(top level)'}: holds a number of {node.digits} digits, too "
                    "long to be one"
                )
            if id(node) in repeated:
                raise JsonTextError(
                    f"{_field(path, repeated[id(node)])}: given more than once in the same "
                    "object; only one can count, and which was meant cannot be told"
                )
            if (field := _lone_surrogate_in(path, node)) is not None:
                raise JsonTextError(f"{field}: {LONE_SURROGATE}")
        if repeated:  # not reached: a key repeated is found on the way to what it replaced
            raise JsonTextError("a key is given more than once in the same object")
    return value


LONE_SURROGATE = "holds a lone surrogate (U+D800 to U+DFFF), which is not text"
"""What is wrong with a string that holds one: JSON's ``\\udcff`` escape gives one, and no
file can be written with it (saving, exporting, or a report failed on it, far from the cause)."""

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""JSON's escape of a surrogate: a pair is one character, one alone is none; only text
holding such an escape is looked through."""


def lone_surrogate_at(value: object) -> str | None:
    """Where in ``value`` (as ``utterances[0].text``) a string or a key first holds a lone
    surrogate; None if none does."""
    for path, node in _walk(value):
        if (where := _lone_surrogate_in(path, node)) is not None:
            return where
    return None


def _lone_surrogate_in(path: str, node: object) -> str | None:
    if isinstance(node, str):
        return None if is_text(node) else path or "(top level)"
    if isinstance(node, dict):
        key = next((k for k in node if not is_text(k)), None)  # named as JSON escapes it
        return (
            None if key is None else _field(path, key.encode("utf-8", "backslashreplace").decode())
        )
    return None


def is_text(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8: no lone surrogate in it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk(value: object) -> Iterator[tuple[str, object]]:
    """Every value in ``value`` with where it is, in the order the text has them. Not
    recursive: the text may nest as deep as ``json`` reads."""
    stack = [("", value)]
    while stack:
        path, node = stack.pop()
        yield path, node
        if isinstance(node, dict):
            stack.extend(reversed([(_field(path, k), v) for k, v in node.items()]))
        elif isinstance(node, list):
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(node)]))


def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
