"""``trackscribe``: the command line. The only place that prints or chooses an exit status.

Exit status: 0 success; 1 partial (some input was lost; the rest is written and the losses
listed); 2 bad usage or bad input.
"""

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from models import Manifest, ManifestError, Transcript
from stages.export import FORMATS, export, to_txt
from stages.transcribe import BUNDLED_MODEL, ModelError, TranscribeOptions

from .core import NoUsableTrackError, PipelineOptions, software_version, transcribe_tracks
from .demo import sample_meeting

EXIT_OK, EXIT_PARTIAL, EXIT_BAD_INPUT = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="trackscribe: %(levelname)s: %(message)s",
    )
    try:
        return args.run(args)
    except ManifestError as exc:
        return _bad_input(f"bad manifest: {exc}")
    except (ModelError, NoUsableTrackError, _OutputError) as exc:
        return _bad_input(str(exc))
    except ValidationError as exc:
        return _bad_input(f"bad option: {exc.errors()[0]['loc'][-1]}: {exc.errors()[0]['msg']}")
    except KeyboardInterrupt:
        print("trackscribe: interrupted", file=sys.stderr)
        return 130


class _OutputError(OSError):
    """The output folder cannot be made or written."""


def _bad_input(message: str) -> int:
    print(f"trackscribe: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _output_folder(out: Path) -> Path:
    """Make sure results can be written before any work is spent on them."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _OutputError(f"cannot use {out} as the output folder: {exc.strerror}") from None
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackscribe",
        description="Speaker-attributed, time-aligned transcripts from RealtimeKit track "
        "recordings (one audio file per participant).",
        epilog="Exit status: 0 success, 1 partial (some tracks failed; the rest written and "
        "the failures listed), 2 bad usage or bad input.",
    )
    parser.add_argument("--version", action="version", version=software_version())
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    transcribe = commands.add_parser(
        "transcribe",
        help="transcribe the tracks listed in a manifest",
        description="Transcribe every track of a manifest (trackscribe.manifest/1) into one "
        "speaker-attributed transcript and write it in the chosen formats.",
    )
    transcribe.add_argument("manifest", type=Path, help="path of manifest.json")
    transcribe.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    _add_model_options(transcribe)
    transcribe.set_defaults(run=_run_transcribe)

    demo = commands.add_parser(
        "demo",
        help="transcribe the bundled sample meeting and print the transcript",
        description="Run the whole pipeline on the sample meeting that ships with trackscribe "
        "(no network, no credentials) and print the merged transcript.",
    )
    demo.add_argument("-o", "--out", type=Path, help="also write the outputs to this folder")
    _add_model_options(demo)
    demo.set_defaults(run=_run_demo)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=BUNDLED_MODEL,
        help=f"Whisper model: {BUNDLED_MODEL} (default, offline), a faster-whisper model name "
        "such as small.en (downloaded on first use), or a CTranslate2 model folder",
    )
    parser.add_argument(
        "--formats",
        type=_formats,
        default=list(FORMATS),
        help=f"comma-separated output formats (default: all of {','.join(FORMATS)})",
    )
    parser.add_argument("--beam-size", type=int, default=TranscribeOptions().beam_size)
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for the model (0: automatic)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _formats(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}"
        )
    return names


def _options(args: argparse.Namespace) -> PipelineOptions:
    return PipelineOptions(
        transcribe=TranscribeOptions(
            model=args.model, beam_size=args.beam_size, cpu_threads=args.threads
        )
    )


def _run_transcribe(args: argparse.Namespace) -> int:
    options = _options(args)
    manifest = Manifest.load(args.manifest)
    out = _output_folder(args.out)
    transcript = transcribe_tracks(manifest, options=options, progress=not args.no_progress)
    _write(transcript, out, args.formats)
    return _report(transcript)


def _run_demo(args: argparse.Namespace) -> int:
    options = _options(args)
    out = _output_folder(args.out) if args.out is not None else None
    meeting = sample_meeting()
    print(f"Sample meeting: {meeting / 'manifest.json'}\n", file=sys.stderr)
    transcript = transcribe_tracks(
        meeting / "manifest.json", options=options, progress=not args.no_progress
    )
    if out is not None:
        _write(transcript, out, args.formats)
    print(to_txt(transcript), end="")
    return _report(transcript)


def _write(transcript: Transcript, out: Path, formats: list[str]) -> None:
    for path in export(transcript, out, formats).values():
        print(f"wrote {path}", file=sys.stderr)


def _report(transcript: Transcript) -> int:
    if not transcript.partial:
        return EXIT_OK
    print("trackscribe: partial result; these inputs were lost:", file=sys.stderr)
    for line in transcript.problems():
        print(f"  {line}", file=sys.stderr)
    return EXIT_PARTIAL
