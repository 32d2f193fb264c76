"""`int8kit example`: the real example model and photos that PyPI packages ship, for trying the
main job without data of your own (nudenet's YOLOv8n, scikit-image's photographs)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("example", help="example model and photos shipped by PyPI packages")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    m = verbs.add_parser("model", help="print the path of an example ONNX model")
    m.add_argument("name", choices=["yolov8n", "efficientnet-lite0"])
    m.add_argument(
        "-o",
        "--output",
        default="efficientnet-lite0.onnx",
        help="where to export EfficientNet-Lite0 (needs int8kit[torch])",
    )
    m.set_defaults(func=run_model)
    ph = verbs.add_parser("photos", help="write calibration and evaluation crops of real photos")
    ph.add_argument("root", help="folder; gets calib/ and eval/ from disjoint source photos")
    ph.add_argument("--calib", type=int, default=64, help="calibration crops (default 64)")
    ph.add_argument("--eval", type=int, default=16, help="evaluation crops (default 16)")
    ph.add_argument("--seed", type=int, default=0)
    ph.set_defaults(func=run_photos)


def run_model(args: argparse.Namespace) -> int:
    from int8kit import examples

    if args.name == "yolov8n":
        print(examples.yolov8n_path())
    else:
        print(examples.export_efficientnet_lite0(args.output))
    return 0


def run_photos(args: argparse.Namespace) -> int:
    from int8kit.examples import make_photo_sets

    calib, evaluation = make_photo_sets(args.root, args.calib, args.eval, seed=args.seed)
    print(f"calibration photos: {calib}\nevaluation photos:  {evaluation}")
    return 0
