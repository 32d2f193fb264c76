"""The `int8kit` command: one small module per subcommand, each calling one library function."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import traceback

from int8kit.errors import Int8kitError

# Subcommand modules; each defines `register(subparsers)` which adds its parser and sets
# `func=run` where `run(args) -> int`. Keep this list sorted by how often a user needs it.
SUBCOMMANDS = [
    "int8kit.cli.quantize",
    "int8kit.cli.calibrate",
    "int8kit.cli.eval",
    "int8kit.cli.layers",
    "int8kit.cli.sensitivity",
    "int8kit.cli.cache",
    "int8kit.cli.example",
    "int8kit.cli.lint",
    "int8kit.cli.bench",
    "int8kit.cli.build",
    "int8kit.cli.torch_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="int8kit",
        description="INT8 quantization for TensorRT and ONNX Runtime.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI timeout, `kill`, a job scheduler), raised like Ctrl-C so that every
    cleanup runs: outputs are complete or absent, temporaries removed."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Int8kitError as exc:
        print(f"int8kit: error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:  # MissingDependencyError carries the install command
        print(f"int8kit: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except OSError as exc:  # the environment (a full disk, a vanished file), not int8kit
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"int8kit: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"int8kit: {what}; no output was left half-written", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception:
        traceback.print_exc()
        print(
            "int8kit: internal error: this is a bug in int8kit, not in your input. Please report "
            "it with the command line and the traceback above.",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
