"""The trtexec and Polygraphy command lines that build an engine from int8kit's outputs.

Pure functions: they need no TensorRT, so they are printed where TensorRT is missing and the user
can run them on their own TensorRT machine. Flags follow ``int8kit.trt.version.FEATURES``:
implicit INT8 (``--int8 --calib``) exists up to 10.x only; ``--stronglyTyped`` from 10.0 (and
preferred for Q/DQ models from 10.12, when weak typing was deprecated); TensorRT 11 removed every
precision flag and is always strongly typed; ``--memPoolSize=workspace:<MiB>`` from 8.4.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from int8kit.errors import Int8kitError
from int8kit.trt.profiles import InputProfile, shape_flags
from int8kit.trt.version import DEFAULT_VERSION, TrtVersion, parse_version

PathLike = str | os.PathLike

IMPLICIT_REMOVED = (
    "TensorRT {v} removed implicit INT8 (calibrators, --int8, --calib): build the explicit "
    "Q/DQ model instead. `int8kit quantize` writes it (model.int8.onnx); then run "
    "`int8kit build model.int8.onnx -o model.engine`."
)


def shell(argv: Sequence[str]) -> str:
    """A command list as one line a POSIX shell runs unchanged."""
    return shlex.join([str(a) for a in argv])


def _common_tail(
    engine: PathLike,
    version: TrtVersion,
    profiles: Sequence[InputProfile] | None,
    workspace_mib: int | None,
    timing_cache: PathLike | None,
) -> list[str]:
    argv = [f"--saveEngine={os.fspath(engine)}"]
    for which, spec in shape_flags(profiles or ()).items():
        argv.append(f"--{which}Shapes={spec}")
    if workspace_mib is not None:
        if version.mem_pool_flag:
            argv.append(f"--memPoolSize=workspace:{int(workspace_mib)}")
        else:
            argv.append(f"--workspace={int(workspace_mib)}")
    if timing_cache is not None:
        argv.append(f"--timingCacheFile={os.fspath(timing_cache)}")
    return argv


def trtexec_implicit(
    onnx_path: PathLike,
    cache: PathLike,
    engine: PathLike,
    version: str | TrtVersion = DEFAULT_VERSION,
    *,
    profiles: Sequence[InputProfile] | None = None,
    fp16: bool = True,
    workspace_mib: int | None = None,
    timing_cache: PathLike | None = None,
) -> list[str]:
    """trtexec for the FP32 ONNX plus a calibration cache (TensorRT 8.6-10.x).

    ``--fp16`` is on by default so layers TensorRT cannot run in INT8 fall back to FP16, not FP32.
    trtexec reads only EntropyCalibration2 caches.
    """
    version = parse_version(version)
    if not version.implicit_int8:
        raise Int8kitError(IMPLICIT_REMOVED.format(v=version))
    argv = ["trtexec", f"--onnx={os.fspath(onnx_path)}", "--int8"]
    if fp16:
        argv.append("--fp16")
    argv.append(f"--calib={os.fspath(cache)}")
    return argv + _common_tail(engine, version, profiles, workspace_mib, timing_cache)


def explicit_mode(version: TrtVersion, strongly_typed: bool | None) -> str:
    """ "always" (11+), "flag" (strongly typed by --stronglyTyped) or "weak" (--int8 [--fp16])."""
    if version.strongly_typed_always:
        return "always"
    if strongly_typed is None:
        strongly_typed = version.strongly_typed_preferred
    if strongly_typed and not version.strongly_typed_flag:
        raise Int8kitError(
            f"TensorRT {version} has no strongly typed networks (they start with 10.0): "
            "build the Q/DQ model with the INT8 flag instead (drop --strongly-typed)"
        )
    return "flag" if strongly_typed else "weak"


def explicit_fp16(mode: str, fp16: bool | None, version: TrtVersion) -> bool:
    if mode == "weak":
        return True if fp16 is None else fp16
    if fp16:
        why = "has no precision flags" if mode == "always" else "forbids --fp16 when strongly typed"
        raise Int8kitError(
            f"TensorRT {version} {why}: float layers run in the model's own type, so convert "
            "the float parts of the Q/DQ model to FP16 instead of passing --fp16"
        )
    return False


def _explicit_flags(
    version: TrtVersion, strongly_typed: bool | None, fp16: bool | None, typed_flag: str
) -> list[str]:
    """The precision flags of a Q/DQ build (trtexec and polygraphy spell only the strongly
    typed one differently)."""
    mode = explicit_mode(version, strongly_typed)
    flags = {"flag": [typed_flag], "weak": ["--int8"]}.get(mode, [])
    return flags + (["--fp16"] if explicit_fp16(mode, fp16, version) else [])


def trtexec_explicit(
    qdq_onnx: PathLike,
    engine: PathLike,
    version: str | TrtVersion = DEFAULT_VERSION,
    *,
    profiles: Sequence[InputProfile] | None = None,
    fp16: bool | None = None,
    workspace_mib: int | None = None,
    timing_cache: PathLike | None = None,
    strongly_typed: bool | None = None,
) -> list[str]:
    """trtexec for a Q/DQ ONNX: ``--stronglyTyped`` on 10.12+, ``--int8 --fp16`` before, plain on 11."""
    version = parse_version(version)
    argv = ["trtexec", f"--onnx={os.fspath(qdq_onnx)}"]
    argv += _explicit_flags(version, strongly_typed, fp16, "--stronglyTyped")
    return argv + _common_tail(engine, version, profiles, workspace_mib, timing_cache)


def trtexec_float(
    onnx_path: PathLike,
    engine: PathLike,
    version: str | TrtVersion = DEFAULT_VERSION,
    *,
    profiles: Sequence[InputProfile] | None = None,
    fp16: bool = False,
    workspace_mib: int | None = None,
    timing_cache: PathLike | None = None,
) -> list[str]:
    """trtexec for a float model (FP32, or FP16 with ``--fp16`` before 11)."""
    version = parse_version(version)
    if fp16 and not version.implicit_int8:
        raise Int8kitError(
            f"TensorRT {version} has no --fp16: convert the model to FP16 first "
            "(strongly typed networks run in the model's own types)"
        )
    argv = ["trtexec", f"--onnx={os.fspath(onnx_path)}"] + (["--fp16"] if fp16 else [])
    return argv + _common_tail(engine, version, profiles, workspace_mib, timing_cache)


def _polygraphy_tail(
    engine: PathLike,
    profiles: Sequence[InputProfile] | None,
    workspace_mib: int | None,
    timing_cache: PathLike | None,
) -> list[str]:
    argv: list[str] = []
    dynamic = [p for p in profiles or () if p.dynamic]
    for which in ("min", "opt", "max"):
        if dynamic:
            argv.append(f"--trt-{which}-shapes")
            argv += [f"{p.name}:[{','.join(map(str, getattr(p, which)))}]" for p in dynamic]
    if workspace_mib is not None:
        argv += ["--pool-limit", f"workspace:{int(workspace_mib)}M"]
    if timing_cache is not None:
        tc = os.fspath(timing_cache)
        argv += ["--load-timing-cache", tc, "--save-timing-cache", tc]
    return argv + ["-o", os.fspath(engine)]


def polygraphy_implicit(
    onnx_path: PathLike,
    cache: PathLike,
    engine: PathLike,
    version: str | TrtVersion = DEFAULT_VERSION,
    *,
    data_loader_script: PathLike | None = None,
    algorithm: str = "entropy",
    profiles: Sequence[InputProfile] | None = None,
    fp16: bool = True,
    workspace_mib: int | None = None,
    timing_cache: PathLike | None = None,
) -> list[str]:
    """``polygraphy convert`` with a calibration cache; with a loader script it calibrates if the
    cache does not exist yet (the script's ``load_data()`` yields feed dicts)."""
    version = parse_version(version)
    if not version.implicit_int8:
        raise Int8kitError(IMPLICIT_REMOVED.format(v=version))
    argv = ["polygraphy", "convert", os.fspath(onnx_path), "--int8"]
    if fp16:
        argv.append("--fp16")
    if data_loader_script is not None:
        argv += ["--data-loader-script", os.fspath(data_loader_script)]
    argv += ["--calibration-cache", os.fspath(cache)]
    if algorithm == "minmax":
        argv += ["--calib-base-cls", "IInt8MinMaxCalibrator"]
    elif algorithm != "entropy":
        raise Int8kitError(f"unknown calibration algorithm {algorithm!r}: use entropy or minmax")
    return argv + _polygraphy_tail(engine, profiles, workspace_mib, timing_cache)


def polygraphy_explicit(
    qdq_onnx: PathLike,
    engine: PathLike,
    version: str | TrtVersion = DEFAULT_VERSION,
    *,
    profiles: Sequence[InputProfile] | None = None,
    fp16: bool | None = None,
    workspace_mib: int | None = None,
    timing_cache: PathLike | None = None,
    strongly_typed: bool | None = None,
) -> list[str]:
    """``polygraphy convert`` for a Q/DQ ONNX, with the same typing rules as trtexec_explicit."""
    version = parse_version(version)
    argv = ["polygraphy", "convert", os.fspath(qdq_onnx)]
    argv += _explicit_flags(version, strongly_typed, fp16, "--strongly-typed")
    return argv + _polygraphy_tail(engine, profiles, workspace_mib, timing_cache)


def summary_commands(
    fp32_onnx: PathLike,
    qdq_onnx: PathLike,
    cache: PathLike | None,
    engine_stem: PathLike,
    shapes: Sequence[InputProfile] | None = None,
) -> list[tuple[str, str]]:
    """Labelled trtexec lines for every TensorRT generation, for the end of `int8kit quantize`
    (the implicit-INT8 line only when a cache was written)."""
    engine = f"{os.fspath(engine_stem)}.engine"
    implicit = []
    if cache:
        cmd = trtexec_implicit(fp32_onnx, cache, engine, "10.11", profiles=shapes)
        implicit.append(("TensorRT 8.6–10.x (implicit, cache)", shell(cmd)))
    return implicit + [
        (
            "TensorRT 10.x (explicit, --stronglyTyped)",
            shell(trtexec_explicit(qdq_onnx, engine, "10.x", profiles=shapes)),
        ),
        (
            "TensorRT 11 (explicit)",
            shell(trtexec_explicit(qdq_onnx, engine, "11", profiles=shapes)),
        ),
    ]
