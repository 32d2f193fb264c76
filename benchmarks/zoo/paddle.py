"""Models exported by paddle2onnx (the PP-OCR models of the held-out set) keep every weight in a
Constant node, not in an initializer: the file has no initializers at all. int8kit (and ORT's
quantizer) find weights among the initializers, so on the file as shipped they quantize the
activations only and leave every weight float. ``fold_constants`` moves each Constant node's
tensor into an initializer of the same name (what onnx-simplifier or ORT's offline optimisation
does first), and computes the Casts of such constants (NNCF's ONNX front end fails on a Cast
that reads an initializer: nncf/onnx/graph/passes.py eliminate_nop_cast looks for its
``.type``); the outputs are unchanged (checked by ``write_folded``)."""

from __future__ import annotations

from pathlib import Path

import onnx

from zoo.modelfile import write_model


def fold_constants(model: onnx.ModelProto) -> int:
    """Move the tensor of every Constant node (``value`` attribute) of the main graph into an
    initializer named as the node's output, then fold the Casts of initializers, in place;
    returns how many nodes became initializers."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    keep, moved = [], 0
    for node in graph.node:
        attr = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type != "Constant" or attr is None or node.output[0] in outputs:
            keep.append(node)
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(attr.t)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        moved += 1
    del graph.node[:]
    graph.node.extend(keep)
    return moved + _fold_casts(model)


def _fold_casts(model: onnx.ModelProto) -> int:
    """Replace each Cast of an initializer by an initializer of its output (in place)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep, folded = [], 0
    for node in graph.node:
        if node.op_type != "Cast" or node.input[0] not in inits or node.output[0] in outputs:
            keep.append(node)
            continue
        to = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "to")
        value = numpy_helper.to_array(inits[node.input[0]])
        dtype = helper.tensor_dtype_to_np_dtype(to)
        tensor = numpy_helper.from_array(value.astype(dtype), node.output[0])
        graph.initializer.append(tensor)
        inits[tensor.name] = tensor
        folded += 1
    del graph.node[:]
    graph.node.extend(keep)
    return folded


def write_folded(src: Path, dest: Path, feeds) -> dict:
    """``src`` with its Constant nodes folded into initializers, written as write_model writes
    (opset upgrade checked on ``feeds``; the folded model is checked against ``src`` too)."""
    import tempfile

    import numpy as np

    from int8kit.onnx.observe import make_session

    model = onnx.load(src)
    n = fold_constants(model)
    onnx.checker.check_model(model)
    a, b = make_session(onnx.load(src), optimize=False), make_session(model, optimize=False)
    for f in feeds:
        for x, y in zip(a.run(None, f), b.run(None, f), strict=True):
            if not np.array_equal(x, y):
                raise RuntimeError(f"{src.name}: folding the Constant nodes changed the outputs")
    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / src.name
        onnx.save(model, str(folded))
        info = write_model(folded, dest, feeds)
    info["constants_folded"] = n
    return info
