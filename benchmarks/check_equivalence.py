"""Check that the optimised collector/observe give exactly what the straightforward versions
give: the reference implementations below are the pre-optimisation code, kept here only to
compare against. Exits non-zero on any difference.

    .venv/bin/python benchmarks/check_equivalence.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8kit.calib.collector import HistogramCollector  # noqa: E402


class ReferenceCollector(HistogramCollector):
    """The histogram update as first written: np.abs copy, float scaling, int64 cast, clamp."""

    def collect(self, x):
        x = np.asarray(x)
        if x.size == 0:
            return
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        a = np.abs(x).ravel()
        xmin, xmax = float(x.min()), float(x.max())
        if not (math.isfinite(xmin) and math.isfinite(xmax)):
            finite = np.isfinite(a)
            n_nan = int(np.isnan(a).sum())
            self.stats.nan += n_nan
            self.stats.inf += int(a.size - finite.sum()) - n_nan
            x = x.ravel()[finite]
            a = a[finite]
            if a.size == 0:
                return
            xmin, xmax = float(x.min()), float(x.max())
        s = self.stats
        s.count += a.size
        s.min, s.max = min(s.min, xmin), max(s.max, xmax)
        batch_amax = max(-xmin, xmax)
        self.amax = max(self.amax, batch_amax)
        if not self.keep_histogram:
            return
        if self.counts is None:
            if batch_amax == 0.0:
                self._pending_zeros += a.size
                return
            self.width = batch_amax / self.num_bins
            self.counts = np.zeros(self.num_bins, dtype=np.int64)
            self.counts[0] += self._pending_zeros
            self._pending_zeros = 0
        nbins = self.counts.size
        if batch_amax > nbins * self.width:
            self._grow(batch_amax)
            nbins = self.counts.size
        idx = (a * np.float32(1.0 / self.width)).astype(np.int64)
        np.minimum(idx, nbins - 1, out=idx)
        self.counts += np.bincount(idx, minlength=nbins)


def same(a, b) -> bool:
    if a.stats.to_dict() != b.stats.to_dict() or a.amax != b.amax or a.width != b.width:
        return False
    if (a.counts is None) != (b.counts is None):
        return False
    return a.counts is None or np.array_equal(a.counts, b.counts)


def random_streams(trials: int = 500) -> int:
    rng = np.random.default_rng(1)
    bad = 0
    with np.errstate(over="ignore"):
        for _ in range(trials):
            nb = int(rng.choice([128, 2048]))
            a, b = ReferenceCollector(nb), HistogramCollector(nb)
            for _ in range(int(rng.integers(1, 6))):
                kind, n = int(rng.integers(0, 6)), int(rng.integers(1, 5000))
                x = (rng.standard_normal(n) * 10 ** rng.uniform(-6, 9)).astype(np.float32)
                if kind == 1:
                    x = np.abs(x)
                elif kind == 2:
                    x[:] = 0
                elif kind == 3:
                    x[rng.integers(0, n)] = np.nan
                elif kind == 4:
                    x = x.astype(np.float16)
                elif kind == 5:
                    x = np.maximum(x, 0).reshape(1, -1)
                a.collect(x)
                b.collect(x)
            bad += not same(a, b)
    return bad


def real_models(n: int = 16) -> int:
    import onnx
    from common import MODELS, model_path, npy_path

    from int8kit.onnx.observe import activation_tensors, observe, run_exposed

    bad = 0
    for name, (inp, _, _) in MODELS.items():
        path = npy_path(name, "calib", 128)
        if not path.exists():
            continue
        model = onnx.load(model_path(name))
        x = np.load(path, mmap_mode="r")
        batches = [{inp: np.ascontiguousarray(x[i : i + 1])} for i in range(n)]
        names = activation_tensors(model)
        ref = {}
        for values in run_exposed(model, names, batches):  # every tensor, reference collector
            for k, v in values.items():
                ref.setdefault(k, ReferenceCollector()).collect(v)
        new = observe(model, batches, HistogramCollector)
        diff = [k for k in ref if k not in new or not same(ref[k], new[k])]
        diff += [k for k in new if k not in ref]
        print(f"{name}: {len(ref)} tensors, {len(diff)} differ {diff[:5]}")
        bad += len(diff)
    return bad


if __name__ == "__main__":
    b1 = random_streams()
    print(f"random streams: {b1} of 500 differ")
    b2 = real_models()
    sys.exit(1 if b1 or b2 else 0)
