"""Load and save ONNX models safely: external data stays inside the model's folder, outputs are
written atomically, models over 2 GB keep their weights as external data."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from int8kit._deps import require
from int8kit.errors import ModelError
from int8kit.fileio import output_folder, writing

_PROTOBUF_LIMIT = 2**31 - 1
_ONNX_TO_NUMPY = {
    1: "float32",
    10: "float16",
    11: "float64",
    16: "bfloat16",
    2: "uint8",
    3: "int8",
    6: "int32",
    7: "int64",
    9: "bool",
}


def _check_external_data(model, base_dir: Path) -> None:
    """Refuse external-data locations that escape the model's folder."""
    onnx = require("onnx")
    root = base_dir.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (root / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(root):
            raise ModelError(
                f"tensor {tensor.name!r} points its external data at {location!r}, outside the "
                f"model's folder {root}; refusing to read it. Move the data file next to the model."
            )
        if not target.is_file():
            raise ModelError(f"external data file {target} of tensor {tensor.name!r} is missing")


def load_model(path: str | os.PathLike, load_weights: bool = True):
    """Load an ONNX model (with external data checked and loaded from its own folder)."""
    onnx = require("onnx", "ONNX models")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path} is not a readable ONNX model: {exc}") from exc
    _check_external_data(model, path.parent)
    if load_weights:
        onnx.load_external_data_for_model(model, os.fspath(path.parent))
    return model


QUANTIZED_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "ConvInteger",
    "MatMulInteger",
    "QLinearConv",
    "QLinearMatMul",
    "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul",
    "QGemm",
    "QAttention",
)


def refuse_quantized(model, path: str) -> None:
    """ModelError if ``model`` is already quantized (Q/DQ, ONNX Runtime's integer ops): int8kit
    calibrates FP32 models, and a second quantization of an int8 model only loses more."""
    found: dict[str, int] = {}
    for g in all_graphs(model.graph):
        for node in g.node:
            if node.op_type in QUANTIZED_OPS:
                found[node.op_type] = found.get(node.op_type, 0) + 1
    if found:
        ops = ", ".join(f"{n} {op}" for op, n in sorted(found.items(), key=lambda x: -x[1]))
        raise ModelError(
            f"{path} is already quantized ({ops}); int8kit calibrates FP32 models: give it the "
            "FP32 model this one was made from (a model with Q/DQ nodes from QAT runs as it is: "
            "trtexec --int8, or ONNX Runtime)"
        )


