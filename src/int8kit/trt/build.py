"""Build a TensorRT engine from ONNX: explicit Q/DQ, implicit INT8 with calibration, or float.

``plan_build`` decides everything version-dependent (network flags, builder flags, calibrator,
profiles) without TensorRT, so it is tested here and also yields the equivalent trtexec command;
``build_engine`` only carries the plan out through the TensorRT Python API.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from int8kit._deps import require
from int8kit.errors import Int8kitError, ModelError
from int8kit.fileio import atomic_path
from int8kit.trt import commands
from int8kit.trt.commands import IMPLICIT_REMOVED, explicit_mode
from int8kit.trt.profiles import InputProfile, derive_profiles, model_inputs
from int8kit.trt.version import TrtVersion, installed_version, parse_version

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
ALGORITHMS = ("entropy", "minmax")


@dataclass
class BuildConfig:
    """What to build. ``calib_batches`` (an iterable of feed dicts) is not serialised."""

    onnx_path: Path
    output: Path
    int8: bool = False
    fp16: bool = False
    calib_batches: Iterable[Mapping[str, np.ndarray]] | None = field(default=None, repr=False)
    cache_path: Path | None = None
    algorithm: str = "entropy"
    shapes: Mapping[str, tuple] | list[str] | None = None
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    strongly_typed: bool | None = None  # None: auto (Q/DQ model on >= 10.12 -> True)

    def __post_init__(self) -> None:
        self.onnx_path = Path(self.onnx_path)
        self.output = Path(self.output)
        self.cache_path = Path(self.cache_path) if self.cache_path is not None else None
        self.timing_cache = Path(self.timing_cache) if self.timing_cache is not None else None
        if self.algorithm not in ALGORITHMS:
            raise Int8kitError(
                f"unknown calibration algorithm {self.algorithm!r}: use {' or '.join(ALGORITHMS)}"
            )
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise Int8kitError(
                f"--workspace must be a positive number of MiB, not {self.workspace_mib}"
            )

    def to_dict(self) -> dict:
        def path(p):
            return None if p is None else os.fspath(p)

        return {
            "onnx_path": path(self.onnx_path),
            "output": path(self.output),
            "int8": self.int8,
            "fp16": self.fp16,
            "cache_path": path(self.cache_path),
            "algorithm": self.algorithm,
            "shapes": self.shapes
            if not isinstance(self.shapes, Mapping)
            else {k: [list(s) for s in v] for k, v in self.shapes.items()},
            "workspace_mib": self.workspace_mib,
            "timing_cache": path(self.timing_cache),
            "strongly_typed": self.strongly_typed,
        }


@dataclass(frozen=True)
class BuildPlan:
    """The version-dependent decisions for one build."""

    mode: str  # "explicit" (Q/DQ model), "implicit" (calibration/cache) or "float"
    version: TrtVersion
    strongly_typed: bool  # set STRONGLY_TYPED when building (10.x); always true on 11
    explicit_batch_flag: bool
    int8_flag: bool
    fp16_flag: bool
    calibrate: bool  # a calibrator is attached (batches and/or a cache file)
    profiles: tuple[InputProfile, ...]

    @property
    def dynamic(self) -> bool:
        return any(p.dynamic for p in self.profiles)


def is_qdq_model(model) -> bool:
    """True if the graph (or a subgraph or function) has QuantizeLinear/DequantizeLinear nodes."""

    def walk(nodes) -> bool:
        for node in nodes:
            if node.op_type in QDQ_OPS:
                return True
            for attr in node.attribute:
                if attr.HasField("g") and walk(attr.g.node):
                    return True
                if any(walk(g.node) for g in attr.graphs):
                    return True
        return False

    return walk(model.graph.node) or any(walk(f.node) for f in model.functions)


def load_model(path: Path):
    onnx = require("onnx", "reading ONNX models")
    if not path.is_file():
        raise ModelError(f"ONNX model {path} does not exist")
    try:
        return onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"cannot read {path} as ONNX: {exc}") from exc


def plan_build(config: BuildConfig, model, version: str | TrtVersion) -> BuildPlan:
    """Decide the build for ``model`` (an ONNX ModelProto) on TensorRT ``version``."""
    version = parse_version(version)
    profiles = tuple(derive_profiles(model_inputs(model), config.shapes))
    if is_qdq_model(model):
        if config.calib_batches is not None or config.cache_path is not None:
            raise Int8kitError(
                f"{config.onnx_path.name} already has Q/DQ nodes (explicit INT8): its scales are "
                "in the model, so drop --calib/--cache, or build the FP32 model with them"
            )
        mode = explicit_mode(version, config.strongly_typed)
        weak = mode == "weak"
        fp16 = commands.explicit_fp16(mode, config.fp16 or None, version)
        return BuildPlan(
            "explicit",
            version,
            strongly_typed=not weak,
            explicit_batch_flag=version.explicit_batch_flag,
            int8_flag=weak,
            fp16_flag=weak and fp16,
            calibrate=False,
            profiles=profiles,
        )
    if config.int8:
        if not version.implicit_int8:
            raise Int8kitError(IMPLICIT_REMOVED.format(v=version))
        if config.strongly_typed:
            raise Int8kitError(
                "implicit INT8 (calibration) needs a weakly typed network: drop --strongly-typed"
            )
        has_cache = config.cache_path is not None and config.cache_path.is_file()
        if config.calib_batches is None and not has_cache:
            raise Int8kitError(
                "implicit INT8 needs calibration data or a cache: pass --calib DIR (images, "
                ".npy/.npz or a loader script) or --cache FILE (an existing calibration cache)"
            )
        return BuildPlan(
            "implicit",
            version,
            strongly_typed=False,
            explicit_batch_flag=version.explicit_batch_flag,
            int8_flag=True,
            fp16_flag=config.fp16,
            calibrate=True,
            profiles=profiles,
        )
    if config.fp16 and not version.implicit_int8:
        raise Int8kitError(
            f"TensorRT {version} has no FP16 flag: convert the model to FP16 first, or build the "
            "Q/DQ model from `int8kit quantize`"
        )
    strong = bool(config.strongly_typed) or version.strongly_typed_always
    if config.strongly_typed and not version.strongly_typed_flag:
        raise Int8kitError(f"TensorRT {version} has no strongly typed networks (from 10.0)")
    return BuildPlan(
        "float",
        version,
        strongly_typed=strong,
        explicit_batch_flag=version.explicit_batch_flag,
        int8_flag=False,
        fp16_flag=config.fp16 and not strong,
        calibrate=False,
        profiles=profiles,
    )


def default_cache_path(config: BuildConfig) -> Path:
    return config.cache_path or config.onnx_path.with_suffix(".calib.cache")


def equivalent_commands(config: BuildConfig, plan: BuildPlan) -> list[tuple[str, list[str]]]:
    """Labelled trtexec (and Polygraphy) lines that build what ``plan`` builds."""
    common = dict(
        profiles=plan.profiles,
        workspace_mib=config.workspace_mib,
        timing_cache=config.timing_cache,
    )
    v = plan.version
    if plan.mode == "explicit":
        st = None if v.strongly_typed_always else plan.strongly_typed
        fp16 = plan.fp16_flag if not plan.strongly_typed else None
        return [
            (
                f"trtexec (TensorRT {v.major}.x)",
                commands.trtexec_explicit(
                    config.onnx_path, config.output, v, fp16=fp16, strongly_typed=st, **common
                ),
            )
        ]
    if plan.mode == "implicit":
        cache = default_cache_path(config)
        return [
            (
                f"trtexec (TensorRT {v.major}.x), with the calibration cache",
                commands.trtexec_implicit(
                    config.onnx_path, cache, config.output, v, fp16=plan.fp16_flag, **common
                ),
            ),
            (
                "or Polygraphy, calibrating from a loader script if the cache is missing",
                commands.polygraphy_implicit(
                    config.onnx_path,
                    cache,
                    config.output,
                    v,
                    data_loader_script="load_data.py",
                    algorithm=config.algorithm,
                    fp16=plan.fp16_flag,
                    **common,
                ),
            ),
        ]
    argv = commands.trtexec_float(config.onnx_path, config.output, v, fp16=plan.fp16_flag, **common)
    if plan.strongly_typed and not v.strongly_typed_always:
        argv.insert(2, "--stronglyTyped")
    return [(f"trtexec (TensorRT {v.major}.x)", argv)]


def _input_dtypes(model) -> dict[str, np.dtype]:
    onnx = require("onnx", "reading ONNX models")
    return {
        i.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(i.elem_type))
        for i in model_inputs(model)
        if i.elem_type
    }


def build_engine(config: BuildConfig) -> Path:
    """Build and atomically write the engine at ``config.output``; return its path."""
    trt = require("tensorrt", "building TensorRT engines")
    version = installed_version(trt)
    model = load_model(config.onnx_path)
    plan = plan_build(config, model, version)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed and not version.strongly_typed_always:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(config.onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT's ONNX parser rejected {config.onnx_path}:\n  {errors}")

    bconfig = builder.create_builder_config()
    if config.workspace_mib is not None:
        bconfig.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_mib) << 20)
    if plan.int8_flag:
        bconfig.set_flag(trt.BuilderFlag.INT8)
    if plan.fp16_flag:
        bconfig.set_flag(trt.BuilderFlag.FP16)

    profile = None
    if plan.dynamic:
        profile = builder.create_optimization_profile()
        for p in plan.profiles:
            if p.dynamic:
                profile.set_shape(p.name, p.min, p.opt, p.max)
        bconfig.add_optimization_profile(profile)

    calibrator = None
    if plan.calibrate:
        from int8kit.trt.calibrator import make_calibrator

        calibrator = make_calibrator(
            config.calib_batches,
            default_cache_path(config),
            config.algorithm,
            dtypes=_input_dtypes(model),
        )
        bconfig.int8_calibrator = calibrator
        if profile is not None:
            bconfig.set_calibration_profile(profile)

    if config.timing_cache is not None:
        previous = config.timing_cache.read_bytes() if config.timing_cache.is_file() else b""
        cache = bconfig.create_timing_cache(previous)
        bconfig.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, bconfig)
    if calibrator is not None and calibrator.error is not None:
        raise calibrator.error
    if serialized is None:
        raise Int8kitError(
            f"TensorRT could not build an engine from {config.onnx_path}; its log above says why"
        )
    with atomic_path(config.output) as tmp:
        tmp.write_bytes(memoryview(serialized))
    if config.timing_cache is not None:
        with atomic_path(config.timing_cache) as tmp:
            tmp.write_bytes(memoryview(bconfig.get_timing_cache().serialize()))
    return config.output
