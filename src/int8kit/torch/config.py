"""QuantConfig: what `int8kit.torch.quantize` does to a model, validated and JSON-serialisable."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from int8kit.calib.methods import METHODS

CONFIG_METHODS = ("auto", *METHODS)

# Module kinds that get quantizers; the names are the torch.nn base classes (see modules.RULES).
OP_TYPES = (
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Linear",
    "MaxPool",
    "AvgPool",
    "AdaptiveAvgPool",
    "QuantAdd",
)


@dataclass
class QuantConfig:
    """How to quantize a PyTorch model.

    method: range method for activations (auto | entropy | minmax | percentile | mse), the same
        numpy functions as the ONNX path (`int8kit.calib.methods`). ``auto`` (the default) is the
        ONNX path's default recipe (`int8kit.recipes`, resolved by `int8kit.torch.recipe`).
    percentile: for method="percentile".
    num_bins: histogram bins over [0, first batch max] (more are appended as the range grows).
    exclude: regular expressions; a module whose qualified name matches one (re.search) is left
        in float.
    op_types: which module kinds get quantizers (a subset of OP_TYPES).
    per_channel: weights per output channel (True) or one amax per tensor.
    distributed: under torch.distributed (an initialised process group), reduce the calibration
        statistics across ranks so that every rank gets the amax of one process that saw every
        rank's data (False: each rank keeps the ranges of its own data).
    quantize_input_layers: also quantize the layers that read the network input (the stem);
        by default they stay float, as in the ONNX path (`int8kit.torch.stem`).
    bias_correction: after calibration, shift the bias of each Conv/Linear with int8 weights by
        the mean error of its output (`int8kit.torch.bias`); applied in mode "quantize" only.
    bias_gate: keep a layer's correction only where it lowers that layer's output error on
        calibration samples held out from its estimate (`int8kit.onnx.bias_safe`'s rule).
    equalize_depthwise: give each input channel of a quantized depthwise conv its own range
        through one scale per tensor (`int8kit.torch.dwequalize`; the same FP32 function), where
        held-out calibration samples show a clear gain. None: as the recipe of ``method="auto"``
        says (off with an explicit method).
    center_one_sided: give the one-sided inputs (ReLU/GELU/HardSwish outputs) of Linears and
        Convs without padding half the int8 step: the layer reads x - c and adds c x its weight
        sums to its bias (`int8kit.torch.center`; the same FP32 function). None: as the recipe
        of ``method="auto"`` says (off with an explicit method).
    """

    method: str = "auto"
    percentile: float = 99.99
    num_bins: int = 2048
    exclude: list[str] = field(default_factory=list)
    op_types: list[str] = field(default_factory=lambda: list(OP_TYPES))
    per_channel: bool = True
    distributed: bool = True
    quantize_input_layers: bool = False
    bias_correction: bool = True
    bias_gate: bool = True
    equalize_depthwise: bool | None = None
    center_one_sided: bool | None = None

    def __post_init__(self) -> None:
        if self.method not in CONFIG_METHODS:
            raise ValueError(
                f"QuantConfig.method {self.method!r} is unknown; choose one of "
                f"{', '.join(CONFIG_METHODS)}"
            )
        if not 0.0 < float(self.percentile) <= 100.0:
            raise ValueError(f"QuantConfig.percentile must be in (0, 100] (got {self.percentile})")
        self.percentile = float(self.percentile)
        if int(self.num_bins) != self.num_bins or self.num_bins < 128:
            raise ValueError(
                f"QuantConfig.num_bins must be an integer >= 128 (got {self.num_bins})"
            )
        self.num_bins = int(self.num_bins)
        if isinstance(self.exclude, str):
            self.exclude = [self.exclude]
        self.exclude = list(self.exclude)
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"QuantConfig.exclude pattern {pattern!r} is not a regular expression: {exc}"
                ) from exc
        self.op_types = list(self.op_types)
        unknown = [t for t in self.op_types if t not in OP_TYPES]
        if unknown:
            raise ValueError(
                f"QuantConfig.op_types {unknown} are unknown; choose from {', '.join(OP_TYPES)}"
            )
        self.per_channel = bool(self.per_channel)
        self.distributed = bool(self.distributed)
        self.quantize_input_layers = bool(self.quantize_input_layers)
        self.bias_correction = bool(self.bias_correction)
        self.bias_gate = bool(self.bias_gate)
        if self.equalize_depthwise is not None:
            self.equalize_depthwise = bool(self.equalize_depthwise)
        if self.center_one_sided is not None:
            self.center_one_sided = bool(self.center_one_sided)

    def excluded(self, name: str) -> bool:
        """True when the module called ``name`` matches one of the exclude patterns."""
        return any(re.search(p, name) for p in self.exclude)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"QuantConfig has no fields {unknown}; known: {sorted(known)}")
        # A config written before the recipe existed quantized the stem and had no correction;
        # one written before depthwise equalization (centring) existed did not equalize (centre).
        old = {"quantize_input_layers": True, "bias_correction": False}
        return cls(
            **{
                **(old if "bias_correction" not in d else {}),
                "equalize_depthwise": False,
                "center_one_sided": False,
                **d,
            }
        )