def all_graphs(graph):
    """``graph`` and every subgraph in it (If branches, Loop and Scan bodies), depth first."""
    from onnx import AttributeProto

    todo = [graph]
    while todo:
        g = todo.pop()
        yield g
        for node in g.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    todo.append(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    todo.extend(attr.graphs)


def subgraph_layers(model, op_types=("Conv", "ConvTranspose", "Gemm", "MatMul")) -> int:
    """Layers of ``op_types`` inside If/Loop/Scan bodies (int8kit quantizes the main graph)."""
    main = sum(n.op_type in op_types for n in model.graph.node)
    return sum(n.op_type in op_types for g in all_graphs(model.graph) for n in g.node) - main


def initializers_out_of_inputs(model) -> int:
    """Drop from the main graph's inputs the names that are initializers too, in place; returns
    how many. Old exporters (IR 3, where every initializer had to be an input: caffe2, the ONNX
    model zoo's opset 7-9 classics; torch's keep_initializers_as_inputs) list every weight as an
    input that may be fed: ONNX Runtime then treats none of them as constant (its
    remove_initializer_from_input tool does the same as this), and a writer that adds
    initializers (scales, int8 weights) to an IR 3 model without inputs for them writes a model
    the checker refuses. The model is raised to IR 4 where it was older. Same function unless a
    caller feeds a weight."""
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    dropped = len(model.graph.input) - len(keep)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(keep)
    if model.ir_version and model.ir_version < 4:
        model.ir_version = 4
    return dropped


def foreign_ops(model) -> dict[str, int]:
    """{"domain:op_type": count} of the nodes (subgraphs too) outside the standard ONNX domains:
    ONNX Runtime's contrib ops (com.microsoft Attention, SkipLayerNormalization, ... that its
    transformer optimizer fuses), ai.onnx.ml, custom ops."""
    counts: dict[str, int] = {}
    for g in all_graphs(model.graph):
        for n in g.node:
            if n.domain not in ("", "ai.onnx"):
                key = f"{n.domain}:{n.op_type}"
                counts[key] = counts.get(key, 0) + 1
    return counts


def constants_to_initializers(model) -> int:
    """Move the floating-point tensors of ``Constant`` nodes (``value`` attribute, 2 elements or
    more) of the main graph into initializers of the same name, in place; returns how many moved.
    Same function: exporters such as paddle2onnx keep every weight, bias and BatchNormalization
    parameter in a Constant node, and the placement (like ORT's quantizer) finds weights among
    the initializers, so such a model would get int8 activations and float weights. Scalars and
    integer tensors (shapes, axes, exponents: what other exporters put in Constant nodes) stay
    nodes, unless a Conv, ConvTranspose or Gemm reads them as its weight or bias (a one-channel
    Conv's bias has one element: bias correction reads it as an initializer), as do outputs of
    the graph; a model older than IR 4 (initializers must also be graph inputs there) is left as
    it is."""
    from onnx import TensorProto

    if model.ir_version and model.ir_version < 4:
        return 0
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    graph = model.graph
    params = _layer_params(graph, matmul=False)

    def tensor_of(node):
        attr = next((a for a in node.attribute if a.name == "value"), None)
        if (
            node.op_type != "Constant"
            or attr is None
            or attr.t.data_type not in floats
            or (math.prod(attr.t.dims) < 2 and node.output[0] not in params)
        ):
            return None
        tensor = attr.t
        tensor.name = node.output[0]
        return tensor

    return _nodes_to_initializers(graph, tensor_of)


def _layer_params(graph, matmul: bool) -> set[str]:
    """Names a Conv, ConvTranspose or Gemm reads as its weight or bias (with ``matmul``, also a
    MatMul's second input)."""
    ops = ("Conv", "ConvTranspose", "Gemm") + (("MatMul",) if matmul else ())
    return {
        name
        for n in graph.node
        if n.op_type in ops
        for name in n.input[1 : 2 if n.op_type == "MatMul" else 3]
    }


def _nodes_to_initializers(graph, tensor_of) -> int:
    """Replace each node of ``graph`` for which ``tensor_of(node)`` gives a tensor (named as the
    node's output) by that tensor as an initializer, in place, graph outputs aside; returns how
    many."""
    outputs = {o.name for o in graph.output}
    keep, made = [], []
    for node in graph.node:
        tensor = None if node.output[0] in outputs else tensor_of(node)
        if tensor is None:
            keep.append(node)
        else:
            made.append(tensor)
    if made:
        graph.initializer.extend(made)
        del graph.node[:]
        graph.node.extend(keep)
    return len(made)


def fills_to_initializers(model) -> int:
    """Replace the ``ConstantOfShape`` nodes of the main graph whose shape is an initializer and
    whose output a Conv, ConvTranspose or Gemm reads as its weight or bias (a MatMul as its
    second input) by the initializer they compute, in place; returns how many. Same function:
    such a weight is a constant the placement did not see (ONNX's light test models make every
    weight so: their layers got int8 activations and float weights)."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    params = _layer_params(graph, matmul=True)

    def tensor_of(node):
        if (
            node.op_type != "ConstantOfShape"
            or node.input[0] not in inits
            or node.output[0] not in params
        ):
            return None
        attr = next((a for a in node.attribute if a.name == "value"), None)
        fill = numpy_helper.to_array(attr.t) if attr is not None else np.zeros(1, np.float32)
        shape = numpy_helper.to_array(inits[node.input[0]]).astype(np.int64).tolist()
        return numpy_helper.from_array(np.full(shape, fill.ravel()[0]), node.output[0])

    return _nodes_to_initializers(graph, tensor_of)


def bypass_initializer_identities(model) -> int:
    """Make the readers of ``Identity(initializer)`` in the main graph read the initializer
    itself, and drop those Identity nodes, in place; returns how many. Same function: PyTorch's
    TorchScript exporter writes a weight shared by several layers (ALBERT-like encoders that
    repeat one layer, tied embeddings) once and each further use as an Identity of it, and the
    placement finds weights among the initializers, so those layers got int8 activations and
    float weights (chython-rxnmap: 53 of 61 MatMuls). A weight read by several layers gets one
    int8 copy (qdq.py); passes that change a weight write a new initializer per layer. An
    Identity whose output is a graph output stays."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {
        n.output[0]: n.input[0]
        for n in graph.node
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs
    }
    if not alias:
        return 0
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in keep:
        node.input[:] = [alias.get(s, s) for s in node.input]
    del graph.node[:]
    graph.node.extend(keep)
    return len(alias)


