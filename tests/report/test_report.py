"""quantize --report / --target-sqnr / --high-precision and the sensitivity CLI, end to end on
the outlier chain (tests/analysis/test_sensitivity.py): the planted tensor is the worst."""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "analysis"))
from test_sensitivity import BAD, outlier_chain  # noqa: E402

from int8kit.cli.main import main
from int8kit.ranges import Ranges, TensorRange
from int8kit.report.document import Document

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def files(tmp_path):
    """Model, 24 samples, and a ranges file with conv3's input range blown up 300x."""
    m = outlier_chain()
    onnx.save(m, tmp_path / "m.onnx")
    x = np.random.default_rng(3).standard_normal((24, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    from int8kit.onnx.observe import activation_tensors, run_exposed

    amax = {}
    for values in run_exposed(m, activation_tensors(m), [{"x": x}]):
        amax = {n: float(np.abs(v).max()) for n, v in values.items()}
    amax["r2"] *= 300
    Ranges(
        {n: TensorRange(a, "minmax", {"max": a / 300 if n == "r2" else a}) for n, a in amax.items()}
    ).write(tmp_path / "planted.ranges.json")
    return tmp_path


def _quantize(files, *extra):
    return main(
        ["quantize", str(files / "m.onnx"), "-o", str(files / "q.onnx"), "--calib",
         str(files / "x.npy"), "--ranges", str(files / "planted.ranges.json"),
         "--holdout", "8", *extra]
    )  # fmt: skip


def _png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1000


def test_target_sqnr_excludes_the_planted_layer_and_prints_the_exclude(files, capsys):
    assert _quantize(files, "--target-sqnr", "25", "--json", str(files / "s.json")) == 0
    out = capsys.readouterr().out
    assert "fallback: target reached" in out and f"--exclude '^{BAD}$'" in out
    s = json.loads((files / "s.json").read_text())
    assert s["fallback"]["excluded"] == [BAD]
    assert s["config"]["target_sqnr"] == 25
    q = onnx.load(files / "q.onnx")
    conv3 = next(n for n in q.graph.node if n.name == BAD)
    assert conv3.input[0] == "r2" and conv3.input[1] == "w3"  # float input and weight
    assert s["fidelity"]["trt-like"]["y"]["sqnr_db"] > 25
    # reproducing with the printed --exclude gives the same model without the search
    assert _quantize(files, "--exclude", f"^{BAD}$", "-o", str(files / "q2.onnx")) == 0
    q2 = onnx.load(files / "q2.onnx")
    assert [n.op_type for n in q2.graph.node] == [n.op_type for n in q.graph.node]


def test_fp16_high_precision_keeps_io_types(files, capsys):
    assert _quantize(files, "--high-precision", "fp16", "--json", str(files / "s.json")) == 0
    s = json.loads((files / "s.json").read_text())
    assert s["fp16"]["opset"] == 19
    q = onnx.load(files / "q.onnx")
    assert q.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert "trt-like" in s["fidelity"]


def test_report_has_tables_plots_and_names_the_worst_tensor(files, capsys):
    rep = files / "rep"
    assert _quantize(files, "--report", str(rep)) == 0
    md = (rep / "report.md").read_text()
    assert (rep / "report.html").is_file()
    for name in ("layer_sqnr.png", "hist_r2.png"):
        _png(rep / name)
    assert "Fidelity" in md and "Ranges" in md and "Per-tensor SQNR" in md
    hist = md.split("## Activation histograms")[1]
    assert "hist_r2.png" in hist.split("![")[1]  # the planted tensor is drawn first


def test_report_with_fallback_has_the_sensitivity_chart(files, capsys):
    rep = files / "rep"
    assert _quantize(files, "--target-sqnr", "25", "--report", str(rep)) == 0
    md = (rep / "report.md").read_text()
    _png(rep / "sensitivity.png")
    assert "Layer sensitivity" in md and "Fallback" in md and f"'^{BAD}$'" in md
    assert md.split("## Layer sensitivity")[1].split("| 1 | ")[1].startswith(BAD)


def test_sensitivity_cli_ranks_plots_and_writes_json(files, capsys):
    args = ["sensitivity", str(files / "m.onnx"), "--calib", str(files / "x.npy"),
            "--ranges", str(files / "planted.ranges.json"), "--samples", "4",
            "--plot", str(files / "s.png"), "--json", str(files / "s.json")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    # the layer that reads the network input stays float by default, as in `quantize`
    assert "3 quantized layers" in out and "not ranked: 1 layer(s)" in out
    rows = json.loads((files / "s.json").read_text())["rows"]
    assert rows[0]["node"] == BAD and rows[0]["only_sqnr_db"] < 10
    _png(files / "s.png")


def test_config_round_trip_and_validation(tmp_path):
    from int8kit.data import DataConfig
    from int8kit.workflow import QuantizeConfig

    c = QuantizeConfig(
        "m.onnx", "q.onnx", data=DataConfig(source="x.npy"), target_top1=0.99,
        high_precision="fp16", keep_io_types=False, report="r", sensitivity_samples=4,
    )  # fmt: skip
    d = QuantizeConfig.from_dict(c.to_dict())
    assert (d.target_top1, d.high_precision, d.keep_io_types, d.report) == (
        0.99,
        "fp16",
        False,
        "r",
    )
    with pytest.raises(ValueError, match="top1"):
        QuantizeConfig("m.onnx", "q.onnx", data=DataConfig(source="x"), target_top1=2)
    with pytest.raises(ValueError, match="held-out"):
        QuantizeConfig("m.onnx", "q.onnx", data=DataConfig(source="x"), target_sqnr=20, holdout=0)
    with pytest.raises(ValueError, match="fp16"):
        QuantizeConfig("m.onnx", "q.onnx", data=DataConfig(source="x"), high_precision="bf16")


def test_document_markdown_and_html_escape():
    doc = Document("t")
    doc.table(["a|b", "v"], [["x<y", float("inf")]])
    assert "a\\|b" in doc.markdown() and "inf" in doc.markdown()
    assert "x&lt;y" in doc.html()


def test_eval_report_library_function(files, capsys):
    from int8kit.analysis.evaluate import evaluate
    from int8kit.data import DataConfig, make_source
    from int8kit.onnx.model_io import input_specs, load_model
    from int8kit.report.quantize import eval_report

    assert _quantize(files) == 0
    data = DataConfig(source=str(files / "x.npy"), num_samples=6)
    specs = input_specs(load_model(files / "m.onnx"))
    result = evaluate(files / "m.onnx", files / "q.onnx", data)
    md = eval_report(
        files / "erep", result, files / "m.onnx", files / "q.onnx", lambda: make_source(data, specs)
    )
    text = md.read_text()
    assert "Fidelity" in text and "hist_r2.png" in text.split("## Activation histograms")[1]
    _png(files / "erep" / "hist_r2.png")
