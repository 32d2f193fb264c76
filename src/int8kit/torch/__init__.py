"""int8kit for PyTorch: fake-quant modules, calibration, QAT and Q/DQ ONNX export.

    import int8kit.torch as iq
    qmodel = iq.quantize(model, iq.QuantConfig(),  # the default recipe of `int8kit quantize`
                         forward_loop=lambda m: [m(x) for x in loader])
    iq.export_onnx(qmodel, example_input, "model.int8.onnx")
    qmodel = iq.prepare_qat(qmodel)        # fold BN, fake quant stays on
    iq.finetune(qmodel, loader, steps=200)  # distillation from the FP32 model
    iq.export_onnx(qmodel, example_input, "model.int8.onnx")

Importing this module needs torch; `import int8kit` does not.
"""

from __future__ import annotations

from int8kit._deps import require

require("torch", "int8kit.torch")

from int8kit.torch.batchnorm import find_conv_bn_pairs, fold_bn, freeze_bn  # noqa: E402
from int8kit.torch.bias import bias_correct  # noqa: E402
from int8kit.torch.collector import TorchHistogramCollector  # noqa: E402
from int8kit.torch.config import OP_TYPES, QuantConfig  # noqa: E402
from int8kit.torch.export import export_onnx  # noqa: E402
from int8kit.torch.functional import fake_quant  # noqa: E402
from int8kit.torch.modules import RULES, QuantAdd, is_quantized  # noqa: E402
from int8kit.torch.qat import finetune, prepare_qat  # noqa: E402
from int8kit.torch.quantize import (  # noqa: E402
    calibrate,
    load_amax,
    quantize,
    quantizers,
    replace_modules,
    set_mode,
)
from int8kit.torch.quantizer import TensorQuantizer  # noqa: E402

__all__ = [
    "OP_TYPES",
    "RULES",
    "QuantAdd",
    "QuantConfig",
    "TensorQuantizer",
    "TorchHistogramCollector",
    "bias_correct",
    "calibrate",
    "export_onnx",
    "fake_quant",
    "find_conv_bn_pairs",
    "finetune",
    "fold_bn",
    "freeze_bn",
    "is_quantized",
    "load_amax",
    "prepare_qat",
    "quantize",
    "quantizers",
    "replace_modules",
    "set_mode",
]
