"""Compute an FP16 model in FP32 before it is calibrated and quantized.

int8kit's Q/DQ nodes carry FP32 scales, and a QuantizeLinear reads the type of its scale: on an
FP16 model (weights, activations, often inputs and outputs in FP16, as float16 converters write
it) every Q/DQ pair would read or write the wrong type, and ONNX Runtime refuses the model. So the
model is made FP32 inside: FP16 initializers, Constant / ConstantOfShape values and
``Cast(to=float16)`` become FP32, and a weight stored in FP16 behind a ``Cast(to=float)`` becomes
the FP32 initializer the layer reads. Inputs and outputs keep their FP16 type (a Cast at each
boundary), so the caller feeds and reads what it did before. FP16 values are exact in FP32, so
the FP32 model computes what the FP16 one approximates; ``--high-precision fp16`` writes the float
parts of the INT8 model back in FP16 (onnx/fp16.py).
"""

from __future__ import annotations

from int8kit.onnx.model_io import FreshNames, all_graphs


def upcast_fp16(model) -> int:
    """Make ``model`` FP32 inside, in place (see the module docstring); returns how many FP16
    tensors, Casts and boundaries were changed (0: the model had no FP16)."""
    from onnx import TensorProto, numpy_helper

    f16, f32 = TensorProto.FLOAT16, TensorProto.FLOAT

    def upcast(tensor) -> None:
        arr = numpy_helper.to_array(tensor).astype("float32")
        tensor.CopyFrom(numpy_helper.from_array(arr, tensor.name))

    changed = 0
    for g in all_graphs(model.graph):
        for t in g.initializer:
            if t.data_type == f16:
                upcast(t)
                changed += 1
        for node in g.node:
            for a in node.attribute:
                if a.name == "to" and node.op_type == "Cast" and a.i == f16:
                    a.i = f32
                    changed += 1
                elif a.name == "value" and a.t.data_type == f16:
                    upcast(a.t)
                    changed += 1
        inner = [*g.value_info] + ([*g.input, *g.output] if g is not model.graph else [])
        for vi in inner:  # subgraph inputs and outputs lie inside the FP32 region
            if vi.type.tensor_type.elem_type == f16:
                vi.type.tensor_type.elem_type = f32
    changed += _boundaries(model.graph, f16, f32)
    if changed:
        _fold_weight_casts(model, f32)
    return changed


def _boundaries(graph, f16: int, f32: int) -> int:
    """FP16 graph inputs are read through a Cast to FP32, FP16 outputs written by a Cast back."""
    from onnx import helper

    fresh = FreshNames(graph)
    inits = {t.name for t in graph.initializer}
    head, tail, count = [], [], 0
    for vi in graph.input:
        if vi.type.tensor_type.elem_type != f16 or vi.name in inits:
            continue
        inner = fresh(f"{vi.name}_fp32")
        for node in graph.node:
            node.input[:] = [inner if s == vi.name else s for s in node.input]
        head.append(
            helper.make_node("Cast", [vi.name], [inner], fresh(f"{vi.name}_to_fp32"), to=f32)
        )
        count += 1
    for vo in graph.output:
        if vo.type.tensor_type.elem_type != f16:
            continue
        inner = fresh(f"{vo.name}_fp32")
        for node in graph.node:
            node.output[:] = [inner if s == vo.name else s for s in node.output]
            node.input[:] = [inner if s == vo.name else s for s in node.input]
        tail.append(
            helper.make_node("Cast", [inner], [vo.name], fresh(f"{vo.name}_to_fp16"), to=f16)
        )
        count += 1
    if count:
        nodes = head + list(graph.node) + tail
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def _fold_weight_casts(model, f32: int) -> None:
    """``Cast(to=float)`` of an (now FP32) initializer becomes that initializer under the Cast's
    output name: a weight stored in FP16 and cast at run time is read as a constant weight."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep, folded, sources = [], [], set()
    for node in graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        src = inits.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        if src is None or to != f32 or src.data_type != f32 or node.output[0] in outputs:
            keep.append(node)
            continue
        copy = type(src)()
        copy.CopyFrom(src)
        copy.name = node.output[0]
        folded.append(copy)
        sources.add(src.name)
    if not folded:
        return
    graph.initializer.extend(folded)
    del graph.node[:]
    graph.node.extend(keep)
    read = {s for g in all_graphs(graph) for n in g.node for s in n.input} | outputs
    for k in reversed(range(len(graph.initializer))):
        if graph.initializer[k].name in sources - read:
            del graph.initializer[k]
