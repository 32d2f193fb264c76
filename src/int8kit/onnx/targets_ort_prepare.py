"""The ort-cpu target's rewrites of the FP32 model before placement (Target.prepare): each
computes the same function, and each removes a float op that would sit between two int8
layers once the Q/DQ is in (ONNX Runtime folds these itself in a float model, but a Q/DQ
between them stops it): BatchNormalizations and bias Adds into the Conv before them, zero Pads
into the Conv after them, Identities dropped.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from int8kit.onnx.model_io import bypass_initializer_identities, drop_unused_initializers
from int8kit.onnx.placement import GraphIndex, _attrs


def prepare_ort(model):
    """A copy of ``model`` with every rewrite of this module; returns (copy, {what: count})."""
    model, bns = fold_batchnorms(model)  # a copy
    model, pads = fold_pads(model)  # a copy
    model, ids = inline_constant_identities(model)  # in place, on the copy
    model, dropped = drop_identities(model)
    model, adds = fold_bias_adds(model)
    return model, {
        "batchnorms_folded": bns,
        "pads_folded": pads,
        "identities_inlined": ids,
        "bias_adds_folded": adds,
        "identities_dropped": dropped,
    }


def fold_pads(model):
    """Fold each zero constant-mode Pad whose only reader is a Conv into the Conv's ``pads``
    (same function; ONNX Runtime does this itself for a float model, but a DequantizeLinear
    between them stops it, and the Pad stays a float island). Returns (copy, folded count)."""
    import onnx
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    index = GraphIndex(graph)
    folds = []
    for pad in index.nodes:
        if pad.op_type != "Pad" or _attrs(pad).get("mode", b"constant") not in (
            b"constant",
            "constant",
        ):
            continue
        readers = index.consumers.get(pad.output[0], [])
        if len(readers) != 1 or readers[0][1] != 0 or readers[0][0].op_type != "Conv":
            continue
        conv = readers[0][0]
        if _attrs(conv).get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        if len(pad.input) > 3 and pad.input[3] or pad.output[0] in index.outputs:
            continue
        ops = out.opset_import
        pads = _constant(index, pad.input[1], ops) if len(pad.input) > 1 else None
        pads = _attrs(pad).get("pads") if pads is None and len(pad.input) == 1 else pads
        value = _constant(index, pad.input[2], ops) if len(pad.input) > 2 and pad.input[2] else 0
        if pads is None or value is None or np.any(np.asarray(value) != 0):
            continue
        pads = np.asarray(pads, np.int64).ravel()
        rank = pads.size // 2
        begin, end = pads[:rank], pads[rank:]
        if rank < 3 or np.any(pads < 0) or np.any(begin[:2]) or np.any(end[:2]):
            continue
        old = list(_attrs(conv).get("pads", [0] * (2 * (rank - 2))))
        k = rank - 2
        new = [int(old[i] + begin[2 + i]) for i in range(k)] + [
            int(old[k + i] + end[2 + i]) for i in range(k)
        ]
        folds.append((pad, conv, new))
    for pad, conv, new in folds:
        conv.input[0] = pad.input[0]
        for a in list(conv.attribute):
            if a.name == "pads":
                conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", new))
        graph.node.remove(pad)
    _drop_dead_nodes(graph)
    return out, len(folds)


def _constant(index: GraphIndex, name: str, opsets):
    """The value of ``name`` when it is computed from constants only (a small subgraph of
    Constant/Cast/Concat/Slice... as exporters write pads), else None."""
    v = index.value(name)
    if v is not None:
        return v
    nodes, todo, seen = [], [name], set()
    while todo:
        t = todo.pop()
        if t in seen or t in index.initializers:
            continue
        seen.add(t)
        node = index.producer.get(t)
        if node is None or len(seen) > 64:
            return None  # reads a graph input
        nodes.append(node)
        todo += [i for i in node.input if i]
    try:
        import onnx
        from onnx.reference import ReferenceEvaluator

        order = {id(n): k for k, n in enumerate(index.nodes)}
        nodes.sort(key=lambda n: order[id(n)])
        used = {i for n in nodes for i in n.input}
        inits = [index.initializers[i] for i in used if i in index.initializers]
        graph = onnx.helper.make_graph(
            nodes, "const", [], [onnx.helper.make_empty_tensor_value_info(name)], inits
        )
        m = onnx.helper.make_model(graph, opset_imports=list(opsets))
        return np.asarray(ReferenceEvaluator(m).run(None, {})[0])
    except Exception:  # anything the reference evaluator cannot run: leave the Pad alone
        return None


def _drop_dead_nodes(graph) -> None:
    """Remove nodes none of whose outputs is read (the pads subgraphs a fold left behind)."""
    from int8kit.onnx.model_io import names_read

    outputs = {o.name for o in graph.output}
    while True:
        read = names_read(graph) | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output if o)]
        if not dead:
            return
        for n in dead:
            graph.node.remove(n)


def _set_bias(conv, name: str) -> None:
    """Make initializer ``name`` the bias (input 2) of ``conv``."""
    if len(conv.input) > 2:
        conv.input[2] = name
    else:
        conv.input.append(name)


def fold_batchnorms(model):
    """Fold each inference BatchNormalization that is the only reader of a Conv's output into
    that Conv's weight and bias (same function up to float rounding; ONNX Runtime does this for a
    float model, but a Q/DQ on the Conv output stops it and leaves the BN a float island).
    Returns (copy, folded count)."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    index = GraphIndex(graph)
    uses = Counter(i for n in index.nodes for i in n.input)
    new_inits, folded = [], 0
    for bn in index.nodes:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1 or len(bn.input) != 5:
            continue
        conv = index.producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(index.consumers[conv.output[0]]) != 1:
            continue
        if conv.output[0] in index.outputs or conv.input[1] not in index.initializers:
            continue
        params = [index.value(t) for t in bn.input[1:]]
        if any(p is None for p in params) or uses[conv.input[1]] != 1:
            continue
        gamma, beta, mean, var = (np.asarray(p, np.float64).ravel() for p in params)
        eps = float(_attrs(bn).get("epsilon", 1e-5))
        w = numpy_helper.to_array(index.initializers[conv.input[1]]).astype(np.float64)
        if w.shape[0] != gamma.size:
            continue
        b = np.zeros(w.shape[0])
        if len(conv.input) > 2 and conv.input[2]:
            bias = index.value(conv.input[2])
            if bias is None or uses[conv.input[2]] != 1:
                continue
            b = np.asarray(bias, np.float64).ravel()
        s = gamma / np.sqrt(var + eps)
        w_name, b_name = f"{conv.input[1]}_bn_folded", f"{conv.name}_bias_bn_folded"
        new_inits += [
            numpy_helper.from_array(
                (w * s.reshape(-1, *[1] * (w.ndim - 1))).astype(np.float32), w_name
            ),
            numpy_helper.from_array(((b - mean) * s + beta).astype(np.float32), b_name),
        ]
        conv.input[1] = w_name
        _set_bias(conv, b_name)
        conv.output[0] = bn.output[0]
        graph.node.remove(bn)
        folded += 1
    graph.initializer.extend(new_inits)
    drop_unused_initializers(graph)
    return out, folded


