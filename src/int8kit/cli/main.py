"""The `int8kit` command: one small module per subcommand, each calling one library function."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

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


def main(argv: list[str] | None = None) -> int:
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
    except KeyboardInterrupt:
        print("int8kit: interrupted; no output was left half-written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
