"""Models exported by paddle2onnx (the PP-OCR models of the held-out set) keep every weight in a
Constant node, not in an initializer: the file has no initializers at all. int8kit (and ORT's
quantizer) find weights among the initializers, so on the file as shipped they quantize the
activations only and leave every weight float. ``fold_constants`` moves each Constant node's
tensor into an initializer of the same name (what onnx-simplifier or ORT's offline optimisation
does first); the outputs are unchanged (checked by zoo.modelfile.write_model)."""

from __future__ import annotations

from pathlib import Path

import onnx

from zoo.modelfile import write_model


def fold_constants(model: onnx.ModelProto) -> int:
    """Move the tensor of every Constant node (``value`` attribute) of the main graph into an
    initializer named as the node's output, in place; returns how many were moved."""
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
    return moved


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
