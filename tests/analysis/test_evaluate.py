import numpy as np
import pytest
from analysis_models import (
    classifier,
    conv_relu_conv,
    detector_head,
    encoder,
    int8kit_qdq,
    random_batches,
    save,
)

from int8kit.analysis.detection import DetectionStats
from int8kit.analysis.evaluate import evaluate
from int8kit.analysis.metrics import (
    cosine,
    max_abs_error,
    mean_abs_error,
    sqnr_db,
    topk_agreement,
    topk_overlap,
)
from int8kit.errors import DataError
from int8kit.onnx.observe import make_session


def _outputs(model, batches, optimize=True):
    s = make_session(model, optimize=optimize)
    return np.concatenate([s.run(["y"], b)[0] for b in batches])


@pytest.mark.parametrize(("backend", "optimize"), [("trt-like", False), ("ort-int8", True)])
def test_raw_metrics_equal_hand_computed(backend, optimize):
    m = conv_relu_conv()
    q = int8kit_qdq(m)
    batches = random_batches(4, seed=1)
    result = evaluate(m, q, batches, task="raw")
    ref, test = _outputs(m, batches), _outputs(q, batches, optimize)
    got = result["outputs"][backend]["y"]
    assert got["task"] == "raw"
    assert got["sqnr_db"] == pytest.approx(sqnr_db(ref, test))
    assert got["cosine"] == pytest.approx(cosine(ref, test))
    assert got["max_abs"] == pytest.approx(max_abs_error(ref, test))
    assert got["mean_abs"] == pytest.approx(mean_abs_error(ref, test))
    assert set(result["backends"]) == {"trt-like", "ort-int8"}
    assert "TensorRT" in result["backends"]["trt-like"]
    assert "detection_thresholds" not in result


def test_classifier_top1_and_top5():
    m = classifier()
    amax = {"x": 1.0, "c1": 1.0, "r1": 1.0, "p": 1.0, "f": 1.0}  # coarse: some top-1 flips
    q = int8kit_qdq(m, amax)
    batches = random_batches(12, seed=2)
    result = evaluate(m, q, batches, backends=("trt-like",))
    got = result["outputs"]["trt-like"]["y"]
    ref, test = _outputs(m, batches), _outputs(q, batches, optimize=False)
    assert got["task"] == "classify" and got["n"] == 12
    assert got["top1_agreement"] == pytest.approx(topk_agreement(ref, test, 1))
    assert got["topk_overlap"] == pytest.approx(topk_overlap(ref, test, 5))
    assert got["sqnr_db"] == pytest.approx(sqnr_db(ref, test))
    assert list(result["outputs"]) == ["trt-like"]


def test_detector_map_and_split_sqnr():
    m = detector_head()
    q = int8kit_qdq(m)
    batches = random_batches(3, seed=4)
    result = evaluate(m, q, batches, task="detect", layout="v8")
    ref, test = _outputs(m, batches), _outputs(q, batches, optimize=False)
    stats = DetectionStats(layout="v8")
    stats.update(ref, test)
    want = stats.result()
    got = result["outputs"]["trt-like"]["y"]
    for key in ("map50", "box_sqnr_db", "score_sqnr_db", "n_gt", "n_pred"):
        assert got[key] == pytest.approx(want[key]), key
    assert got["n_gt"] > 0
    th = result["detection_thresholds"]
    assert th["conf_fp32_ground_truth"] == 0.25 and th["match_iou"] == 0.5


def test_paths_and_data_config(tmp_path):
    from int8kit.data import DataConfig

    m = conv_relu_conv()
    np.save(tmp_path / "x.npy", np.concatenate([b["x"] for b in random_batches(5)]))
    result = evaluate(
        save(m, tmp_path / "m.onnx"),
        save(int8kit_qdq(m), tmp_path / "q.onnx"),
        DataConfig(str(tmp_path / "x.npy"), num_samples=4),
    )
    assert result["samples"] == 4
    assert result["fp32_model"].endswith("m.onnx")
    assert result["outputs"]["trt-like"]["y"]["count"] == 4 * 4 * 8 * 8


