"""Optimization profiles (min/opt/max shapes) from an ONNX model's inputs and the user's --shapes.

Pure Python over the ONNX ModelProto: the same profiles feed the TensorRT builder, the calibration
profile and the trtexec/Polygraphy command lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from int8kit.errors import Int8kitError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ModelInput:
    """A graph input that is not an initializer; ``dims`` uses None for dynamic dimensions."""

    name: str
    dims: tuple[int | None, ...]
    elem_type: int  # onnx.TensorProto data type

    @property
    def is_dynamic(self) -> bool:
        return any(d is None for d in self.dims)

    def describe(self) -> str:
        return "x".join("?" if d is None else str(d) for d in self.dims) or "scalar"


@dataclass(frozen=True)
class InputProfile:
    """min/opt/max shapes of one input; equal for a static input."""

    name: str
    min: Shape
    opt: Shape
    max: Shape
    dynamic: bool

    def as_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def model_inputs(model) -> list[ModelInput]:
    """The real inputs of an ONNX model (graph inputs minus initializers), in graph order."""
    from int8kit.onnx.model_io import input_specs

    elem = {v.name: int(v.type.tensor_type.elem_type) for v in model.graph.input}
    return [
        ModelInput(
            s.name,
            tuple(d if isinstance(d, int) and d > 0 else None for d in s.shape),
            elem[s.name],
        )
        for s in input_specs(model)
    ]


def format_shape(shape: Iterable[int]) -> str:
    """1x3x640x640, the form trtexec and --shapes use."""
    return "x".join(str(int(d)) for d in shape)


def _parse_one_shape(text: str, name: str) -> Shape:
    parts = text.strip().lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise Int8kitError(
            f"cannot read shape {text!r} for input {name!r}: write dimensions joined by 'x', "
            "e.g. 1x3x640x640"
        ) from None
    if any(d <= 0 for d in shape):
        raise Int8kitError(f"shape {text!r} for input {name!r} has a dimension <= 0")
    return shape


def parse_shapes(specs: Iterable[str] | None) -> dict[str, tuple[Shape, ...]]:
    """Parse ``name:MIN/OPT/MAX``, ``name:OPT/MAX`` or ``name:SHAPE`` specs (each ``1x3x640x640``).

    Specs may also be comma-separated in one string. The name is split on the last ':'.
    """
    result: dict[str, tuple[Shape, ...]] = {}
    for spec in specs or ():
        for item in (s for s in spec.split(",") if s.strip()):
            name, sep, shapes = item.strip().rpartition(":")
            if not sep or not name:
                raise Int8kitError(
                    f"cannot read --shapes {item!r}: write name:MIN/OPT/MAX, e.g. "
                    "images:1x3x640x640/4x3x640x640/8x3x640x640"
                )
            parsed = tuple(_parse_one_shape(s, name) for s in shapes.split("/"))
            if len(parsed) > 3:
                raise Int8kitError(f"--shapes {item!r} has more than three shapes (min/opt/max)")
            if name in result:
                raise Int8kitError(f"--shapes gives input {name!r} twice")
            result[name] = parsed
    return result


def _suggest(inp: ModelInput) -> str:
    def fill(batch: int, other: int) -> str:
        dims = [
            d if d is not None else (batch if i == 0 else other) for i, d in enumerate(inp.dims)
        ]
        return format_shape(dims)

    return f"--shapes {inp.name}:{fill(1, 640)}/{fill(4, 640)}/{fill(8, 640)}"


def _check_against_model(inp: ModelInput, shape: Shape, which: str) -> None:
    if len(shape) != len(inp.dims):
        raise Int8kitError(
            f"--shapes {which} shape {format_shape(shape)} for input {inp.name!r} has rank "
            f"{len(shape)}, but the model input is {inp.describe()} (rank {len(inp.dims)})"
        )
    for axis, (got, want) in enumerate(zip(shape, inp.dims, strict=True)):
        if want is not None and got != want:
            raise Int8kitError(
                f"--shapes {which} shape {format_shape(shape)} for input {inp.name!r} sets axis "
                f"{axis} to {got}, but the model fixes it to {want} ({inp.describe()})"
            )


def derive_profiles(
    inputs: list[ModelInput] | object,
    shapes: Mapping[str, tuple[Shape, ...]] | Iterable[str] | None = None,
) -> list[InputProfile]:
    """One InputProfile per model input.

    ``inputs`` is a list of ModelInput or an ONNX ModelProto. ``shapes`` maps input names to
    (SHAPE,), (OPT, MAX) or (MIN, OPT, MAX), or is a list of --shapes specs. With (OPT, MAX) the
    min shape takes 1 for a dynamic batch axis (axis 0) and OPT's value for other dynamic axes.
    Static inputs need no shape; a dynamic input without one is an error that says what to pass.
    """
    if not isinstance(inputs, list):
        inputs = model_inputs(inputs)
    if shapes is None or not isinstance(shapes, Mapping):
        shapes = parse_shapes(shapes)
    by_name = {inp.name: inp for inp in inputs}
    unknown = sorted(set(shapes) - set(by_name))
    if unknown:
        raise Int8kitError(
            f"--shapes names unknown input(s) {', '.join(map(repr, unknown))}; the model's inputs "
            f"are: {', '.join(f'{i.name} ({i.describe()})' for i in inputs)}"
        )
    profiles = []
    for inp in inputs:
        given = shapes.get(inp.name)
        if given is None:
            if inp.is_dynamic:
                raise Int8kitError(
                    f"input {inp.name!r} has dynamic dimensions ({inp.describe()}): give its "
                    f"min/opt/max shapes, e.g. {_suggest(inp)}"
                )
            static = tuple(int(d) for d in inp.dims)  # type: ignore[arg-type]
            profiles.append(InputProfile(inp.name, static, static, static, dynamic=False))
            continue
        for shape, which in zip(given, ("first", "second", "third"), strict=False):
            _check_against_model(inp, shape, which)
        if len(given) == 1:
            lo = opt = hi = given[0]
        elif len(given) == 2:
            opt, hi = given
            lo = tuple(
                (1 if axis == 0 else opt[axis]) if d is None else d
                for axis, d in enumerate(inp.dims)
            )
        else:
            lo, opt, hi = given
        for axis in range(len(inp.dims)):
            if not lo[axis] <= opt[axis] <= hi[axis]:
                raise Int8kitError(
                    f"--shapes for input {inp.name!r}: axis {axis} must satisfy min <= opt <= max, "
                    f"got {lo[axis]} / {opt[axis]} / {hi[axis]} "
                    f"({format_shape(lo)} / {format_shape(opt)} / {format_shape(hi)})"
                )
        profiles.append(InputProfile(inp.name, lo, opt, hi, dynamic=inp.is_dynamic))
    return profiles


def shape_flags(profiles: Iterable[InputProfile]) -> dict[str, str]:
    """``{"min": "a:1x3x8x8,b:...", "opt": ..., "max": ...}`` for the dynamic inputs, or {}."""
    dynamic = [p for p in profiles if p.dynamic]
    if not dynamic:
        return {}
    return {
        which: ",".join(f"{p.name}:{format_shape(getattr(p, which))}" for p in dynamic)
        for which in ("min", "opt", "max")
    }
