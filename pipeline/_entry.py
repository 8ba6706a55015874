"""The ``trackscribe`` command's entry point: the command line loads the speech model's
libraries (most of a second), and a Ctrl-C while they load must end the command as one during
a run does, not with a traceback of Python's imports."""

import os
import sys
from importlib import import_module


def main() -> int:
    # Started with a stream closed (`2>&-`, a daemon's stdout), Python has None for it, and
    # print(file=None) writes to stdout: warnings would land in the JSON a script parses.
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    # A terminal or a log whose encoding lacks a character we print (a name, an ellipsis)
    # must not turn finished work into an error: such characters are written escaped.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # None: a caller's own stream
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        cli = import_module("pipeline.cli")
    except KeyboardInterrupt:
        print("trackscribe: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as the command returns when interrupted later
    return cli.main()
