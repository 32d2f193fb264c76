"""Run an FP32 ONNX model on ONNX Runtime with its activation tensors exposed, and stream each
one into its own collector. Memory depends on one batch's activations, never on the data size."""

from __future__ import annotations

import copy
import logging
import math
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from int8kit._deps import require
from int8kit.onnx.model_io import _PROTOBUF_LIMIT, model_bytes_or_path, names_read

log = logging.getLogger(__name__)

_FLOAT_TYPES = {1, 10, 11, 16}  # float, float16, double, bfloat16
# Ops whose output holds exactly the values of their first input, only rearranged: its
# statistics equal the input's, so it is not exposed but gets a copy of the input's collector.
_SAME_VALUES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose"}
_DONE = object()


def activation_tensors(model) -> list[str]:
    """Every floating-point activation: graph inputs and node outputs (not constants), in graph
    order. Types come from shape inference; a tensor of unknown type is kept and filtered by the
    dtype ONNX Runtime returns."""
    onnx = require("onnx")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # inference is a help, not a requirement
        log.debug("shape inference failed: %s", exc)
        inferred = model
    g = inferred.graph
    elem = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in list(g.value_info) + list(g.input) + list(g.output)
    }
    inits = {i.name for i in model.graph.initializer}
    names: list[str] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        if name and name not in seen and name not in inits and elem.get(name, 1) in _FLOAT_TYPES:
            seen.add(name)
            names.append(name)

    for vi in model.graph.input:
        add(vi.name)
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        for o in node.output:
            add(o)
    return names


def expose(model, names: list[str]):
    """A copy of ``model`` whose graph outputs are ``names`` (in that order), without the nodes
    none of them depends on: ONNX Runtime runs every node of a graph, needed or not (RetinaFace
    exposing its depthwise inputs only: 253 nodes -> 50, the pass 2x faster)."""
    onnx = require("onnx")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    existing = {o.name: o for o in out.graph.output}
    del out.graph.output[:]
    for name in names:
        out.graph.output.append(existing.get(name) or onnx.ValueInfoProto(name=name))
    needed = _ancestor_nodes(out.graph, names)
    if len(needed) < len(out.graph.node):
        kept = [n for i, n in enumerate(out.graph.node) if i in needed]
        del out.graph.node[:]
        out.graph.node.extend(kept)
    return out


def _reads(node) -> set[str]:
    """Every tensor ``node`` reads, including those its subgraphs (If/Loop/Scan) read from the
    enclosing graph."""
    names = set(node.input)
    for a in node.attribute:
        for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            names |= names_read(g)
    names.discard("")
    return names


def _ancestor_nodes(graph, names: list[str]) -> set[int]:
    """Indices of the nodes that ``names`` depend on."""
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    needed: set[int] = set()
    todo = [producer[n] for n in names if n in producer]
    while todo:
        i = todo.pop()
        if i in needed:
            continue
        needed.add(i)
        todo.extend(producer[t] for t in _reads(graph.node[i]) if t in producer)
    return needed


# bytes per element of the ONNX tensor types (others: 8, an upper bound)
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 9: 1, 10: 2, 12: 4, 16: 2, 17: 1, 18: 1, 19: 1}


def serialized(model) -> bytes | None:
    """``model`` as bytes for ONNX Runtime, or None where it is (or may be) past protobuf's
    2 GB: save it to a file instead. One serialization: upb's ByteSize() serializes too, so asking
    for the size first costs a second one (~0.1 s for a 90 MB model)."""
    weights = sum(
        math.prod(t.dims) * _ITEMSIZE.get(t.data_type, 8) for t in model.graph.initializer
    )
    if weights > _PROTOBUF_LIMIT:
        return None
    try:
        data = model.SerializeToString()
    except Exception:  # protobuf refuses a message it cannot encode
        return None
    return data if len(data) <= _PROTOBUF_LIMIT else None