def save_model(model, path: str | os.PathLike, data: bytes | None = None) -> None:
    """Write ``model`` to ``path`` atomically; weights go to ``<name>.data`` beside it when the
    model is too large for one protobuf (2 GB). The temporary folder is removed on any exception
    (Ctrl-C and SIGTERM included). The model is serialized once: its bytes are both the size
    test and what is written (upb's ByteSize() serializes too: ~0.1 s more on a 90 MB model).
    ``data``: ``model``'s bytes where the caller has them already (``observe.serialized``)."""
    from int8kit.onnx.observe import serialized

    onnx = require("onnx", "ONNX models")
    path = Path(path)
    output_folder(path.parent)
    if data is None:
        data = serialized(model)  # None: past 2 GB, or it may be (then ByteSize decides)
    large = (model.ByteSize() if data is None else len(data)) > _PROTOBUF_LIMIT
    # its bytes are what onnx.save_model writes for a model with no tensor to write elsewhere
    what = model if large or data is None or _writes_external(model) else data
    with writing(path):
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with writing(path):
            _save(onnx, what, path, tmpdir / path.name, large)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _save(onnx, model, path: Path, tmp: Path, large: bool) -> None:
    """Write ``model`` (a ModelProto, or its serialized bytes) to ``tmp``, then rename it."""
    if isinstance(model, bytes):
        tmp.write_bytes(model)
    elif large:
        data_name = path.name + ".data"
        external = onnx.ModelProto()
        external.CopyFrom(model)  # saving as external data rewrites the tensors in place
        onnx.save_model(
            external,
            os.fspath(tmp),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=1024,
        )
        if (tmp.parent / data_name).exists():
            os.replace(tmp.parent / data_name, path.parent / data_name)
    else:
        onnx.save_model(model, os.fspath(tmp))
    os.replace(tmp, path)


def _writes_external(model) -> bool:
    """Whether onnx.save_model would write some tensor of ``model`` to an external file (one
    marked external that holds its data)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return any(uses_external_data(t) and t.HasField("raw_data") for t in _get_all_tensors(model))


def model_bytes_or_path(model, workdir: Path) -> bytes | str:
    """What onnxruntime.InferenceSession accepts: bytes, or a saved path for models over 2 GB."""
    if model.ByteSize() <= _PROTOBUF_LIMIT:
        return model.SerializeToString()
    path = workdir / "model.onnx"
    save_model(model, path)
    return os.fspath(path)


def input_specs(model) -> list:
    """The model's real inputs (initializers excluded) as int8kit.data.InputSpec."""
    from int8kit.data import InputSpec

    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
        )
        specs.append(InputSpec(vi.name, dims, _ONNX_TO_NUMPY.get(tt.elem_type, "float32")))
    return specs


def initializer_arrays(model) -> dict[str, np.ndarray]:
    onnx = require("onnx")
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}


def names_read(graph) -> set[str]:
    """Every tensor name the nodes of ``graph`` read, those of its subgraphs (Loop, If and Scan
    bodies) included: a body may read an outer-scope initializer by name, so pruning unused
    initializers by the top-level nodes alone would drop its weights."""
    return {name for g in all_graphs(graph) for node in g.node for name in node.input}