def fold_bias_adds(model):
    """Fold each Add of a per-channel constant that is the only reader of a Conv's output into
    the Conv's bias (exporters such as paddle2onnx write Conv -> Add(bias)): with the bias
    outside, the Add reads a constant and stays a float island after the int8 Conv. Same
    function up to float rounding. Works in place; returns (model, count)."""
    from onnx import numpy_helper

    graph = model.graph
    index = GraphIndex(graph)
    uses = Counter(i for n in index.nodes for i in n.input)
    folded = 0
    for add in index.nodes:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for k in (0, 1):
            conv = index.producer.get(add.input[k])
            value = index.value(add.input[1 - k])
            if conv is not None and conv.op_type == "Conv" and value is not None:
                break
        else:
            continue
        out = conv.output[0]
        if len(index.consumers.get(out, [])) != 1 or out in index.outputs:
            continue
        w = index.initializers.get(conv.input[1]) if len(conv.input) > 1 else None
        value = np.asarray(value, np.float64)
        rank = len(w.dims) if w is not None else 0
        if w is None or value.size != w.dims[0] or not rank - 1 <= value.ndim <= rank:
            continue
        if value.shape[-(rank - 1)] != w.dims[0]:
            continue  # not broadcast along the channel axis ([C] alone would be along W)
        bias = np.zeros(w.dims[0])
        if len(conv.input) > 2 and conv.input[2]:
            old = index.value(conv.input[2])
            if old is None or uses[conv.input[2]] != 1:
                continue
            bias = np.asarray(old, np.float64).ravel()
        name = f"{conv.name}_bias_add_folded"
        graph.initializer.append(
            numpy_helper.from_array((bias + value.ravel()).astype(np.float32), name)
        )
        _set_bias(conv, name)
        conv.output[0] = add.output[0]
        graph.node.remove(add)
        folded += 1
    if folded:
        _drop_dead_nodes(graph)
        drop_unused_initializers(graph)
    return model, folded


def drop_identities(model):
    """Readers of an Identity (not a graph output) read its input: exporters leave them after
    a Conv's bias Add, where one stops a Relu from fusing into the int8 layer before it (ORT
    removes an Identity itself, but only after the placement was decided around it). Works
    in place; returns (model, count)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    alias = {
        n.output[0]: n.input[0]
        for n in graph.node
        if n.op_type == "Identity" and n.input and n.input[0] and n.output[0] not in outputs
    }
    if not alias:
        return model, 0

    def root(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    for n in graph.node:
        for k, name in enumerate(n.input):
            if name in alias:
                n.input[k] = root(name)
    _drop_dead_nodes(graph)
    return model, len(alias)


def inline_constant_identities(model):
    """Readers of an Identity of an initializer (exporters write one for a weight used twice)
    read the initializer itself (model_io.bypass_initializer_identities, which quantize also
    runs when it loads a model, for every target). Works in place; returns (model, count)."""
    return model, bypass_initializer_identities(model)