def make_session(
    model,
    providers: list[str] | None = None,
    optimize: bool = True,
    threads: int = 0,
    outputs: list[str] | None = None,
):
    """An onnxruntime session of an in-memory model (a ModelProto, or its bytes from
    ``serialized``). ``optimize=False`` runs every node as it is, which for a Q/DQ model is
    exactly "quantize, round, clamp, dequantize in float" — what TensorRT computes (DESIGN.md,
    fidelity). ``outputs``: the session of ``expose(model, outputs)``, built without copying
    the model."""
    ort = require("onnxruntime", "running ONNX models")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    # Idle worker threads wait instead of spinning: the caller's histograms and sums run on the
    # other core meanwhile (2 cores: RetinaFace's calibration 2.18 -> 1.84 s, same results).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = threads
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    providers = providers or ["CPUExecutionProvider"]
    weights: list = []
    if isinstance(model, bytes):
        data = model
    else:
        data, names, weights = _without_weights(model, outputs)
        if data is None:
            weights = []  # the model goes to ONNX Runtime as a file, weights included
        if weights:
            so.add_external_initializers(names, weights)
        elif outputs is not None and data is None:
            data = serialized(expose(model, outputs))
    if data is not None:
        session = ort.InferenceSession(data, so, providers=providers)
        session.int8kit_weights = weights  # ONNX Runtime reads them in place: keep them alive
        return session
    with tempfile.TemporaryDirectory() as tmp:
        path = model_bytes_or_path(expose(model, outputs) if outputs else model, Path(tmp))
        return ort.InferenceSession(path, so, providers=providers)


# Initializers of at least this many bytes reach ONNX Runtime as OrtValues over NumPy arrays
# (SessionOptions.add_external_initializers: read in place) rather than inside the serialized
# model, which ONNX Runtime parses and copies; and a model with fewer than EXTERNAL_TOTAL bytes of
# them is serialized whole. Same initializer values, same session: MiniLM's 69 MB session ~0.3 ->
# ~0.2 s, plus the model copy an exposed session made (benchmarks/fixed_cost.py).
EXTERNAL_FROM = 1 << 16
EXTERNAL_TOTAL = 1 << 23
_NUMPY_TYPES = {1, 2, 3, 5, 6, 7, 10, 11}  # float, uint8, int8, int16, int32, int64, half, double


def _without_weights(model, outputs: list[str] | None = None):
    """(bytes, names, OrtValues): ``model`` (exposing ``outputs``, nodes none of them needs
    dropped, as ``expose``) serialized with its large initializers as external-data stubs, and
    those initializers as OrtValues for ``add_external_initializers``. Where they hold fewer
    than EXTERNAL_TOTAL bytes: (``serialized(model)``, [], []) without ``outputs``, else
    (None, [], []); bytes None: past protobuf's limit."""
    onnx = require("onnx")
    ort = require("onnxruntime", "running ONNX models")
    from onnx import numpy_helper

    graph = model.graph
    # sizes from the dims: reading ``raw_data`` copies the bytes
    size = {
        t.name: math.prod(t.dims) * _ITEMSIZE.get(t.data_type, 8)
        for t in graph.initializer
        if t.data_type in _NUMPY_TYPES
        and t.data_location != onnx.TensorProto.EXTERNAL
        and t.HasField("raw_data")
    }
    big = [t for t in graph.initializer if size.get(t.name, 0) >= EXTERNAL_FROM]
    if sum(size[t.name] for t in big) < EXTERNAL_TOTAL:
        return (serialized(model) if outputs is None else None), [], []
    out = onnx.ModelProto()
    for fd, value in model.ListFields():
        if fd.name != "graph":
            _copy_field(out, fd, value)
    g = out.graph
    for fd, value in graph.ListFields():
        if fd.name not in ("initializer", "node", "output"):
            _copy_field(g, fd, value)
    nodes = list(graph.node)
    if outputs is None:
        g.output.extend(graph.output)
    else:
        existing = {o.name: o for o in graph.output}
        g.output.extend(existing.get(n) or onnx.ValueInfoProto(name=n) for n in outputs)
        needed = _ancestor_nodes(graph, outputs)
        nodes = [n for i, n in enumerate(nodes) if i in needed]
    g.node.extend(nodes)
    read = set().union(*(_reads(n) for n in nodes), (i.name for i in graph.input))
    read |= {o.name for o in g.output}
    big_names = {t.name for t in big}
    names, values = [], []
    for t in graph.initializer:
        if t.name not in read:
            continue  # ONNX Runtime drops an initializer no node reads
        if t.name not in big_names:
            g.initializer.append(t)
            continue
        stub = g.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
        stub.data_location = onnx.TensorProto.EXTERNAL
        stub.external_data.add(key="location", value="int8kit-in-memory")
        names.append(t.name)
        values.append(ort.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(t)))
    try:  # not ``serialized``: its size estimate counts the stubs' dims
        data = out.SerializeToString()
    except Exception:  # past protobuf's limit even without the large initializers
        return None, [], []
    return (data if len(data) <= _PROTOBUF_LIMIT else None), names, values