def drop_unused_initializers(graph) -> set[str]:
    """Remove the initializers no node reads (``names_read``: subgraph bodies included) and
    the graph inputs that only listed them (old exporters list initializers as inputs too: left
    behind, one would become a required feed). Returns the dropped names."""
    used = names_read(graph)
    dropped = {i.name for i in graph.initializer if i.name not in used}
    if dropped:
        # deleted in place, last first: rebuilding the list would copy every kept tensor
        gone = [k for k, i in enumerate(graph.initializer) if i.name not in used]
        for k in reversed(gone):
            del graph.initializer[k]
        for vi in [vi for vi in graph.input if vi.name in dropped]:
            graph.input.remove(vi)
    return dropped


class FreshNames:
    """``fresh(name)``: ``name``, or ``name_1``, ``name_2``... when the graph already uses it."""

    def __init__(self, graph):
        self.taken = {i.name for i in graph.initializer}
        self.taken |= {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
        for n in graph.node:
            self.taken |= {n.name, *n.input, *n.output}

    def __call__(self, name: str) -> str:
        new, k = name, 0
        while new in self.taken:
            k += 1
            new = f"{name}_{k}"
        self.taken.add(new)
        return new


def insert_before_readers(graph, node, tensor: str, readers, first_input_only: bool = False):
    """Put ``node`` (which reads ``tensor``) in front of the first of the nodes named
    ``readers``, and make those read ``node.output[0]`` instead of ``tensor`` (at input 0 only
    with ``first_input_only``). The node list is rebuilt, which copies its messages: node
    references taken before the call are stale afterwards."""
    readers = set(readers)
    nodes = list(graph.node)
    first = min(k for k, n in enumerate(nodes) if n.name in readers)
    for n in nodes:
        if n.name not in readers:
            continue
        for i, name in enumerate(n.input):
            if name == tensor and (i == 0 or not first_input_only):
                n.input[i] = node.output[0]
    nodes.insert(first, node)
    del graph.node[:]
    graph.node.extend(nodes)


class GraphIndex:
    """Lookups over a graph's top level, built once: the node producing each tensor, the nodes
    reading it (``consumers``: (node, input index) pairs; ``readers``: the nodes alone), the
    initializers (also ``inits``), the constants (initializers and Constant outputs) and their
    values, the graph's inputs and outputs. The placement rules read it (onnx/placement.py,
    onnx/targets_ort.py, analysis/lint.py); in-place rewrites subclass it (onnx/smoothquant.py,
    onnx/dwequalize.py, onnx/center.py) and build a new one once they insert nodes.
    ``source`` is a ModelProto or a GraphProto (``model`` is then None)."""

    def __init__(self, source):
        from onnx import numpy_helper

        self.graph = getattr(source, "graph", source)
        self.model = source if self.graph is not source else None
        self.nodes = list(self.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[tuple[object, int]]] = defaultdict(list)
        for n in self.nodes:
            for i, name in enumerate(n.input):
                if name:
                    self.consumers[name].append((n, i))
        self.readers = {t: [n for n, _ in edges] for t, edges in self.consumers.items()}
        self.initializers = {i.name: i for i in self.graph.initializer}
        self.inits = self.initializers  # one dict: a rewrite's new initializers show in both
        self.constants = set(self.initializers) | {
            o for n in self.nodes if n.op_type == "Constant" for o in n.output
        }
        self.outputs = {o.name for o in self.graph.output}
        self.inputs = {i.name for i in self.graph.input}
        self.to_array = numpy_helper.to_array
        self.from_array = numpy_helper.from_array
        self._values: dict[str, np.ndarray | None] = {}

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def value(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (initializer or Constant node), else None; read once
        and kept (a rewrite that changes a constant reads it with to_array instead)."""
        if name not in self._values:
            from onnx import helper

            v = None
            if name in self.initializers:
                v = self.to_array(self.initializers[name])
            elif name in self.constants:
                a = next((a for a in self.producer[name].attribute), None)
                v = helper.get_attribute_value(a) if a and a.name.startswith("value") else None
                v = self.to_array(v) if hasattr(v, "data_type") else v
                v = None if v is None else np.asarray(v)
            self._values[name] = v
        return self._values[name]

    def only_read_by(self, tensor: str, names: set[str]) -> bool:
        """``tensor`` is no graph output and only nodes named in ``names`` read it."""
        return tensor not in self.outputs and all(
            n.name in names for n in self.readers.get(tensor, [])
        )
