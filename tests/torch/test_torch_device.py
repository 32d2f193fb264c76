"""Quantizers and bias shifts are made on the device of the module they serve.

DDP broadcasts every buffer from its device (NCCL refuses CPU tensors), and a quantizer that
never runs a forward — the float stem's, an unused module's — is never moved to the data. The
model here sits on the meta device, so a tensor made on the CPU by default shows up at once
(tests/gpu/test_torch_gpu.py runs the whole flow on a GPU)."""

import pytest

torch = pytest.importorskip("torch")

import torch_tiny  # noqa: E402

import int8kit.torch as iq  # noqa: E402
from int8kit.torch import stem  # noqa: E402
from int8kit.torch.modules import BIAS_SHIFT  # noqa: E402


def _devices(model) -> dict[str, str]:
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return {name: str(t.device) for name, t in tensors}


@pytest.mark.parametrize("build", [torch_tiny.tiny_model, torch_tiny.AllKinds])
def test_the_module_swap_makes_every_quantizer_on_the_model_device(build):
    m = build().to("meta")
    iq.quantize(m, iq.QuantConfig())  # default recipe: auto, float stem, bias correction
    names = [n for n, _ in iq.quantizers(m)]
    assert len(names) >= 7
    devices = _devices(m)
    assert set(devices.values()) == {"meta"}, {n: d for n, d in devices.items() if d != "meta"}
    assert all(f"{n}.amax" in devices for n in names)


def test_a_quantizer_takes_its_own_module_device_and_a_pool_the_model_device():
    m = torch_tiny.tiny_model()
    m.fc.to("meta")  # the model's first parameter (conv.weight) stays on the CPU
    iq.quantize(m, iq.QuantConfig(method="minmax"))
    devices = _devices(m)
    assert devices["fc.weight_quantizer.amax"] == devices["fc.input_quantizer.amax"] == "meta"
    for name in ("conv.input_quantizer", "maxpool.input_quantizer", "add.input_quantizer"):
        assert devices[f"{name}.amax"] == "cpu", name


@pytest.mark.filterwarnings("ignore:.*to a meta parameter:UserWarning")
def test_a_bias_shift_loaded_from_a_cpu_state_dict_is_made_on_the_weight_device():
    data = torch_tiny.batches()
    calibrated = iq.quantize(
        torch_tiny.tiny_model(), iq.QuantConfig(), lambda m: [m(x) for x in data]
    )
    assert stem.input_layers(calibrated) == ["conv"]
    state = calibrated.state_dict()
    shifts = [k for k in state if k.endswith(BIAS_SHIFT)]
    assert shifts and all(state[k].device.type == "cpu" for k in shifts)
    fresh = iq.quantize(torch_tiny.tiny_model().to("meta"), iq.QuantConfig())
    fresh.load_state_dict(state)
    devices = _devices(fresh)
    assert all(devices[k] == "meta" for k in shifts)
    assert set(devices.values()) == {"meta"}


def test_calibration_and_qat_keep_the_never_run_stem_quantizers_with_the_model():
    """On the CPU every tensor is on one device anyway; this pins the flow the GPU test runs:
    the stem conv's quantizers are disabled and never run, and prepare_qat makes the other
    activation amax parameters."""
    data = torch_tiny.batches()
    m = iq.quantize(torch_tiny.tiny_model(), iq.QuantConfig(), lambda m: [m(x) for x in data])
    iq.prepare_qat(m, fold_bn=True, learn_amax=True)
    assert not m.conv.input_quantizer.enabled and not m.conv.weight_quantizer.enabled
    assert "amax" in m.conv.input_quantizer._buffers  # a buffer DDP would broadcast
    assert isinstance(m.fc.input_quantizer.amax, torch.nn.Parameter)
    assert set(_devices(m).values()) == {"cpu"}
