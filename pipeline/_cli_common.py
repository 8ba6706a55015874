"""What every command of the command line shares: model options, writing outputs, exit status."""

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from models import Transcript, file_in_the_way, printable
from stages.export import DEFAULT_FORMATS, FORMATS, export
from stages.transcribe import BUNDLED_MODEL, TranscribeOptions

from .core import PipelineOptions, bars_wanted
from .signing import SigningKey, keep_signed


class Parser(argparse.ArgumentParser):
    """Takes flags only as written in full: a script that used an abbreviation (--form for
    --formats) would break, or do something else, the day a flag of the same start is
    added. Every command's parser is one."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(**kwargs)


EXIT_OK, EXIT_PARTIAL, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class OutputError(OSError):
    """The output folder cannot be made or written."""


def say(line: str) -> None:
    """What the command is doing, on stderr (stdout is for results). A hint may take several
    lines (the commands that finish a run by hand), so line breaks are kept; other control
    characters are written out."""
    print(f"trackscribe: {printable(line, lines=True)}", file=sys.stderr)


def emit(text: str, *, end: str = "\n") -> None:
    """A command's result, on stdout. Flushed here, so that a full disk or a broken device
    is told as the result's loss (exit 2, "standard output") rather than as an error with no
    name, or not at all when Python flushes at exit."""
    try:
        sys.stdout.write(text + end)
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # the reader stopped (`| head`): the command's own quiet ending
    except OSError as exc:
        reason = exc.strerror or exc
        raise OutputError(f"cannot write the result to standard output: {reason}") from None


def output_folder(out: Path, formats: Sequence[str] = ()) -> Path:
    """Make sure results (the files of ``formats``) can be written before any work is spent
    on them."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot use {out} as the output folder: it is a file")
    if file := file_in_the_way(out):
        raise OutputError(f"cannot use {out} as the output folder: {file} is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        _try_writing_in(out)
    except OSError as exc:
        raise OutputError(f"cannot use {out} as the output folder: {exc.strerror}") from None
    for name in formats:
        if (out / FORMATS[name][0]).is_dir():
            raise OutputError(f"{out / FORMATS[name][0]}: a folder is in the way")
    return out


def ready_output(out: Path, formats: Sequence[str], key: SigningKey | None) -> Path:
    """:func:`output_folder`, and a signed bundle in it that a run without ``key`` would lose
    refused (:func:`keep_signed`): both before any work is spent."""
    out = output_folder(out, formats)
    keep_signed(out, key, formats=formats)
    return out


def _try_writing_in(folder: Path) -> None:
    """OSError if no file can be written in ``folder``: a read-only disk, a folder not ours."""
    with tempfile.TemporaryFile(dir=folder):
        pass


def output_file(path: Path) -> Path:
    """The file to write for ``path``: a file to write that is sure to fail is refused before
    any work is spent on it (its folder is made when it is written, as output folders are).
    A link is written through, to the file it names: a file written under a temporary name
    and renamed would take the link's place, and leave what it names as it was. A device
    or a pipe is refused: that rename would put a file in its place."""
    if path.is_symlink():
        try:
            path = path.resolve(strict=False)
        except (RuntimeError, OSError) as exc:  # a loop of links (RuntimeError on 3.11)
            raise OutputError(f"cannot write {path}: {exc}") from None
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    if path.exists() and not path.is_file():
        raise OutputError(f"cannot write {path}: it is not a regular file (a device or a pipe?)")
    if file := file_in_the_way(path):
        raise OutputError(f"cannot write {path}: {file} is not a folder")
    folder = next(p for p in path.absolute().parents if p.exists())  # made when written
    try:
        _try_writing_in(folder)
    except OSError as exc:
        # The probe's own failure, said as one: "/proc: No such file or directory" would
        # read as a folder that is not there, where it is there and refuses new files.
        raise OutputError(
            f"cannot write {path}: a file cannot be made in {folder}: {exc.strerror or exc}"
        ) from None
    return path


def non_empty_path(value: str) -> Path:
    """A path given on the command line. An empty one is refused: it would be the current
    folder, which an unset variable in a script (``-o "$OUT"``) never means."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset variable?)")
    return Path(value)


def choices(value: str, known: Sequence[str], what: str) -> list[str]:
    """The names in a comma-separated ``value``, each once (``pipeline,pipeline`` ran the
    pipeline twice), all of them ``known``; none at all is refused, saying so."""
    names = list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"no {what} given; choose from {', '.join(known)}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return names


def count_at_least(minimum: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type for a whole number of at least ``minimum`` (and at most ``most``):
    refused as the command line is read, with the flag's name, rather than by a model field
    named otherwise."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {number}")
        if most is not None and number > most:
            raise argparse.ArgumentTypeError(f"must be {most} or less, not {number}")
        return number

    return parse


def _most(field: str) -> int | None:
    """The largest value :class:`TranscribeOptions` takes for ``field``, if it has one."""
    limits = TranscribeOptions.model_fields[field].metadata
    return next((int(limit.le) for limit in limits if getattr(limit, "le", None) is not None), None)


def _formats(value: str) -> list[str]:
    return choices(value, list(FORMATS), "format")


_THREADS_HELP = (
    "CPU threads for each of the model's two workers, which transcribe two tracks at once "
    "(default 0: the machine's cores split between them, and, in a batch, between the meetings "
    "run at once)"
)

_BEAM_SIZE_HELP = (
    f"Whisper's beam width (default {TranscribeOptions().beam_size}; 1: greedy, faster)"
)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=BUNDLED_MODEL,
        help=f"Whisper model: {BUNDLED_MODEL} (default, offline), a faster-whisper model name "
        "such as small.en (downloaded on first use), or a CTranslate2 model folder",
    )
    add_output_options(parser)
    add_decoding_options(parser)
    add_progress_option(parser)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--formats`` and ``--sign-key``, read by :func:`write_outputs` and :func:`signing_key`."""
    parser.add_argument(
        "--formats",
        type=_formats,
        default=list(DEFAULT_FORMATS),
        help=f"comma-separated output formats (default: {','.join(DEFAULT_FORMATS)}; also "
        "bundle: all of them in one zip with the provenance and SHA256SUMS, for a reviewer)",
    )
    parser.add_argument(
        "--sign-key",
        type=non_empty_path,
        metavar="KEY",
        help="sign the bundle with this Ed25519 private key (PEM or OpenSSH; make one with "
        "openssl genpkey -algorithm ed25519 -out KEY): a reviewer then checks it with the "
        "public key",
    )


def add_decoding_options(parser: argparse.ArgumentParser) -> None:
    """``--beam-size`` and ``--threads``, read by :func:`pipeline_options`."""
    parser.add_argument(
        "--beam-size",
        type=count_at_least(1, _most("beam_size")),
        default=TranscribeOptions().beam_size,
        help=_BEAM_SIZE_HELP,
    )
    parser.add_argument(
        "--threads",
        type=count_at_least(0, _most("cpu_threads")),
        default=0,
        help=_THREADS_HELP,
    )


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``, read by :func:`show_progress`."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide progress bars (they are shown only when stderr is a terminal)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Bars where someone watches (:func:`bars_wanted`), unless ``--no-progress``: in the
    log file of an unattended run every redraw would be another stretch of carriage returns."""
    return not args.no_progress and bars_wanted(None)


def pipeline_options(args: argparse.Namespace) -> PipelineOptions:
    return PipelineOptions(
        transcribe=TranscribeOptions(
            model=args.model, beam_size=args.beam_size, cpu_threads=args.threads
        )
    )


def signing_key(args: argparse.Namespace) -> SigningKey | None:
    """The key ``--sign-key`` names, read before any work is spent (a key that cannot be
    used is :class:`SigningKeyError`); None without it."""
    if getattr(args, "sign_key", None) is None:
        return None
    if "bundle" not in args.formats:
        args.command_parser.error("--sign-key signs the compliance bundle: add bundle to --formats")
    return SigningKey(args.sign_key)


def write_outputs(
    transcript: Transcript | Path, out: Path, formats: list[str], key: SigningKey | None
) -> None:
    signer = key.sign if key is not None else None
    written = export(transcript, output_folder(out), formats, replace=True, signer=signer)
    for path in written.values():
        print(f"wrote {path}", file=sys.stderr)


def report(transcript: Transcript) -> int:
    """The exit status for a transcript; losses are listed on stderr."""
    if not transcript.partial:
        return EXIT_OK
    print(
        "trackscribe: partial result; these inputs were lost, in whole or in part, or are damaged:",
        file=sys.stderr,
    )
    for line in transcript.problems():
        print(f"  {printable(line)}", file=sys.stderr)
    return EXIT_PARTIAL
