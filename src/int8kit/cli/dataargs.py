"""Command-line arguments that describe calibration or evaluation data, shared by subcommands."""

from __future__ import annotations

import argparse

from int8kit.data import DataConfig, PreprocessConfig
from int8kit.errors import DataError, Int8kitError

# Config fields -> the flag a user typed, so that a config's ValueError names the flag.
CONFIG_FLAGS = {
    "num_samples": "--num-images",
    "batch_size": "--batch-size",
    "scale": "--scale",
    "std values": "--std",
    "mean": "--mean",
    "size": "--size",
    "shape for input": "--shape for input",
    "holdout": "--holdout",
    "percentile": "--percentile",
    "sample_quantile": "--sample-quantile",
    "num_bins": "--num-bins",
    "cache_version": "--cache-version",
    "sensitivity_samples": "--sensitivity-samples",
}


def flag_error(exc: ValueError, flags: dict[str, str] = CONFIG_FLAGS) -> Int8kitError:
    """The Int8kitError for a config's ValueError, its field name replaced by the CLI flag
    ("num_samples must be >= 1 or None, got 0" -> "--num-images must be >= 1, got 0")."""
    text = str(exc)
    for field, flag in flags.items():
        if text.startswith(field + " "):
            text = flag + text[len(field) :].replace(" or None", "")
            break
    return Int8kitError(text)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(eval_fraction(v)) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def eval_fraction(text: str) -> float:
    """'1/255' or '0.0039' -> float."""
    text = text.strip()
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"size must be H,W or HxW or one number, got {text!r}"
        ) from exc
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"size must be H,W or HxW or one number, got {text!r}")
    return values[0], values[1]


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'images:1x3x640x640' -> ('images', (1, 3, 640, 640)); the name may contain ':'."""
    name, sep, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or min(shape) <= 0:
        raise argparse.ArgumentTypeError(
            f"--shape wants NAME:DxDxD (e.g. images:1x3x640x640), got {text!r}"
        )
    return name, shape


def add_data_args(
    parser: argparse.ArgumentParser, flag: str = "--calib", required: bool = True
) -> None:
    """--calib/--data SOURCE and how to turn it into model inputs."""
    g = parser.add_argument_group("data")
    g.add_argument(
        flag,
        dest="data",
        required=required,
        metavar="SOURCE",
        help="folder of images (recursive), .npy/.npz file or folder of them",
    )
    g.add_argument(
        "--data-loader-script",
        metavar="FILE.py[:FUNC]",
        help="Python file whose FUNC (default load_data) returns an iterable of "
        "{input_name: array}; run only because you name it (Polygraphy convention)",
    )
    g.add_argument("--num-images", type=int, metavar="N", help="use at most N samples")
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument(
        "--seed", type=int, default=0, help="shuffle seed for image order and random crops"
    )
    g.add_argument(
        "--preprocess",
        default="letterbox",
        choices=["letterbox", "resize", "center-crop", "random-crop"],
        help="letterbox: keep aspect, pad 114 (YOLO); center-crop: ImageNet style",
    )
    g.add_argument(
        "--size", type=_size, metavar="HxW", help="image size (default: from the model input)"
    )
    g.add_argument("--bgr", action="store_true", help="feed BGR instead of RGB")
    g.add_argument(
        "--scale", type=eval_fraction, default=1 / 255, help="pixel scale (default 1/255)"
    )
    g.add_argument(
        "--mean", type=_floats, default=(0.0, 0.0, 0.0), help="per-channel mean, after scale"
    )
    g.add_argument(
        "--std", type=_floats, default=(1.0, 1.0, 1.0), help="per-channel std, after scale"
    )
    g.add_argument("--layout", default="auto", choices=["auto", "NCHW", "NHWC"])
    g.add_argument(
        "--input-name", help="the model input the images feed (default: the image-like one)"
    )
    g.add_argument(
        "--shape",
        type=parse_shape,
        action="append",
        default=[],
        metavar="NAME:DxD..",
        help="fix an input's shape, e.g. images:1x3x640x640 (repeatable)",
    )


def data_config(args: argparse.Namespace) -> DataConfig | None:
    """The DataConfig the data arguments describe (None when no source was given)."""
    if args.data_loader_script:
        source, kind = args.data_loader_script, "script"
    elif args.data:
        source, kind = args.data, "auto"
    else:
        return None
    pre = PreprocessConfig(
        recipe=args.preprocess,
        size=args.size,
        channel_order="BGR" if args.bgr else "RGB",
        scale=args.scale,
        mean=args.mean,
        std=args.std,
        layout=args.layout,
    )
    return DataConfig(
        source=source,
        kind=kind,
        num_samples=args.num_images,
        batch_size=args.batch_size,
        seed=args.seed,
        shapes=dict(args.shape),
        preprocess=pre,
        input_name=args.input_name,
    )


def required_data_config(args: argparse.Namespace, what: str, flag: str = "--data") -> DataConfig:
    """data_config for a command that cannot run without data: a clear error when none is given
    (``what`` names it, e.g. "evaluation data") or the arguments do not fit together."""
    try:
        data = data_config(args)
    except ValueError as exc:
        raise flag_error(exc) from exc
    if data is None:
        raise DataError(f"give {what} with {flag} DIR (or --data-loader-script)")
    return data
