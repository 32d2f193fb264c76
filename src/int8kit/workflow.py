"""The main job: calibrate an FP32 ONNX model and write what TensorRT and ONNX Runtime read.

``quantize_onnx(config)`` -> ``model.int8.onnx`` (explicit Q/DQ) and ``model.int8.ranges.json``
(per-tensor amax, statistics, the config); with ``write_cache`` also ``model.int8.calib.cache``
(TensorRT implicit INT8, legacy: removed in TensorRT 11). ``calibrate_onnx(config)`` writes only
the cache and the ranges.

Only the tensors that get Q/DQ are calibrated unless the cache is asked for: the cache needs a
range for every activation, which is 2-3x the histogram work (and makes ONNX Runtime expose every
tensor, which blocks its layout optimisations).
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from int8kit.calib import underflow
from int8kit.calib.cache import ALGORITHMS, DEFAULT_VERSION
from int8kit.calib.collector import (
    DEFAULT_BINS,
    DEFAULT_SAMPLE_QUANTILE,
    SAMPLE_METHODS,
    HistogramCollector,
)
from int8kit.calib.methods import METHODS
from int8kit.calib.underflow import zero_share
from int8kit.data import DataConfig
from int8kit.errors import DataError, ModelError
from int8kit.fileio import check_outputs
from int8kit.onnx.placement import PlacementConfig
from int8kit.ranges import Ranges, TensorRange

log = logging.getLogger(__name__)

# "search": per quantized tensor, the method whose amax keeps the outputs closest to FP32
# (onnx/search.py); every other tensor (the cache's) gets entropy.
# "auto" (the default): minmax for a Q/DQ model, which with bias correction and the input layer
# kept float is the most faithful choice on the benchmark models (benchmarks/results); entropy
# for a cache-only run, the ranges TensorRT's own EntropyCalibration2 would compute.
# "mean-max" / "quantile-max": robust ranges from per-sample maxima (calib/collector.py).
ALL_METHODS = ("auto",) + METHODS + SAMPLE_METHODS + ("search",)


@dataclass
class CalibConfig:
    """How ranges are computed and how the TensorRT cache is labelled."""

    method: str = "auto"
    percentile: float = 99.99
    num_bins: int = DEFAULT_BINS
    cache_version: int = DEFAULT_VERSION
    cache_algorithm: str = "EntropyCalibration2"

    search_samples: int = 16  # calibration samples the range search scores candidates on
    sample_quantile: float = DEFAULT_SAMPLE_QUANTILE  # quantile-max: quantile of sample maxima

    def __post_init__(self):
        if self.method not in ALL_METHODS:
            raise ValueError(
                f"unknown method {self.method!r}; choose one of {', '.join(ALL_METHODS)}"
            )
        if not 0 <= self.sample_quantile <= 1:
            raise ValueError(f"sample_quantile must be in [0, 1], got {self.sample_quantile}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.num_bins < 128:
            raise ValueError(f"num_bins must be at least 128, got {self.num_bins}")
        if self.cache_algorithm not in ALGORITHMS:
            raise ValueError(f"cache_algorithm must be one of {ALGORITHMS}")
        if self.cache_version <= 0:
            raise ValueError(
                f"cache_version must be a positive integer such as 8601, got {self.cache_version}"
            )

    def resolve(self, qdq: bool, target: str = "tensorrt") -> CalibConfig:
        """This config with ``auto`` replaced by the method it stands for: the default recipe's
        (recipes.py) for a TensorRT Q/DQ model, mse for the ort-cpu target (each side of the
        range clipped where the uint8 error of the histogram is least: on ONNX Runtime's kernels
        it beat minmax on 5 of the zoo's 6 conv nets, so leaving any one out still picks it;
        benchmarks/results/ort_cpu.json), entropy for a cache."""
        if self.method != "auto":
            return self
        if not qdq:
            return replace(self, method="entropy")
        if target != "tensorrt":
            return replace(self, method="mse")
        from int8kit.recipes import DEFAULTS

        return replace(self, method=DEFAULTS["conv"].method)


@dataclass
class QuantizeConfig:
    """One quantization run; serialisable, written into the ranges file so it can be repeated."""

    model: str
    output: str
    data: DataConfig | None = None
    calib: CalibConfig = field(default_factory=CalibConfig)
    placement: PlacementConfig = field(
        default_factory=lambda: PlacementConfig(quantize_input_layers=False)
    )
    holdout: int = 4  # images kept out of calibration to measure fidelity (0: none)
    ranges: str | None = None  # reuse this ranges.json instead of calibrating
    task: str = "auto"  # how fidelity is reported: auto | raw | classify | detect
    write_qdq: bool = True
    write_cache: bool = False  # the TensorRT calibration cache: every activation is calibrated
    # Shift the float biases of layers with int8 weights so their mean output matches FP32
    # (onnx/bias.py); needs calibration data, changes only the Q/DQ model.
    bias_correction: bool = True
    # ... kept per layer only where it lowers that layer's output error on held-out calibration
    # samples (onnx/bias_safe.py); statistics "local" (each layer's own input quantized) or
    # "empirical" (upstream layers quantized and corrected first: more ONNX Runtime passes).
    bias_gate: bool = True
    bias_stats: str = "local"
    # Cross-layer equalization of Conv->Relu->Conv pairs before calibration (onnx/equalize.py).
    equalize: bool = False
    # Per-channel ranges for depthwise Conv inputs as one scale per tensor: each input channel
    # divided by its range, the depthwise weights multiplied by it (onnx/dwequalize.py), where
    # held-out calibration samples show a clear gain. None: as the default recipe says.
    equalize_depthwise: bool | None = None
    # One-sided activations (ReLU/GELU/HardSwish outputs) read by 1x1 Convs, Gemm and MatMul are
    # centred (X - c) with c folded into those layers' biases, so the symmetric int8 scale covers
    # only the values that occur (onnx/center.py). None: as the default recipe says.
    center_one_sided: bool | None = None
    # Inputs of MaxPool reach as far as the pool's output range where the method clipped them
    # below it: a max pool passes on the largest values. None: as the default recipe says.
    max_pool_max: bool | None = None
    # SmoothQuant (onnx/smoothquant.py): move activation outliers into the weights of MatMul/Gemm
    # layers before calibration. A float alpha in [0, 1], "auto" (per activation), None: off.
    smooth_quant: float | str | None = None
    # AdaRound (onnx/adaround.py): learn each int8 weight's rounding on calibration data, within
    # ``adaround_seconds``; needs calibration data.
    adaround: bool = False
    adaround_seconds: float = 60.0
    # Fallback (analysis/fallback.py): leave the most sensitive layers unquantized until the
    # held-out fidelity reaches the target. SQNR: worst output part (detector: box and score).
    target_sqnr: float | None = None
    target_top1: float | None = None
    sensitivity_samples: int = 8  # calibration samples the layers are ranked on
    # Most layers the fallback may leave float: a count, a share ("10%", 0.1), None: 10%. The
    # ranges of the most sensitive layers are repaired first (analysis/fallback.py).
    max_float_layers: int | float | str | None = None
    high_precision: str = "fp32"  # type of what stays float: fp32 | fp16 (onnx/fp16.py)
    keep_io_types: bool = True  # fp16: keep the model's FP32 inputs/outputs (Casts at the edge)
    report: str | None = None  # folder for report.md/.html and plots
    # Where the INT8 model runs (onnx/targets.py): "tensorrt" or "ort-cpu" (uint8 activations,
    # ONNX Runtime's integer kernels); reduce_range (ort-cpu): 7-bit weights, None: on where the
    # CPU lacks VNNI (a run writes the value it resolved to into its ranges file).
    target: str = "tensorrt"
    reduce_range: bool | None = None

    def __post_init__(self):
        _check_target(self)
        if self.data is None and self.ranges is None:
            raise ValueError(
                "give calibration data (--calib) or an existing ranges file (--ranges)"
            )
        if self.holdout < 0:
            raise ValueError(f"holdout must be >= 0, got {self.holdout}")
        check_outputs(self.input_paths(), self.output_paths())
        if self.high_precision not in ("fp32", "fp16"):
            raise ValueError(f"high_precision must be fp32 or fp16, got {self.high_precision!r}")
        if self.sensitivity_samples < 1:
            raise ValueError(f"sensitivity_samples must be >= 1, got {self.sensitivity_samples}")
        _check_ptq_options(self)
        if self.bias_stats not in ("local", "empirical"):
            raise ValueError(f"bias_stats must be local or empirical, got {self.bias_stats!r}")
        if self.equalize and (self.write_cache or not self.write_qdq):
            raise ValueError(
                "equalization changes the FP32 weights, so a calibration cache would not fit the "
                "original model: use the Q/DQ model (drop --cache), or drop --equalize"
            )
        if self.equalize_depthwise and (self.write_cache or not self.write_qdq):
            raise ValueError(
                "depthwise equalization changes the FP32 weights, so a calibration cache would "
                "not fit the original model: use the Q/DQ model (drop --cache), or drop "
                "--equalize-depthwise"
            )
        if self.center_one_sided and (self.write_cache or not self.write_qdq):
            raise ValueError(
                "centring one-sided activations changes the graph, so a calibration cache would "
                "not fit the original model: drop --cache, or drop --center-one-sided"
            )
        if self.equalize_depthwise and self.data is None:
            raise ValueError("depthwise equalization needs calibration data (--calib)")
        if self.max_float_layers is not None:
            from int8kit.analysis.fallback import budget_of

            budget_of(self.max_float_layers, 1)  # raises on a malformed value
        if self.fallback_target is not None and (self.data is None or self.holdout < 1):
            raise ValueError(
                "a fidelity target needs calibration data (--calib) and held-out images "
                "(--holdout N, N >= 1; 16 or more for a meaningful check)"
            )

    @property
    def fallback_target(self):
        """analysis.fallback.Target of --target-sqnr/--target-top1 (validated), or None."""
        if self.target_sqnr is None and self.target_top1 is None:
            return None
        from int8kit.analysis.fallback import Target

        return Target(self.target_sqnr, self.target_top1)

    # Output paths: -o model.int8.onnx -> model.int8.calib.cache, model.int8.ranges.json
    @property
    def stem(self) -> Path:
        out = Path(self.output)
        for suffix in (".onnx", ".cache"):
            if out.name.endswith(suffix):
                out = out.with_name(out.name[: -len(suffix)])
        return out

    @property
    def cache_path(self) -> Path:
        return (
            Path(self.output)
            if not self.write_qdq
            else self.stem.with_name(self.stem.name + ".calib.cache")
        )

    @property
    def ranges_path(self) -> Path:
        return self.stem.with_name(self.stem.name + ".ranges.json")

    def input_paths(self) -> dict[str, str | None]:
        """What the run reads, labelled as the CLI names it (never written to)."""
        source = self.data.source if self.data else None
        if self.data and self.data.kind == "script":
            from int8kit.data.script import parse_script

            source = str(parse_script(source)[0])
        return {"the model": self.model, "--ranges": self.ranges, "the data": source}

    def output_paths(self) -> dict[str, Path | str | None]:
        """What the run writes, labelled as the CLI names it; each must be its own path."""
        cache = self.write_cache and self.write_qdq
        return {
            "-o": self.output,
            "the ranges file": self.ranges_path,
            "the cache": self.cache_path if cache else None,
            "--report": self.report,
        }

    def to_dict(self) -> dict:
        d = {
            "model": os.fspath(self.model),
            "output": os.fspath(self.output),
            "data": self.data.to_dict() if self.data else None,
            "calib": asdict(self.calib),
            "placement": self.placement.to_dict(),
            "holdout": self.holdout,
            "ranges": self.ranges,
            "task": self.task,
            "write_qdq": self.write_qdq,
            "write_cache": self.write_cache,
            "bias_correction": self.bias_correction,
            "bias_gate": self.bias_gate,
            "bias_stats": self.bias_stats,
            "equalize": self.equalize,
            "equalize_depthwise": self.equalize_depthwise,
            "center_one_sided": self.center_one_sided,
            "max_pool_max": self.max_pool_max,
            "smooth_quant": self.smooth_quant,
            "adaround": self.adaround,
            "adaround_seconds": self.adaround_seconds,
            "target_sqnr": self.target_sqnr,
            "target_top1": self.target_top1,
            "sensitivity_samples": self.sensitivity_samples,
            "max_float_layers": self.max_float_layers,
            "high_precision": self.high_precision,
            "keep_io_types": self.keep_io_types,
            "report": self.report,
            "target": self.target,
            "reduce_range": self.reduce_range,
        }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> QuantizeConfig:
        return cls(
            model=d["model"],
            output=d["output"],
            data=DataConfig.from_dict(d["data"]) if d.get("data") else None,
            calib=CalibConfig(**d.get("calib", {})),
            placement=PlacementConfig.from_dict(d.get("placement", {})),
            holdout=d.get("holdout", 4),
            ranges=d.get("ranges"),
            task=d.get("task", "auto"),
            write_qdq=d.get("write_qdq", True),
            write_cache=d.get("write_cache", True),  # runs before the key existed wrote it
            bias_correction=d.get("bias_correction", False),  # ... and had no correction
            bias_gate=d.get("bias_gate", False),  # ... nor a gate on it
            bias_stats=d.get("bias_stats", "local"),
            equalize=d.get("equalize", False),
            equalize_depthwise=d.get("equalize_depthwise", False),  # older runs: none
            center_one_sided=d.get("center_one_sided", False),
            max_pool_max=d.get("max_pool_max", False),  # runs before the key existed clipped
            smooth_quant=d.get("smooth_quant"),  # runs before these keys existed had neither
            adaround=d.get("adaround", False),
            adaround_seconds=d.get("adaround_seconds", 60.0),
            target_sqnr=d.get("target_sqnr"),
            target_top1=d.get("target_top1"),
            sensitivity_samples=d.get("sensitivity_samples", 8),
            max_float_layers=d.get("max_float_layers"),
            high_precision=d.get("high_precision", "fp32"),
            keep_io_types=d.get("keep_io_types", True),
            report=d.get("report"),
            target=d.get("target", "tensorrt"),  # files before targets existed: TensorRT's
            reduce_range=d.get("reduce_range"),
        )


@dataclass
class QuantizeResult:
    config: QuantizeConfig
    outputs: dict[str, Path]
    images_used: int = 0
    images_skipped: int = 0
    images_dropped: int = 0  # short final batch a fixed batch size cannot take
    skipped_files: list = field(default_factory=list)
    seconds: float = 0.0
    calibration_seconds: float = 0.0
    tensors_calibrated: int = 0
    activations_quantized: int = 0
    weights_quantized: int = 0  # layers with int8 weights: a weight shared by 61 layers counts 61
    weight_tensors_quantized: int = 0  # distinct weight tensors behind them (each stored once)
    nonfinite: dict = field(default_factory=dict)
    fidelity: dict = field(default_factory=dict)  # backend -> output -> metrics
    holdout_images: int = 0
    # name -> shape of the calibration batches, [min, opt, max] where they differ
    input_shapes: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)  # range search summary (method "search")
    fallback: dict = field(default_factory=dict)  # analysis.fallback.FallbackResult as a dict
    fp16: dict = field(default_factory=dict)  # onnx.fp16.FP16Summary as a dict
    bias_correction: dict = field(default_factory=dict)  # onnx.bias.BiasSummary as a dict
    smooth_quant: dict = field(default_factory=dict)  # onnx.smoothquant.SmoothSummary as a dict
    recipe: dict = field(default_factory=dict)  # what --method auto resolved to (recipes.py)
    adaround: dict = field(default_factory=dict)  # onnx.adaround.AdaRoundSummary as a dict
    equalize: dict = field(default_factory=dict)  # onnx.equalize.EqualizeSummary as a dict
    equalize_depthwise: dict = field(default_factory=dict)  # onnx.dwequalize.DepthwiseSummary
    center: dict = field(default_factory=dict)  # onnx.center.CenterSummary as a dict
    method: str = ""  # the range method used (``auto`` resolved)
    target: dict = field(default_factory=dict)  # name, scheme, reduce_range, warnings
    # quantized activations most of whose non-zero values int8 rounds to 0 (calib.underflow):
    # name -> share, min, max, amax, readers (nodes)
    rounds_to_zero: dict = field(default_factory=dict)
    # MaxPool inputs raised to the pool output's range (max_pool_max): name -> [amax, raised]
    max_pool_max: dict = field(default_factory=dict)


def calibrate(
    model,
    batches,
    calib: CalibConfig,
    total: int | None = None,
    candidates_for=frozenset(),
    names: list[str] | None = None,
) -> Ranges:
    """Ranges of the activations ``names`` of ``model`` (default: every floating-point one)
    over ``batches`` (streamed). Tensors in ``candidates_for`` also record the amax every method
    would pick. ``auto`` means entropy here (``quantize_onnx`` resolves it for a Q/DQ model)."""
    from int8kit.data import progress
    from int8kit.onnx.observe import observe

    calib = calib.resolve(qdq=False)

    if names is not None and not names:
        return Ranges()  # nothing to quantize (e.g. the only layer reads the network input)
    method = "entropy" if calib.method == "search" else calib.method
    keep_hist = method not in ("minmax",) + SAMPLE_METHODS or bool(candidates_for)
    collectors = observe(
        model,
        progress(batches, total=total, desc="calibrating"),
        lambda: HistogramCollector(
            calib.num_bins,
            keep_histogram=keep_hist,
            per_sample=method in SAMPLE_METHODS,
            keep_sample_maxima=method == "quantile-max",
        ),
        names=names,
        light_consumer=not keep_hist,
        total=total if keep_hist else None,
    )
    if not collectors:
        raise DataError("calibration saw no data: the data source produced no batch")

    def tensor_range(item) -> TensorRange:
        name, c = item
        cands = {}
        if name in candidates_for:
            cands = {m: c.compute_amax(m, calib.percentile) for m in METHODS}
        amax = (
            cands[method]
            if method in cands
            else c.compute_amax(method, calib.percentile, calib.sample_quantile)
        )
        stats = c.stats.to_dict()
        share = zero_share(c.counts, c.width, amax, stats)
        return TensorRange(amax, method, stats, cands, zero_share=share)

    # The histogram searches are vectorised NumPy that mostly releases the GIL: threads help.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        found = pool.map(tensor_range, collectors.items())
        return Ranges(tensors=dict(zip(collectors, found, strict=True)))


def raise_max_pool_inputs(model, placement, ranges: Ranges) -> dict:
    """Raise the range of each quantized MaxPool input to that of the pool's output where the
    method clipped the input below it, in place: a max pool passes on the largest values, so the
    output's own range (mse on what the pool keeps) says how far the input must reach; a range
    clipped below it saturates exactly the values that go on. Returns {tensor: [amax, raised]}."""
    pools = {n.name: n for n in model.graph.node if n.op_type == "MaxPool"}
    raised = {}
    for name, readers in placement.activations.items():
        r = ranges.tensors.get(name)
        outs = [pools[node].output[0] for node, _ in readers if node in pools]
        if r is None or not outs:
            continue
        reach = max((ranges.tensors[o].amax for o in outs if o in ranges.tensors), default=0.0)
        ends = [abs(v) for v in (r.stats.get("min"), r.stats.get("max")) if v is not None]
        top = min(reach, max(ends, default=0.0))  # never past the input's own max
        if math.isfinite(top) and top > r.amax:
            raised[name] = [r.amax, top]
            r.amax, r.method = top, f"{r.method}, raised to its MaxPool output's"
    return raised


def rounds_to_zero(model, ranges: Ranges, placement, share: float = underflow.WARN_SHARE) -> dict:
    """The quantized activations of ``placement`` whose calibrated share of non-zero values
    that int8 rounds to 0 is at least ``share`` (probabilities aside: calib.underflow), worst
    first. Taken at the calibrated symmetric step (before centring); methods that keep no
    histogram (minmax, mean-max, quantile-max) and ranges read from a file give no share."""
    producer = {out: n.op_type for n in model.graph.node for out in n.output}
    found = {}
    for name, readers in placement.activations.items():
        r = ranges.tensors.get(name)
        if r is None or r.zero_share is None or r.zero_share < share:
            continue
        if producer.get(name) in underflow.QUIET_PRODUCERS:
            continue
        found[name] = {
            "share": r.zero_share,
            "min": r.stats.get("min"),
            "max": r.stats.get("max"),
            "amax": r.amax,
            "readers": sorted({node for node, _ in readers}),
        }
    return dict(sorted(found.items(), key=lambda kv: -kv[1]["share"]))


def _load(config: QuantizeConfig):
    from int8kit.onnx.model_io import load_model, refuse_quantized

    model = load_model(config.model)
    refuse_quantized(model, config.model)
    return normalize_model(model, config.model)


def normalize_model(model, path) -> tuple:
    """``model`` (just loaded from ``path``) as quantize reads it, in place, same function:
    unique node names, weights listed as graph inputs as constants (IR 3, old exports), weights
    in Constant nodes as initializers (paddle2onnx), shared weights read through Identity nodes
    as the initializer itself (TorchScript), an FP16 model computed in FP32. Returns (model,
    input specs, warnings). ``sensitivity`` reads a model the same way, so that both plan the
    same layers."""
    from int8kit.onnx.model_io import (
        bypass_initializer_identities,
        constants_to_initializers,
        fills_to_initializers,
        initializers_out_of_inputs,
        input_specs,
    )
    from int8kit.onnx.placement import node_names_unique
    from int8kit.onnx.upcast import upcast_fp16

    node_names_unique(model)
    listed = initializers_out_of_inputs(model)  # weights listed as inputs (IR 3, old exports)
    if listed:
        log.info("%d initializers listed as graph inputs read as constants (same function)", listed)
    filled = fills_to_initializers(model)  # weights made by ConstantOfShape (ONNX test models)
    if filled:
        log.info("%d ConstantOfShape weights read as initializers (same function)", filled)
    moved = constants_to_initializers(model)  # weights in Constant nodes (paddle2onnx)
    if moved:
        log.info("%d Constant nodes read as initializers (same function)", moved)
    shared = bypass_initializer_identities(model)  # shared weights (TorchScript export)
    if shared:
        log.info("%d Identity nodes of initializers bypassed (same function)", shared)
    warnings = []
    if upcast_fp16(model):  # Q/DQ scales are FP32: an FP16 model is calibrated in FP32
        warnings.append(
            f"{path} is an FP16 model: it is calibrated, quantized and compared in FP32 "
            "(inputs and outputs stay FP16); --high-precision fp16 writes what stays float in FP16"
        )
        log.warning(warnings[-1])
    return model, input_specs(model), warnings


def _data(config: QuantizeConfig, specs):
    from int8kit.data import make_source, split

    if config.data is None:
        return None, None
    if config.holdout:
        return split(config.data, specs, config.holdout)
    return make_source(config.data, specs), None


def bias_correct_as_configured(model, placement, calib_src, amax, config: QuantizeConfig):
    """(corrected model, onnx.bias.BiasSummary): the bias correction ``config`` asks for (gated
    on held-out samples and/or with empirical statistics: onnx/bias_safe.py; else the plain one),
    the call ``quantize_onnx`` makes and the fallback models."""
    if config.bias_gate or config.bias_stats != "local":
        from int8kit.onnx.bias_safe import safe_bias_correct

        gate = {} if config.bias_gate else {"gate_samples": 0}
        n = getattr(calib_src, "num_samples", None)
        return safe_bias_correct(
            model, placement, calib_src, amax, stats=config.bias_stats, num_samples=n, **gate
        )
    from int8kit.onnx.bias import bias_correct

    return bias_correct(model, placement, calib_src, amax=amax)


def quantize_onnx(config: QuantizeConfig) -> QuantizeResult:
    """Calibrate (or reuse ranges), insert Q/DQ by the placement rules, write every output
    atomically, and measure INT8 vs FP32 fidelity on held-out data."""
    from int8kit.onnx.model_io import save_model
    from int8kit.onnx.qdq import insert_qdq
    from int8kit.onnx.targets import get_target

    t0 = time.perf_counter()
    model, specs, load_warnings = _load(config)
    calib_src, holdout_src = _data(config, specs)
    result = QuantizeResult(config, outputs={})
    original = model  # fidelity is measured against the model as given
    config = _apply_recipe(config, model, result)
    if config.equalize:
        from int8kit.onnx.equalize import equalize

        model, eq = equalize(model)
        result.equalize = asdict(eq)
    if config.smooth_quant not in (None, "off") and config.write_qdq:
        from int8kit.onnx.smoothquant import smooth_for_placement

        # The smoothed FP32 model computes the same function: the ranges are taken on it.
        model, result.smooth_quant = smooth_for_placement(
            model, config.placement, calib_src, config.smooth_quant
        )
    if config.equalize_depthwise and config.write_qdq:
        from int8kit.onnx.dwequalize import equalize_for_placement

        # Same FP32 function; the ranges are taken on the equalized model. A graph the rewrite
        # does not handle is quantized as it is, and said: the default must not end a run.
        try:
            model, result.equalize_depthwise = equalize_for_placement(
                model, config.placement, calib_src
            )
        except Exception as exc:  # ONNX Runtime raises its own types
            why = f"depthwise equalization skipped: {type(exc).__name__}: {str(exc)[:200]}"
            log.warning(why)
            result.equalize_depthwise = {"failed": why}
    target = get_target(config.target, config.reduce_range)
    config.reduce_range = target.reduce_range if target.name != "tensorrt" else None
    result.target = {"name": target.name, "scheme": target.describe(), "warnings": load_warnings}
    if config.write_qdq:
        model, prepared = target.prepare(model)  # same function (ort-cpu: Pads into Convs)
        result.target.update(prepared)
    placement = target.plan(model, config.placement) if config.write_qdq else None
    if placement is not None:
        from int8kit.onnx.model_io import foreign_ops, subgraph_layers

        hidden = subgraph_layers(model)
        if hidden:
            warning = (
                f"{hidden} Conv/ConvTranspose/Gemm/MatMul layers inside If/Loop/Scan bodies stay "
                "float: int8kit quantizes the main graph only; to quantize them, export the "
                "model without control flow (an If: the one branch you run, e.g. a fixed sample "
                "rate; a Loop or Scan, e.g. an autoregressive decoder: unrolled to a fixed "
                "length, or its body as a model of its own)"
            )
            log.warning(warning)
            result.target["warnings"].append(warning)
        foreign = foreign_ops(model) if target.name == "tensorrt" else {}
        if foreign:
            listed = ", ".join(f"{k} x{v}" for k, v in sorted(foreign.items()))
            warning = (
                f"the model holds operators outside standard ONNX ({listed}): TensorRT's ONNX "
                "parser has no importer for them (only plugins you provide), and int8kit "
                "leaves them and the weights inside them float, so the Q/DQ model runs on ONNX "
                "Runtime only; for TensorRT, quantize the model as exported, before ONNX "
                "Runtime's transformer optimizer (optimum's ORTOptimizer, optimize_model) fused "
                "its layers"
            )
            log.warning(warning)
            result.target["warnings"].append(warning)
    if placement is not None and target.placement == "ort":
        from int8kit.onnx.targets_ort import integer_warning

        warning = integer_warning(model, placement)
        if warning:
            log.warning(warning)
            result.target["warnings"].append(warning)
    calib = config.calib.resolve(qdq=config.write_qdq, target=config.target)
    result.method = calib.method
    searching = calib.method == "search" and placement is not None
    cache_wanted = config.write_cache or not config.write_qdq
    if config.ranges:
        ranges = Ranges.read(config.ranges)
        if cache_wanted:
            _check_covers(ranges, model, config.ranges)
        if placement is not None:
            check_qdq_covered(ranges, placement, config.ranges)
    else:
        t1 = time.perf_counter()
        ranges = calibrate(
            model,
            _record_shapes(calib_src, result.input_shapes),
            calib,
            total=len(calib_src),
            candidates_for=(
                set(placement.activations)
                if searching or config.fallback_target is not None
                else frozenset()
            ),
            names=None if cache_wanted else list(placement.activations),
        )
        if searching:
            result.search = _search(model, placement, ranges, calib_src, calib)
        result.calibration_seconds = time.perf_counter() - t1
        result.images_used = calib_src.stats.used
        result.images_skipped = calib_src.stats.skipped
        result.images_dropped = calib_src.stats.dropped
        result.skipped_files = list(calib_src.stats.skipped_files)
    if placement is not None and config.max_pool_max and not config.ranges:
        result.max_pool_max = raise_max_pool_inputs(model, placement, ranges)
    ranges.config = config.to_dict()
    result.tensors_calibrated = len(ranges.tensors)
    result.nonfinite = ranges.nonfinite()
    if placement is not None:  # at the calibrated ranges, before centring renames tensors
        result.rounds_to_zero = rounds_to_zero(model, ranges, placement)
        if result.rounds_to_zero:
            log.warning(underflow.warning(result.rounds_to_zero))

    # Centring before the fallback: it ranks and repairs the layers as they will be quantized.
    if placement is not None and config.center_one_sided and target.name == "tensorrt":
        from int8kit.onnx.center import center

        try:
            model, placement, ranges, centered = center(model, placement, ranges)
            result.center = asdict(centered)
        except Exception as exc:  # a graph the rewrite does not handle is quantized as it is
            why = f"centring skipped: {type(exc).__name__}: {str(exc)[:200]}"
            log.warning(why)
            result.center = {"failed": why}

    if placement is not None and config.fallback_target is not None:
        from int8kit.analysis.fallback import run_fallback

        result.fallback, placement = run_fallback(
            model, placement, ranges, calib_src, holdout_src, config
        )

    qdq_model = None
    if placement is not None:
        quant = target.quantizers(ranges, placement)  # amax, or uint8 parameters (ort-cpu)
        for name, q in quant.items():
            if hasattr(q, "to_dict") and name in ranges.tensors:
                ranges.tensors[name].uint8 = q.to_dict()
        source, rounded, bc_placement = model, None, placement
        if config.adaround and placement.weights:
            from int8kit.onnx.adaround import adaround, without_rounded

            rounded, ada = adaround(
                model, placement, calib_src, ranges.amax(), seconds=config.adaround_seconds
            )
            result.adaround = asdict(ada)
            bc_placement = without_rounded(placement, rounded)  # AdaRound fitted their mean
        if config.bias_correction and calib_src is None:
            log.warning("bias correction skipped: it needs calibration data (--calib)")
            result.bias_correction = {"not_run": "no calibration data"}
        elif config.bias_correction and placement.weights:
            t1 = time.perf_counter()
            source, bias = bias_correct_as_configured(model, bc_placement, calib_src, quant, config)
            result.bias_correction = {**asdict(bias), "seconds": time.perf_counter() - t1}
        # bias correction's copy is rewritten in place; the model itself is copied
        qdq_model, summary = insert_qdq(
            source, placement, quant, rounded=rounded, copy=source is model
        )
        qdq_model = target.finish(qdq_model)
        result.activations_quantized = summary.activations
        result.weights_quantized = len({node for node, _ in placement.weights})
        result.weight_tensors_quantized = summary.weights
        if config.high_precision == "fp16":
            from int8kit.onnx.fp16 import convert_to_fp16

            qdq_model, fp16 = convert_to_fp16(qdq_model, keep_io_types=config.keep_io_types)
            result.fp16 = asdict(fp16)
        save_model(qdq_model, config.output, data=_check(qdq_model))
        result.outputs["qdq_onnx"] = Path(config.output)
    if cache_wanted:
        cache = ranges.to_cache(calib.cache_version, calib.cache_algorithm)
        cache.write(config.cache_path)
        result.outputs["cache"] = config.cache_path
    ranges.write(config.ranges_path)
    result.outputs["ranges"] = config.ranges_path

    if qdq_model is not None and holdout_src is not None and config.keep_io_types:
        result.fidelity = fidelity(
            original, qdq_model, holdout_src, task=config.task, backends=target.backends
        )
        result.holdout_images = holdout_src.stats.used
    if config.report:
        from int8kit.report.quantize import quantize_report

        result.outputs["report"] = quantize_report(
            config.report, result, model, qdq_model, ranges, calib_src, holdout_src
        )
    result.seconds = time.perf_counter() - t0
    return result


def _check_target(config: QuantizeConfig) -> None:
    from int8kit.onnx.targets import TARGETS

    if config.target not in TARGETS:
        raise ValueError(f"unknown target {config.target!r}; known targets: {', '.join(TARGETS)}")
    if config.target == "tensorrt":
        if config.reduce_range:
            raise ValueError("reduce_range is for target ort-cpu (TensorRT has no such mode)")
        return
    if config.write_cache or not config.write_qdq:
        raise ValueError(
            f"the calibration cache is TensorRT's (implicit INT8); target {config.target} reads "
            "the Q/DQ model: drop --cache (or use `int8kit quantize`), or use --target tensorrt"
        )
    unsupported = [
        flag
        for flag, on in (
            ("--adaround", config.adaround),
            ("--method search", config.calib.method == "search"),
            ("--target-sqnr/--target-top1", config.fallback_target is not None),
        )
        if on
    ]
    if unsupported:
        raise ValueError(
            f"{', '.join(unsupported)} model the symmetric int8 quantizer of --target tensorrt "
            f"and are not available for target {config.target} yet: drop them"
        )


def _apply_recipe(config: QuantizeConfig, model, result: QuantizeResult) -> QuantizeConfig:
    """``--method auto`` of a Q/DQ model for TensorRT: the default recipe of the graph's family
    (recipes.py). The returned config holds the resolved values, so the ranges file it is
    written into repeats the run exactly; options the user set explicitly are kept."""
    if config.calib.method != "auto" or not config.write_qdq or config.target != "tensorrt":
        return config
    from int8kit.recipes import default_recipe

    fam, recipe = default_recipe(model)
    result.recipe = {"family": fam, **recipe.to_dict()}
    sq, dw, ctr = config.smooth_quant, config.equalize_depthwise, config.center_one_sided
    mp = recipe.max_pool_max if config.max_pool_max is None else config.max_pool_max
    if not config.write_cache and config.data is not None:
        sq = recipe.smooth_quant if sq is None else sq
        dw = recipe.equalize_depthwise if dw is None else dw
    if not config.write_cache:
        ctr = recipe.center_one_sided if ctr is None else ctr
    return replace(
        config,
        calib=replace(config.calib, method=recipe.method),
        smooth_quant=sq,
        equalize=config.equalize or recipe.equalize,
        equalize_depthwise=bool(dw),
        center_one_sided=bool(ctr),
        max_pool_max=bool(mp),
    )


def _check_ptq_options(config: QuantizeConfig) -> None:
    sq = config.smooth_quant
    if sq == "off":  # explicitly off, also where the default recipe would smooth
        sq = None
    if sq is not None and sq != "auto" and not (isinstance(sq, (int, float)) and 0 <= sq <= 1):
        raise ValueError(f"smooth_quant must be an alpha in [0, 1], 'auto' or 'off', got {sq!r}")
    if (sq is not None or config.adaround) and config.data is None:
        raise ValueError("SmoothQuant and AdaRound need calibration data (--calib)")
    if sq is not None and (config.write_cache or not config.write_qdq):
        raise ValueError(
            "SmoothQuant changes the FP32 model, so a calibration cache would not fit the "
            "original model: use the Q/DQ model (drop --cache), or drop --smooth-quant"
        )
    if config.adaround_seconds <= 0:
        raise ValueError(f"adaround_seconds must be positive, got {config.adaround_seconds}")


def _check_covers(ranges: Ranges, model, path) -> None:
    """A cache must give TensorRT a range for every activation; a ranges file from a run without
    the cache holds only the Q/DQ tensors."""
    from int8kit.onnx.observe import activation_tensors

    missing = [t for t in activation_tensors(model) if t not in ranges.tensors]
    if missing:
        raise DataError(
            f"{path} has no range for {len(missing)} activation(s) the calibration cache needs "
            f"(e.g. {missing[0]!r}); it was written without the cache. Calibrate again with "
            "--cache (or `int8kit calibrate`) instead of reusing it"
        )


def check_qdq_covered(ranges: Ranges, placement, path) -> None:
    """Every activation the Q/DQ model quantizes needs a range: one missing from a reused ranges
    file would silently stay float."""
    missing = [t for t in placement.activations if t not in ranges.tensors]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"{path} has no range for {len(missing)} of the {len(placement.activations)} "
            f"activation(s) the Q/DQ model quantizes: {shown}. It was written for another model "
            "or placement: calibrate again (--calib without --ranges), or --exclude the layers "
            "that read them"
        )


def _search(model, placement, ranges: Ranges, source, calib: CalibConfig) -> dict:
    """Run the range search on the most telling calibration samples; update ``ranges`` in place."""
    from int8kit.data import progress
    from int8kit.onnx.search import search_ranges, select_samples

    batches = select_samples(model, source, max(1, calib.search_samples // source_batch(source)))
    candidates = {n: r.candidates for n, r in ranges.tensors.items() if r.candidates}
    # Start from no clipping (minmax): the descent then clips only where it helps.
    start = {**ranges.amax(), **{n: c["minmax"] for n, c in candidates.items()}}
    amax, chosen, before, after = search_ranges(
        model, placement, start, candidates, batches, progress=progress
    )
    for name, method in chosen.items():
        ranges.tensors[name].amax = amax[name]
        ranges.tensors[name].method = f"search:{method}"
    picks = {m: sum(1 for v in chosen.values() if v == m) for m in set(chosen.values())}
    return {"error_before": before, "error_after": after, "picks": picks, "samples": len(batches)}


def source_batch(source) -> int:
    return max(1, getattr(getattr(source, "config", None), "batch_size", 1) or 1)


def _record_shapes(batches, shapes: dict):
    """Yield ``batches``; ``shapes`` holds each input's shape, or where the batches' shapes
    differ (an image pyramid, H and W kept per image, a text length) [min, opt, max]: the
    smallest and largest size per axis, and the most frequent shape (the largest of those tied),
    the profile the trtexec lines need (one shape seen would make an engine that takes only
    that one)."""
    seen: dict[str, dict[tuple, int]] = {}
    for batch in batches:
        for k, v in batch.items():
            counts = seen.setdefault(k, {})
            counts[tuple(v.shape)] = counts.get(tuple(v.shape), 0) + 1
            if len(counts) == 1:
                shapes[k] = tuple(v.shape)
            elif len({len(c) for c in counts}) == 1:  # same rank: a profile can cover them
                opt = max(counts, key=lambda c: (counts[c], math.prod(c)))
                shapes[k] = [tuple(map(min, *counts)), opt, tuple(map(max, *counts))]
        yield batch


def calibrate_onnx(config: QuantizeConfig) -> QuantizeResult:
    """Only the calibration: the TensorRT cache at ``config.output`` and the ranges beside it."""
    config.write_qdq = False
    config.holdout = 0
    return quantize_onnx(config)


def fidelity(
    fp32_model, int8_model, batches, task: str = "auto", backends=("trt-like", "ort-int8")
) -> dict:
    """INT8 vs FP32 per output, for each backend label of analysis.fidelity.BACKENDS; a backend
    that refuses the INT8 model is reported as ``{"failed": why}`` and the others still run."""
    from int8kit.analysis.fidelity import compare_models, embedding_outputs, open_sessions
    from int8kit.onnx.observe import make_session

    fp32 = make_session(fp32_model)
    sessions = open_sessions(int8_model, backends)
    embeddings = embedding_outputs(fp32_model)
    return compare_models(fp32, sessions, batches, task=task, embeddings=embeddings)


def _check(model) -> bytes | None:
    """onnx.checker on ``model``; returns its serialized bytes (None past 2 GB) for writing."""
    from int8kit._deps import require
    from int8kit.onnx.observe import serialized

    onnx = require("onnx")
    data = serialized(model)  # None past 2 GB, which the checker cannot read from memory
    try:
        if data is not None:
            onnx.checker.check_model(data)
    except onnx.checker.ValidationError as exc:
        raise ModelError(
            f"the Q/DQ model failed onnx.checker ({exc}); please report this with the model"
        ) from exc
    return data