def _copy_field(msg, fd, value) -> None:
    if hasattr(value, "extend"):  # a repeated field
        getattr(msg, fd.name).extend(value)
    elif fd.message_type is not None:
        getattr(msg, fd.name).CopyFrom(value)
    else:
        setattr(msg, fd.name, value)


def _ort_threads(leave_one_core: bool = True) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - int(leave_one_core))


def value_aliases(model, names: list[str]) -> dict[str, str]:
    """{tensor: earlier tensor with the same values} for the outputs of ``_SAME_VALUES`` ops
    whose input (followed through such ops) is also in ``names``."""
    wanted = set(names)
    alias: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in _SAME_VALUES or not node.input or len(node.output) != 1:
            continue
        src, out = node.input[0], node.output[0]
        src = alias.get(src, src)
        if out in wanted and src in wanted and src != out:
            alias[out] = src
    return alias


@dataclass
class PadSource:
    """A constant-mode Pad: its output holds its input's values plus ``value`` entries.
    Exposing a Pad's output keeps ONNX Runtime from folding the Pad into the Conv after it
    (~25-40% more time on EfficientNet-Lite0), so its input is exposed instead."""

    x: str  # the Pad's data input
    pads: str | np.ndarray  # tensor name (read each batch) or constant
    value: str | np.ndarray | None  # the same; None: 0


