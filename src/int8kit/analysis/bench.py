"""Latency and throughput of ONNX models on ONNX Runtime, side by side.

Runs are interleaved between the models (A, B, A, B, ...) so that a change in the machine's state
(frequency, other load) hits every model alike. Inputs are random arrays of each input's shape;
the CPU's integer features are reported because they decide what INT8 gains on a CPU: AVX2 alone
has no int8 dot product (u8s8 products via pmaddubsw, which can saturate), AVX-512 VNNI / AVX-VNNI
add one, AMX adds int8 matrix tiles.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from int8kit.errors import DataError, ModelError

__all__ = ["BenchConfig", "bench", "cpu_features", "latency_stats"]

INT8_FLAGS = {
    "avx2": "AVX2 (int8 via 16-bit products; no VNNI)",
    "avx512_vnni": "AVX-512 VNNI (int8 dot product)",
    "avx_vnni": "AVX-VNNI (int8 dot product, 256-bit)",
    "amx_int8": "AMX-INT8 (int8 matrix tiles)",
}


@dataclass
class BenchConfig:
    """One benchmark run. ``shapes`` fixes dynamic input dims (the batch dim is then replaced by
    each entry of ``batches``)."""

    models: list[str]
    batches: list[int] = field(default_factory=lambda: [1])
    threads: int = 0  # 0: ONNX Runtime's default
    warmup: int = 5
    runs: int = 50
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        if not self.models:
            raise ValueError("give at least one model to benchmark")
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {self.batches}")
        if self.runs < 1 or self.warmup < 0 or self.threads < 0:
            raise ValueError("runs must be >= 1, warmup and threads >= 0")
        self.models = [os.fspath(m) for m in self.models]
        self.shapes = {k: tuple(int(d) for d in v) for k, v in dict(self.shapes).items()}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        return d


def cpu_features(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict:
    """{'model': name, 'flags': {flag: present} for INT8_FLAGS, 'int8_note': what that means}."""
    model, flags = "", set()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    model = model or platform.processor() or platform.machine()
    present = {f: f in flags for f in INT8_FLAGS}
    if present["amx_int8"]:
        note = "AMX-INT8: INT8 matrix products run on tiles; large INT8 gains are possible"
    elif present["avx512_vnni"] or present["avx_vnni"]:
        note = "VNNI: ONNX Runtime's INT8 kernels use int8 dot products; expect INT8 gains"
    elif present["avx2"]:
        note = (
            "AVX2 without VNNI: INT8 products go through 16-bit intermediates (and can saturate); "
            "INT8 gains over FP32 are small, and TensorRT on a GPU behaves differently"
        )
    else:
        note = "no x86 integer dot-product features found; INT8 speed depends on the platform"
    return {"model": model, "flags": present, "int8_note": note}


def latency_stats(seconds: list[float], batch: int) -> dict[str, float]:
    """Median, p90, p99, mean latency in ms and throughput in samples/s."""
    a = np.asarray(seconds, np.float64) * 1e3
    if a.size == 0:
        raise ValueError("no timings")
    median, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
    mean = float(a.mean())
    return {
        "median_ms": median,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": mean,
        "min_ms": float(a.min()),
        "throughput": batch * 1e3 / mean if mean > 0 else float("inf"),
        "runs": int(a.size),
    }


def _feed(specs, batch: int, shapes: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs for ``batch``; raises DataError naming the dim that has no size."""
    from int8kit.data.shapes import fmt_shape, is_static

    feed = {}
    for spec in specs:
        shape = list(shapes.get(spec.name, spec.shape))
        if len(shape) != len(spec.shape):
            raise DataError(
                f"--shape {spec.name} has {len(shape)} dims; the input has {len(spec.shape)}: "
                f"{fmt_shape(spec.shape)}"
            )
        if shape:
            if is_static(spec.shape[0]) and spec.shape[0] != batch:
                raise DataError(
                    f"input '{spec.name}' fixes the batch size at {spec.shape[0]}; "
                    f"cannot run batch {batch}"
                )
            shape[0] = batch
        missing = [k for k, d in enumerate(shape) if not is_static(d)]
        if missing:
            raise DataError(
                f"input '{spec.name}' {fmt_shape(spec.shape)} has dynamic dims {missing}; "
                f"give them with --shape {spec.name}:"
                + "x".join(str(d) if is_static(d) else "D" for d in shape)
                + " (each D a size)"
            )
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feed[spec.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feed[spec.name] = rng.integers(0, 8, shape).astype(dtype)
    return feed


def bench(config: BenchConfig) -> dict:
    """Latency of every model at every batch size, runs interleaved between the models.

    Returns ``{"cpu": cpu_features(), "config": ..., "results": [{"model", "batch",
    **latency_stats} | {"model", "batch", "skipped": why}], "speedup": {batch: {model: x}}}``;
    speedup is the first model's median over each model's median.
    """
    from int8kit.onnx.model_io import input_specs, load_model
    from int8kit.onnx.observe import make_session

    loaded = []
    names = set()
    for path in config.models:
        model = load_model(path)
        specs = input_specs(model)
        names |= {s.name for s in specs}
        loaded.append((path, specs, make_session(model, threads=config.threads)))
    unknown = sorted(set(config.shapes) - names)
    if unknown:
        raise DataError(f"--shape names {unknown} are not model inputs (inputs: {sorted(names)})")
    rng = np.random.default_rng(config.seed)
    results: list[dict] = []
    speedup: dict[str, dict[str, float]] = {}
    for batch in config.batches:
        feeds, skipped = {}, {}
        for path, specs, _ in loaded:
            try:
                feeds[path] = _feed(specs, batch, config.shapes, rng)
            except DataError as exc:
                skipped[path] = str(exc)
        if len(skipped) == len(loaded) and len(config.batches) == 1:
            raise DataError(next(iter(skipped.values())))
        times: dict[str, list[float]] = {p: [] for p in feeds}
        active = [(p, s) for p, _, s in loaded if p in feeds]
        for k in range(config.warmup + config.runs):
            for path, session in active:
                t0 = time.perf_counter()
                session.run(None, feeds[path])
                if k >= config.warmup:
                    times[path].append(time.perf_counter() - t0)
        for path, _, _ in loaded:
            if path in skipped:
                results.append({"model": path, "batch": batch, "skipped": skipped[path]})
            else:
                results.append({"model": path, "batch": batch, **latency_stats(times[path], batch)})
        base = config.models[0]
        if base in times:
            ref = float(np.median(times[base]))
            speedup[str(batch)] = {p: ref / float(np.median(t)) for p, t in times.items()}
    if not any("median_ms" in r for r in results):
        raise ModelError("no model could run at any batch size: " + results[0]["skipped"])
    return {
        "cpu": cpu_features(),
        "onnxruntime": _ort_version(),
        "config": config.to_dict(),
        "results": results,
        "speedup": speedup,
    }


def _ort_version() -> str:
    from int8kit._deps import require

    return require("onnxruntime").__version__
