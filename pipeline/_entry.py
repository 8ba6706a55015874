"""The ``trackscribe`` command's entry point: the command line loads the speech model's
libraries (most of a second), and a Ctrl-C while they load must end the command as one during
a run does, not with a traceback of Python's imports."""

import sys
from importlib import import_module


def main() -> int:
    try:
        cli = import_module("pipeline.cli")
    except KeyboardInterrupt:
        print("trackscribe: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as the command returns when interrupted later
    return cli.main()
