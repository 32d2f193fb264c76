"""`int8kit cache show FILE` and `int8kit cache diff A B`: read TensorRT calibration caches."""

from __future__ import annotations

import argparse
import math
import sys

from int8kit.calib.cache import CalibrationCache


def register(sub) -> None:
    p = sub.add_parser("cache", help="show or compare TensorRT calibration caches")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    show = verbs.add_parser("show", help="print a cache as a table: tensor, scale, amax")
    show.add_argument("file")
    show.set_defaults(func=run_show)
    diff = verbs.add_parser("diff", help="compare two caches tensor by tensor")
    diff.add_argument("a")
    diff.add_argument("b")
    diff.add_argument(
        "--rtol", type=float, default=0.0, help="ignore relative scale changes up to this"
    )
    diff.set_defaults(func=run_diff)


def _print_problems(cache: CalibrationCache, source: str) -> bool:
    """Print what TensorRT would refuse or ignore (stderr); True when a scale is unusable."""
    for text in cache.problems(source):
        print(f"int8kit: warning: {text}", file=sys.stderr)
    return bool(cache.bad_scales())


def run_show(args: argparse.Namespace) -> int:
    """Exit code 1 when a scale is NaN, infinite, zero or negative (TensorRT refuses those)."""
    cache = CalibrationCache.read(args.file)
    bad = cache.bad_scales()
    width = max([len("tensor")] + [len(n) for n in cache.scales])
    print(f"{cache.header}  ({len(cache.scales)} tensors)")
    print(f"{'tensor':<{width}}  {'scale':>12}  {'amax':>12}")
    for name, scale in cache.scales.items():
        flag = f"  <- line {cache.lines[name]}: {bad[name]} scale" if name in bad else ""
        print(f"{name:<{width}}  {scale:12.6g}  {scale * 127:12.6g}{flag}")
    return 1 if _print_problems(cache, args.file) else 0


def run_diff(args: argparse.Namespace) -> int:
    a, b = CalibrationCache.read(args.a), CalibrationCache.read(args.b)
    invalid = _print_problems(a, args.a) | _print_problems(b, args.b)
    only_a = [n for n in a.scales if n not in b.scales]
    only_b = [n for n in b.scales if n not in a.scales]
    changed = []
    for name in a.scales:
        if name in b.scales:
            sa, sb = a.scales[name], b.scales[name]
            usable = all(math.isfinite(s) and s > 0 for s in (sa, sb))
            # A NaN, infinite, zero or negative scale is always a difference (NaN != NaN).
            rel = abs(sb - sa) / sa if usable else math.inf
            if rel > args.rtol:
                changed.append((rel, name, sa, sb))
    if a.header != b.header:
        print(f"headers differ: {a.header} vs {b.header}")
    changed.sort(reverse=True)
    if changed:
        width = max(len(n) for _, n, _, _ in changed)
        print(f"{len(changed)} tensors with different scales (largest change first):")
        print(f"{'tensor':<{width}}  {'amax A':>10}  {'amax B':>10}  {'B/A':>7}")
        for _, name, sa, sb in changed:
            ratio = f"{sb / sa:7.3f}" if sa and math.isfinite(sb / sa) else f"{'-':>7}"
            print(f"{name:<{width}}  {sa * 127:10.4g}  {sb * 127:10.4g}  {ratio}")
    for label, names in (("only in A", only_a), ("only in B", only_b)):
        if names:
            print(
                f"{len(names)} tensors {label}: "
                + ", ".join(names[:10])
                + (" ..." if len(names) > 10 else "")
            )
    same = not (changed or only_a or only_b or a.header != b.header or invalid)
    print("caches are equal" if same else f"{len(a.scales)} tensors in A, {len(b.scales)} in B")
    return 0 if same else 1
