"""``trackscribe``: the command line. The only place that prints or chooses an exit status.

Exit status: 0 success; 1 partial (some input was lost; the rest is written and the losses
listed); 2 bad usage or bad input (including a file or folder that cannot be read or written);
3 an error of trackscribe itself (a bug: -vv shows where).
"""

import _thread
import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from pydantic import ValidationError
from tqdm import tqdm

from models import (
    JobsError,
    Manifest,
    ManifestError,
    SummaryError,
    Transcript,
    TranscriptError,
    describe_error,
    printable,
    redact_urls,
)
from stages.export import FORMATS
from stages.fetch import FetchError
from stages.record import RealtimeKitError
from stages.transcribe import BUNDLED_MODEL, ModelError

from ._batch_cli import add_batch_command
from ._cli_common import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_PARTIAL,
    OutputError,
    Parser,
    add_decoding_options,
    add_model_options,
    add_output_options,
    choices,
    emit,
    non_empty_path,
    output_file,
    output_folder,
    pipeline_options,
    ready_output,
    report,
    show_progress,
    signing_key,
    write_outputs,
)
from ._remote_cli import add_remote_commands
from ._worker import Terminated, stops_unwrapped
from .bench import APPROACHES, Approach, available_approaches, bench
from .config import ConfigError
from .core import NoUsableTrackError, software_version, transcribe_tracks
from .evaluate import (
    check_scoring_libraries,
    check_truth,
    evaluate,
    read_turns,
    shown_seconds,
)
from .plot import image_format, plot_timeline
from .signing import SigningKeyError
from .verification import verify


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said with the command's usage, not the top level's
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    verbosity = args.verbose + args.verbose_after
    logging.basicConfig(  # unless the caller has set logging up already
        level=logging.DEBUG if verbosity > 1 else logging.INFO if verbosity else logging.WARNING,
        format="trackscribe: %(levelname)s: %(message)s",
        handlers=[_AboveBars()],
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_Redacting(handler.formatter))
    out = getattr(args, "out", None)
    new_folders = _not_yet_there(out) if isinstance(out, Path) else []
    status = _run(args)
    if status != EXIT_OK:
        # Made up front, to fail before any work if it cannot be: not left behind empty
        # when the command then failed before writing anything into it (the deepest first;
        # one that is not empty stops the rest).
        with contextlib.suppress(OSError):
            for folder in new_folders:
                folder.rmdir()
    return status


def _not_yet_there(out: Path) -> list[Path]:
    """``out`` and those of its parents that do not exist yet, the deepest first."""
    missing = []
    for folder in (out, *out.parents):
        if os.path.lexists(folder):
            break
        missing.append(folder)
    return missing


def _stopping(error: type[BaseException]) -> Callable[[int, FrameType | None], None]:
    """A signal handler raising ``error``, unless the signal came while a finalizer ran (a
    progress bar's ``__del__``, say): Python prints what a finalizer raises and goes on, so a
    Ctrl-C raised there was lost and the command ran to its end, exit 0. It is raised again a
    moment later instead, wherever the main thread then is."""

    def stop(signum: int, frame: FrameType | None) -> None:
        while frame is not None:
            if frame.f_code.co_name == "__del__":
                threading.Timer(0.01, _signal_again, (signum,)).start()
                return
            frame = frame.f_back
        raise error

    return stop


def _signal_again(signum: int) -> None:
    """Send ``signum`` to the main thread again: a signal, not only Python's flag of one, so
    that a wait there (a sleep, a lock) is broken off as by the first."""
    if hasattr(signal, "pthread_kill") and (main := threading.main_thread().ident) is not None:
        signal.pthread_kill(main, signum)
    else:
        _thread.interrupt_main(signal.Signals(signum))