def pad_source(node, inits: dict[str, object]) -> PadSource | None:
    """The PadSource of ``node`` when it is a constant-mode Pad without ``axes``, else None."""
    if node is None or node.op_type != "Pad" or len(node.output) != 1:
        return None
    from onnx import helper, numpy_helper

    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    mode = a.get("mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return None
    if len(node.input) > 3 and node.input[3]:  # axes
        return None
    if "pads" in a:  # opset < 11
        return PadSource(node.input[0], np.array(a["pads"]), np.float32(a.get("value", 0.0)))
    if len(node.input) < 2 or not node.input[1]:
        return None

    def const(name):
        return numpy_helper.to_array(inits[name]) if name in inits else name

    value = node.input[2] if len(node.input) > 2 and node.input[2] else None
    return PadSource(node.input[0], const(node.input[1]), const(value) if value else None)


def constant_value(model, name: str, producer: dict | None = None) -> np.ndarray | None:
    """The value of tensor ``name`` when it is computed from constants only (the pads an
    exporter builds from Constant/ConstantOfShape/Concat/Slice/Cast nodes), else None."""
    onnx = require("onnx")
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    inits = {i.name: i for i in model.graph.initializer}
    if name in inits:
        return numpy_helper.to_array(inits[name])
    producer = (
        producer if producer is not None else {o: n for n in model.graph.node for o in n.output}
    )
    cone: list = []
    seen: set[str] = set()
    todo = [name]
    while todo:
        t = todo.pop()
        if not t or t in seen or t in inits:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is None or len(cone) > 64:  # a graph input, or not a small constant subgraph
            return None
        cone.append(node)
        todo.extend(node.input)
    order = {id(n): k for k, n in enumerate(model.graph.node)}
    cone = sorted({id(n): n for n in cone}.values(), key=lambda n: order[id(n)])
    used = {i for n in cone for i in n.input}
    graph = helper.make_graph(
        cone,
        "constant",
        [],
        [onnx.ValueInfoProto(name=name)],
        [inits[i] for i in used if i in inits],
    )
    sub = helper.make_model(graph, opset_imports=model.opset_import)
    try:
        return np.asarray(ReferenceEvaluator(sub).run(None, {})[0])
    except Exception as exc:  # an op the reference evaluator lacks: not derived
        log.debug("cannot fold %s: %s", name, exc)
        return None


def zero_pads(model, names: list[str]) -> dict[str, tuple[str, np.ndarray]]:
    """{Pad output: (its input, pads)} for the Pads in ``names`` that only add zeros around an
    activation (constant pads >= 0, value 0): their statistics are the input's plus zeros.
    Pads an exporter computes from constants count as constant."""
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    found = {}
    for name in names:
        src = pad_source(producer.get(name), inits)
        if src is not None and isinstance(src.pads, str):
            src.pads = constant_value(model, src.pads, producer)
        if src is not None and isinstance(src.value, str):
            src.value = constant_value(model, src.value, producer)
        if src is None or src.pads is None or isinstance(src.value, str):
            continue
        if src.value is not None and np.asarray(src.value).size != 1:
            continue
        if (np.asarray(src.pads) < 0).any() or (src.value is not None and float(src.value) != 0):
            continue
        if src.x in inits:
            continue
        found[name] = (src.x, np.asarray(src.pads, np.int64).ravel())
    return found


def _padded_zeros(shape: tuple[int, ...], pads: np.ndarray) -> int:
    begin, end = pads[: len(shape)], pads[len(shape) :]
    return int(np.prod([n + b + e for n, b, e in zip(shape, begin, end, strict=True)])) - int(
        np.prod(shape)
    )


def _prefetch(iterable: Iterable, depth: int = 1) -> Iterator:
    """Yield ``iterable``'s items while a worker thread already computes the next ones, so the
    model (which releases the GIL) runs while the caller processes the previous item."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in iterable:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_DONE, exc))

    worker = threading.Thread(target=work, name="int8kit-observe", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if item is _DONE:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        worker.join()


# With the caller's histograms on a core of their own, a model whose forward pass takes much
# longer than the histograms of its tensors leaves that core idle most of the time: after
# ADAPT_AT batches (the first one, with its warm-up, not counted) it gets a session with every
# core. Only then: where the histograms take about as long, ONNX Runtime's threads waiting for
# the one that shares a core with them cost more than the extra core gives. Forward over
# histograms per batch on 2 cores, and calibration seconds fixed -> adaptive (medians of 3,
# alternated, same ranges): U2-Net-p ~2.5-3x, 48 samples 26.4 -> 23.3 s; YOLOv8n ~2.3x,
# 3.70 -> 3.36 s; EfficientNet-Lite0 ~1.9x, 2.64 vs 2.69 s either way; RetinaFace ~1.3x,
# 1.2 s on one thread where two took 1.8 s.
ADAPT_AT = 4
ORT_BOUND = 2.0  # ONNX Runtime's seconds over the caller's, per batch, that earn every core


def _ort_bound(ort_seconds: list[float], caller_seconds: list[float]) -> bool:
    """Whether the forward passes took ORT_BOUND times the caller's work on the same batches
    (medians; the first batch of each left out)."""
    ort, caller = ort_seconds[1:], caller_seconds[1:]
    if not ort or not caller:
        return False
    return float(np.median(ort)) > ORT_BOUND * float(np.median(caller))


def run_exposed(
    model,
    names: list[str],
    batches: Iterable[dict[str, np.ndarray]],
    providers: list[str] | None = None,
    light_consumer: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``{tensor: array}`` for each batch (only floating-point arrays). The next batch
    runs on ONNX Runtime while the caller handles the current one, so ONNX Runtime gets one
    core fewer than the machine has (the caller's histograms keep that one busy) unless its
    passes turn out to be the slower part (ADAPT_AT), or every core when ``light_consumer``
    says the caller does little per batch (min/max, means)."""
    threads = _ort_threads(leave_one_core=not light_consumer)
    # CPU threads only matter where the CPU runs the model
    on_cpu = all(p == "CPUExecutionProvider" for p in providers or ["CPUExecutionProvider"])
    cores = _ort_threads(leave_one_core=False) if on_cpu else threads
    session = make_session(model, providers, threads=threads, outputs=names)
    inputs = {i.name for i in session.get_inputs()}
    caller_seconds: list[float] = []  # per batch handed over, appended by the caller's side

    def outputs() -> Iterator[dict[str, np.ndarray]]:
        nonlocal session
        ort_seconds: list[float] = []
        for i, batch in enumerate(batches):
            feed = {k: v for k, v in batch.items() if k in inputs}
            t = time.perf_counter()
            values = session.run(names, feed)
            ort_seconds.append(time.perf_counter() - t)
            if i == ADAPT_AT and threads < cores and _ort_bound(ort_seconds, caller_seconds):
                log.debug("forward passes are the slower part: ONNX Runtime gets %d cores", cores)
                session = make_session(model, providers, threads=cores, outputs=names)
            yield {n: v for n, v in zip(names, values, strict=True) if v.dtype.kind == "f"}

    for item in _prefetch(outputs()):
        t = time.perf_counter()
        yield item
        caller_seconds.append(time.perf_counter() - t)


def exposure_plan(model, names: list[str], derive_pads: bool = True):
    """(tensors ONNX Runtime must expose, {alias: source}, {zero Pad output: (input, pads)}) for
    observing ``names``: rearranged copies and zero-padded tensors are derived, not exposed."""
    aliases = value_aliases(model, names)
    pads = zero_pads(model, names) if derive_pads else {}
    exposed = [n for n in names if n not in aliases and n not in pads]
    exposed += [x for x, _ in pads.values() if x not in exposed]
    return exposed, aliases, pads


def _counting(batches, sizes: list[int]):
    """``batches``, appending each batch's sample count (first input's axis 0) to ``sizes``."""
    for batch in batches:
        first = next(iter(batch.values()), None)
        sizes.append(int(first.shape[0]) if first is not None and np.ndim(first) else 1)
        yield batch


def observe(
    model,
    batches: Iterable[dict[str, np.ndarray]],
    make_collector: Callable[[], object],
    names: list[str] | None = None,
    providers: list[str] | None = None,
    light_consumer: bool = False,
    total: int | None = None,
) -> dict[str, object]:
    """Stream every batch through the model and feed each exposed tensor to its collector.
    A tensor that only rearranges another's values (Reshape, Transpose, ...) is not run
    through a collector of its own: it gets a copy of that tensor's collector at the end.
    ``light_consumer``: the collectors are cheap (no histogram), give ONNX Runtime every core.
    ``total``: how many batches come, when the collectors bin every value (calib.kernels): the
    first batch's values times ``total`` are announced to ``kernels.plan``."""
    names = names if names is not None else activation_tensors(model)
    # A zero Pad's output is its input plus zeros: the input is observed, the zeros counted
    # (collectors with ``add_zeros``; others observe the Pad's output itself).
    exposed, aliases, pads = exposure_plan(model, names, hasattr(make_collector(), "add_zeros"))
    zeros = dict.fromkeys(pads, 0)
    collectors: dict[str, object] = {}
    # Collectors with per-sample statistics learn how many samples each batch holds.
    sizes: list[int] | None = [] if getattr(make_collector(), "per_sample", False) else None
    if sizes is not None:
        batches = _counting(batches, sizes)
    for k, values in enumerate(run_exposed(model, exposed, batches, providers, light_consumer)):
        if k == 0 and total:
            from int8kit.calib import kernels

            kernels.plan(total * sum(v.size for v in values.values()))
        for name, value in values.items():
            c = collectors.get(name)
            if c is None:
                c = collectors[name] = make_collector()
            if sizes is None:
                c.collect(value)
            else:
                c.collect(value, samples=sizes[k])
        for name, (x, pad) in pads.items():
            if x in values:
                zeros[name] += _padded_zeros(values[x].shape, pad)
    for name, (x, _) in pads.items():
        if x in collectors:
            collectors[name] = copy.deepcopy(collectors[x])
            collectors[name].add_zeros(zeros[name])
    for name, src in aliases.items():
        if src in collectors:
            collectors[name] = copy.deepcopy(collectors[src])
    return {n: collectors[n] for n in names if n in collectors}