def test_models_with_different_inputs_are_refused():
    with pytest.raises(DataError, match="different inputs"):
        evaluate(conv_relu_conv(), _renamed_input(conv_relu_conv()), random_batches())


def _renamed_input(model):
    model.graph.input[0].name = "image"
    for n in model.graph.node:
        for i, t in enumerate(n.input):
            if t == "x":
                n.input[i] = "image"
    return model


def test_unknown_task_and_backend():
    with pytest.raises(ValueError, match="task"):
        evaluate(conv_relu_conv(), conv_relu_conv(), [], task="segment")
    with pytest.raises(ValueError, match="backends"):
        evaluate(conv_relu_conv(), conv_relu_conv(), [], backends=("tensorrt",))


def test_guess_task_needs_decoded_boxes_and_scores_not_only_a_detection_shape():
    from int8kit.analysis.fidelity import guess_task

    rng = np.random.default_rng(0)
    v8 = np.concatenate([rng.uniform(0, 320, (1, 4, 2100)), rng.uniform(0, 1, (1, 80, 2100))], 1)
    v5 = np.concatenate([rng.uniform(0, 640, (1, 8400, 4)), rng.uniform(0, 1, (1, 8400, 6))], 2)
    assert guess_task(v8) == "detect" and guess_task(v5) == "detect"
    # RetinaFace's landmark offsets (1, A, 10) and a YOLOX head's raw logits (1, A, 6): no mAP
    assert guess_task(rng.standard_normal((1, 4200, 10))) == "raw"
    assert guess_task(rng.standard_normal((1, 3549, 6))) == "raw"
    assert guess_task(rng.standard_normal((1, 1000))) == "classify"


def test_embeddings_get_no_top1_unless_the_task_is_named():
    from int8kit.analysis.fidelity import embedding_outputs, guess_task

    m = encoder()
    # L2 normalisation (a Div by a computed norm) and a LayerNorm's token 0 are embeddings; a
    # Gemm head and its division by a constant temperature are class scores
    assert embedding_outputs(m) == {"emb", "cls"}
    batches = random_batches(4, shape=(1, 4, 16))
    q = int8kit_qdq(m, batches=batches)
    result = evaluate(m, q, batches, backends=("trt-like",))["outputs"]["trt-like"]
    tasks = {n: r["task"] for n, r in result.items()}
    assert tasks == {"emb": "raw", "cls": "raw", "logits": "classify", "scaled": "classify"}
    assert "top1_agreement" not in result["emb"] and "top1_agreement" in result["logits"]
    named = evaluate(m, q, batches, task="classify", backends=("trt-like",))["outputs"]
    assert named["trt-like"]["emb"]["task"] == "classify"
    x = np.random.default_rng(0).standard_normal((1, 32))
    assert guess_task(x) == "classify" and guess_task(x, embedding=True) == "raw"
    assert guess_task(np.arange(32).reshape(1, 32)) == "raw"  # token ids (MiniLM's 'output')


def test_few_class_outputs_are_class_scores_only_as_probabilities():
    # A 4-way orientation classifier's softmax gets top-1 agreement; a (N, 4) box or 4 logits
    # (which could as well be a regression) stay raw, and so does a softmax-shaped embedding.
    from int8kit.analysis.fidelity import guess_task

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert guess_task(probs.astype(np.float32)) == "classify"
    assert guess_task(probs[:, :2] / probs[:, :2].sum(1, keepdims=True)) == "classify"
    assert guess_task(logits) == "raw"
    assert guess_task(rng.uniform(0, 320, (3, 4))) == "raw"  # boxes
    assert guess_task(probs * 0.9) == "raw"  # rows sum to 0.9: sigmoid scores, not one choice
    assert guess_task(probs[:, :1] / probs[:, :1]) == "raw"  # one column
    assert guess_task(probs, embedding=True) == "raw"