@contextlib.contextmanager
def _terminable() -> Iterator[None]:
    """Ctrl-C as KeyboardInterrupt, and SIGTERM as :class:`Terminated`, while the command
    runs, neither lost in a finalizer (see :func:`_stopping`; main thread only: a caller
    that runs :func:`main` elsewhere keeps its own handling). A Ctrl-C ignored (a command run
    in the background) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _stopping(Terminated)),
        signal.SIGINT: signal.getsignal(signal.SIGINT),
    }
    if previous[signal.SIGINT] is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stopping(KeyboardInterrupt))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _run(args: argparse.Namespace) -> int:
    """The command's exit status, whatever it raised turned into its message."""
    try:
        with _terminable(), stops_unwrapped():
            return args.run(args)
    except Terminated:
        print("trackscribe: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except ManifestError as exc:
        return _bad_input(f"bad manifest: {exc}")
    except TranscriptError as exc:
        return _bad_input(str(exc))
    except JobsError as exc:
        return _bad_input(f"bad jobs file: {exc}")
    except SummaryError as exc:
        return _bad_input(str(exc))
    except BrokenPipeError:
        # Whoever read our output stopped (`| head`): nothing more to say, and nowhere to say it.
        with contextlib.suppress(OSError, ValueError):  # stdout may be a caller's own stream
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _EXIT_BROKEN_PIPE
    except (
        ModelError,
        NoUsableTrackError,
        OutputError,
        ConfigError,
        RealtimeKitError,
        FetchError,
        ConnectionError,
        SigningKeyError,
    ) as exc:
        return _bad_input(str(exc))
    except OSError as exc:  # a file or folder of the user's that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        return _bad_input(f"{where}{exc.strerror or exc}")
    except ValidationError as exc:
        first = exc.errors()[0]  # one of two options that do not go together has no field
        field = f"{first['loc'][-1]}: " if first["loc"] else ""
        return _bad_input(f"bad option: {field}{first['msg']}")
    except ModuleNotFoundError as exc:
        if exc.name in ("meeteval", "whisper_normalizer", "matplotlib"):
            return _bad_input(f"{exc.name} is needed here: pip install 'trackscribe[eval]'")
        if exc.name == "distributed":
            return _bad_input("running on Dask needs: pip install 'trackscribe[dask]'")
        return _internal_error(exc)
    except KeyboardInterrupt:
        print("trackscribe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line, not a traceback, and not "partial"
        return _internal_error(exc)


class _AboveBars(logging.StreamHandler):
    """stderr, each line written above the progress bars being drawn (tqdm clears them and
    draws them again below it), not onto the end of the last one."""

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:  # stderr closed (2>&-): tqdm would write to stdout instead
            return
        try:
            tqdm.write(self.format(record), file=self.stream)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class _Redacting(logging.Formatter):
    """Lines as ``formatter`` writes them, tracebacks (-vv) included, with no pre-signed URL's
    query string or bearer token in them: an exception's text can hold either.

    A message is also kept to one line with no terminal controls in it: it can quote names
    the API or a file gave (a file name with a line break, or an escape sequence, would
    otherwise write a line of its own into the log). A line another library logs is led by
    its name: faster-whisper's "VAD filter removed 00:00.000 of audio" is about a filter
    trackscribe does not use, and read as trackscribe's it says its voice detection did nothing.
    """

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self._formatter = formatter or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        message = said = record.getMessage()
        if not record.name.startswith("trackscribe"):
            # A library's own line (faster-whisper's at -vv): said as its, not as ours.
            said = f"{record.name.partition('.')[0]}: {said}"
        if (said := printable(said)) != message:
            record = logging.makeLogRecord({**record.__dict__, "msg": said, "args": None})
        return redact_urls(self._formatter.format(record))


def _internal_error(exc: Exception) -> int:
    logging.getLogger("trackscribe").debug("internal error", exc_info=exc)
    print(
        f"trackscribe: internal error: {describe_error(exc)} (-vv shows where)",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


def _bad_input(message: str) -> int:
    print(f"trackscribe: {printable(message, lines=True)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="trackscribe",
        description="Speaker-attributed, time-aligned transcripts from RealtimeKit track "
        "recordings (one audio file per participant).",
        epilog="Exit status: 0 success; 1 partial (some tracks, files or meetings failed; the "
        "rest written and the failures listed; for bench, an approach failed or lost input (every "
        "one failed is 2); for verify, "
        "something differs or is missing); 2 bad usage or "
        "input, or a service that refused or could not be reached; 3 an error of trackscribe "
        "itself; 130 interrupted; 141 the output stopped being read (a pipe closed early, as by "
        "head); 143 terminated.",
    )
    parser.add_argument("--version", action="version", version=software_version())
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )
    commands = parser.add_subparsers(
        title="commands", required=True, metavar="COMMAND", parser_class=Parser
    )

    transcribe = commands.add_parser(
        "transcribe",
        help="transcribe the tracks listed in a manifest",
        description="Transcribe every track of a manifest (trackscribe.manifest/1) into one "
        "speaker-attributed transcript and write it in the chosen formats.",
    )
    transcribe.add_argument(
        "manifest", type=non_empty_path, help="manifest.json, or the folder holding it"
    )
    transcribe.add_argument("-o", "--out", type=non_empty_path, required=True, help="output folder")
    add_model_options(transcribe)
    transcribe.set_defaults(run=_run_transcribe)

    exporting = commands.add_parser(
        "export",
        help="write a saved transcript in the chosen formats, or as a signed bundle",
        description="Write a transcript (trackscribe.transcript/1) in the chosen formats, "
        "as transcribe writes them, byte for byte, from the transcript alone: no audio, no "
        "model. For a reviewer who holds a transcript.json and needs a compliance bundle, "
        "signed or not, or other formats. Written into the transcript's own folder, the "
        "transcript is written again too (the same content), and not removed.",
    )
    exporting.add_argument(
        "transcript", type=non_empty_path, help="transcript.json, or the folder holding it"
    )
    exporting.add_argument(
        "-o", "--out", type=non_empty_path, help="output folder (default: the transcript's folder)"
    )
    add_output_options(exporting)
    exporting.set_defaults(run=_run_export)

    evaluate = commands.add_parser(
        "eval",
        help="score a transcript against labelled truth",
        description="Score a transcript (transcript.json or SegLST) against truth (SegLST or "
        "NIST STM): cpWER and tcpWER (meeteval), WER per speaker, words on participants with "
        "no truth, utterance start error and missed utterances. Both sides are normalised "
        "with Whisper's English text normaliser.",
    )
    evaluate.add_argument(
        "transcript",
        type=non_empty_path,
        help="transcript.json, a compliance bundle (transcript.bundle.zip), the folder "
        "holding either, or a SegLST file",
    )
    evaluate.add_argument(
        "truth", type=non_empty_path, help="truth as SegLST (.json) or STM (.stm)"
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--plot",
        type=non_empty_path,
        metavar="FILE",
        help="draw a timeline, truth above transcript, one row per speaker (PNG, PDF or SVG, "
        "as the name ends)",
    )
    evaluate.set_defaults(run=_run_eval)

    bench = commands.add_parser(
        "bench",
        help="measure the pipeline against the alternatives, in one run",
        description="Run the pipeline and the alternatives a user has (faster-whisper on "
        "every full track, with its Silero VAD, by its batched path, on all tracks mixed, and "
        "each true utterance cut out alone) with the same model, each in a fresh process; report "
        "wall time, real-time factor, peak memory and accuracy, and each as a ratio to the "
        "pipeline.",
    )
    bench.add_argument(
        "manifest", type=non_empty_path, help="manifest.json, or the folder holding it"
    )
    bench.add_argument(
        "--truth",
        type=non_empty_path,
        help="truth (SegLST or STM); default: truth.json beside the manifest",
    )
    bench.add_argument(
        "--approaches",
        type=_approaches,
        help=f"comma-separated subset of {','.join(APPROACHES)} (default: all; oracle only "
        "with a truth)",
    )
    bench.add_argument(
        "--model",
        default=BUNDLED_MODEL,
        help=f"Whisper model for every approach (default {BUNDLED_MODEL}; as for transcribe)",
    )
    add_decoding_options(bench)
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--no-progress",
        action="store_true",
        help="do not say on stderr which approach is running",
    )
    bench.add_argument(
        "--plot",
        type=non_empty_path,
        metavar="FILE",
        help="draw the pipeline's timeline against the truth (PNG, PDF or SVG, as the name ends)",
    )
    bench.set_defaults(run=_run_bench)

    checking = commands.add_parser(
        "verify",
        help="check a transcript or a compliance bundle against its exports, inputs and model",
        description="Check, without transcribing anything, that the exports beside a "
        "transcript (or in a compliance bundle) are what it renders to and still the bytes "
        "trackscribe wrote; with "
        "--manifest, that every input is there with the bytes that were transcribed, on the "
        "same participant and start, and that every track is in the transcript or named in "
        "it as lost; that the model's files are those that made it; and with --public-key, "
        "that the bundle is signed with that key. Each line says ok, "
        "lost (what the transcript itself says it lost), DIFFERS, MISSING or unchecked. Exit "
        "status 0: nothing differs or is missing; 1: something does.",
    )
    checking.add_argument(
        "transcript",
        type=non_empty_path,
        help="transcript.json, a compliance bundle (transcript.bundle.zip), or their folder",
    )
    checking.add_argument(
        "--manifest",
        type=non_empty_path,
        help="the tracks' manifest.json, or its folder: check the inputs",
    )
    checking.add_argument(
        "--model",
        help="the model's folder on this machine (default: the bundled model or the hub "
        "model the transcript names, if downloaded here; a folder it names is not looked "
        "for, as it was the folder of the machine that made it)",
    )
    checking.add_argument(
        "--public-key",
        type=non_empty_path,
        metavar="KEY",
        help="the Ed25519 public key (PEM or OpenSSH) the bundle must be signed with",
    )
    checking.add_argument("--json", action="store_true", help="print one JSON object")
    checking.set_defaults(run=_run_verify)

    add_remote_commands(commands)
    add_batch_command(commands)
    for command in commands.choices.values():
        # Also where many put it: at the end (`trackscribe transcribe M -o OUT -v`).
        command.add_argument(
            "-v",
            "--verbose",
            dest="verbose_after",
            action="count",
            default=0,
            help="more log output (-vv: debug); also before the command",
        )
        command.set_defaults(command_parser=command)
    return parser


_EXIT_BROKEN_PIPE = 141  # what a filter killed by SIGPIPE exits with


def _approaches(value: str) -> list[str]:
    return choices(value, APPROACHES, "approach")


def _run_transcribe(args: argparse.Namespace) -> int:
    options = pipeline_options(args)
    key = signing_key(args)
    manifest = Manifest.load(args.manifest)
    out = ready_output(args.out, args.formats, key)
    transcript = transcribe_tracks(manifest, options=options, progress=show_progress(args))
    write_outputs(transcript, out, args.formats, key)
    return report(transcript)


def _transcript_file(given: Path) -> Path:
    """The transcript.json a command is given: the file, or the one in an output folder."""
    return given / FORMATS["json"][0] if given.is_dir() else given


def _run_export(args: argparse.Namespace) -> int:
    key = signing_key(args)
    source = _transcript_file(args.transcript)
    out = output_folder(args.out if args.out is not None else source.parent)
    write_outputs(source, out, args.formats, key)  # refused there if a signed bundle is at stake
    return report(Transcript.load(source))  # partial, as transcribe said: 1, and what was lost


def _plot_file(path: Path) -> Path:
    """The timeline's file (see :func:`output_file`); one that cannot be written is refused
    before any work is spent on it."""
    try:
        image_format(path)
    except ValueError as exc:
        raise OutputError(str(exc)) from None
    return output_file(path)


def _scored_file(given: Path) -> Path:
    """The transcript ``eval`` scores: the file given, or in an output folder its
    transcript.json, else the compliance bundle written alone (as ``verify`` finds it)."""
    if not given.is_dir():
        return given
    bundle = given / FORMATS["bundle"][0]
    if not (given / FORMATS["json"][0]).exists() and bundle.exists():
        return bundle
    return _transcript_file(given)


def _run_eval(args: argparse.Namespace) -> int:
    if args.plot:
        args.plot = _plot_file(args.plot)
    args.transcript = _scored_file(args.transcript)
    try:
        hypothesis, truth = read_turns(args.transcript), read_turns(args.truth)
    except ValueError as exc:
        return _bad_input(str(exc))
    speakers = hypothesis.participants or []  # SegLST: only the speakers it has
    if not speakers and truth.participants:
        # Scored the other way round, every figure but cpWER would be wrong, and none would
        # look it: the start errors and silent words are measured from the truth's side.
        return _bad_input(
            f"{args.truth} is a trackscribe transcript and {args.transcript} is not: swapped? "
            "(trackscribe eval TRANSCRIPT TRUTH)"
        )
    try:  # the transcript's participants, the truth's stretches left out of scoring
        result = evaluate(hypothesis, truth)
    except ValueError as exc:
        return _bad_input(f"{args.transcript} against {args.truth}: {exc}")
    for warning in result.warnings:
        print(f"trackscribe: warning: {warning}", file=sys.stderr)
    if args.json:
        emit(result.model_dump_json(indent=2))
    else:
        emit(str(result))
    if args.plot:
        median = shown_seconds(result.start_err_median)
        title = f"cpWER {result.cpwer:.1f} %, start error median {median}"
        plot_timeline(
            hypothesis.turns,
            truth.turns,
            args.plot,
            speakers=speakers,
            pairs=result.speaker_pairs,  # the transcript drawn as it was scored
            title=title,
        )
        print(f"wrote {args.plot}", file=sys.stderr)
    return EXIT_OK


def _run_bench(args: argparse.Namespace) -> int:
    manifest = Manifest.load(args.manifest)
    truth = args.truth
    beside = manifest.root / "truth.json"
    if truth is None and beside.is_file():
        truth = beside
    # Asked-for work that cannot be done is refused up front, not left out of the report.
    if args.approaches is None:  # every approach the inputs allow
        args.approaches = list(available_approaches(truth is not None))
    if truth is None and ("oracle" in args.approaches or args.plot):
        asked = "the oracle approach" if "oracle" in args.approaches else "--plot"
        return _bad_input(
            f"{asked} needs the truth: pass --truth (or put truth.json beside the manifest)"
        )
    if args.plot and "pipeline" not in args.approaches:
        return _bad_input("--plot draws the pipeline's timeline: add pipeline to --approaches")
    if args.plot:
        args.plot = _plot_file(args.plot)
    truth_file = None
    if truth is not None:
        check_scoring_libraries()  # not after the runs: they take minutes
        try:
            truth_file = read_turns(truth)
        except OSError as exc:
            return _bad_input(f"{truth}: cannot read the truth: {exc.strerror or exc}")
        except ValueError as exc:
            return _bad_input(f"bad truth: {exc}")
        try:
            check_truth(truth_file.turns)
        except ValueError as exc:
            return _bad_input(f"{truth}: {exc}")
    options = pipeline_options(args)
    results = bench(
        args.manifest,
        truth=truth_file,
        options=options,
        approaches=tuple(args.approaches),
        on_start=None
        if args.no_progress
        else lambda name: print(f"bench: running {name} ...", file=sys.stderr),
    )
    if args.json:
        emit(json.dumps({k: v.model_dump(mode="json") for k, v in results.items()}, indent=2))
    else:
        emit(_bench_table(results, truth))
    made = results.get("pipeline")
    if args.plot and made is not None and made.failed is not None:
        # Asked for, and not there: said, not left for the user to find missing. (Why it
        # failed is listed with the other losses.)
        print(
            f"trackscribe: plot not drawn: the pipeline failed; {args.plot} was not written",
            file=sys.stderr,
        )
    elif args.plot and made is not None and truth_file is not None:
        plot_timeline(
            made.turns,
            truth_file.turns,
            args.plot,
            speakers=[t.user_id for t in manifest.tracks],
            pairs=made.evaluation.speaker_pairs if made.evaluation is not None else None,
            title="pipeline vs truth",
        )
        print(f"wrote {args.plot}", file=sys.stderr)
    return _bench_status(results)


def _run_verify(args: argparse.Namespace) -> int:
    manifest = Manifest.load(args.manifest) if args.manifest is not None else None
    result = verify(args.transcript, manifest, model=args.model, public_key=args.public_key)
    if args.json:  # ASCII: a name the transcript holds may not be valid UTF-8 on its own
        emit(json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=True))
    else:
        emit(str(result))
    return EXIT_OK if result.ok else EXIT_PARTIAL


