"""PNG plots for people: activation histograms with each method's threshold, the per-tensor SQNR
curve, the layer sensitivity chart. matplotlib (Agg backend) is optional: ``int8kit[plots]``."""

from __future__ import annotations

import math
import os

import numpy as np

from int8kit._deps import require
from int8kit.fileio import atomic_path

METHOD_COLORS = {
    "entropy": "tab:blue",
    "minmax": "tab:red",
    "percentile": "tab:green",
    "mse": "tab:purple",
}


def _pyplot():
    mpl = require("matplotlib", "plots")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


def short(name: str, n: int = 42) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1) :]


def histogram_plot(
    path,
    tensor: str,
    counts: np.ndarray,
    edges: np.ndarray,
    thresholds: dict[str, float],
    chosen: float | None = None,
    note: str = "",
) -> None:
    """|x| histogram (log counts) with a vertical line at each method's amax and the one used."""
    plt = _pyplot()
    counts = np.asarray(counts, np.float64)
    step = max(1, math.ceil(counts.size / 400))
    if step > 1:  # fewer, wider bars: readable, same mass
        pad = (-counts.size) % step
        counts = np.pad(counts, (0, pad)).reshape(-1, step).sum(axis=1)
        edges = np.arange(counts.size + 1) * (edges[1] - edges[0]) * step
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.stairs(counts, edges, fill=True, color="0.6", label="|x| histogram")
    ax.set_yscale("log")
    for method, amax in thresholds.items():
        ax.axvline(
            amax,
            color=METHOD_COLORS.get(method, "k"),
            ls="--",
            lw=1.4,
            label=f"{method} {amax:.4g}",
        )
    if chosen is not None:
        ax.axvline(chosen, color="k", lw=2.2, label=f"used {chosen:.4g}")
    ax.set_xlabel("|activation value|")
    ax.set_ylabel("count (log scale)")
    ax.set_title(f"{short(tensor, 60)}{' — ' + note if note else ''}", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    _save(fig, path)


def layer_sqnr_plot(path, rows: list[dict]) -> None:
    """SQNR vs FP32 of every tensor in graph order; Q/DQ'd values as separate markers."""
    plt = _pyplot()
    finite = [r["sqnr_db"] for r in rows if math.isfinite(r["sqnr_db"])]
    top = (max(finite) + 5) if finite else 60.0
    val = lambda r: top if r["sqnr_db"] == math.inf else r["sqnr_db"]  # noqa: E731
    fig, ax = plt.subplots(figsize=(10, 4.2))
    plain = [(k, val(r)) for k, r in enumerate(rows) if r["op"] != "Q/DQ"]
    qdq = [(k, val(r)) for k, r in enumerate(rows) if r["op"] == "Q/DQ"]
    if plain:
        ax.plot(*zip(*plain, strict=True), "-", color="tab:blue", lw=1.2, label="tensor")
    if qdq:
        ax.plot(*zip(*qdq, strict=True), "o", color="tab:red", ms=3, label="after its Q/DQ")
    ax.set_xlabel("tensor, in graph order")
    ax.set_ylabel("SQNR vs FP32 (dB, higher is better)")
    ax.set_title("Where the INT8 error starts and grows")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def sensitivity_plot(path, rows: list[dict], top: int = 25) -> None:
    """Horizontal bars of the most sensitive layers: the SQNR won by leaving each in float
    ("skip") and/or the SQNR with only that layer quantized ("only")."""
    plt = _pyplot()
    rows = rows[:top]
    names = [short(r["node"]) for r in rows][::-1]
    y = np.arange(len(rows))
    # (row key, value for an infinite SQNR, colour, x label, title) of each panel with data
    panels = [
        p
        for p in (
            (
                "gain_db",
                60.0,
                "tab:orange",
                "SQNR gained when only this layer stays float (dB)",
                "Leave one layer in float",
            ),
            (
                "only_sqnr_db",
                80.0,
                "tab:blue",
                "SQNR with only this layer quantized (dB, lower = more sensitive)",
                "Quantize one layer alone",
            ),
        )
        if any(r.get(p[0]) is not None for r in rows)
    ]
    ncols = len(panels)
    fig, axes = plt.subplots(
        1, ncols, figsize=(6 * ncols + 2, 0.32 * len(rows) + 1.6), sharey=True, squeeze=False
    )
    for ax, (key, inf_value, color, xlabel, title) in zip(axes[0], panels, strict=True):
        ax.barh(y, [_finite(r[key], inf_value) for r in rows][::-1], color=color)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(y, names, fontsize=8)
    fig.suptitle(f"Layer sensitivity (top {len(rows)}, most sensitive on top)")
    _save(fig, path)


def _finite(x, cap: float) -> float:
    if x is None or math.isnan(x):
        return 0.0
    return max(-cap, min(cap, x))