def _bench_status(results: dict[str, Approach]) -> int:
    """Partial when any approach lost input or failed: its figures are not the whole meeting.
    Bad input when every approach failed: nothing was measured, as when no track of a
    meeting can be used."""
    losses = [
        f"{name}: {line}"
        for name, r in results.items()
        for line in ([f"failed: {r.failed}"] if r.failed else r.lost)
    ]
    if not losses:
        return EXIT_OK
    if all(r.failed for r in results.values()):
        print("trackscribe: every approach failed; nothing was measured:", file=sys.stderr)
        status = EXIT_BAD_INPUT
    else:
        print("trackscribe: partial result; these inputs were lost:", file=sys.stderr)
        status = EXIT_PARTIAL
    for line in losses:
        print(f"  {line}", file=sys.stderr)
    return status


def _bench_table(results: dict[str, Approach], truth: Path | None) -> str:
    def num(value: float | None, fmt: str) -> str:
        return format(value, fmt) if value is not None else "-".rjust(int(fmt.split(".")[0]))

    lines = [
        f"{'approach':9s} {'wall s':>8s} {'load s':>7s} {'x real':>7s} {'peak MB':>8s} "
        f"{'cpWER %':>8s}    ratio to the pipeline: {'wall':>5s} {'x real':>6s} {'peak':>5s} "
        f"{'cpWER':>5s}"
    ]
    for name, r in results.items():
        if r.failed is not None:
            lines.append(f"{name:9s} failed: {r.failed}")
            continue
        accuracy = r.cpwer if r.cpwer is not None else r.orcwer
        mark = " (ORC WER: no speakers)" if r.orcwer is not None else ""
        mark += " (input lost)" if r.lost else ""
        ratio = r.ratios.get
        lines.append(
            f"{name:9s} {num(r.wall_s, '8.2f')} {num(r.model_load_s, '7.2f')} "
            f"{num(r.realtime_factor, '7.1f')} {num(r.peak_rss_mb, '8.0f')} "
            f"{num(accuracy, '8.2f')} {'':26s}{num(ratio('wall_s'), '5.2f')} "
            f"{num(ratio('realtime_factor'), '6.2f')} {num(ratio('peak_rss_mb'), '5.2f')} "
            f"{num(ratio('cpwer'), '5.2f')}{mark}"
        )
    for name, r in results.items():
        if r.lost:
            lines += ["", f"{name} lost input (its figures count it as not transcribed):"]
            lines += [f"  {line}" for line in r.lost]
        if r.unscored:
            lines += ["", f"{name} was not scored: {r.unscored}"]
        if r.evaluation is not None:
            lines += [f"{name}: warning: {warning}" for warning in r.evaluation.warnings]
    pipeline = results.get("pipeline")
    if pipeline is not None and pipeline.failed is None and pipeline.details:
        d = pipeline.details
        lines += [
            "",
            f"pipeline stages (s); meeting {d['meeting_s']:.1f} s, tracks {d['audio_s']:.1f} s",
        ]
        lines += [f"  {stage:32s} {seconds:7.3f}" for stage, seconds in d["stages_s"].items()]
        lines += [
            f"  share of wall time outside the model  {100 * d['outside_model_share']:.1f} %",
            f"  share of track audio sent to the model {100 * d['speech_share']:.1f} %",
            f"  decode + VAD per core                  {d['decode_vad_x_realtime_per_core']}x",
        ]
        if pipeline.evaluation is not None:
            e = pipeline.evaluation
            lines.append(
                f"  start error median {shown_seconds(e.start_err_median)}, p95 "
                f"{shown_seconds(e.start_err_p95)}; "
                f"missed {e.missed_utterances}/{e.utterances}; words on silent people "
                f"{e.silent_track_words}"
            )
    if truth is None:
        lines.append("(no truth: accuracy not measured; pass --truth)")
    return "\n".join(lines)
